"""The ``ros2_control`` and ``moveit_servo`` backends on a real (localhost) ROS graph.

Each test does what the driver node does (docs/joint_space.md): build the backend from its
parameters, ``attach_node`` to a node that declares the driver's ``command_interface`` /
``joint_names`` / ``ee_frame``, ``start``, then one command per tick. A fake robot
publishes ``joint_states`` (and serves Servo's start service); a subscriber checks what
the controllers / Servo would receive: topic, type, names, order, units, timing.
"""

import threading
import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from vla_ros.drivers.backend import BackendError, create_backend

pytestmark = pytest.mark.graph

ARM = ['joint1', 'joint2', 'joint3']


class FakeRobot:
    """joint_states at 100 Hz, Servo's start service, and recorders for any topic."""

    def __init__(self, context, joints=None, positions=None, pose_frame=None):
        self.node = Node('fake_robot', context=context)
        self.joints = joints if joints is not None else ['joint3', 'finger', 'joint1',
                                                         'joint2']
        self.positions = positions if positions is not None else [0.3, 0.03, 0.1, 0.2]
        self.received = {}
        self.start_calls = 0
        self._pub = self.node.create_publisher(JointState, '/joint_states', 10)
        self._pose_pub = self.node.create_publisher(PoseStamped, '/tcp_pose', 10)
        self.pose_frame = pose_frame
        self.node.create_timer(0.01, self._tick)
        self.node.create_service(Trigger, '/servo_node/start_servo', self._start)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _tick(self):
        msg = JointState(name=self.joints, position=self.positions)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self._pub.publish(msg)
        if self.pose_frame is not None:
            pose = PoseStamped()
            pose.header.frame_id = self.pose_frame
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.5, 0.1, 0.3
            pose.pose.orientation.w = 1.0
            self._pose_pub.publish(pose)

    def _start(self, request, response):
        self.start_calls += 1
        response.success = True
        return response

    def record(self, msg_type, topic):
        """Keep every message on ``topic`` in ``received[topic]``."""
        self.received[topic] = []
        self.node.create_subscription(msg_type, topic, self.received[topic].append, 10)

    def wait_for(self, topic, count, timeout=30.0):  # bounds a failure only
        deadline = time.monotonic() + timeout
        while len(self.received[topic]) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.received[topic]

    def close(self):
        self.executor.shutdown()
        self._thread.join(timeout=5.0)
        self.node.destroy_node()


