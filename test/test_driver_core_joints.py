"""The driver's joint-space rules on a fake clock (``vla_ros.drivers.core`` joint mode; no ROS).

The contract is docs/joint_space.md; the pure limit functions are
``vla_ros.drivers.joint_rules``.
"""

import math

import numpy as np
import pytest

from vla_ros.actions.safety import SafetyLimits
from vla_ros.drivers.core import DriverCore
from vla_ros.drivers.joint_rules import (
    JointLimits,
    joint_limits_from_parameters,
    limit_joint_velocity,
    limit_position_target,
)

PERIOD = 0.02
TIMEOUT = 0.25
NAMES = ('j1', 'j2', 'j3')
JOINTS = JointLimits(NAMES, (-1.0, -2.0, 0.0), (1.0, 2.0, 0.5), (1.0, 2.0, 0.5), (0.01,))
HOME = np.array([0.0, 0.0, 0.25])


class FakeClock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t

    def advance(self, seconds):
        self.t += seconds


def make_core(interface='joint_position', enabled=True, limits=JOINTS, **kw):
    clock = FakeClock()
    core = DriverCore(clock, SafetyLimits(), period=PERIOD, watchdog_timeout=TIMEOUT,
                      enabled=enabled, command_interface=interface, joint_limits=limits, **kw)
    return core, clock


def tick(core, clock, measured=HOME, seconds=PERIOD):
    clock.advance(seconds)
    return core.tick(np.zeros(3), joint_positions=measured)


def bound(dt=PERIOD):
    return JOINTS.step_bound(dt)


# ---------------------------------------------------------------- configuration
@pytest.mark.parametrize('kwargs, message', [
    (dict(position_min=(0.0, 0.0), ), 'has 2 values but joint_names has 3'),
    (dict(position_max=(1.0, 2.0, -1.0)), 'below joint_position_max'),
    (dict(max_velocity=(1.0, 0.0, 1.0)), 'joint_max_velocity must be > 0'),
    (dict(max_step=(-0.1,)), 'joint_max_step must be > 0'),
    (dict(max_step=(0.1, 0.1)), 'joint_max_step has 2 values'),
    (dict(position_min=(0.0, math.nan, 0.0)), 'finite'),
    (dict(max_velocity=(1.0, math.inf, 1.0)), 'finite'),
    (dict(names=('a', 'a', 'b')), 'more than once'),
    (dict(names=('a', '', 'b')), 'non-empty names'),
    (dict(position_min=('x', 0, 0)), 'numbers'),
])
def test_joint_limits_are_validated(kwargs, message):
    args = dict(names=NAMES, position_min=(-1.0,) * 3, position_max=(1.0,) * 3,
                max_velocity=(1.0,) * 3, max_step=(0.1,))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        JointLimits(**args)


def test_one_max_step_applies_to_every_joint_and_arrays_are_per_joint():
    assert JOINTS.max_step == (0.01, 0.01, 0.01)
    per_joint = JointLimits(NAMES, (-1,) * 3, (1,) * 3, (1,) * 3, (0.1, 0.2, 0.3))
    assert per_joint.max_step == (0.1, 0.2, 0.3)
    # The step bound is the smaller of the step and what the speed allows in dt.
    np.testing.assert_allclose(JOINTS.step_bound(0.02), [0.01, 0.01, 0.01])
    np.testing.assert_allclose(JOINTS.step_bound(0.005), [0.005, 0.01, 0.0025])


def test_limits_from_parameters_name_what_is_missing():
    with pytest.raises(ValueError, match='joint_names, joint_position_min'):
        joint_limits_from_parameters({'joint_names': [''], 'joint_position_max': [1.0],
                                      'joint_max_velocity': [1.0], 'joint_max_step': [0.1]})
    limits = joint_limits_from_parameters({
        'joint_names': ['a'], 'joint_position_min': [-1.0], 'joint_position_max': [1.0],
        'joint_max_velocity': [1.0], 'joint_max_step': [0.1]})
    assert limits.names == ('a',)


def test_core_refuses_a_joint_interface_without_limits():
    with pytest.raises(ValueError, match='needs JointLimits'):
        DriverCore(FakeClock(), SafetyLimits(), period=PERIOD, watchdog_timeout=TIMEOUT,
                   enabled=True, command_interface='joint_position')
    with pytest.raises(ValueError, match='command_interface must be one of'):
        DriverCore(FakeClock(), SafetyLimits(), period=PERIOD, watchdog_timeout=TIMEOUT,
                   enabled=True, command_interface='torque', joint_limits=JOINTS)


