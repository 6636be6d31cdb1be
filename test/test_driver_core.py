"""Every safety rule of the driver, on a fake clock (``vla_ros.drivers.core``; no ROS)."""

import math

import numpy as np
import pytest

from vla_ros.actions.safety import SafetyLimits
from vla_ros.drivers.core import DriverCore, resolve_actuation_enabled

PERIOD = 0.02
TIMEOUT = 0.25
INSIDE = np.array([0.5, 0.0, 0.3])  # well inside the default test workspace
LIMITS = SafetyLimits(max_linear_velocity=0.25, max_angular_velocity=1.0,
                      max_linear_acceleration=100.0, max_angular_acceleration=100.0,
                      workspace_min=(0.2, -0.45, 0.01), workspace_max=(0.8, 0.45, 0.6),
                      max_base_linear_velocity=0.5, max_base_angular_velocity=1.0)


class FakeClock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t

    def advance(self, seconds):
        self.t += seconds


def make_core(clock=None, limits=LIMITS, enabled=True, supports_base=False, **kw):
    clock = clock or FakeClock()
    core = DriverCore(clock, limits, period=PERIOD, watchdog_timeout=TIMEOUT, enabled=enabled,
                      supports_base=supports_base, **kw)
    return core, clock


def tick(core, clock, position=INSIDE, seconds=PERIOD):
    clock.advance(seconds)
    return core.tick(position)


SLOW_UP = [0.0, 0.0, 0.1, 0.0, 0.0, 0.0]


# ---------------------------------------------------------------- watchdog
def test_watchdog_trips_exactly_after_the_timeout():
    core, clock = make_core()
    assert core.watchdog_tripped  # no command yet: held still, no transition reported
    first = core.tick(INSIDE)
    assert first.watchdog_changed is None and not first.ee_twist.any()
    assert core.command_ee_twist(SLOW_UP) is None
    sent = clock()
    out = tick(core, clock)
    assert out.watchdog_changed is False and out.ee_twist[2] == pytest.approx(0.1)
    clock.t = sent + TIMEOUT  # exactly the timeout old: still valid
    out = core.tick(INSIDE)
    assert out.ee_twist[2] == pytest.approx(0.1) and out.watchdog_changed is None
    clock.t = sent + TIMEOUT + 1e-6  # just past it: hold still, reported once
    out = core.tick(INSIDE)
    assert not out.ee_twist.any() and out.watchdog_changed is True
    out = tick(core, clock)
    assert not out.ee_twist.any() and out.watchdog_changed is None
    assert core.status().watchdog_tripped and core.status().message.startswith('idle')


def test_watchdog_timeout_change_takes_effect_on_the_next_tick():
    core, clock = make_core()
    core.command_ee_twist(SLOW_UP)
    assert tick(core, clock, seconds=0.1).ee_twist[2] > 0
    core.set_watchdog_timeout(0.05)
    assert not core.tick(INSIDE).ee_twist.any()
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError):
            core.set_watchdog_timeout(bad)
    assert core.watchdog_timeout == 0.05


def test_base_twist_has_its_own_watchdog_and_limits():
    core, clock = make_core(supports_base=True)
    assert core.command_base_twist([3.0, 4.0, 0.0, 0.0, 0.0, -5.0]) is None
    out = tick(core, clock)
    # planar speed clamped by norm (direction kept), yaw rate by magnitude
    np.testing.assert_allclose(out.base_twist, [0.3, 0.4, -1.0])
    assert not out.ee_twist.any()  # a base command moves no arm
    clock.advance(TIMEOUT + 0.01)
    np.testing.assert_array_equal(core.tick(INSIDE).base_twist, np.zeros(3))


def test_backend_without_base_gets_no_base_command_and_ignores_cmd_vel():
    core, clock = make_core(supports_base=False)
    assert core.command_base_twist([0.1, 0, 0, 0, 0, 0]) is None
    assert tick(core, clock).base_twist is None
    assert core.status().rejected_count == 0


