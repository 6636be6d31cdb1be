"""Gripper command hygiene: binary mode with hysteresis and minimum dwell, chatter counting."""

import numpy as np
import pytest

from vla_ros.actions.gripper import GripperFilter, GripperFilterConfig, chatter_events


def binary(close=0.3, open_=0.7, dwell=0.5):
    return GripperFilter(GripperFilterConfig('binary', close, open_, dwell))


def test_continuous_mode_passes_values_through():
    f = GripperFilter()
    assert [f(v, t) for t, v in enumerate([0.2, 0.49, 0.51, 0.9])] == [0.2, 0.49, 0.51, 0.9]
    assert f.closed is None


def test_binary_hysteresis_ignores_values_inside_the_band():
    f = binary(dwell=0.0)
    out = [f(v, 0.1 * i) for i, v in enumerate([0.9, 0.6, 0.45, 0.35, 0.29, 0.5, 0.65, 0.71])]
    # open until <= 0.3, then closed until >= 0.7: the near-threshold values change nothing
    assert out == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def test_binary_min_dwell_delays_a_reversal_but_not_the_first_change():
    f = binary(dwell=0.5)
    assert f(1.0, 0.0) == 1.0
    assert f(0.0, 0.05) == 0.0  # the first state was no change: the grasp goes through
    assert f(1.0, 0.15) == 0.0  # a one-tick open right after the grasp is suppressed
    assert f(1.0, 0.5) == 0.0
    assert f(1.0, 0.55) == 1.0  # a sustained open command gets through after 0.5 s
    assert f(0.0, 0.6) == 1.0   # and a quick re-close is held back in turn
    f.reset()
    assert f(0.1, 1.0) == 0.0   # after reset the first command decides at once


def test_clock_going_back_restarts_the_state():
    f = binary(dwell=1.0)
    f(1.0, 9.0)
    f(0.0, 10.0)
    assert f(1.0, 10.5) == 0.0
    assert f(1.0, 2.0) == 1.0  # a replayed bag's earlier time: no dwell carried over


@pytest.mark.parametrize('kwargs, message', [
    ({'mode': 'toggle'}, 'gripper_mode'),
    ({'close_threshold': 0.7, 'open_threshold': 0.3}, 'close_threshold < open_threshold'),
    ({'open_threshold': 1.5}, 'close_threshold < open_threshold'),
    ({'min_dwell_s': -1.0}, 'min_dwell_s'),
    ({'min_dwell_s': float('nan')}, 'finite'),
])
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GripperFilterConfig(**kwargs)


def test_non_finite_opening_is_refused():
    with pytest.raises(ValueError, match='finite'):
        binary()(float('nan'), 0.0)


def test_chatter_events_count_fast_reversals_after_the_grasp():
    period = 0.1
    # open, grasp at 0.3 s, open at 0.5 s (0.2 s later: chatter), close at 0.6 s (chatter),
    # then held for a second and a deliberate release at 1.6 s (not chatter)
    trace = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert chatter_events(trace, period) == [0.5, 0.6]
    # a close that lasts 0.5 s or more before the release is not chatter; a shorter one is
    assert chatter_events([1, 0.4, 0.4, 0.4, 0.4, 0.4, 0.6], period) == []
    assert chatter_events([1, 0.4, 0.4, 0.6], period) == [0.3]
    # a policy that starts closed has not grasped yet: its first open is not counted
    assert chatter_events([0, 1, 1, 1, 1, 1, 1], period) == []
    assert chatter_events([], period) == []


def test_binary_filter_removes_near_threshold_chatter():
    rng = np.random.default_rng(0)
    # closes at tick 10, then hovers around the threshold as a marginal policy does
    trace = np.r_[np.ones(10), np.zeros(3), rng.uniform(0.35, 0.65, 60)]
    period = 0.1
    assert len(chatter_events(trace, period)) > 5
    f = binary()
    filtered = [f(v, i * period) for i, v in enumerate(trace)]
    assert chatter_events(filtered, period) == []
    assert filtered[-1] == 0.0  # still holding