# ---------------------------------------------------------------- pure limit functions
def test_position_target_is_clamped_then_stepped():
    out = limit_position_target([5.0, -5.0, 0.25], HOME, JOINTS, PERIOD)
    np.testing.assert_allclose(out.values, [0.01, -0.01, 0.25])
    assert out.reasons == ('position limit', 'step limit') and out.clamped
    # Within a step: lands exactly on the (clamped) target.
    out = limit_position_target([0.005, 0.0, 0.25], HOME, JOINTS, PERIOD)
    assert out.values.tolist() == [0.005, 0.0, 0.25] and not out.clamped


def test_position_target_outside_the_limits_moves_back_without_jumping():
    applied = np.array([1.5, 0.0, 0.25])  # measured out of range
    out = limit_position_target([1.5, 0.0, 0.25], applied, JOINTS, PERIOD)
    assert out.values[0] == pytest.approx(1.49)


def test_velocity_is_clamped_and_zeroed_at_the_position_limits():
    out = limit_joint_velocity([5.0, -5.0, 0.1], HOME, JOINTS, PERIOD)
    np.testing.assert_allclose(out.values, [1.0, -2.0, 0.1])
    assert out.reasons == ('velocity limit',)
    near_upper = np.array([0.995, 0.0, 0.25])
    out = limit_joint_velocity([1.0, 0.0, 0.0], near_upper, JOINTS, PERIOD)
    assert out.values[0] == 0.0 and out.reasons == ('position limit',)
    # Moving away from the limit is fine; outside the range only moving back is.
    assert limit_joint_velocity([-1.0, 0, 0], near_upper, JOINTS, PERIOD).values[0] == -1.0
    outside = np.array([1.2, 0.0, 0.25])
    assert limit_joint_velocity([0.5, 0, 0], outside, JOINTS, PERIOD).values[0] == 0.0
    assert limit_joint_velocity([-0.5, 0, 0], outside, JOINTS, PERIOD).values[0] == -0.5


# ---------------------------------------------------------------- commands and rejection
def test_commands_are_reordered_by_name():
    core, clock = make_core()
    assert core.command_joints(['j3', 'j1', 'j2'], [0.3, 0.005, -0.004]) is None
    out = tick(core, clock)
    np.testing.assert_allclose(out.joint_positions, [0.005, -0.004, 0.26])
    assert out.joint_velocities is None and not out.ee_twist.any()


@pytest.mark.parametrize('names, positions, velocities, why', [
    (['j1', 'j2'], [0.0, 0.0], [], 'missing'),
    (['j1', 'j2', 'j3', 'j4'], [0.0] * 4, [], 'unknown'),
    (['j1', 'j1', 'j3'], [0.0] * 3, [], 'duplicate'),
    (['j1', 'j2', 'x'], [0.0] * 3, [], 'unknown'),
    (list(NAMES), [0.0, 0.0], [], '3 names but 2 position'),
    (list(NAMES), [0.0, math.nan, 0.0], [], 'NaN or Inf'),
    (list(NAMES), [0.0, math.inf, 0.0], [], 'NaN or Inf'),
    (list(NAMES), [0.0] * 3, [0.0] * 3, 'velocity must be empty'),
    (list(NAMES), [], [0.1] * 3, 'velocity must be empty'),
    (list(NAMES), [], [], '3 names but 0 position'),
])
def test_bad_joint_commands_are_rejected_and_the_good_one_stays(names, positions,
                                                                velocities, why):
    core, clock = make_core()
    assert core.command_joints(list(NAMES), [0.005, 0.0, 0.25]) is None
    reason = core.command_joints(names, positions, velocities)
    assert reason is not None and why in reason
    assert core.status().rejected_count == 1
    out = tick(core, clock)
    np.testing.assert_allclose(out.joint_positions, [0.005, 0.0, 0.25])


def test_velocity_interface_rejects_positions_and_twists_are_rejected_in_joint_mode():
    core, clock = make_core('joint_velocity')
    assert 'position must be empty' in core.command_joints(NAMES, [0.0] * 3, [0.0] * 3)
    assert 'cmd/joint' in core.command_ee_twist([0.1, 0, 0, 0, 0, 0])
    twist_core = DriverCore(FakeClock(), SafetyLimits(), period=PERIOD,
                            watchdog_timeout=TIMEOUT, enabled=True)
    assert 'ee_twist' in twist_core.command_joints(NAMES, [0.0] * 3)
    assert core.status().rejected_count == 2