# ---------------------------------------------------------------- e-stop latch
def test_estop_latch_survives_new_commands_until_cleared():
    core, clock = make_core(supports_base=True)
    core.command_ee_twist(SLOW_UP)
    core.command_base_twist([0.2, 0, 0, 0, 0, 0])
    core.command_gripper(1.0)
    assert tick(core, clock).ee_twist.any()
    assert core.engage_estop() is True and core.engage_estop() is False  # idempotent
    for _ in range(20):  # a policy keeps commanding: nothing moves
        core.command_ee_twist(SLOW_UP)
        core.command_base_twist([0.2, 0, 0, 0, 0, 0])
        core.command_gripper(0.0)
        out = tick(core, clock)
        assert not out.ee_twist.any() and not out.base_twist.any()
        assert out.gripper == 1.0  # the gripper target is held too
    status = core.status()
    assert status.estop and status.level == 'error' and status.message == 'e-stop engaged'
    assert core.clear_estop() is True
    # Commands that arrived during the e-stop do not run once it clears.
    out = tick(core, clock)
    assert not out.ee_twist.any() and not out.base_twist.any()
    core.command_ee_twist(SLOW_UP)
    assert tick(core, clock).ee_twist[2] == pytest.approx(0.1)
    assert core.clear_estop() is False


# ---------------------------------------------------------------- interlock
def test_actuation_interlock_blocks_and_needs_a_fresh_command_after_enabling():
    core, clock = make_core(enabled=False)
    core.command_ee_twist(SLOW_UP)
    core.command_gripper(0.0)
    out = tick(core, clock)
    assert not out.ee_twist.any() and out.gripper == 1.0
    assert core.status().level == 'warn' and core.status().message == 'actuation disabled'
    assert core.set_enabled(True) is True and core.set_enabled(True) is False
    # The command queued while disabled is dropped; the gripper target (not a motion
    # command that can run stale) is taken once allowed.
    out = tick(core, clock)
    assert not out.ee_twist.any() and out.gripper == 0.0
    core.command_ee_twist(SLOW_UP)
    assert tick(core, clock).ee_twist[2] == pytest.approx(0.1)
    core.set_enabled(False)
    core.command_ee_twist(SLOW_UP)
    assert not tick(core, clock).ee_twist.any()


def test_lifecycle_gate_blocks_like_the_interlock():
    core, clock = make_core(active=False)
    core.command_ee_twist(SLOW_UP)
    assert not tick(core, clock).ee_twist.any()
    assert core.status().message == 'inactive (lifecycle)' and core.status().level == 'warn'
    assert core.set_active(True) is True
    assert not tick(core, clock).ee_twist.any()  # queued before activation: dropped
    core.command_ee_twist(SLOW_UP)
    assert tick(core, clock).ee_twist[2] == pytest.approx(0.1)
    assert core.status().level == 'ok'
    core.set_enabled(False)  # both gates must allow
    core.command_ee_twist(SLOW_UP)
    assert not tick(core, clock).ee_twist.any()
    core.set_enabled(True)
    core.set_active(False)
    core.command_ee_twist(SLOW_UP)
    assert not tick(core, clock).ee_twist.any()


@pytest.mark.parametrize('user,hardware,expected', [
    (None, True, False), (None, False, True),  # unset: hardware starts disabled
    (True, True, True), (False, False, False),  # set: the user's value wins
])
def test_actuation_default_depends_on_hardware_unless_the_user_set_it(user, hardware, expected):
    assert resolve_actuation_enabled(user, is_hardware=hardware) is expected


# ---------------------------------------------------------------- limits
def test_velocity_clamped_per_linear_and_angular_part_keeping_direction():
    core, clock = make_core()
    core.command_ee_twist([3.0, 4.0, 0.0, 0.0, 0.0, 10.0])
    out = tick(core, clock)
    np.testing.assert_allclose(out.ee_twist, [0.15, 0.2, 0.0, 0.0, 0.0, 1.0])
    assert 'velocity clamped' in out.limit_reasons
    assert core.status().clamped_count == 1


