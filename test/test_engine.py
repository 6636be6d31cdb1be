"""The ROS-free runtime: hold reasons, recovery, instruction changes, policy swaps."""

import numpy as np
import pytest

from vla_ros.policies.scripted import ScriptedPolicy
from vla_ros.runtime.engine import EngineConfig, EngineState, InferenceEngine

FRAME = np.zeros((48, 64, 3), dtype=np.uint8)


class FakeClock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


def make_engine(policy=None, **config):
    config.setdefault('chunk_strategy', 'receding_horizon')
    config.setdefault('strategy_params', {'execute_steps': 8})
    engine = InferenceEngine(EngineConfig(**config))
    engine.finish_policy_load('scripted', policy or ScriptedPolicy(chunk_length=8))
    return engine


def feed(engine, t):
    engine.set_image('front', FRAME, t)


def test_holds_until_instruction_and_image():
    clock = FakeClock()
    engine = make_engine()
    cmd = engine.command_at(clock())
    assert cmd.hold and 'no instruction' in cmd.reason
    assert np.all(cmd.ee_twist == 0) and cmd.gripper is None
    engine.set_instruction('push the red cube')
    assert 'no image' in engine.command_at(clock()).reason
    feed(engine, clock())
    assert 'starved' in engine.command_at(clock()).reason
    assert engine.inference_due(clock())
    assert engine.run_inference(clock) is not None
    cmd = engine.command_at(clock())
    # scripted default: 0.02 m per 0.1 s step along x -> 0.2 m/s, gripper open.
    assert not cmd.hold
    np.testing.assert_allclose(cmd.ee_twist, [0.2, 0, 0, 0, 0, 0])
    assert cmd.gripper == 1.0
    assert engine.status(clock()).state == EngineState.RUNNING


def test_stale_image_holds_and_recovers():
    clock = FakeClock()
    engine = make_engine(stale_image_timeout=0.5)
    engine.set_instruction('go')
    feed(engine, clock())
    engine.run_inference(clock)
    clock.t += 0.6  # chunk still covers this tick, but the camera went silent
    cmd = engine.command_at(clock())
    assert cmd.hold and 'stale' in cmd.reason
    status = engine.status(clock())
    assert status.state == EngineState.HOLDING and 'stale' in status.message
    feed(engine, clock())
    engine.run_inference(clock)
    assert not engine.command_at(clock()).hold


def test_policy_exception_holds_reports_and_recovers():
    clock = FakeClock()
    policy = ScriptedPolicy(fail_mode='raise', fail_after=0)
    engine = make_engine(policy)
    engine.set_instruction('go')
    feed(engine, clock())
    assert engine.run_inference(clock) is None
    cmd = engine.command_at(clock())
    assert cmd.hold
    status = engine.status(clock())
    assert status.state == EngineState.ERROR and 'injected failure' in status.message
    policy.fail_mode = None  # the cause goes away
    clock.t += 1.0
    feed(engine, clock())
    assert engine.inference_due(clock())
    assert engine.run_inference(clock) is not None
    assert not engine.command_at(clock()).hold
    assert engine.status(clock()).state == EngineState.RUNNING


@pytest.mark.parametrize('mode', ['nan', 'wrong_shape'])
def test_bad_chunks_never_reach_the_buffer(mode):
    clock = FakeClock()
    engine = make_engine(ScriptedPolicy(fail_mode=mode, fail_after=0))
    engine.set_instruction('go')
    feed(engine, clock())
    assert engine.run_inference(clock) is None
    cmd = engine.command_at(clock())
    assert cmd.hold and np.all(np.isfinite(cmd.ee_twist))
    assert engine.status(clock()).errors == 1


def test_new_instruction_clears_buffer_and_discards_inflight_chunk():
    clock = FakeClock()
    engine = make_engine()
    engine.set_instruction('go right')
    feed(engine, clock())
    engine.run_inference(clock)
    assert engine.queue_depth(clock()) == 8
    engine.set_instruction('go left')
    assert engine.queue_depth(clock()) == 0
    assert 'starved' in engine.command_at(clock()).reason
    feed(engine, clock() + 0.01)
    clock.t += 0.01
    engine.run_inference(clock)
    np.testing.assert_allclose(engine.command_at(clock()).ee_twist[0], -0.2)


