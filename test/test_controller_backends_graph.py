"""``ros2_control`` and ``moveit_servo`` through the real driver node (localhost graph).

test/test_ros_controller_backends.py drives the backends by hand; here the driver node
(DriverNode, as ``vla-ros launch`` starts it) owns them: a fake robot publishes
``joint_states`` and plays the controller (it follows the commands it receives), a client
streams ``cmd/joint`` / ``cmd/ee_twist``, and every message reaching the "controller" is
checked against the driver's rules: interlock, joint limits, per-tick steps, watchdog,
e-stop. Each test runs in its own namespace (topics relative to it), so nothing collides.
"""

import itertools
import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from vla_ros.drivers.backend import BackendError
from vla_ros.nodes import qos
from vla_ros.nodes.driver_node import DriverNode

pytestmark = pytest.mark.graph

RATE_HZ = 50.0
WATCHDOG = 0.25
ARM = ['shoulder', 'elbow', 'wrist']                      # the driver's joint_names
START = {'wrist': 0.3, 'finger': 0.02, 'shoulder': 0.1, 'elbow': -0.2}  # robot's order
LOWER, UPPER = np.array([-0.5, -1.0, -1.0]), np.array([0.5, 0.0, 1.0])
MAX_STEP = 0.005          # rad a tick; below joint_max_velocity * dt, so it is the bound
MAX_VELOCITY = [1.0, 1.0, 0.4]
JOINTS = dict(joint_names=ARM, joint_position_min=LOWER.tolist(),
              joint_position_max=UPPER.tolist(), joint_max_velocity=MAX_VELOCITY,
              joint_max_step=[MAX_STEP])
_NAMESPACES = itertools.count()


def wait_for(predicate, timeout=5.0, period=0.005):
    """Poll ``predicate`` until it is truthy; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(period)


def fresh_namespace():
    """A namespace no other test (or leftover process) of this run uses."""
    return f'/cbg_{os.getpid()}_{next(_NAMESPACES)}'


class FakeRobot(Node):
    """joint_states at 100 Hz, a controller that follows what it gets, Servo's start service.

    ``received`` keeps ``(wall time, message)`` of every controller / Servo message.
    """

    def __init__(self, context, namespace, command_type, command_topic, pose=None):
        super().__init__('fake_robot', namespace=namespace, context=context)
        self.lock = threading.Lock()
        self.positions = dict(START)
        self.received = []
        self.start_calls = 0
        self.pose = pose  # (frame, xyz) published on tcp_pose, or None
        self._states = self.create_publisher(JointState, 'joint_states', 10)
        self._poses = self.create_publisher(PoseStamped, 'tcp_pose', 10)
        self.create_subscription(command_type, command_topic, self._on_command, 10)
        self.create_service(Trigger, 'servo_node/start_servo', self._start_servo)
        self.create_timer(0.01, self._publish)
        self.command_topic = self.resolve_topic_name(command_topic)

    def _publish(self):
        with self.lock:
            names, values = list(self.positions), list(self.positions.values())
        msg = JointState(name=names, position=values)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._states.publish(msg)
        if self.pose is not None:
            pose = PoseStamped()
            pose.header.stamp = msg.header.stamp
            pose.header.frame_id = self.pose[0]
            p = pose.pose.position
            p.x, p.y, p.z = self.pose[1]
            pose.pose.orientation.w = 1.0
            self._poses.publish(pose)

    def _on_command(self, msg):
        with self.lock:
            self.received.append((time.monotonic(), msg))
            if isinstance(msg, JointTrajectory):  # reaches the target (a perfect arm)
                self.positions.update(zip(msg.joint_names, msg.points[0].positions,
                                          strict=True))
            elif isinstance(msg, Float64MultiArray) and 'position' in self.command_topic:
                self.positions.update(zip(ARM, msg.data, strict=True))
            elif isinstance(msg, Float64MultiArray):  # velocities for one tick
                for name, v in zip(ARM, msg.data, strict=True):
                    self.positions[name] += v / RATE_HZ

    def _start_servo(self, request, response):
        self.start_calls += 1
        response.success = True
        return response

    def since(self, t0):
        """Messages received after wall time ``t0``."""
        with self.lock:
            return [m for t, m in self.received if t >= t0]

    def measured(self):
        """The arm joints' positions, in ARM order."""
        with self.lock:
            return np.array([self.positions[n] for n in ARM])