def test_acceleration_limited_with_measured_and_bounded_dt():
    limits = SafetyLimits(max_linear_velocity=1.0, max_linear_acceleration=1.0,
                          max_angular_acceleration=2.0,
                          workspace_min=(-5, -5, -5), workspace_max=(5, 5, 5))
    core, clock = make_core(limits=limits)
    core.command_ee_twist([1.0, 0, 0, 0, 0, 1.0])
    first = core.tick(INSIDE)  # first tick: the nominal period
    assert first.dt == PERIOD
    np.testing.assert_allclose(first.ee_twist, [0.02, 0, 0, 0, 0, 0.04])
    core.command_ee_twist([1.0, 0, 0, 0, 0, 1.0])
    out = tick(core, clock, seconds=0.01)  # measured period
    assert out.dt == pytest.approx(0.01)
    np.testing.assert_allclose(out.ee_twist, [0.03, 0, 0, 0, 0, 0.06])
    core.command_ee_twist([1.0, 0, 0, 0, 0, 1.0])
    late = tick(core, clock, seconds=0.2)  # a stalled tick allows at most 3 periods
    assert late.dt == pytest.approx(3 * PERIOD)
    np.testing.assert_allclose(late.ee_twist, [0.09, 0, 0, 0, 0, 0.18])
    core.command_ee_twist([1.0, 0, 0, 0, 0, 1.0])
    clock.t -= 1.0  # clock jumped back: the minimum dt, not a negative one
    back = core.tick(INSIDE)
    assert back.dt == pytest.approx(1e-4)
    assert back.ee_twist[0] == pytest.approx(0.09 + 1e-4)


def test_stops_are_immediate_not_ramped():
    core, clock = make_core()
    core.command_ee_twist([0.2, 0, 0, 0, 0, 0])
    assert tick(core, clock).ee_twist[0] == pytest.approx(0.2)
    core.engage_estop()
    assert not tick(core, clock).ee_twist.any()


def test_workspace_boundary_stops_outward_motion_only():
    core, clock = make_core()
    at_top = np.array([0.5, 0.0, 0.6 - 1e-4])
    core.command_ee_twist([0.1, 0.0, 0.1, 0.0, 0.0, 0.5])
    out = tick(core, clock, position=at_top)
    np.testing.assert_allclose(out.ee_twist, [0.1, 0.0, 0.0, 0.0, 0.0, 0.5])
    assert 'workspace' in out.limit_reasons
    core.command_ee_twist([0.0, 0.0, -0.1, 0.0, 0.0, 0.0])
    assert tick(core, clock, position=at_top).ee_twist[2] == pytest.approx(-0.1)
    # Outside the box (e.g. pushed there): only motion back towards it is allowed.
    below = np.array([0.5, 0.0, -0.05])
    core.command_ee_twist([0.0, 0.0, -0.1, 0.0, 0.0, 0.0])
    assert tick(core, clock, position=below).ee_twist[2] == 0.0
    core.command_ee_twist([0.0, 0.0, 0.1, 0.0, 0.0, 0.0])
    assert tick(core, clock, position=below).ee_twist[2] == pytest.approx(0.1)
    # Unknown position: no linear motion at all.
    core.command_ee_twist([0.1, 0.0, 0.0, 0.0, 0.0, 0.2])
    out = tick(core, clock, position=[math.nan, 0.0, 0.3])
    np.testing.assert_allclose(out.ee_twist, [0, 0, 0, 0, 0, 0.2])


def test_the_users_limits_always_win():
    tight = SafetyLimits(max_linear_velocity=0.05, max_angular_velocity=0.1,
                         workspace_min=(0.2, -0.45, 0.01), workspace_max=(0.8, 0.45, 0.6))
    core, clock = make_core(limits=tight)
    huge = [1e300, -1e300, 1e300, 1e300, 1e300, -1e300]
    for _ in range(50):
        core.command_ee_twist(huge)
        out = tick(core, clock)
        assert np.linalg.norm(out.ee_twist[:3]) <= 0.05 + 1e-12
        assert np.linalg.norm(out.ee_twist[3:]) <= 0.1 + 1e-12
    assert core.limits is tight  # commands never change the configuration
    core.set_limits(SafetyLimits(max_linear_velocity=0.01, workspace_min=(0.2, -0.45, 0.01),
                                 workspace_max=(0.8, 0.45, 0.6)))
    core.command_ee_twist(huge)
    assert np.linalg.norm(tick(core, clock).ee_twist[:3]) <= 0.01 + 1e-12
    with pytest.raises(TypeError):
        core.set_limits({'max_linear_velocity': 10.0})
    assert core.limits.max_linear_velocity == 0.01


