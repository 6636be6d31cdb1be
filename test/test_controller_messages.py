"""Messages for ros2_control controllers and MoveIt Servo, built without ROS.

What a joint_trajectory_controller, a forward command controller and MoveIt Servo receive
from the ``ros2_control`` / ``moveit_servo`` backends: names, order, units, timing, the
gripper mapping, the joint_states cache, and clear errors for bad input.
"""

import math

import numpy as np
import pytest
from builtin_interfaces.msg import Time

from vla_ros.drivers.backend import BackendError, create_backend
from vla_ros.drivers.controller_messages import (
    GripperMapping,
    JointStateCache,
    check_gripper_settings,
    default_command_topic,
    duration,
    forward_command,
    joint_trajectory,
    twist_stamped,
)

ARM = ('joint1', 'joint2', 'joint3')


def test_joint_trajectory_is_one_point_in_the_given_order_starting_now():
    msg = joint_trajectory(ARM, [0.1, -0.2, 0.3], 0.04)
    assert type(msg).__name__ == 'JointTrajectory'
    assert list(msg.joint_names) == list(ARM)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (0, 0)  # JTC: start now
    (point,) = msg.points
    assert list(point.positions) == [0.1, -0.2, 0.3]
    # Positions only: JTC (Jazzy on) refuses a last point with non-zero velocities.
    assert list(point.velocities) == [] and list(point.accelerations) == []
    assert (point.time_from_start.sec, point.time_from_start.nanosec) == (0, 40_000_000)
    assert duration(1.5) == (1, 500_000_000) and duration(2.0) == (2, 0)


@pytest.mark.parametrize('names, positions, ahead, match', [
    (ARM, [0.1, 0.2], 0.1, '2 values for 3 joints'),
    (ARM, [0.1, math.nan, 0.3], 0.1, 'non-finite value at index 1'),
    (ARM, [0.1, 0.2, math.inf], 0.1, 'non-finite value at index 2'),
    (ARM, [0.1, 0.2, 0.3], 0.0, 'time_from_start must be > 0'),
    (ARM, [0.1, 0.2, 0.3], math.nan, 'time_from_start must be > 0'),
    (('a', 'a'), [0.1, 0.2], 0.1, 'repeat'),
    ((), [], 0.1, 'non-empty'),
    (('a', ''), [0.1, 0.2], 0.1, 'non-empty'),
])
def test_joint_trajectory_refuses_bad_input(names, positions, ahead, match):
    with pytest.raises(ValueError, match=match):
        joint_trajectory(names, positions, ahead)


def test_forward_command_keeps_the_order_and_refuses_bad_input():
    msg = forward_command(np.array([0.5, -1.0, 2.0]), 3)
    assert type(msg).__name__ == 'Float64MultiArray'
    assert list(msg.data) == [0.5, -1.0, 2.0] and not msg.layout.dim
    with pytest.raises(ValueError, match='4 values for 3 joints'):
        forward_command([1, 2, 3, 4], 3)
    with pytest.raises(ValueError, match='non-finite'):
        forward_command([1, -math.inf, 3], 3)
    with pytest.raises(ValueError, match='not a vector of numbers'):
        forward_command(['a', 'b', 'c'], 3)


def test_default_topics_are_the_controllers_usual_ones():
    assert default_command_topic('joint_trajectory', 'joint_position') == \
        '/joint_trajectory_controller/joint_trajectory'
    assert default_command_topic('forward_command', 'joint_position') == \
        '/forward_position_controller/commands'
    assert default_command_topic('forward_command', 'joint_velocity') == \
        '/forward_velocity_controller/commands'
    with pytest.raises(ValueError, match="does not take command_interface 'joint_velocity'"):
        default_command_topic('joint_trajectory', 'joint_velocity')
    with pytest.raises(ValueError, match='unknown output'):
        default_command_topic('effort', 'joint_position')


