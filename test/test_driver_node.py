"""Driver node on a real rclpy graph: watchdog, e-stop, interlock, limits, parameters, sim."""

import math
import threading
import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool
from std_srvs.srv import SetBool, Trigger

from vla_ros.nodes import qos
from vla_ros.nodes.driver_node import DriverNode

pytestmark = [pytest.mark.graph]

RATE_HZ = 50.0
WATCHDOG = 0.25


def wait_for(predicate, timeout=3.0, period=0.005):
    """Poll ``predicate`` until it is truthy; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(period)


class Client(Node):
    """Plays the policy / operator side: streams commands, records what the driver did."""

    def __init__(self, context):
        super().__init__('driver_test_client', context=context)
        self.twist_pub = self.create_publisher(TwistStamped, 'cmd/ee_twist', qos.COMMAND)
        self.estop_pub = self.create_publisher(Bool, 'estop', qos.LATCHED)
        self.lock = threading.Lock()
        self.applied = []  # (header stamp [s], twist array)
        self.poses = []
        self.images = []
        self.joint_states = []
        self.create_subscription(
            TwistStamped, '/vla_driver/applied_twist', self._on_applied, qos.STATUS)
        self.create_subscription(PoseStamped, 'ee_pose', self._keep(self.poses), qos.SENSOR)
        self.create_subscription(
            JointState, 'joint_states', self._keep(self.joint_states), qos.SENSOR)
        self.create_subscription(
            Image, 'camera/front/image_raw', self._keep(self.images), qos.SENSOR)
        self.command = None  # twist streamed at RATE_HZ while not None
        self.last_sent = None  # node-clock time [s] of the latest streamed command
        self.clients_by_name = {}
        self.create_timer(1.0 / RATE_HZ, self._stream)

    def _keep(self, store):
        def callback(msg):
            with self.lock:
                store.append(msg)
        return callback

    def _on_applied(self, msg):
        t, a = msg.twist.linear, msg.twist.angular
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self.lock:
            self.applied.append((stamp, np.array([t.x, t.y, t.z, a.x, a.y, a.z])))

    def _stream(self):
        command = self.command
        if command is not None:
            self.send(command)

    def send(self, twist):
        msg = TwistStamped()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = 'base_link'
        t, a = msg.twist.linear, msg.twist.angular
        t.x, t.y, t.z, a.x, a.y, a.z = map(float, twist)
        self.twist_pub.publish(msg)
        self.last_sent = self.get_clock().now().nanoseconds * 1e-9

    def applied_since(self, t0):
        with self.lock:
            return [twist for stamp, twist in self.applied if stamp >= t0]

    def latest_applied(self):
        with self.lock:
            return self.applied[-1][1] if self.applied else None

    def now(self):
        return self.get_clock().now().nanoseconds * 1e-9

    def call(self, srv_type, name, request, timeout=30.0):
        # Clients are kept: destroying one while the executor thread waits on it races.
        # The timeout only bounds a failure: discovering a service took over 3 s while
        # the soak ran beside this test.
        if name not in self.clients_by_name:
            self.clients_by_name[name] = self.create_client(srv_type, name)
        client = self.clients_by_name[name]
        assert client.wait_for_service(timeout_sec=timeout), name
        future = client.call_async(request)
        assert wait_for(future.done, timeout), f'{name} did not answer'
        return future.result()


class Graph:
    """A driver and a client, each spun by its own executor in a background thread.

    Single-threaded executors, as in ``main()``: one per node, so test traffic cannot
    delay the driver's timers.
    """

    def __init__(self, context):
        self.context = context
        self.spinning = []  # (executor, thread)
        self.errors = []
        self.client = self.add(Client(context), SingleThreadedExecutor(context=context))

    def add(self, node, executor):
        executor.add_node(node)
        thread = threading.Thread(target=self._spin, args=(node, executor), daemon=True)
        thread.start()
        self.spinning.append((executor, thread))
        return node

    def _spin(self, node, executor):
        # Destroy in the spinning thread, as main() does: the sim's GL contexts belong to it.
        try:
            executor.spin()
        finally:
            try:
                node.destroy_node()
            except Exception as err:  # reported by close(), not lost in a daemon thread
                self.errors.append(err)

    def driver(self, **params):
        params = {'backend': 'dry_run', 'rate_hz': RATE_HZ, 'watchdog_timeout': WATCHDOG,
                  'camera_rate_hz': 0.0, **params}
        overrides = [Parameter(name, value=value) for name, value in params.items()]
        node = self.add(DriverNode(context=self.context, parameter_overrides=overrides),
                        SingleThreadedExecutor(context=self.context))
        # Wait for discovery both ways, so no test time is spent on it.
        client = self.client
        assert wait_for(lambda: client.twist_pub.get_subscription_count() > 0
                        and client.latest_applied() is not None, 5.0), 'driver not discovered'
        return node

    def close(self):
        for executor, thread in self.spinning:
            executor.shutdown(timeout_sec=2.0)
            thread.join(timeout=5.0)
        assert not self.errors, self.errors


@pytest.fixture
def graph(ros_context):
    g = Graph(ros_context)
    try:
        yield g
    finally:
        g.close()


def moving_x(client, value, tol=1e-6):
    """Wait until the newest applied twist has linear x == value."""
    return wait_for(lambda: (a := client.latest_applied()) is not None
                    and abs(a[0] - value) < tol)


def all_zero(twists):
    return all(np.all(t == 0.0) for t in twists)


def test_watchdog_zeroes_twist_when_commands_stop(graph):
    driver = graph.driver()
    client = graph.client
    # Unset enable_actuation resolves from the backend: dry run is not hardware.
    assert driver.get_parameter('enable_actuation').value is True
    t0 = client.now()
    client.command = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # 4x the default 0.25 m/s limit
    assert moving_x(client, 0.25), client.latest_applied()
    assert all(t[0] <= 0.25 + 1e-9 for t in client.applied_since(t0))

    client.command = None
    time.sleep(0.05)  # let an in-flight stream tick finish before reading last_sent
    last_sent = client.last_sent
    assert moving_x(client, 0.0)
    with client.lock:
        first_zero = next(s for s, t in client.applied if s > last_sent and t[0] == 0.0)
    latency = first_zero - last_sent
    print(f'watchdog stop latency {latency * 1e3:.1f} ms')
    assert latency <= WATCHDOG + 2.0 / RATE_HZ, latency
    assert latency >= WATCHDOG - 1.0 / RATE_HZ, latency  # it did not stop before the timeout
    time.sleep(0.2)
    assert all_zero(client.applied_since(first_zero))


def test_estop_service_latches_until_cleared(graph):
    graph.driver()
    client = graph.client
    client.command = [0.1, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert moving_x(client, 0.1)

    assert client.call(Trigger, '/vla_driver/estop', Trigger.Request()).success
    assert moving_x(client, 0.0)
    t_stopped = client.now()
    # Publishing False on the estop topic must not clear it.
    client.estop_pub.publish(Bool(data=False))
    time.sleep(0.4)
    assert all_zero(client.applied_since(t_stopped))

    assert client.call(Trigger, '/vla_driver/clear_estop', Trigger.Request()).success
    assert moving_x(client, 0.1)


def test_estop_topic_is_latched_for_a_late_driver(graph):
    client = graph.client
    client.estop_pub.publish(Bool(data=True))  # before the driver exists
    driver = graph.driver()
    # The latched value arrives with discovery; until then a late driver cannot know of it.
    assert wait_for(lambda: driver.estop_engaged)
    t0 = client.now()
    client.command = [0.1, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert wait_for(lambda: len(client.applied_since(t0)) > 20)
    assert all_zero(client.applied_since(t0))

    client.estop_pub.publish(Bool(data=False))
    time.sleep(0.2)
    assert all_zero(client.applied_since(t0))
    assert client.call(Trigger, '/vla_driver/clear_estop', Trigger.Request()).success
    assert moving_x(client, 0.1)


def test_actuation_interlock(graph):
    driver = graph.driver(enable_actuation=False)
    client = graph.client
    t0 = client.now()
    client.command = [0.1, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert wait_for(lambda: len(client.applied_since(t0)) > 20)
    assert all_zero(client.applied_since(t0))

    response = client.call(SetBool, '/vla_driver/enable', SetBool.Request(data=True))
    assert response.success, response.message
    assert driver.get_parameter('enable_actuation').value is True
    assert moving_x(client, 0.1)

    assert client.call(SetBool, '/vla_driver/enable', SetBool.Request(data=False)).success
    assert moving_x(client, 0.0)


def test_limits_clamp_and_nan_is_never_applied(graph):
    driver = graph.driver()
    client = graph.client
    t0 = client.now()
    client.command = [math.nan, 0.0, 0.0, 0.0, 0.0, 0.0]
    time.sleep(0.2)
    client.command = [0.0, 0.0, math.inf, 0.0, 0.0, 0.0]
    time.sleep(0.2)
    applied = client.applied_since(t0)
    assert len(applied) > 10 and all_zero(applied)

    client.command = [1e6, 1e6, 0.0, 0.0, 0.0, 1e3]
    assert wait_for(lambda: abs(np.linalg.norm(client.latest_applied()[:2]) - 0.25) < 1e-9)
    assert abs(client.latest_applied()[5] - 1.0) < 1e-9
    # A NaN in the middle of a valid stream is dropped; the last valid command carries on.
    client.send([math.nan] * 6)
    time.sleep(0.1)
    for twist in client.applied_since(t0):
        assert np.all(np.isfinite(twist))
        assert np.linalg.norm(twist[:3]) <= 0.25 + 1e-9
        assert np.linalg.norm(twist[3:]) <= 1.0 + 1e-9

    # A new limit applies to the running stream.
    assert driver.set_parameters([Parameter('max_linear_velocity', value=0.1)])[0].successful
    assert wait_for(lambda: abs(np.linalg.norm(client.latest_applied()[:3]) - 0.1) < 1e-9)


def test_parameter_validation(graph):
    driver = graph.driver()
    for bad in (-1.0, 'soon', 100.0):
        result = driver.set_parameters([Parameter('watchdog_timeout', value=bad)])[0]
        assert not result.successful and result.reason, bad
    assert driver.get_parameter('watchdog_timeout').value == WATCHDOG

    # Limits are checked as a whole: min above max is refused, alone or in an atomic set...
    result = driver.set_parameters([Parameter('workspace_min', value=[0.9, 0.0, 0.0])])[0]
    assert not result.successful and 'workspace' in result.reason
    result = driver.set_parameters_atomically([
        Parameter('workspace_min', value=[0.5, 0.0, 0.0]),
        Parameter('workspace_max', value=[0.4, 1.0, 1.0])])
    assert not result.successful and 'workspace' in result.reason
    # ...while a shifted box whose min alone would pass the old max is accepted atomically.
    result = driver.set_parameters_atomically([
        Parameter('workspace_min', value=[0.8, -0.5, 0.0]),
        Parameter('workspace_max', value=[1.2, 0.5, 1.0])])
    assert result.successful, result.reason
    result = driver.set_parameters([Parameter('workspace_min', value=[0.0, 0.0])])[0]
    assert not result.successful and result.reason
    result = driver.set_parameters([Parameter('backend', value='mujoco')])[0]
    assert not result.successful and 'read-only' in result.reason

    assert driver.set_parameters([Parameter('watchdog_timeout', value=0.5)])[0].successful
    assert driver.get_parameter('watchdog_timeout').value == 0.5


@pytest.mark.slow
def test_mujoco_cameras_and_motion(graph):
    graph.driver(backend='mujoco', camera_rate_hz=10.0)
    client = graph.client
    assert wait_for(lambda: client.images and client.poses and client.joint_states, 10.0)
    image = client.images[-1]
    assert (image.width, image.height, image.encoding) == (224, 224, 'rgb8')
    assert image.header.frame_id == 'front_camera'
    assert len(image.data) == 224 * 224 * 3
    assert len(client.joint_states[-1].name) == len(client.joint_states[-1].position) > 0

    x0 = client.poses[-1].pose.position.x
    client.command = [0.1, 0.0, 0.0, 0.0, 0.0, 0.0]
    time.sleep(1.0)
    client.command = None
    time.sleep(0.1)
    with client.lock:
        x1 = client.poses[-1].pose.position.x
    assert x1 - x0 > 0.05, (x0, x1)


class Listener(Node):
    """Keeps every message of one topic (a late joiner when created after the driver)."""

    def __init__(self, context, msg_type, topic, profile, name='driver_test_listener'):
        super().__init__(name, context=context)
        self.lock = threading.Lock()
        self.messages = []
        self.create_subscription(msg_type, topic, self._on_msg, profile)

    def _on_msg(self, msg):
        with self.lock:
            self.messages.append(msg)


@pytest.mark.slow
def test_task_episode_instruction_is_published_latched(graph):
    from std_msgs.msg import String

    from vla_ros.sim.tasks import get_task

    driver = graph.driver(backend='mujoco', task='reach', task_seed=1000, task_split='test',
                          image_width=32, image_height=32)
    expected = get_task('reach').sample(1000, 'test').instruction
    time.sleep(0.2)
    # Subscribing after the driver published: transient local still delivers it.
    late = graph.add(Listener(graph.context, String, 'instruction', qos.INSTRUCTION),
                     SingleThreadedExecutor(context=graph.context))
    assert wait_for(lambda: late.messages, 5.0), 'no latched instruction'
    assert [m.data for m in late.messages] == [expected]
    assert driver.count_publishers('/instruction') == 1


@pytest.mark.slow
def test_task_instruction_can_be_left_to_the_user(graph):
    driver = graph.driver(backend='mujoco', task='reach', task_seed=1000, image_width=32,
                          image_height=32, publish_task_instruction=False)
    assert driver.count_publishers('/instruction') == 0
    assert driver.backend.task_instruction()  # the episode still has one


def test_no_instruction_without_a_task(graph):
    driver = graph.driver(backend='dry_run')
    assert driver.count_publishers('/instruction') == 0


def test_mobile_base_odometry(graph):
    odometry = pytest.importorskip('nav_msgs.msg', reason='nav_msgs not installed '
                                   '(requirements.txt: ros-kilted-nav-msgs)')
    odom = graph.add(Listener(graph.context, odometry.Odometry, 'odom', qos.SENSOR),
                     SingleThreadedExecutor(context=graph.context))
    driver = graph.driver(backend='dry_run', mobile=True)
    assert wait_for(lambda: odom.messages, 5.0), 'no odom'
    first = odom.messages[-1]
    assert (first.header.frame_id, first.child_frame_id) == ('odom', 'base_link')
    assert first.pose.pose.position.x == pytest.approx(0.0)
    cmd = graph.client.create_publisher(TwistStamped, 'cmd_vel', qos.COMMAND)
    assert wait_for(lambda: cmd.get_subscription_count() > 0, 5.0)

    def drive(vx, wz):
        msg = TwistStamped()
        msg.twist.linear.x, msg.twist.angular.z = vx, wz
        cmd.publish(msg)

    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        drive(0.2, 0.5)
        time.sleep(0.02)
    with odom.lock:
        moving = odom.messages[-1]
    assert moving.header.stamp.sec > 0
    assert moving.twist.twist.linear.x == pytest.approx(0.2)
    assert moving.twist.twist.angular.z == pytest.approx(0.5)
    x = moving.pose.pose.position.x
    assert 0.05 < x < 0.2, x
    q = moving.pose.pose.orientation
    yaw = 2.0 * math.atan2(q.z, q.w)
    assert 0.1 < yaw < 0.5 and q.x == q.y == 0.0
    time.sleep(WATCHDOG + 0.2)  # commands stopped: the base watchdog halts it
    with odom.lock:
        still = odom.messages[-1]
    assert still.twist.twist.linear.x == 0.0 and still.twist.twist.angular.z == 0.0
    x, y, yaw = driver.backend.read_state().base_pose
    assert (still.pose.pose.position.x, still.pose.pose.position.y) == pytest.approx((x, y))
    assert 2.0 * math.atan2(still.pose.pose.orientation.z,
                            still.pose.pose.orientation.w) == pytest.approx(yaw)


def test_lifecycle_transitions_gate_the_hardware(graph):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    params = {'backend': 'example_arm_backend:ExampleArmBackend', 'autostart': False,
              'enable_actuation': True, 'rate_hz': RATE_HZ, 'watchdog_timeout': WATCHDOG,
              'camera_rate_hz': 0.0}
    driver = graph.add(DriverNode(context=graph.context, parameter_overrides=[
        Parameter(name, value=value) for name, value in params.items()]),
        SingleThreadedExecutor(context=graph.context))
    client = graph.client
    assert driver.backend is None  # unconfigured: nothing connected

    def transition(transition_id):
        request = ChangeState.Request()
        request.transition.id = transition_id
        return client.call(ChangeState, '/vla_driver/change_state', request).success

    def state():
        return client.call(GetState, '/vla_driver/get_state',
                           GetState.Request()).current_state.label

    assert state() == 'unconfigured'
    assert transition(Transition.TRANSITION_CONFIGURE) and state() == 'inactive'
    arm = driver.backend
    assert arm.connected
    client.command = [0.1, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert wait_for(lambda: len(arm.sent) > 10)
    assert all(not twist.any() for twist, _, _ in list(arm.sent))  # inactive: held still
    assert transition(Transition.TRANSITION_ACTIVATE) and state() == 'active'
    assert moving_x(client, 0.1)
    assert transition(Transition.TRANSITION_DEACTIVATE)
    assert moving_x(client, 0.0)
    assert transition(Transition.TRANSITION_ACTIVATE) and moving_x(client, 0.1)

    # An e-stop survives cleanup and a new configure; only ~/clear_estop releases it.
    assert client.call(Trigger, '/vla_driver/estop', Trigger.Request()).success
    assert moving_x(client, 0.0)
    assert transition(Transition.TRANSITION_DEACTIVATE)
    assert transition(Transition.TRANSITION_CLEANUP) and state() == 'unconfigured'
    assert not arm.connected and driver.backend is None
    assert not arm.sent[-1][0].any()  # the last command sent was a stop
    assert transition(Transition.TRANSITION_CONFIGURE)
    assert transition(Transition.TRANSITION_ACTIVATE)
    assert driver.estop_engaged
    time.sleep(0.2)
    assert all(not twist.any() for twist, _, _ in list(driver.backend.sent))
    assert client.call(Trigger, '/vla_driver/clear_estop', Trigger.Request()).success
    assert moving_x(client, 0.1)
    client.command = None
    assert transition(Transition.TRANSITION_ACTIVE_SHUTDOWN) and state() == 'finalized'
    assert driver.backend is None