# ---------------------------------------------------------------- bad commands
@pytest.mark.parametrize('bad', [
    [math.nan, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, math.inf], [0, 0, -math.inf, 0, 0, 0],
    [0.1, 0.0], 'fast', None,
])
def test_non_finite_or_malformed_commands_are_rejected_and_never_applied(bad):
    core, clock = make_core(supports_base=True)
    core.command_ee_twist(SLOW_UP)
    assert tick(core, clock).ee_twist[2] == pytest.approx(0.1)
    assert isinstance(core.command_ee_twist(bad), str)
    assert isinstance(core.command_base_twist(bad), str)
    out = tick(core, clock)
    assert np.all(np.isfinite(out.ee_twist)) and np.all(np.isfinite(out.base_twist))
    # The last valid command stays in force until its own watchdog expires.
    assert out.ee_twist[2] == pytest.approx(0.1)
    assert core.status().rejected_count == 2


def test_gripper_targets_are_clamped_and_non_finite_ones_rejected():
    core, clock = make_core(initial_gripper=0.7)
    assert tick(core, clock).gripper == 0.7  # holds the measured opening until commanded
    assert core.command_gripper(1.5) is None
    assert tick(core, clock).gripper == 1.0
    assert core.command_gripper(-3.0) is None
    assert tick(core, clock).gripper == 0.0
    for position, effort in ((math.nan, 1.0), (0.5, math.inf), ('x', 1.0)):
        assert 'cmd/gripper' in core.command_gripper(position, effort)
    assert tick(core, clock).gripper == 0.0
    assert core.status().rejected_count == 3
    # Gripper targets are not subject to the watchdog (a grasp must keep holding).
    clock.advance(10 * TIMEOUT)
    assert core.tick(INSIDE).gripper == 0.0


# ---------------------------------------------------------------- stamps
def test_stale_stamped_command_is_rejected():
    core, clock = make_core()
    why = core.command_ee_twist(SLOW_UP, stamp=clock() - TIMEOUT - 0.01)
    assert 'stale' in why and 'cmd/ee_twist' in why
    assert not tick(core, clock).ee_twist.any()
    assert core.status().rejected_count == 1


def test_delayed_command_runs_only_until_its_stamp_plus_timeout():
    core, clock = make_core()
    stamp = clock() - 0.2  # delayed 0.2 s in transit
    assert core.command_ee_twist(SLOW_UP, stamp=stamp) is None
    clock.t = stamp + TIMEOUT
    assert core.tick(INSIDE).ee_twist[2] == pytest.approx(0.1)
    clock.t = stamp + TIMEOUT + 1e-6  # 0.05 s after arrival, not 0.25 s
    assert not core.tick(INSIDE).ee_twist.any()


@pytest.mark.parametrize('stamp', [None, 0.0, 'future'])
def test_unstamped_or_future_commands_count_from_arrival(stamp):
    core, clock = make_core()
    arrival = clock()
    if stamp == 'future':
        stamp = arrival + 5.0  # skewed clock of the sender
    assert core.command_ee_twist(SLOW_UP, stamp=stamp) is None
    clock.t = arrival + TIMEOUT
    assert core.tick(INSIDE).ee_twist[2] == pytest.approx(0.1)
    clock.t = arrival + TIMEOUT + 1e-6
    assert not core.tick(INSIDE).ee_twist.any()


def test_stale_base_command_is_rejected():
    core, clock = make_core(supports_base=True)
    why = core.command_base_twist([0.1, 0, 0, 0, 0, 0], stamp=clock() - 1.0)
    assert 'cmd_vel is stale' in why
    assert not tick(core, clock).base_twist.any()


# ---------------------------------------------------------------- shutdown / config
def test_stop_output_holds_still_and_keeps_the_gripper():
    core, clock = make_core(supports_base=True)
    core.command_gripper(0.2)
    core.command_ee_twist(SLOW_UP)
    tick(core, clock)
    stop = core.stop_output()
    assert not stop.ee_twist.any() and not stop.base_twist.any() and stop.gripper == 0.2


@pytest.mark.parametrize('period', [0.0, -0.01, math.nan, math.inf])
def test_bad_period_is_refused(period):
    with pytest.raises(ValueError):
        DriverCore(FakeClock(), LIMITS, period=period, watchdog_timeout=TIMEOUT, enabled=True)