class Client(Node):
    """Plays the policy and the operator in the driver's namespace."""

    def __init__(self, context, namespace):
        super().__init__('controller_test_client', namespace=namespace, context=context)
        self.joint_pub = self.create_publisher(JointState, 'cmd/joint', qos.COMMAND)
        self.twist_pub = self.create_publisher(TwistStamped, 'cmd/ee_twist', qos.COMMAND)
        self.estop_pub = self.create_publisher(Bool, 'estop', qos.LATCHED)
        self.lock = threading.Lock()
        self.poses = []
        self.create_subscription(PoseStamped, 'ee_pose', self._keep_pose, qos.SENSOR)
        self.stream = None  # a function publishing one command, called at 50 Hz
        self.create_timer(0.02, lambda: self.stream and self.stream())
        self._service_clients = {}

    def _keep_pose(self, msg):
        with self.lock:
            self.poses.append(msg)

    def joints(self, names, positions=(), velocities=()):
        """A function that publishes this cmd/joint, stamped now (for ``stream``)."""
        def publish():
            msg = JointState(name=list(names), position=[float(v) for v in positions],
                             velocity=[float(v) for v in velocities])
            msg.header.stamp = self.get_clock().now().to_msg()
            self.joint_pub.publish(msg)
        return publish

    def twist(self, values, frame='base'):
        """A function that publishes this cmd/ee_twist, stamped now (for ``stream``)."""
        def publish():
            msg = TwistStamped()
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.header.frame_id = frame
            t = msg.twist
            (t.linear.x, t.linear.y, t.linear.z,
             t.angular.x, t.angular.y, t.angular.z) = map(float, values)
            self.twist_pub.publish(msg)
        return publish

    def call(self, srv_type, name, request, timeout=30.0):  # discovery on a loaded machine
        if name not in self._service_clients:
            self._service_clients[name] = self.create_client(srv_type, name)
        client = self._service_clients[name]
        assert client.wait_for_service(timeout_sec=timeout), name
        future = client.call_async(request)
        assert wait_for(future.done, timeout), f'{name} did not answer'
        return future.result()

    def enable(self, on=True):
        assert self.call(SetBool, 'vla_driver/enable', SetBool.Request(data=on)).success

    def clear_estop(self):
        assert self.call(Trigger, 'vla_driver/clear_estop', Trigger.Request()).success


class Rig:
    """The fake robot, the client and the driver, each spun in its own thread."""

    def __init__(self, context, command_type, command_topic, pose=None):
        self.context = context
        self.namespace = fresh_namespace()
        self._spinning = []
        self.robot = self._spin(FakeRobot(context, self.namespace, command_type,
                                          command_topic, pose))
        self.client = self._spin(Client(context, self.namespace))
        self.driver = None

    def _spin(self, node):
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(node)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        self._spinning.append((executor, thread, node))
        return node

    def start_driver(self, **params):
        """Construct the driver (configures: waits for joint_states) and spin it."""
        params = {'rate_hz': RATE_HZ, 'watchdog_timeout': WATCHDOG, 'camera_rate_hz': 0.0,
                  **params}
        self.driver = self._spin(DriverNode(
            context=self.context, namespace=self.namespace,
            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]))
        topic = self.robot.command_topic
        assert wait_for(lambda: self.robot.count_publishers(topic) > 0
                        and self.client.count_subscribers(
                            self.client.resolve_topic_name('cmd/joint')) > 0), 'no discovery'
        return self.driver

    def close(self):
        for executor, _, _ in self._spinning:
            executor.shutdown()
        for _, thread, _ in self._spinning:
            thread.join(timeout=5.0)
        for _, _, node in reversed(self._spinning):
            node.destroy_node()


