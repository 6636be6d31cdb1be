"""Safety limit tests: hand-computed examples and hypothesis properties."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.actions.safety import (
    LimitedCommand,
    SafetyLimits,
    UnsafeCommandError,
    apply_arm_limits,
    check_finite,
    clamp_velocity,
    enforce_workspace,
    limit_acceleration,
    limit_base,
)

LIM = SafetyLimits(max_linear_velocity=0.5, max_angular_velocity=1.0,
                   max_linear_acceleration=2.0, max_angular_acceleration=4.0,
                   workspace_min=(-1.0, -1.0, 0.0), workspace_max=(1.0, 1.0, 1.0),
                   max_base_linear_velocity=0.5, max_base_angular_velocity=1.0)
CENTER = np.array([0.0, 0.0, 0.5])


# --- SafetyLimits ------------------------------------------------------------------------------

def test_from_dict_and_validation():
    lim = SafetyLimits.from_dict({'max_linear_velocity': 1, 'workspace_min': [0, 0, 0]})
    assert lim.max_linear_velocity == 1.0 and lim.workspace_min == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match='unknown safety limit keys'):
        SafetyLimits.from_dict({'max_speed': 1.0})
    for bad in [{'max_linear_velocity': 0.0}, {'max_angular_velocity': -1.0},
                {'max_linear_acceleration': math.inf}, {'max_base_linear_velocity': 'fast'},
                {'max_angular_acceleration': True}, {'workspace_min': (0, 0)},
                {'workspace_max': (1, 1, math.nan)}, {'workspace_min': (1.0, -1.0, 0.0),
                                                      'workspace_max': (1.0, 1.0, 1.0)}]:
        with pytest.raises(ValueError):
            SafetyLimits.from_dict(bad)


def test_check_finite():
    assert check_finite([1, 2, 3, 4, 5, 6], 'cmd').dtype == np.float64
    for bad in ([0.0] * 5, [0.0] * 5 + [math.nan], [0.0] * 5 + [math.inf], 'abcdef',
                [[0.0] * 6]):
        with pytest.raises(UnsafeCommandError):
            check_finite(bad, 'cmd')
    assert issubclass(UnsafeCommandError, ValueError)


# --- individual functions, hand-computed -------------------------------------------------------

def test_clamp_velocity_keeps_direction():
    # |(3, 4, 0)| = 5 -> scaled to 0.5: (0.3, 0.4, 0); |(0, 0, 2)| = 2 -> (0, 0, 1)
    out = clamp_velocity([3.0, 4.0, 0.0, 0.0, 0.0, -2.0], LIM)
    np.testing.assert_allclose(out, [0.3, 0.4, 0.0, 0.0, 0.0, -1.0])
    within = [0.1, 0.2, 0.0, 0.5, 0.0, 0.0]
    np.testing.assert_array_equal(clamp_velocity(within, LIM), within)
    # Huge values would overflow a naive norm: (1e308, 1e308) -> 0.5 * (0.70711, 0.70711)
    out = clamp_velocity([1e308, 1e308, 0.0, 0.0, 0.0, 0.0], LIM)
    np.testing.assert_allclose(out[:2], [0.353553, 0.353553], atol=1e-6)


def test_limit_acceleration():
    # dt = 0.1: linear step <= 0.2, angular step <= 0.4.
    prev = np.zeros(6)
    req = [0.3, 0.4, 0.0, 0.0, 0.0, 0.3]
    # linear change (0.3, 0.4) has norm 0.5 -> scaled to 0.2: (0.12, 0.16); angular 0.3 is fine
    np.testing.assert_allclose(limit_acceleration(prev, req, 0.1, LIM),
                               [0.12, 0.16, 0.0, 0.0, 0.0, 0.3])
    prev = [0.4, 0.0, 0.0, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(limit_acceleration(prev, np.zeros(6), 0.1, LIM),
                               [0.2, 0.0, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(limit_acceleration(prev, np.zeros(6), 0.0, LIM), prev)
    with pytest.raises(ValueError):
        limit_acceleration(prev, prev, -0.1, LIM)


def test_enforce_workspace():
    twist = [0.5, -0.5, 0.5, 0.1, 0.2, 0.3]
    # Near x max (0.98 + 0.05 > 1): vx zeroed; vy and vz stay inside.
    out = enforce_workspace([0.98, 0.0, 0.5], twist, 0.1, LIM)
    np.testing.assert_array_equal(out, [0.0, -0.5, 0.5, 0.1, 0.2, 0.3])
    # Outside on x (1.2 > 1) and z (-0.1 < 0): moving back on x is fine, further down on z is not.
    out = enforce_workspace([1.2, 0.0, -0.1], [-0.5, 0.0, -0.1, 0, 0, 0], 0.1, LIM)
    np.testing.assert_array_equal(out, [-0.5, 0.0, 0.0, 0, 0, 0])
    # Outside and moving sideways within the slab is fine; moving out on x is not.
    out = enforce_workspace([1.2, 0.0, 0.5], [0.5, 0.5, 0.0, 0, 0, 0], 0.1, LIM)
    np.testing.assert_array_equal(out, [0.0, 0.5, 0.0, 0, 0, 0])


def test_enforce_workspace_far_out_position_overflowing_stops_quietly():
    # 1e308 + 1e308 * 2 overflows to inf: still "farther out", so zeroed, with no warning
    # (CI printed numpy's overflow RuntimeWarning from the property test below).
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter('error')
        out = enforce_workspace([1e308, 0.0, 0.5], [1e308, 0.0, 0.0, 0, 0, 0], 2.0, LIM)
        back = enforce_workspace([1e308, 0.0, 0.5], [-1e308, 0.0, 0.0, 0, 0, 0], 0.1, LIM)
    np.testing.assert_array_equal(out, [0.0, 0.0, 0.0, 0, 0, 0])
    np.testing.assert_array_equal(back, [-1e308, 0.0, 0.0, 0, 0, 0])


def test_limit_base():
    # |(0.6, 0.8)| = 1 -> (0.3, 0.4); wz -3 -> -1
    np.testing.assert_allclose(limit_base([0.6, 0.8, -3.0], LIM), [0.3, 0.4, -1.0])
    np.testing.assert_allclose(limit_base([0.1, 0.0, 0.5], LIM), [0.1, 0.0, 0.5])
    with pytest.raises(UnsafeCommandError):
        limit_base([0.1, math.nan, 0.0], LIM)


def test_apply_arm_limits_examples():
    r = apply_arm_limits([0.1, 0.0, 0.0, 0.0, 0.0, 0.1], np.zeros(6), CENTER, 0.1, LIM)
    assert isinstance(r, LimitedCommand) and not r.clamped and r.reasons == ()
    np.testing.assert_array_equal(r.twist, [0.1, 0.0, 0.0, 0.0, 0.0, 0.1])
    # 3 m/s -> 0.5 m/s clamp -> from rest at most 0.2 in 0.1 s
    r = apply_arm_limits([3.0, 0, 0, 0, 0, 0], np.zeros(6), CENTER, 0.1, LIM)
    np.testing.assert_allclose(r.twist, [0.2, 0, 0, 0, 0, 0])
    assert r.reasons == ('velocity clamped', 'acceleration limited') and r.clamped
    r = apply_arm_limits([math.nan] * 6, [0.3, 0, 0, 0, 0, 0], CENTER, 0.1, LIM)
    np.testing.assert_array_equal(r.twist, np.zeros(6))
    assert r.reasons == ('non-finite command',)
    r = apply_arm_limits([0.1, 0, 0, 0, 0, 0], [0.1, 0, 0, 0, 0, 0], [0.999, 0, 0.5], 0.1, LIM)
    np.testing.assert_array_equal(r.twist, np.zeros(6))
    assert r.reasons == ('workspace',)
    r = apply_arm_limits([0.1, 0, 0, 0, 0, 0.2], [0.1, 0, 0, 0, 0, 0.2], [math.nan] * 3, 0.1,
                         LIM)
    np.testing.assert_array_equal(r.twist, [0, 0, 0, 0, 0, 0.2])
    assert r.reasons == ('non-finite position',)
    r = apply_arm_limits([0.3, 0, 0, 0, 0, 0], [0.1, 0, 0, 0, 0, 0], CENTER, math.nan, LIM)
    np.testing.assert_array_equal(r.twist, [0.1, 0, 0, 0, 0, 0])  # no time, no change
    assert 'invalid dt' in r.reasons


# --- properties --------------------------------------------------------------------------------

ANY = st.floats(allow_nan=True, allow_infinity=True)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
TWIST = st.lists(ANY, min_size=6, max_size=6)
POS = st.lists(ANY, min_size=3, max_size=3)
DT = st.one_of(ANY, st.floats(min_value=1e-4, max_value=1.0))


def box_distance(p):
    lo, hi = np.array(LIM.workspace_min), np.array(LIM.workspace_max)
    return np.maximum(np.maximum(lo - p, p - hi), 0.0)


def within_limits(v):
    return (np.linalg.norm(v[:3]) <= LIM.max_linear_velocity + 1e-9
            and np.linalg.norm(v[3:]) <= LIM.max_angular_velocity + 1e-9)


@settings(max_examples=400, deadline=None)
@given(req=TWIST, prev=TWIST, pos=POS, dt=DT)
def test_output_always_finite_and_within_velocity_limits(req, prev, pos, dt):
    out = apply_arm_limits(req, prev, pos, dt, LIM).twist
    assert out.shape == (6,) and np.all(np.isfinite(out))
    assert within_limits(out)


@settings(max_examples=400, deadline=None)
@given(req=st.lists(FINITE, min_size=6, max_size=6),
       prev=st.lists(st.floats(-2.0, 2.0), min_size=6, max_size=6),
       pos=st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3),
       dt=st.floats(1e-4, 1.0))
def test_change_bounded_and_never_further_out(req, prev, pos, dt):
    prev = clamp_velocity(prev, LIM)  # the previous output was within limits
    r = apply_arm_limits(req, prev, pos, dt, LIM)
    out = r.twist
    # The workspace may zero linear components (a stop at the wall); angular is never touched.
    if 'workspace' not in r.reasons:
        assert np.linalg.norm(out[:3] - prev[:3]) <= LIM.max_linear_acceleration * dt + 1e-9
    assert np.linalg.norm(out[3:] - prev[3:]) <= LIM.max_angular_acceleration * dt + 1e-9
    p = np.array(pos)
    assert np.all(box_distance(p + out[:3] * dt) <= box_distance(p) + 1e-12)


@settings(max_examples=200, deadline=None)
@given(base=st.lists(FINITE, min_size=3, max_size=3))
def test_base_always_within_limits(base):
    out = limit_base(base, LIM)
    assert np.all(np.isfinite(out))
    assert np.linalg.norm(out[:2]) <= LIM.max_base_linear_velocity + 1e-9
    assert abs(out[2]) <= LIM.max_base_angular_velocity