def test_swap_failure_keeps_old_policy():
    clock = FakeClock()
    engine = make_engine(swap_behavior='keep')
    engine.set_instruction('go')
    feed(engine, clock())
    engine.run_inference(clock)
    engine.begin_policy_load('octo')
    assert not engine.command_at(clock()).hold  # 'keep': the old policy still drives
    engine.finish_policy_load('octo', None, 'FileNotFoundError: no checkpoint')
    assert engine.policy_name == 'scripted'
    status = engine.status(clock())
    assert 'failed to load policy' in status.message and "keeping 'scripted'" in status.message
    assert not engine.command_at(clock()).hold


def test_swap_with_hold_then_atomic_switch():
    clock = FakeClock()
    engine = make_engine(swap_behavior='hold')
    engine.set_instruction('go')
    feed(engine, clock())
    engine.run_inference(clock)
    engine.begin_policy_load('scripted')
    cmd = engine.command_at(clock())
    assert cmd.hold and 'loading' in cmd.reason
    assert engine.status(clock()).state == EngineState.LOADING
    new = ScriptedPolicy(velocity=(0.0, 0.01, 0, 0, 0, 0))
    engine.finish_policy_load('scripted', new)
    assert engine.policy is new and engine.queue_depth(clock()) == 0
    clock.t += 0.05
    feed(engine, clock())
    engine.run_inference(clock)
    np.testing.assert_allclose(engine.command_at(clock()).ee_twist[:2], [0.0, 0.1])


def test_inference_due_rate_and_low_queue():
    clock = FakeClock()
    engine = make_engine(inference_rate_hz=0.0, low_queue_depth=2)
    engine.set_instruction('go')
    feed(engine, clock())
    assert engine.inference_due(clock())
    engine.run_inference(clock)
    feed(engine, clock() + 0.1)
    clock.t += 0.1
    assert not engine.inference_due(clock())  # 7 actions left
    clock.t += 0.45
    feed(engine, clock())
    assert engine.inference_due(clock())  # 2 actions left


def test_config_validation_messages():
    with pytest.raises(ValueError, match='control_rate_hz'):
        EngineConfig(control_rate_hz=0)
    with pytest.raises(ValueError, match='swap_behavior'):
        EngineConfig(swap_behavior='maybe')
    with pytest.raises(ValueError):
        EngineConfig(chunk_strategy='fastest')


def test_arrival_timing_executes_single_step_chunks_late_observation_timing_skips_them():
    clock = FakeClock()
    # One action per inference, 0.25 s latency > half the 0.2 s period: with observation
    # timing the action is already stale when it arrives; with arrival timing it runs
    # for one period from its arrival.
    for timing, expect_hold in (('observation', True), ('arrival', False)):
        engine = make_engine(ScriptedPolicy(chunk_length=1, control_period=0.2),
                             chunk_timing=timing, stale_image_timeout=1.0,
                             strategy_params={'execute_steps': 1})
        engine.set_instruction('go')
        feed(engine, clock())
        job = engine.begin_inference(clock())
        chunk, error = engine.compute_chunk(job)
        engine.finish_inference(job, chunk, error, clock() + 0.25)
        for dt in (0.26, 0.34, 0.44):
            assert engine.command_at(clock() + dt).hold == expect_hold, (timing, dt)
        assert engine.command_at(clock() + 0.46).hold  # one period after arrival: used up


def test_arrival_timing_drops_chunks_of_stale_observations():
    clock = FakeClock()
    engine = make_engine(ScriptedPolicy(chunk_length=1), chunk_timing='arrival',
                         stale_image_timeout=0.5)
    engine.set_instruction('go')
    feed(engine, clock())
    job = engine.begin_inference(clock())
    chunk, error = engine.compute_chunk(job)
    assert engine.finish_inference(job, chunk, error, clock() + 0.8) is None
    assert 'old observation' in engine.status(clock() + 0.8).message