@pytest.fixture
def rig(module_ros_context):
    rigs = []

    def make(*args, **kwargs):
        rigs.append(Rig(module_ros_context, *args, **kwargs))
        return rigs[-1]

    yield make
    for r in rigs:
        r.close()


def trajectory_positions(msgs):
    return [np.array(m.points[0].positions) for m in msgs]


def assert_limited(targets, start):
    """Within the joint limits, at most MAX_STEP a tick, starting from ``start``."""
    previous = np.asarray(start)
    for target in targets:
        assert np.all(target >= LOWER - 1e-12) and np.all(target <= UPPER + 1e-12), target
        step = np.max(np.abs(target - previous))
        assert step <= MAX_STEP + 1e-9, f'target jumped {step} rad: {previous} -> {target}'
        previous = target


def assert_held(robot, seconds=0.4):
    """The controller keeps getting one unchanged target for ``seconds``."""
    t0 = time.monotonic()
    time.sleep(seconds)
    held = robot.since(t0)
    assert len(held) >= 5, f'{len(held)} messages in {seconds} s: the driver stopped ticking'
    values = [np.array(m.points[0].positions) if isinstance(m, JointTrajectory)
              else np.array(m.data) for m in held]
    assert all(np.array_equal(v, values[0]) for v in values), 'the held target moved'
    return values[0]


# ============================================================== ros2_control
def test_joint_trajectory_controller_gets_limited_targets_only_once_enabled(rig):
    r = rig(JointTrajectory, 'arm_controller/joint_trajectory')
    driver = r.start_driver(backend='ros2_control', command_interface='joint_position',
                            **JOINTS, **{
                                'ros2_control.command_topic': 'arm_controller/joint_trajectory',
                                'ros2_control.joint_states_topic': 'joint_states'})
    robot, client = r.robot, r.client
    # Hardware: the interlock starts off, and nothing reaches the controller, even with
    # commands streaming.
    assert driver.get_parameter('enable_actuation').value is False
    client.stream = client.joints(['wrist', 'shoulder', 'elbow'], [0.3, 2.0, -0.5])
    time.sleep(0.5)
    assert robot.since(0.0) == []
    # The robot publishes joint_states, the driver does not; it knows no end-effector pose,
    # so it publishes none (rather than NaN).
    assert robot.count_publishers(robot.resolve_topic_name('joint_states')) == 1
    assert client.poses == []

    t_enabled = time.monotonic()
    client.enable()
    # shoulder 0.1 -> 2.0 is clamped to 0.5 (80 steps), elbow -0.2 -> -0.5 (60 steps).
    assert wait_for(lambda: np.allclose(robot.measured(), [0.5, -0.5, 0.3]), 5.0), \
        robot.measured()
    msgs = robot.since(t_enabled)
    assert all(m.joint_names == ARM and len(m.points) == 1 for m in msgs)
    assert all(list(m.points[0].velocities) == [] for m in msgs)  # positions only
    assert all((m.header.stamp.sec, m.header.stamp.nanosec) == (0, 0) for m in msgs)
    # Two driver periods ahead, as measured by the driver (bounded to 3 periods a tick).
    ahead = [m.points[0].time_from_start.sec + m.points[0].time_from_start.nanosec * 1e-9
             for m in msgs]
    assert all(0.0 < a <= 6.0 / RATE_HZ + 1e-9 for a in ahead), ahead
    # Typical value (a timing check, loose for loaded machines): two periods.
    assert abs(float(np.median(ahead)) - 2.0 / RATE_HZ) < 1.0 / RATE_HZ, np.median(ahead)
    assert_limited(trajectory_positions(msgs), [START[n] for n in ARM])

    # Watchdog: the stream stops, the target stays.
    client.stream = None
    time.sleep(WATCHDOG + 0.1)
    np.testing.assert_allclose(assert_held(robot), [0.5, -0.5, 0.3])

    # E-stop on the way to a new target: held while commands keep coming, until cleared.
    client.stream = client.joints(ARM, [-0.5, -0.5, 0.3])
    assert wait_for(lambda: robot.measured()[0] < 0.45, 3.0)
    client.estop_pub.publish(Bool(data=True))
    assert wait_for(lambda: driver.estop_engaged, 2.0)
    held = assert_held(robot)
    assert -0.5 < held[0] < 0.45
    t_cleared = time.monotonic()
    client.clear_estop()
    assert wait_for(lambda: robot.measured()[0] < held[0] - 0.05, 3.0)
    client.stream = None
    assert_limited(trajectory_positions(robot.since(0.0)), [START[n] for n in ARM])
    assert robot.since(t_cleared)