def test_stale_and_future_stamps_follow_the_twist_rules():
    core, clock = make_core()
    why = core.command_joints(NAMES, [0.5, 0, 0.25], stamp=clock() - TIMEOUT - 0.01)
    assert 'stale' in why
    assert 'non-finite stamp' in core.command_joints(NAMES, [0.5, 0, 0.25], stamp=math.inf)
    # Delayed in transit: valid for the rest of its timeout only.
    assert core.command_joints(NAMES, [0.5, 0, 0.25], stamp=clock() - 0.2) is None
    assert not tick(core, clock).watchdog_changed  # 0.22 s old: fresh
    out = tick(core, clock, seconds=0.04)  # 0.26 s old: tripped
    assert out.watchdog_changed is True
    # From the future (clock skew): counts as sent on arrival.
    assert core.command_joints(NAMES, [0.5, 0, 0.25], stamp=clock() + 5.0) is None
    assert tick(core, clock).watchdog_changed is False


# ---------------------------------------------------------------- steps, watchdog
def test_position_target_steps_toward_the_command_and_holds_on_watchdog():
    core, clock = make_core()
    first = tick(core, clock)  # no command yet: hold where the arm is
    np.testing.assert_allclose(first.joint_positions, HOME)
    core.command_joints(NAMES, [0.5, 0.0, 0.25])
    previous = HOME.copy()
    for _ in range(5):
        out = tick(core, clock)
        assert np.all(np.abs(out.joint_positions - previous) <= bound() + 1e-12)
        assert 'step limit' in out.limit_reasons
        previous = out.joint_positions
    assert previous[0] == pytest.approx(0.05)
    assert core.status().clamped_count == 5
    clock.advance(TIMEOUT)  # the command goes stale
    out = tick(core, clock)
    assert out.watchdog_changed is True
    np.testing.assert_allclose(out.joint_positions, previous)  # held, not re-seeded
    # A measured position that lags does not move the held target.
    out = tick(core, clock, measured=np.array([0.03, 0.0, 0.25]))
    np.testing.assert_allclose(out.joint_positions, previous)


def test_velocity_interface_zeroes_on_watchdog():
    core, clock = make_core('joint_velocity')
    assert tick(core, clock).joint_velocities.tolist() == [0.0, 0.0, 0.0]
    core.command_joints(NAMES, velocities=[0.5, -0.5, 0.1])
    out = tick(core, clock)
    assert out.joint_velocities.tolist() == [0.5, -0.5, 0.1] and out.joint_positions is None
    clock.advance(TIMEOUT)
    out = tick(core, clock)
    assert out.watchdog_changed is True and not out.joint_velocities.any()


def test_a_long_tick_gap_does_not_enlarge_the_step_beyond_max_step():
    core, clock = make_core()
    core.command_joints(NAMES, [0.5, 0.0, 0.25])
    tick(core, clock)
    out = tick(core, clock, seconds=0.2)  # late tick (dt capped at 3 periods)
    assert out.joint_positions[0] - 0.01 <= 0.01 + 1e-12


# ---------------------------------------------------------------- gates
@pytest.mark.parametrize('gate', ['estop', 'interlock', 'lifecycle'])
def test_gates_hold_then_reseed_from_the_measured_positions_and_need_a_fresh_command(gate):
    core, clock = make_core()
    core.command_joints(NAMES, [0.5, 0.0, 0.25])
    for _ in range(3):
        held = tick(core, clock).joint_positions
    close = {'estop': core.engage_estop, 'interlock': lambda: core.set_enabled(False),
             'lifecycle': lambda: core.set_active(False)}[gate]
    reopen = {'estop': core.clear_estop, 'interlock': lambda: core.set_enabled(True),
              'lifecycle': lambda: core.set_active(True)}[gate]
    close()
    core.command_joints(NAMES, [0.9, 0.0, 0.25])  # must not move while closed
    for _ in range(3):
        np.testing.assert_allclose(tick(core, clock).joint_positions, held)
    reopen()
    moved = np.array([0.2, 0.1, 0.3])  # someone moved the arm meanwhile
    out = tick(core, clock, measured=moved)
    np.testing.assert_allclose(out.joint_positions, moved)  # restarted from the arm
    np.testing.assert_allclose(tick(core, clock, measured=moved).joint_positions, moved)
    core.command_joints(NAMES, [0.9, 0.0, 0.25])  # a fresh command moves it again
    out = tick(core, clock, measured=moved)
    np.testing.assert_allclose(out.joint_positions, [0.21, 0.09, 0.29])


