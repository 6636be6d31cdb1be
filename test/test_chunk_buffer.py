"""Chunk buffer tests against hand-computed values."""

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.actions.chunk_buffer import (
    BufferedAction,
    ChunkBuffer,
    LatencyAware,
    RecedingHorizon,
    TemporalEnsemble,
    TimedChunk,
    make_strategy,
    tick_index,
)

P = 0.1
TICKS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]


def chunk(stamp, values, period=P):
    return TimedChunk(stamp, period, np.array(values, dtype=np.float64).reshape(-1, 1))


def A():
    return chunk(0.0, [0, 1, 2, 3])


def B():
    return chunk(0.2, [10, 11, 12, 13])


def values(buf, ticks):
    out = []
    for t in ticks:
        r = buf.action_at(t)
        out.append(None if r is None else round(float(r.action[0]), 4))
    return out


# --- TimedChunk -------------------------------------------------------------------------------

def test_chunk_copies_and_is_read_only():
    src = np.array([[1.0, 2.0], [3.0, 4.0]])
    c = TimedChunk(1.0, 0.05, src, source='octo')
    src[0, 0] = 99.0
    assert c.actions[0, 0] == 1.0
    assert c.horizon == 2 and c.dim == 2 and c.source == 'octo'
    with pytest.raises(ValueError):
        c.actions[0, 0] = 5.0
    assert TimedChunk(0.0, 0.1, np.ones((1, 1), np.float32)).actions.dtype == np.float32


@pytest.mark.parametrize('bad', [
    dict(actions=[[np.nan]]), dict(actions=[[np.inf]]), dict(actions=[1.0, 2.0]),
    dict(actions=np.zeros((0, 2))), dict(actions=np.zeros((2, 0))), dict(period=0.0),
    dict(period=-0.1), dict(period=np.nan), dict(stamp=np.inf), dict(actions=[['a']]),
])
def test_chunk_validation(bad):
    kwargs = dict(stamp=0.0, period=0.1, actions=[[0.0]])
    kwargs.update(bad)
    with pytest.raises(ValueError):
        TimedChunk(**kwargs)


def test_tick_index_rounds_half_up_despite_float_error():
    assert tick_index(0.35, 0.2, 0.1) == 2  # 0.35 - 0.2 is 1.4999999999999998 periods
    assert tick_index(0.249, 0.2, 0.1) == 0
    assert tick_index(0.15, 0.2, 0.1) == 0  # half a period early: action 0
    assert tick_index(0.14, 0.2, 0.1) == -1


# --- receding horizon -------------------------------------------------------------------------

def test_receding_horizon_k2_switches_after_two_steps():
    buf = ChunkBuffer(RecedingHorizon(execute_steps=2))
    buf.add(A(), now=0.0)
    assert values(buf, [0.0, 0.1]) == [0.0, 1.0]
    buf.add(B(), now=0.2)
    assert values(buf, [0.2, 0.3, 0.4, 0.5, 0.6]) == [10.0, 11.0, 12.0, 13.0, None]
    assert buf.last_starved_reason == 'chunk exhausted'


def test_receding_horizon_k4_open_loop_then_newest():
    buf = ChunkBuffer(RecedingHorizon(execute_steps=4))
    buf.add(A(), now=0.0)
    assert values(buf, [0.0, 0.1]) == [0.0, 1.0]
    buf.add(B(), now=0.2)
    # A runs to its end; at 0.4 A is used up, B serves its index 2.
    assert values(buf, [0.2, 0.3, 0.4, 0.5, 0.6]) == [2.0, 3.0, 12.0, 13.0, None]


def test_receding_horizon_keeps_active_until_k_steps():
    buf = ChunkBuffer(RecedingHorizon(execute_steps=3))
    buf.add(A(), now=0.0)
    buf.add(B(), now=0.0)  # newer chunk already there, but the first one is not started
    assert values(buf, [0.0]) == [0.0]  # only A covers t=0
    assert values(buf, [0.1, 0.2, 0.3, 0.4]) == [1.0, 2.0, 11.0, 12.0]


def test_receding_horizon_repeated_tick_does_not_count():
    buf = ChunkBuffer(RecedingHorizon(execute_steps=2))
    buf.add(A(), now=0.0)
    buf.add(B(), now=0.0)
    assert values(buf, [0.0, 0.0, 0.0, 0.1, 0.1, 0.2]) == [0, 0, 0, 1, 1, 10]
    r = buf.action_at(0.2)
    assert (r.chunk_stamp, r.index, r.num_sources) == (0.2, 0, 1)


def test_receding_horizon_starved_before_first_chunk_is_valid():
    buf = ChunkBuffer('receding_horizon', execute_steps=2)
    assert buf.action_at(0.0) is None and buf.last_starved_reason == 'empty'
    buf.add(B(), now=0.0)
    assert buf.status(0.0) == 'chunk not yet valid' and buf.is_starved(0.0)
    assert buf.action_at(0.1) is None and buf.last_starved_reason == 'chunk not yet valid'
    assert buf.action_at(0.2).action[0] == 10.0
    assert buf.last_starved_reason == ''