def test_twist_for_servo_carries_frame_stamp_and_si_units():
    stamp = Time(sec=12, nanosec=345)
    msg = twist_stamped([0.1, -0.05, 0.02, 0.0, 0.3, -0.4], 'base_link', stamp)
    assert msg.header.frame_id == 'base_link'
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 345)
    t = msg.twist
    assert [t.linear.x, t.linear.y, t.linear.z] == [0.1, -0.05, 0.02]  # m/s, unscaled
    assert [t.angular.x, t.angular.y, t.angular.z] == [0.0, 0.3, -0.4]  # rad/s
    with pytest.raises(ValueError, match='non-finite'):
        twist_stamped([0, 0, math.nan, 0, 0, 0], 'base_link', stamp)
    with pytest.raises(ValueError, match='5 values for 6'):
        twist_stamped([0] * 5, 'base_link', stamp)
    with pytest.raises(ValueError, match='needs a frame_id'):
        twist_stamped([0] * 6, '', stamp)


def test_gripper_mapping_is_linear_clamped_and_invertible():
    fingers = GripperMapping(closed=0.0, open=0.04)
    assert fingers.position(0.0) == 0.0 and fingers.position(1.0) == 0.04
    assert fingers.position(0.25) == pytest.approx(0.01)
    assert fingers.position(1.7) == 0.04 and fingers.position(-3.0) == 0.0
    assert fingers.opening(0.01) == pytest.approx(0.25)
    assert fingers.opening(0.05) == 1.0 and math.isnan(fingers.opening(math.nan))
    # A gripper whose joint closes towards larger values (e.g. Robotiq 0 open, 0.8 closed).
    robotiq = GripperMapping(closed=0.8, open=0.0)
    assert robotiq.position(1.0) == 0.0 and robotiq.position(0.0) == 0.8
    assert robotiq.opening(0.2) == pytest.approx(0.75)
    with pytest.raises(ValueError, match='finite'):
        fingers.position(math.nan)
    with pytest.raises(ValueError, match='equal'):
        GripperMapping(0.1, 0.1)
    with pytest.raises(ValueError, match='finite'):
        GripperMapping(0.0, math.inf)


def test_gripper_settings_need_a_joint_for_a_topic():
    assert check_gripper_settings('', 'forward_command', '', 0.0, 0.04) is None
    mapping = check_gripper_settings('/g/commands', 'joint_trajectory', 'finger', 0.0, 0.04)
    assert mapping == GripperMapping(0.0, 0.04)
    with pytest.raises(BackendError, match='needs gripper_joint'):
        check_gripper_settings('/g/commands', 'forward_command', '', 0.0, 0.04)
    with pytest.raises(BackendError, match='gripper_output'):
        check_gripper_settings('/g/commands', 'action', 'finger', 0.0, 0.04)
    with pytest.raises(BackendError, match='equal'):
        check_gripper_settings('/g/commands', 'forward_command', 'finger', 0.02, 0.02)


# ------------------------------------------------------------------ joint_states cache

def test_cache_orders_the_arm_merges_messages_and_keeps_the_oldest_stamp():
    cache = JointStateCache(ARM, 'finger', GripperMapping(0.0, 0.04))
    assert cache.missing() == ARM + ('finger',)
    with pytest.raises(RuntimeError, match='joint1, joint2, joint3, finger'):
        cache.state()
    # joint_state_broadcaster's order is not the controller's; other joints come along.
    cache.update(10.0, ['joint3', 'other', 'joint1', 'joint2'], [3.0, 9.0, 1.0, 2.0],
                 [0.3, 0.9, 0.1, 0.2])
    assert cache.missing() == ('finger',) and not cache.ready
    cache.update(10.5, ['finger'], [0.03])  # a second publisher, without velocities
    state = cache.state()
    assert state.joint_names == ARM + ('finger',)
    np.testing.assert_array_equal(state.joint_positions, [1.0, 2.0, 3.0, 0.03])
    np.testing.assert_array_equal(state.joint_velocities[:3], [0.1, 0.2, 0.3])
    assert math.isnan(state.joint_velocities[3])
    assert state.gripper == pytest.approx(0.75)
    assert state.stamp == 10.0  # the arm's measurement is the older one
    assert np.isnan(state.ee_position).all() and np.isnan(state.ee_orientation).all()
    cache.update(11.0, ['joint1', 'joint2', 'joint3'], [1.5, 2.5, 3.5])
    assert cache.state().stamp == 10.5