def test_lockstep_inference_makes_chunks_usable_after_their_latency():
    from vla_ros.runtime.lockstep import LockstepInference

    policy = ScriptedPolicy(chunk_length=8)
    engine = make_engine(policy, inference_rate_hz=2.5, low_queue_depth=0,
                         strategy_params={'execute_steps': 4})
    engine.set_instruction('go')
    scheduler = LockstepInference(engine, latency=0.25)
    holds, started = [], []
    for step in range(12):
        t = step * 0.1
        feed(engine, t)
        calls = policy.calls
        holds.append(scheduler.tick(t).hold)
        if policy.calls > calls:
            started.append(step)
        # one simulated worker: never a second inference while one is in flight
        assert policy.calls - scheduler.chunks_buffered <= 1
    # The chunk observed at 0.0 arrives at 0.25: ticks 0..2 hold, tick 3 runs its action 3.
    assert holds[:4] == [True, True, True, False] and not any(holds[4:])
    assert started == [0, 4, 8]  # every 1 / 2.5 Hz, as the node's rate says
    assert len(scheduler.inference_wall_s) == 3 and not scheduler.errors
    with pytest.raises(ValueError, match='latency'):
        LockstepInference(engine, latency=-1.0)


def test_lockstep_inference_reports_policy_errors_and_holds():
    from vla_ros.runtime.lockstep import LockstepInference

    engine = make_engine(ScriptedPolicy(chunk_length=8, fail_mode='raise'))
    engine.set_instruction('go')
    scheduler = LockstepInference(engine)
    feed(engine, 0.0)
    command = scheduler.tick(0.0)
    assert command.hold and len(scheduler.errors) == 1 and scheduler.chunks_buffered == 0
    assert 'ScriptedPolicyFault' in scheduler.errors[0]


def test_a_chunk_is_published_before_any_tick_can_use_it():
    # The control tick runs on its own (real-time) thread: were the chunk buffered first,
    # a tick could command from it before its ActionChunk message is sent, and a
    # recording would show the command before the chunk (bag regress replays the chunk
    # too late). The publish callback runs first, while ticks still hold.
    clock = FakeClock()
    engine = make_engine()
    engine.set_instruction('push the red cube')
    feed(engine, clock())
    seen = []

    def publish(result):
        seen.append((result.chunk.actions.shape, engine.command_at(clock()).hold))

    result = engine.run_inference(clock, publish)
    assert result is not None and seen == [(result.chunk.actions.shape, True)]
    assert not engine.command_at(clock()).hold  # buffered once published
    # An instruction changed while publishing: the chunk is not buffered.
    engine.set_instruction('push the blue cube')
    feed(engine, clock())
    assert engine.run_inference(clock, lambda r: engine.set_instruction('stop')) is None
    assert engine.command_at(clock()).hold


def test_a_result_names_the_last_command_computed_before_its_chunk():
    # Recordings order chunks against commands by it (vla-ros bag regress).
    clock = FakeClock()
    engine = make_engine(ScriptedPolicy(chunk_length=4))
    engine.set_instruction('go')
    feed(engine, clock())
    published = []
    job = engine.begin_inference(clock())
    chunk, error = engine.compute_chunk(job)
    result = engine.finish_inference(job, chunk, error, clock() + 0.05, published.append)
    assert np.isnan(result.buffered_after_command)  # no command computed yet
    engine.command_at(clock() + 0.1)
    engine.command_at(clock() + 0.2)
    feed(engine, clock() + 0.25)
    job = engine.begin_inference(clock() + 0.25)
    chunk, error = engine.compute_chunk(job)
    engine.command_at(clock() + 0.3)  # computed while the policy ran
    result = engine.finish_inference(job, chunk, error, clock() + 0.35, published.append)
    assert result.buffered_after_command == clock() + 0.3
    assert published[-1] is result