@pytest.mark.parametrize('interface', ['joint_position', 'joint_velocity'])
def test_forward_controllers_get_float64_arrays_in_joint_names_order(rig, interface):
    topic = ('forward_position_controller/commands' if interface == 'joint_position'
             else 'forward_velocity_controller/commands')
    r = rig(Float64MultiArray, topic)
    r.start_driver(backend='ros2_control', command_interface=interface, **JOINTS,
                   enable_actuation=True, **{
                       'ros2_control.output': 'forward_command',
                       'ros2_control.command_topic': topic,
                       'ros2_control.joint_states_topic': 'joint_states'})
    robot, client = r.robot, r.client
    t0 = time.monotonic()
    if interface == 'joint_position':
        client.stream = client.joints(['elbow', 'wrist', 'shoulder'], [-0.3, 0.3, -2.0])
        assert wait_for(lambda: np.allclose(robot.measured(), [-0.5, -0.3, 0.3]), 5.0), \
            robot.measured()
        values = [np.array(m.data) for m in robot.since(t0)]
        assert all(len(v) == 3 for v in values)
        assert_limited(values, [START[n] for n in ARM])
        client.stream = None
        time.sleep(WATCHDOG + 0.1)
        np.testing.assert_allclose(assert_held(robot), [-0.5, -0.3, 0.3])
        return
    # Velocities in cmd/joint order, clamped to joint_max_velocity (wrist 0.4), zeroed
    # where the next tick would cross a limit (shoulder stops at its upper limit 0.5).
    client.stream = client.joints(['wrist', 'shoulder', 'elbow'], velocities=[-2.0, 2.0, 0.0])
    assert wait_for(lambda: any(m.data[0] > 0 for m in robot.since(t0)), 3.0)
    time.sleep(0.6)
    values = np.array([m.data for m in robot.since(t0)])
    assert np.all(np.abs(values) <= np.array(MAX_VELOCITY) + 1e-12)
    assert np.isclose(values[:, 2].min(), -0.4) and np.all(values[:, 1] == 0.0)
    assert values[-1][0] == 0.0
    # Watchdog: zeros every tick.
    client.stream = None
    time.sleep(WATCHDOG + 0.1)
    t1 = time.monotonic()
    time.sleep(0.4)
    assert len(robot.since(t1)) >= 5 and all(not any(m.data) for m in robot.since(t1))
    # Interlock off while moving: one zero command, then the controller is left alone.
    client.stream = client.joints(ARM, velocities=[0.0, 0.0, -0.2])
    assert wait_for(lambda: (m := robot.since(t1)) and m[-1].data[2] < 0, 3.0)
    t_off = time.monotonic()
    client.enable(False)
    time.sleep(0.15)
    t2 = time.monotonic()
    after = robot.since(t_off)
    assert after and list(after[-1].data) == [0.0] * 3
    assert sum(1 for m in after if not any(m.data)) == 1
    time.sleep(0.3)
    assert robot.since(t2) == [], 'the driver kept commanding with the interlock off'
    client.stream = None