@pytest.mark.parametrize('names, positions, velocities, match', [
    (['joint1', 'joint2', 'joint3'], [1.0, 2.0], [], '3 names but 2 positions'),
    (['joint1', 'joint2', 'joint3'], [1.0, 2.0, 3.0], [0.0], '3 names but 1 velocities'),
    (['joint1', 'joint1', 'joint3'], [1.0, 2.0, 3.0], [], 'repeats'),
    (['joint1', 'joint2', 'joint3'], [1.0, math.nan, 3.0], [], "'joint2' is nan"),
])
def test_cache_rejects_a_malformed_message_whole_and_keeps_what_it_had(
        names, positions, velocities, match):
    cache = JointStateCache(ARM)
    cache.update(1.0, list(ARM), [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=match):
        cache.update(2.0, names, positions, velocities)
    state = cache.state()
    np.testing.assert_array_equal(state.joint_positions, [0.1, 0.2, 0.3])
    assert state.stamp == 1.0 and math.isnan(state.gripper)


def test_cache_ignores_non_finite_values_of_joints_it_does_not_use():
    cache = JointStateCache(ARM)
    cache.update(1.0, ['joint1', 'joint2', 'joint3', 'wheel'], [0.1, 0.2, 0.3, math.nan])
    np.testing.assert_array_equal(cache.state().joint_positions, [0.1, 0.2, 0.3])


def test_cache_without_configured_joints_takes_the_first_message():
    cache = JointStateCache()
    assert cache.missing() == ('*',)
    cache.update(1.0, ['b', 'a'], [2.0, 1.0])
    assert cache.arm_joints == ('b', 'a') and cache.state().joint_names == ('b', 'a')


def test_cache_refuses_a_gripper_joint_without_mapping_or_inside_the_arm():
    with pytest.raises(ValueError, match='closed/open'):
        JointStateCache(ARM, 'finger')
    with pytest.raises(ValueError, match='also an arm joint'):
        JointStateCache(ARM, 'joint2', GripperMapping(0.0, 1.0))


# ------------------------------------------------------------------ backends without ROS

def test_builtin_controller_backends_are_hardware_and_leave_joint_states_to_the_robot():
    control = create_backend('ros2_control', {})
    servo = create_backend('moveit_servo', {})
    for backend in (control, servo):
        assert backend.is_hardware and not backend.publishes_joint_states
    assert control.joint_interfaces == ('joint_position', 'joint_velocity')
    assert servo.joint_interfaces == ()  # end-effector twists only


def test_ros2_control_refuses_twists_and_use_before_start():
    control = create_backend('ros2_control', {})
    with pytest.raises(BackendError, match='joint commands only'):
        control.send_command(np.array([0.1, 0, 0, 0, 0, 0]), 1.0, None, 0.02)
    with pytest.raises(BackendError, match='attach_node'):
        control.start()
    with pytest.raises(BackendError, match='not started'):
        control.send_joint_command(np.zeros(3), None, 1.0, 0.02)
    with pytest.raises(RuntimeError, match='no state'):
        control.read_state()


@pytest.mark.parametrize('values, match', [
    ({'ros2_control.output': 'effort'}, "output 'effort' is not one of"),
    ({'ros2_control.gripper_topic': '/g'}, 'needs gripper_joint'),
])
def test_ros2_control_parameters_are_checked(values, match):
    with pytest.raises(BackendError, match=match):
        create_backend('ros2_control', values)


def test_servo_parameters_are_checked():
    with pytest.raises(BackendError, match="activation 'start' is not one of"):
        create_backend('moveit_servo', {'moveit_servo.activation': 'start'})
    with pytest.raises(BackendError, match='twist_topic must name a topic'):
        create_backend('moveit_servo', {'moveit_servo.twist_topic': ''})
    servo = create_backend('moveit_servo', {})
    with pytest.raises(BackendError, match='not started'):
        servo.send_command(np.zeros(6), 1.0, None, 0.02)