# --- temporal ensemble ------------------------------------------------------------------------

def test_temporal_ensemble_plain_average():
    buf = ChunkBuffer('temporal_ensemble', m=0.0)
    buf.add(A(), now=0.0)
    buf.add(B(), now=0.2)
    # 0.2: (2+10)/2, 0.3: (3+11)/2, then only B.
    assert values(buf, TICKS[:4]) == [0.0, 1.0, 6.0, 7.0]
    r = buf.action_at(0.3)
    assert (r.num_sources, r.chunk_stamp, r.index) == (2, 0.2, 1)
    assert values(buf, TICKS[4:]) == [12.0, 13.0, None]


def test_temporal_ensemble_weights_oldest_most():
    buf = ChunkBuffer(TemporalEnsemble(m=1.0))
    buf.add(B(), now=0.2)  # insertion order does not matter, stamps do
    buf.add(A(), now=0.2)
    # weights 1 (A, oldest) and exp(-1) = 0.367879 (B): (2 + 3.678794) / 1.367879
    assert buf.action_at(0.2).action[0] == pytest.approx(4.151531, abs=1e-6)
    buf = ChunkBuffer(TemporalEnsemble(m=0.01))
    buf.add(A(), now=0.0)
    buf.add(B(), now=0.0)
    # exp(-0.01) = 0.990050: (3 + 10.890549) / 1.990050
    assert buf.action_at(0.3).action[0] == pytest.approx(6.980000, abs=1e-6)


def test_temporal_ensemble_three_chunks_and_bounded_memory():
    buf = ChunkBuffer(TemporalEnsemble(m=0.0, max_chunks=2))
    buf.add(A(), now=0.0)
    buf.add(chunk(0.1, [100, 101, 102]), now=0.1)
    buf.add(B(), now=0.2)  # cap 2: A (oldest) is dropped
    assert values(buf, [0.2, 0.3]) == [(101 + 10) / 2, (102 + 11) / 2]
    unbounded = ChunkBuffer(TemporalEnsemble(m=0.0))
    for i in range(100):
        unbounded.add(chunk(i * P, [i, i]), now=i * P)
    assert len(unbounded.strategy._chunks) <= 2  # older chunks all expired


# --- latency aware ----------------------------------------------------------------------------

def test_latency_aware_late_chunk_blends_overlap():
    buf = ChunkBuffer(LatencyAware(new_weight=0.7))
    buf.add(chunk(0.0, [0, 1, 2, 3, 4, 5]), now=0.0)
    assert values(buf, [0.0, 0.1, 0.2]) == [0.0, 1.0, 2.0]
    # Computed from the 0.2 observation, arrives at 0.35: delay 2 periods, so B's
    # actions 0 (0.2) and 1 (0.3) are stale; 0.4 and 0.5 overlap, 0.6 is appended.
    buf.add(chunk(0.2, [10, 11, 12, 13, 14]), now=0.35)
    # 0.4: 0.3*4 + 0.7*12 = 9.6; 0.5: 0.3*5 + 0.7*13 = 10.6
    assert values(buf, [0.3, 0.4, 0.5, 0.6, 0.7]) == [None, 9.6, 10.6, 14.0, None]
    r = buf.action_at(0.4)
    assert (r.chunk_stamp, r.index, r.num_sources) == (0.2, 2, 2)
    assert buf.depth(0.4) == 3
    assert buf.status(0.7) == 'chunk exhausted'


def test_latency_aware_on_time_chunk_blends_everything_left():
    buf = ChunkBuffer('latency_aware')
    buf.add(A(), now=0.0)
    buf.add(B(), now=0.2)
    # 0.2: 0.3*2 + 0.7*10 = 7.6; 0.3: 0.3*3 + 0.7*11 = 8.6
    assert values(buf, [0.2, 0.3, 0.4, 0.5, 0.6]) == [7.6, 8.6, 12.0, 13.0, None]


def test_latency_aware_entirely_stale_chunk():
    buf = ChunkBuffer('latency_aware')
    buf.add(A(), now=1.0)
    assert buf.action_at(1.0) is None and buf.last_starved_reason == 'chunk exhausted'
    assert buf.depth(1.0) == 0


# --- common behaviour -------------------------------------------------------------------------

ALL = [('receding_horizon', {'execute_steps': 2}), ('temporal_ensemble', {}),
       ('latency_aware', {})]


@pytest.mark.parametrize('name,params', ALL)
def test_starved_after_exhaustion_never_repeats_last_action(name, params):
    buf = ChunkBuffer(name, **params)
    buf.add(A(), now=0.0)
    assert values(buf, [0.0, 0.1, 0.2, 0.3]) == [0, 1, 2, 3]
    assert buf.action_at(0.36) is None  # more than half a period after the last action
    assert buf.last_starved_reason == 'chunk exhausted' and buf.is_starved(0.4)
    assert buf.action_at(5.0) is None