def test_no_joint_states_fails_configure_naming_the_topic(module_ros_context):
    namespace = fresh_namespace()
    t0 = time.monotonic()
    with pytest.raises(BackendError, match=f"no usable joint_states on '{namespace}/"
                       "joint_states' within 0.5 s"):
        DriverNode(context=module_ros_context, namespace=namespace, parameter_overrides=[
            Parameter(k, value=v) for k, v in {
                'backend': 'ros2_control', 'command_interface': 'joint_position', **JOINTS,
                'ros2_control.joint_states_topic': 'joint_states',
                'ros2_control.state_timeout': 0.5}.items()])
    assert time.monotonic() - t0 < 5.0


# ============================================================== moveit_servo
SERVO = {'backend': 'moveit_servo', 'joint_names': ARM, 'ee_frame': 'base',
         'max_linear_velocity': 0.1, 'max_angular_velocity': 0.5,
         'moveit_servo.twist_topic': 'servo_node/delta_twist_cmds',
         'moveit_servo.activation': 'start_servo', 'moveit_servo.servo_node': 'servo_node',
         'moveit_servo.joint_states_topic': 'joint_states'}


def twist_values(msg):
    t = msg.twist
    return np.array([t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y,
                     t.angular.z])


def assert_zero_twists(robot, seconds=0.4):
    t0 = time.monotonic()
    time.sleep(seconds)
    msgs = robot.since(t0)
    assert len(msgs) >= 5 and all(not np.any(twist_values(m)) for m in msgs)


def test_servo_gets_limited_twists_at_the_driver_rate(rig):
    r = rig(TwistStamped, 'servo_node/delta_twist_cmds', pose=('base', (0.4, 0.0, 0.3)))
    driver = r.start_driver(**SERVO, **{'moveit_servo.ee_pose_topic': 'tcp_pose'})
    robot, client = r.robot, r.client
    assert robot.start_calls == 1  # Servo was told to take twists while configuring
    assert driver.get_parameter('enable_actuation').value is False
    client.stream = client.twist([1.0, 0.0, 0.0, 0.0, 0.0, 2.0])
    assert_zero_twists(robot)  # interlock off: explicit zeros (docs/ros2_control_and_servo)
    # The pose from the robot's topic is the driver's ee_pose.
    assert wait_for(lambda: client.poses, 2.0)
    assert client.poses[-1].pose.position.x == pytest.approx(0.4)

    t0 = time.monotonic()
    client.enable()
    assert wait_for(lambda: (m := robot.since(t0)) and
                    np.allclose(twist_values(m[-1]), [0.1, 0, 0, 0, 0, 0.5]), 3.0)
    time.sleep(1.0)
    msgs = robot.since(t0)
    values = np.array([twist_values(m) for m in msgs])
    assert np.all(np.linalg.norm(values[:, :3], axis=1) <= 0.1 + 1e-9)
    assert np.all(np.linalg.norm(values[:, 3:], axis=1) <= 0.5 + 1e-9)
    assert all(m.header.frame_id == 'base' for m in msgs)
    stamps = np.array([m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in msgs])
    assert np.all(np.diff(stamps) > 0.0)
    now = robot.get_clock().now().nanoseconds * 1e-9
    assert now - stamps[-1] < 0.5  # stamped now: Servo drops old twists
    # One twist per driver tick (a timing check, loose for loaded machines).
    interval = float(np.median(np.diff(stamps)))
    assert abs(interval - 1.0 / RATE_HZ) < 0.5 / RATE_HZ, interval

    client.stream = None  # watchdog: zeros every tick
    time.sleep(WATCHDOG + 0.05)
    assert_zero_twists(robot)
    client.stream = client.twist([0.0, 0.05, 0.0, 0.0, 0.0, 0.0])
    assert wait_for(lambda: (m := robot.since(time.monotonic() - 0.05)) and
                    twist_values(m[-1])[1] > 0.0, 3.0)
    client.estop_pub.publish(Bool(data=True))
    assert wait_for(lambda: driver.estop_engaged, 2.0)
    time.sleep(0.05)
    assert_zero_twists(robot)  # commands keep streaming
    client.stream = None


