"""The node fault campaign on a joint-space robot: stops are holds, on time, and recover."""

import numpy as np
import pytest
from test_faults import assert_fault_handled, report

from vla_ros.reliability import campaign_joints
from vla_ros.reliability.campaign_joints import STILL_WINDOW, joint_stop


def _samples(changes_until, end=2.0, driver_period=0.02, ticks_per_control=3):
    """Driver ticks repeating each control tick's target; targets change until a time."""
    last = round(changes_until / driver_period)
    return [(k * driver_period, np.array([0.01 * (min(k, last) // ticks_per_control), 0.0]))
            for k in range(round(end / driver_period))]


def test_a_hold_is_the_first_target_that_stays_put():
    samples = _samples(changes_until=1.02)
    stop, moved = joint_stop(samples, fault_time=0.5)
    # the last change is the control tick at 1.02 s; repeats between ticks are not a stop
    assert stop == pytest.approx(1.02) and not moved
    assert STILL_WINDOW > 0.05


def test_moving_again_before_the_cause_is_removed_is_reported():
    samples = _samples(changes_until=1.02)
    samples += [(2.0 + 0.02 * k, np.array([1.0 + 0.01 * k, 0.0])) for k in range(20)]
    stop, moved = joint_stop(samples, fault_time=0.5, fault_end=3.0)
    assert stop == pytest.approx(1.02) and moved
    assert not joint_stop(samples, fault_time=0.5, fault_end=1.9)[1]
    # one or two settling adjustments of the hold (measured joints lag) are not motion
    settled = _samples(changes_until=1.02) + [(2.0, np.array([0.5, 0.0])),
                                              (2.02, np.array([0.5, 0.001]))]
    assert not joint_stop(settled, fault_time=0.5, fault_end=3.0)[1]


def test_never_still_is_no_stop():
    assert joint_stop(_samples(changes_until=10.0), fault_time=0.5) == (None, False)


@pytest.mark.graph
def test_joint_node_faults_hold_in_time_and_recover(ros_context):
    run = campaign_joints.run_joint_node_faults(ros_context, hold_for=0.3)
    results = run.results
    report(results)
    assert run.unsafe_commands == 0, run.unsafe_examples
    assert run.applied_twists_checked > 100  # joint targets checked against the limits
    assert [r.fault for r in results] == [
        'joint_policy_raise', 'joint_policy_nan', 'joint_policy_wrong_shape',
        'joint_policy_hang', 'joint_camera_stopped', 'joint_estop_service']
    for result in results:
        assert_fault_handled(result)
    reasons = {r.fault.removeprefix('joint_'): r.reason for r in results}
    assert 'injected failure' in reasons['policy_raise']
    assert 'non-finite' in reasons['policy_nan']
    assert 'shape' in reasons['policy_wrong_shape']
    assert 'deadline' in reasons['policy_hang']
    assert 'stale' in reasons['camera_stopped']