@pytest.fixture
def robot(ros_context):
    made = []

    def make(**kwargs):
        made.append(FakeRobot(ros_context, **kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def driver_node(ros_context):
    """A node with the driver's parameters the backends read (as the driver declares them)."""
    nodes = []

    def make(command_interface='joint_position', joint_names=ARM, ee_frame='base_link'):
        node = Node('vla_driver', context=ros_context, parameter_overrides=[
            Parameter('command_interface', value=command_interface),
            Parameter('joint_names', value=list(joint_names)),
            Parameter('ee_frame', value=ee_frame)],
            automatically_declare_parameters_from_overrides=True)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.destroy_node()


def attached(name, node, **values):
    backend = create_backend(name, values)
    backend.attach_node(node)
    return backend


def wait_subscribed(publisher_topic_node, topic, timeout=30.0):
    """Wait until a subscriber matched our publisher (so the first message is not lost)."""
    deadline = time.monotonic() + timeout
    while publisher_topic_node.count_subscribers(topic) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)


# ------------------------------------------------------------------ ros2_control

def test_joint_trajectory_reaches_the_controller_topic_in_the_controllers_order(
        robot, driver_node):
    fake = robot()
    topic, gripper_topic = '/joint_trajectory_controller/joint_trajectory', '/gripper/commands'
    from trajectory_msgs.msg import JointTrajectory

    fake.record(JointTrajectory, topic)
    fake.record(Float64MultiArray, gripper_topic)
    node = driver_node('joint_position')
    backend = attached('ros2_control', node, **{
        'ros2_control.gripper_topic': gripper_topic, 'ros2_control.gripper_joint': 'finger',
        'ros2_control.gripper_closed': 0.0, 'ros2_control.gripper_open': 0.04})
    backend.start()
    # The measured state, in the driver's joint order, gripper opening from its joint.
    state = backend.read_state()
    assert state.joint_names == ('joint1', 'joint2', 'joint3', 'finger')
    np.testing.assert_allclose(state.joint_positions, [0.1, 0.2, 0.3, 0.03])
    assert state.gripper == pytest.approx(0.75) and np.isnan(state.ee_position).all()
    assert backend.dof == 3

    wait_subscribed(node, topic)
    wait_subscribed(node, gripper_topic)
    backend.send_joint_command(np.array([0.11, 0.21, 0.31]), None, 0.75, 0.02)
    backend.send_joint_command(np.array([0.12, 0.22, 0.32]), None, 0.75, 0.02)
    backend.send_joint_command(np.array([0.13, 0.23, 0.33]), None, 0.25, float('nan'))
    (first, second, third) = fake.wait_for(topic, 3)
    assert list(first.joint_names) == ARM
    assert list(first.points[0].positions) == [0.11, 0.21, 0.31]
    assert list(third.points[0].positions) == [0.13, 0.23, 0.33]
    assert (first.header.stamp.sec, first.header.stamp.nanosec) == (0, 0)
    for msg in (first, third):  # two driver periods; a bad dt keeps the last good one
        ahead = msg.points[0].time_from_start
        assert (ahead.sec, ahead.nanosec) == (0, 40_000_000)
    # The gripper: sent when the target changes, as the joint's position.
    grips = fake.wait_for(gripper_topic, 2)
    time.sleep(0.1)
    assert [list(m.data) for m in grips] == [[pytest.approx(0.03)], [pytest.approx(0.01)]]
    backend.stop()
    assert node.count_publishers(topic) == 0  # released: a new configure starts clean


def test_time_from_start_parameter_and_a_trajectory_gripper(robot, driver_node):
    from trajectory_msgs.msg import JointTrajectory

    fake = robot()
    topic = '/arm_controller/joint_trajectory'
    gripper_topic = '/gripper_controller/joint_trajectory'
    fake.record(JointTrajectory, topic)
    fake.record(JointTrajectory, gripper_topic)
    node = driver_node('joint_position')
    backend = attached('ros2_control', node, **{
        'ros2_control.command_topic': topic, 'ros2_control.time_from_start': 0.25,
        'ros2_control.gripper_topic': gripper_topic, 'ros2_control.gripper_joint': 'finger',
        'ros2_control.gripper_output': 'joint_trajectory',
        'ros2_control.gripper_time_from_start': 0.5})
    backend.start()
    wait_subscribed(node, topic)
    wait_subscribed(node, gripper_topic)
    backend.send_joint_command(np.array([0.1, 0.2, 0.3]), None, 1.0, 0.02)
    (arm,) = fake.wait_for(topic, 1)
    assert (arm.points[0].time_from_start.sec, arm.points[0].time_from_start.nanosec) == \
        (0, 250_000_000)
    (grip,) = fake.wait_for(gripper_topic, 1)
    assert list(grip.joint_names) == ['finger'] and list(grip.points[0].positions) == [0.04]
    assert (grip.points[0].time_from_start.sec, grip.points[0].time_from_start.nanosec) == \
        (0, 500_000_000)
    backend.stop()


def test_forward_velocity_commands_hold_with_zeros_and_stop_with_zeros(robot, driver_node):
    fake = robot(joints=ARM, positions=[0.0, 0.0, 0.0])
    topic = '/forward_velocity_controller/commands'
    fake.record(Float64MultiArray, topic)
    node = driver_node('joint_velocity')
    backend = attached('ros2_control', node, **{'ros2_control.output': 'forward_command'})
    backend.start()
    wait_subscribed(node, topic)
    backend.send_joint_command(None, None, float('nan'), 0.02)  # interlock off: nothing yet
    backend.send_joint_command(None, np.array([0.5, -0.25, 0.125]), float('nan'), 0.02)
    backend.send_joint_command(None, None, float('nan'), 0.02)  # off again: one zero command
    backend.send_joint_command(None, None, float('nan'), 0.02)  # then nothing
    backend.stop()
    msgs = fake.wait_for(topic, 3)
    time.sleep(0.2)  # nothing more arrives
    assert [list(m.data) for m in msgs] == [[0.5, -0.25, 0.125], [0.0] * 3, [0.0] * 3]


def test_forward_position_topic_and_a_given_topic(robot, driver_node):
    robot(joints=ARM, positions=[0.0, 0.0, 0.0])
    node = driver_node('joint_position')
    backend = attached('ros2_control', node, **{'ros2_control.output': 'forward_command'})
    assert backend.topic == '/forward_position_controller/commands'
    backend.release()
    backend = attached('ros2_control', node, **{
        'ros2_control.output': 'forward_command', 'ros2_control.command_topic': '/arm/cmd'})
    assert backend.topic == '/arm/cmd' and node.count_publishers('/arm/cmd') == 1
    backend.release()


def test_no_joint_states_is_a_clear_error_naming_the_topic(driver_node):
    node = driver_node('joint_position')
    backend = attached('ros2_control', node, **{
        'ros2_control.joint_states_topic': '/nobody/joint_states',
        'ros2_control.state_timeout': 0.3})
    began = time.monotonic()
    with pytest.raises(BackendError, match=r"no usable joint_states on '/nobody/joint_states' "
                       r'within 0.3 s \(no message at all\)'):
        backend.start()
    assert time.monotonic() - began < 3.0
    with pytest.raises(RuntimeError, match='no joint_states measurement yet'):
        backend.read_state()  # nothing invented
    backend.stop()


def test_joint_states_without_a_configured_joint_name_it(robot, driver_node):
    robot(joints=['joint1', 'joint2'], positions=[0.0, 0.0])
    backend = attached('ros2_control', driver_node('joint_position'),
                       **{'ros2_control.state_timeout': 0.5})
    with pytest.raises(BackendError, match='messages without joint3'):
        backend.start()
    backend.stop()


@pytest.mark.parametrize('interface, values, match', [
    ('ee_twist', {}, 'drives joints only'),
    ('joint_velocity', {}, "does not take command_interface 'joint_velocity'"),
])
def test_ros2_control_refuses_what_its_controllers_cannot_take(driver_node, interface, values,
                                                              match):
    backend = create_backend('ros2_control', values)
    with pytest.raises(BackendError, match=match):
        backend.attach_node(driver_node(interface))


def test_ros2_control_needs_joint_names(driver_node):
    backend = create_backend('ros2_control', {})
    with pytest.raises(BackendError, match='needs joint_names'):
        backend.attach_node(driver_node('joint_position', joint_names=['']))


# ------------------------------------------------------------------ MoveIt Servo

def test_servo_gets_one_stamped_twist_per_tick_in_the_driver_frame(robot, driver_node):
    fake = robot()
    topic = '/servo_node/delta_twist_cmds'
    fake.record(TwistStamped, topic)
    node = driver_node('ee_twist', ee_frame='panda_link0')
    backend = attached('moveit_servo', node, **{'moveit_servo.activation': 'start_servo'})
    backend.start()
    assert fake.start_calls == 1  # Humble's ~/start_servo was called
    wait_subscribed(node, topic)
    twists = [np.array([0.1, 0.0, -0.05, 0.0, 0.2, 0.0]), np.zeros(6),
              np.array([0.0, 0.02, 0.0, -0.3, 0.0, 0.1])]
    before = node.get_clock().now().nanoseconds * 1e-9
    for twist in twists:
        backend.send_command(twist, 1.0, None, 0.02)
    after = node.get_clock().now().nanoseconds * 1e-9
    msgs = fake.wait_for(topic, 3)
    assert len(msgs) == 3  # one per driver tick, the zero hold included
    for msg, twist in zip(msgs, twists, strict=True):
        assert msg.header.frame_id == 'panda_link0'
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        assert before <= stamp <= after  # sent now: Servo drops stale commands
        got = [msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z,
               msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z]
        np.testing.assert_array_equal(got, twist)  # m/s and rad/s as limited
    backend.stop()
    (last,) = fake.wait_for(topic, 4)[3:]
    assert last.twist.linear.x == 0.0 and last.twist.angular.y == 0.0  # stop: zero twist
    assert node.count_publishers(topic) == 0  # released


def test_servo_twist_frame_parameter_and_end_effector_pose(robot, driver_node):
    robot(pose_frame='tool_base')
    node = driver_node('ee_twist', ee_frame='base_link')
    backend = attached('moveit_servo', node, **{
        'moveit_servo.activation': 'none', 'moveit_servo.frame_id': 'tool_base',
        'moveit_servo.ee_pose_topic': '/tcp_pose'})
    assert backend.frame == 'tool_base'
    backend.start()
    deadline = time.monotonic() + 5.0
    while np.isnan(backend.read_state().ee_position).any() and time.monotonic() < deadline:
        rclpy_spin_once(node)
    state = backend.read_state()
    np.testing.assert_allclose(state.ee_position, [0.5, 0.1, 0.3])
    np.testing.assert_allclose(state.ee_orientation, [1.0, 0.0, 0.0, 0.0])
    backend.stop()


def test_servo_ignores_a_pose_in_another_frame(robot, driver_node):
    robot(pose_frame='world')
    node = driver_node('ee_twist', ee_frame='base_link')
    backend = attached('moveit_servo', node, **{
        'moveit_servo.activation': 'none', 'moveit_servo.ee_pose_topic': '/tcp_pose'})
    backend.start()
    for _ in range(30):
        rclpy_spin_once(node)
    assert np.isnan(backend.read_state().ee_position).all()  # unknown, never wrong
    backend.stop()


def test_servo_activation_that_cannot_happen_fails_start(robot, driver_node):
    robot()
    node = driver_node('ee_twist')
    backend = attached('moveit_servo', node, **{
        'moveit_servo.activation': 'start_servo', 'moveit_servo.servo_node': '/other_servo',
        'moveit_servo.state_timeout': 0.3})
    with pytest.raises(BackendError, match="service '/other_servo/start_servo' is not "
                       'available after 0.3 s'):
        backend.start()
    backend.stop()
    try:
        import moveit_msgs  # noqa: F401
    except ImportError:
        backend = attached('moveit_servo', node)
        with pytest.raises(BackendError, match='needs moveit_msgs.*activation:=none'):
            backend.start()
        backend.stop()


def test_servo_refuses_joint_interfaces(driver_node):
    backend = create_backend('moveit_servo', {})
    with pytest.raises(BackendError, match='takes end-effector twists'):
        backend.attach_node(driver_node('joint_position'))


def rclpy_spin_once(node):
    """Let the driver node's subscriptions run, as the driver's executor would."""
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        executor.spin_once(timeout_sec=0.05)
    finally:
        executor.remove_node(node)