def test_estop_latches_against_commands_and_velocity_is_zero():
    core, clock = make_core('joint_velocity')
    core.engage_estop()
    for _ in range(3):
        core.command_joints(NAMES, velocities=[0.5, 0.5, 0.1])
        assert not tick(core, clock).joint_velocities.any()
    assert core.status().level == 'error'


def test_disabled_at_start_holds_the_measured_positions():
    core, clock = make_core(enabled=False)
    core.command_joints(NAMES, [0.5, 0.0, 0.25])
    out = tick(core, clock)
    np.testing.assert_allclose(out.joint_positions, HOME)


def test_gripper_rules_are_unchanged_in_joint_mode():
    core, clock = make_core(enabled=False, initial_gripper=0.7)
    core.command_gripper(0.1)
    assert tick(core, clock).gripper == 0.7
    core.set_enabled(True)
    assert tick(core, clock).gripper == 0.1
    core.command_gripper(5.0)
    assert tick(core, clock).gripper == 1.0


def test_stop_output_holds_the_last_target_or_zero_velocity():
    core, clock = make_core()
    stop = core.stop_output(joint_positions=HOME)
    np.testing.assert_allclose(stop.joint_positions, HOME)  # nothing applied yet
    core.command_joints(NAMES, [0.5, 0.0, 0.25])
    applied = tick(core, clock).joint_positions
    np.testing.assert_allclose(core.stop_output(HOME * 0).joint_positions, applied)
    vel_core, _ = make_core('joint_velocity')
    assert not vel_core.stop_output().joint_velocities.any()


def test_measured_positions_must_be_given_in_joint_mode():
    core, clock = make_core()
    with pytest.raises(ValueError, match='3 finite values'):
        core.tick(np.zeros(3))
    with pytest.raises(ValueError, match='3 finite values'):
        core.tick(np.zeros(3), joint_positions=[0.0, math.nan, 0.0])


# ---------------------------------------------------------------- fuzz
def _random_command(rng):
    kind = rng.integers(6)
    names = list(NAMES)
    values = rng.normal(0.0, 10.0 ** rng.integers(-2, 4), size=3)
    if kind == 0:
        values[rng.integers(3)] = rng.choice([math.nan, math.inf, -math.inf])
    elif kind == 1:
        rng.shuffle(names)
    elif kind == 2:
        names = names[:2]
    elif kind == 3:
        values = values[:2]
    return names, values.tolist()


@pytest.mark.parametrize('interface', ['joint_position', 'joint_velocity'])
def test_random_inputs_never_violate_the_limits(interface):
    rng = np.random.default_rng(7)
    core, clock = make_core(interface)
    measured = HOME.copy()
    lower, upper, vmax = JOINTS.lower, JOINTS.upper, np.array(JOINTS.max_velocity)
    previous = None
    for step in range(3000):
        names, values = _random_command(rng)
        stamp = None if rng.random() < 0.7 else clock() - rng.uniform(-0.5, 0.5)
        if interface == 'joint_position':
            core.command_joints(names, values, stamp=stamp)
        else:
            core.command_joints(names, velocities=values, stamp=stamp)
        event = rng.random()
        if event < 0.01:
            core.engage_estop()
        elif event < 0.03:
            core.clear_estop()
        elif event < 0.05:
            core.set_enabled(bool(rng.integers(2)))
        elif event < 0.06:
            core.set_active(bool(rng.integers(2)))
        seconds = rng.choice([PERIOD, PERIOD * rng.uniform(0.01, 10.0)])
        clock.advance(seconds)
        out = core.tick(np.zeros(3), joint_positions=measured)
        if interface == 'joint_position':
            target = out.joint_positions
            assert np.all(np.isfinite(target))
            assert np.all((target >= lower) & (target <= upper)), (step, target)
            if previous is not None and not np.allclose(target, measured):
                # Either a bounded step from the last target or a re-seed at the arm.
                assert np.all(np.abs(target - previous) <= bound(out.dt) + 1e-12)
            previous = target
            # The simulated arm tracks the target, with some lag.
            measured = measured + 0.5 * (target - measured)
        else:
            v = out.joint_velocities
            assert np.all(np.isfinite(v)) and np.all(np.abs(v) <= vmax)
            nxt = measured + v * out.dt
            assert np.all((nxt >= lower - 1e-12) & (nxt <= upper + 1e-12)), (step, nxt)
            measured = nxt