@pytest.mark.parametrize('name,params', ALL)
def test_jitter_picks_same_action(name, params):
    buf = ChunkBuffer(name, **params)
    buf.add(A(), now=0.0)
    for base, expected in [(0.1, 1.0), (0.2, 2.0)]:
        for jitter in (-0.01, 0.0, 0.01):
            assert buf.action_at(base + jitter).action[0] == expected


@pytest.mark.parametrize('name,params', ALL)
def test_depth_clear_and_dimension(name, params):
    buf = ChunkBuffer(name, **params)
    assert buf.depth(0.0) == 0 and buf.status(0.0) == 'empty'
    buf.add(A(), now=0.0)
    assert [buf.depth(t) for t in (0.0, 0.1, 0.3, 0.4)] == [4, 3, 1, 0]
    assert buf.depth(-0.5) == 4  # everything is still ahead
    assert buf.dim == 1
    with pytest.raises(ValueError):
        buf.add(TimedChunk(0.0, P, np.zeros((4, 2))), now=0.0)
    buf.clear()
    assert buf.action_at(0.0) is None and buf.last_starved_reason == 'empty'
    assert buf.depth(0.0) == 0 and buf.dim is None
    buf.add(TimedChunk(0.0, P, np.zeros((4, 2))), now=0.0)  # new dimension after clear
    assert buf.action_at(0.0).action.shape == (2,)


@pytest.mark.parametrize('name,params', ALL)
def test_thread_safety_smoke(name, params):
    buf = ChunkBuffer(name, **params)
    errors, bad = [], []

    def producer(offset):
        try:
            rng = np.random.default_rng(offset)
            for i in range(300):
                stamp = i * 0.01
                buf.add(TimedChunk(stamp, 0.01, rng.normal(size=(8, 3))), now=stamp + 0.005)
        except Exception as exc:  # noqa: BLE001 - report any failure from the thread
            errors.append(exc)

    def consumer():
        try:
            for i in range(600):
                t = i * 0.005
                r = buf.action_at(t)
                buf.depth(t)
                buf.is_starved(t)
                if r is not None and not np.all(np.isfinite(r.action)):
                    bad.append(r)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(3)]
    threads += [threading.Thread(target=consumer) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == [] and bad == []


def test_make_strategy_errors():
    assert isinstance(make_strategy('receding_horizon', execute_steps=4), RecedingHorizon)
    with pytest.raises(ValueError, match='latency_aware'):
        make_strategy('nope')
    for name, params in [('receding_horizon', {'execute_steps': 0}),
                         ('receding_horizon', {'execute_steps': 1.5}),
                         ('temporal_ensemble', {'m': float('nan')}),
                         ('temporal_ensemble', {'max_chunks': 0}),
                         ('latency_aware', {'new_weight': 1.5}),
                         ('latency_aware', {'bogus': 1})]:
        with pytest.raises(ValueError):
            make_strategy(name, **params)
    with pytest.raises(ValueError):
        ChunkBuffer(TemporalEnsemble(), m=0.0)


def test_buffered_action_and_non_finite_times():
    buf = ChunkBuffer('temporal_ensemble')
    with pytest.raises(ValueError):
        buf.add(A(), now=float('nan'))
    with pytest.raises(ValueError):
        buf.action_at(float('inf'))
    buf.add(A(), now=0.0)
    r = buf.action_at(0.1)
    assert isinstance(r, BufferedAction) and r.action.dtype == np.float64


@given(phase=st.floats(0.0, 0.099), latency=st.floats(0.05, 0.3),
       strategy=st.sampled_from(['latency_aware', 'receding_horizon', 'temporal_ensemble']))
@settings(max_examples=60, deadline=None)
def test_back_to_back_chunks_never_starve_whatever_the_grid_phase(phase, latency, strategy):
    # Chunks of 8 at 0.1 s, computed back to back from frames whose stamps are not aligned
    # with the control ticks (regression: latency_aware left a gap when grids were offset).
    # 2 * latency + phase < 0.8 s, so each chunk lasts until the next one is ready.
    params = {'latency_aware': {'new_weight': 1.0}, 'receding_horizon': {'execute_steps': 1},
              'temporal_ensemble': {'m': 0.01}}[strategy]
    buffer = ChunkBuffer(make_strategy(strategy, **params))
    start, chunks = 0.0, []
    while start < 6.0:
        stamp = start - phase  # the newest frame is a little older than the start
        ready = start + latency
        chunks.append((ready, TimedChunk(stamp, 0.1, np.full((8, 2), ready))))
        start = ready
    ticks = [round(0.1 * k, 6) for k in range(60)]
    for t in ticks:
        for ready, chunk in [c for c in chunks if c[0] <= t]:
            buffer.add(chunk, ready)
        chunks = [c for c in chunks if c[0] > t]
        if t >= 1.0:
            assert buffer.action_at(t) is not None, (t, buffer.status(t))
