"""Fuzzed commands and parameters into the driver node through a real graph (hypothesis).

A dry-run driver with a mobile base gets twists, base twists and gripper commands with
NaN/Inf/huge values, e-stop sequences, and every writable parameter with values of every
type. NaN/Inf must be dropped with a reason, everything else clamped: nothing outside the
limits in force may reach the backend (checked on ~/applied_twist and on the backend calls
themselves), and the node must keep ticking.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.reliability import fuzz
from vla_ros.reliability.invariants import AppliedTwistChecker, Envelope, measure_stop

pytestmark = [pytest.mark.graph]

FAST = fuzz.FUZZ_SETTINGS


@pytest.fixture(scope='module')
def harness(module_ros_context):
    h = fuzz.DriverFuzzHarness(module_ros_context)
    try:
        yield h
    finally:
        h.close()


# ---------------------------------------------------------------- pure checkers
def test_checker_flags_each_kind_of_unsafe_twist():
    envelope = Envelope(0.25, 1.0, 2.0, 8.0, ((0.2, -0.45, 0.01), (0.8, 0.45, 0.6)))
    checker = AppliedTwistChecker(envelope, period=0.02)
    assert checker.check(0.0, [0.0] * 6, (0.5, 0.0, 0.3)) == []
    assert checker.check(0.02, [0.04, 0, 0, 0, 0, 0], (0.5, 0.0, 0.3)) == []  # 2 m/s^2
    assert 'grew' in checker.check(0.04, [0.2, 0, 0, 0, 0, 0], (0.5, 0, 0.3))[0]
    assert 'linear speed' in checker.check(0.06, [0.3, 0, 0, 0, 0, 0], None)[0]
    assert 'non-finite' in checker.check(0.08, [math.nan, 0, 0, 0, 0, 0], None)[0]
    checker.reset()
    assert 'further out' in checker.check(0.1, [0.01, 0, 0, 0, 0, 0], (0.85, 0, 0.3))[0]
    checker.reset()
    assert checker.check(0.12, [-0.01, 0, 0, 0, 0, 0], (0.85, 0, 0.3)) == []  # heading back
    # A limit change: samples around it may use either limit, later ones only the new one.
    checker.set_envelope(Envelope(0.1, 1.0, 2.0, 8.0), when=1.0)
    checker.reset()
    assert checker.check(1.2, [0.2, 0, 0, 0, 0, 0], None) == []
    checker.reset()
    assert checker.check(2.0, [0.2, 0, 0, 0, 0, 0], None)


def test_measure_stop():
    samples = [(t / 50, np.array([0.1 if t < 20 else 0.0] + [0] * 5)) for t in range(40)]
    m = measure_stop(samples, fault_time=0.3)
    assert m.latency == pytest.approx(0.1) and not m.moved_during_fault
    samples.append((0.9, np.array([0.1, 0, 0, 0, 0, 0])))
    assert measure_stop(samples, 0.3, fault_end=1.0).moved_during_fault
    assert measure_stop(samples[:10], 0.3).stop_time is None


# ------------------------------------------------------------------ the graph
def test_monitor_detects_an_unsafe_command(harness):
    """Negative control: an over-limit twist on the watched topic is counted."""
    from geometry_msgs.msg import TwistStamped

    from vla_ros.nodes import qos

    pub = harness.peer.create_publisher(TwistStamped, 'vla_driver/applied_twist', qos.STATUS)
    try:
        msg = harness._twist_msg([5.0, 0, 0, 0, 0, 0], 'fake')
        assert fuzz.wait_until(lambda: pub.get_subscription_count() > 0, 5.0)
        pub.publish(msg)
        assert fuzz.wait_until(lambda: harness.monitor.unsafe_count() > 0, 3.0)
        assert 'linear speed' in harness.monitor.unsafe[0][2][0]
    finally:
        harness.peer.destroy_publisher(pub)
        with harness.monitor.lock:
            harness.monitor.unsafe.clear()
            harness.monitor.applied_checker.reset()


def fuzz_target(h, kind, strategy, check, examples=60, must_reject=True):
    """Run ``check`` on ``examples`` hypothesis cases; assert counts and safety after."""
    tried, rejected = h.cases[kind], h.rejected[kind]

    @settings(FAST, max_examples=examples)
    @given(case=strategy)
    def run(case):
        check(*case) if isinstance(case, tuple) else check(case)

    run()
    tried, rejected = h.cases[kind] - tried, h.rejected[kind] - rejected
    print(f'\nfuzz driver {kind}: {tried} cases, {rejected} refused with a reason, '
          f'{h.monitor.applied_checker.checked} applied twists checked')
    assert tried >= examples
    if must_reject:
        assert 0 < rejected < tried
    assert h.monitor.audit() == []


def test_ee_twists(harness):
    fuzz_target(harness, 'ee_twist', fuzz.twist_cases(), harness.check_ee_twist)


def test_base_twists(harness):
    fuzz_target(harness, 'cmd_vel', fuzz.twist_cases(), harness.check_cmd_vel)


def test_gripper_commands(harness):
    fuzz_target(harness, 'gripper', st.tuples(fuzz.wild_float, fuzz.wild_float),
                harness.check_gripper)


def test_estop_sequences(harness):
    fuzz_target(harness, 'estop', st.lists(st.booleans(), min_size=1, max_size=3).map(
        lambda v: (tuple(v),)), harness.check_estop_sequence, examples=8, must_reject=False)


def test_huge_commands_are_clamped_not_dropped(harness):
    """A finite but absurd command moves the arm at the speed limit, never faster."""
    import time

    t0 = fuzz.wall_time()
    while fuzz.wall_time() < t0 + 0.4:  # 0.25 m/s at 2 m/s^2 takes 0.125 s
        harness.check_ee_twist(fuzz.TwistCase((1e300, 0.0, 0.0, 0.0, 0.0, -1e300)))
        time.sleep(0.02)
    applied = [t for _, t in harness.monitor.applied_since(t0)]
    speeds = [np.linalg.norm(t[:3]) for t in applied]
    limit = harness.driver.limits.max_linear_velocity
    assert max(speeds) <= limit + 1e-9
    # Either the arm reached the speed limit or the workspace wall stopped it.
    assert max(speeds) > 0.5 * limit or harness.monitor.poses[-1][1][0] > 0.75


def test_parameters(harness):
    fuzz_target(harness, 'parameter', fuzz.parameter_cases(harness.driver),
                harness.check_parameter, examples=150)


def test_drops_are_reported_in_diagnostics(harness):
    """Operators see dropped commands in /diagnostics, not only in the log."""
    harness.check_ee_twist(fuzz.TwistCase((math.nan,) * 6))
    diagnostics = harness.monitor.diagnostics
    assert fuzz.wait_until(lambda: any(int(v.get('rejected_count', 0)) > 0
                                       for v in diagnostics.values()), 3.0)