def test_servo_without_a_pose_stops_linear_motion_and_publishes_no_nan_pose(rig):
    r = rig(TwistStamped, 'servo_node/delta_twist_cmds')
    driver = r.start_driver(**SERVO, enable_actuation=True)
    robot, client = r.robot, r.client
    t0 = time.monotonic()
    client.stream = client.twist([0.05, 0.0, 0.0, 0.0, 0.0, 0.3])
    assert wait_for(lambda: (m := robot.since(t0)) and
                    np.allclose(twist_values(m[-1]), [0, 0, 0, 0, 0, 0.3]), 3.0)
    time.sleep(0.3)
    values = np.array([twist_values(m) for m in robot.since(t0)])
    assert np.all(values[:, :3] == 0.0) and np.all(np.isfinite(values))
    assert client.poses == []  # unknown pose: nothing on ee_pose, not NaN
    assert driver.core is not None and not driver.estop_engaged
    client.stream = None


# ============================================================== the launch path
def _launch(python_exe, ros_env, namespace, tmp_path, timeout):
    params = tmp_path / 'robot_topics.yaml'
    params.write_text('/**/vla_driver:\n  ros__parameters:\n'
                      '    ros2_control.joint_states_topic: joint_states\n'
                      '    ros2_control.command_topic: arm_controller/joint_trajectory\n'
                      f'    ros2_control.state_timeout: {timeout}\n')
    return subprocess.Popen(
        [python_exe, '-m', 'vla_ros.cli', 'launch', 'vla', 'robot:=ros2_control_arm',
         'sim:=false', 'backend:=ros2_control', f'namespace:={namespace.strip("/")}',
         f'params_file:={params}'],
        env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)


UR_JOINTS = ['shoulder_pan_joint', 'shoulder_lift_joint', 'elbow_joint', 'wrist_1_joint',
             'wrist_2_joint', 'wrist_3_joint']


def test_the_example_robot_file_launches_and_holds_the_measured_arm(module_ros_context,
                                                                     python_exe, ros_env,
                                                                     tmp_path):
    namespace = fresh_namespace()
    node = Node('ur_stand_in', namespace=namespace, context=module_ros_context)
    pub = node.create_publisher(JointState, 'joint_states', 10)
    measured = [0.1, -1.2, 1.0, -1.5, -1.57, 0.0]
    received = []
    node.create_subscription(JointTrajectory, 'arm_controller/joint_trajectory',
                             received.append, 10)
    enable = node.create_client(SetBool, 'vla_driver/enable')
    executor = SingleThreadedExecutor(context=module_ros_context)
    executor.add_node(node)
    node.create_timer(0.01, lambda: pub.publish(JointState(name=UR_JOINTS, position=measured)))
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    launch = _launch(python_exe, ros_env, namespace, tmp_path, 10.0)
    try:
        assert enable.wait_for_service(timeout_sec=20.0), 'the driver did not come up'
        time.sleep(0.3)
        assert received == []  # hardware: off until enabled
        future = enable.call_async(SetBool.Request(data=True))
        assert wait_for(future.done, 5.0) and future.result().success
        # No command yet: the driver holds the arm where it measured it.
        assert wait_for(lambda: len(received) >= 5, 5.0)
        assert received[-1].joint_names == UR_JOINTS
        np.testing.assert_allclose(received[-1].points[0].positions, measured)
    finally:
        os.killpg(launch.pid, signal.SIGINT)
        output = launch.communicate(timeout=20.0)[0]
        executor.shutdown()
        thread.join(timeout=5.0)
        node.destroy_node()
    assert launch.returncode == 0, output


def test_the_launch_stops_when_no_joint_states_arrive(python_exe, ros_env, tmp_path):
    namespace = fresh_namespace()
    launch = _launch(python_exe, ros_env, namespace, tmp_path, 1.0)
    output = launch.communicate(timeout=25.0)[0]
    assert launch.returncode == 1, output
    assert f"no usable joint_states on '{namespace}/joint_states' within 1 s" in output
    assert 'node vla_driver exited with code 2' in output
