"""Driver node in joint mode on a real rclpy graph (docs/joint_space.md)."""

import math
import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from test_driver_node import graph, wait_for  # noqa: F401 - graph is a fixture

from vla_ros.drivers.backend import BackendError, register_backend
from vla_ros.drivers.dry_run import DryRunBackend
from vla_ros.nodes import qos
from vla_ros.nodes.driver_node import DriverNode

pytestmark = [pytest.mark.graph]

NAMES = ['joint4', 'joint1']  # a subset, not in the backend's order
LOWER, UPPER = [-2.6, -0.2], [-2.0, 0.2]
MAX_STEP = 0.01
JOINT_PARAMS = dict(command_interface='joint_position', joint_names=NAMES,
                    joint_position_min=LOWER, joint_position_max=UPPER,
                    joint_max_velocity=[1.0, 0.4], joint_max_step=[MAX_STEP])


class JointClient(Node):
    """Streams cmd/joint and records what the driver applied and measured."""

    def __init__(self, context):
        super().__init__('joint_test_client', context=context)
        self.pub = self.create_publisher(JointState, 'cmd/joint', qos.COMMAND)
        self.lock = threading.Lock()
        self.applied, self.states = [], []
        self.create_subscription(JointState, '/vla_driver/applied_joints',
                                 self._keep(self.applied), qos.STATUS)
        self.create_subscription(JointState, 'joint_states', self._keep(self.states),
                                 qos.SENSOR)
        self.diagnostics = []
        self.create_subscription(DiagnosticArray, '/diagnostics',
                                 self._keep(self.diagnostics), 10)
        self.command = None  # (names, positions) streamed at 50 Hz while not None
        self.create_timer(0.02, self._stream)

    def _keep(self, store):
        def callback(msg):
            with self.lock:
                store.append(msg)
        return callback

    def _stream(self):
        command = self.command
        if command is not None:
            self.send(*command)

    def send(self, names, positions, stamp=True):
        msg = JointState(name=list(names), position=[float(v) for v in positions])
        if stamp:
            msg.header.stamp = self.get_clock().now().to_msg()
        self.pub.publish(msg)

    def measured(self, name):
        with self.lock:
            msg = self.states[-1]
        return msg.position[list(msg.name).index(name)]

    def applied_positions(self):
        with self.lock:
            return [np.array(m.position) for m in self.applied]


def _joint_client(graph):  # noqa: F811 - the fixture
    from rclpy.executors import SingleThreadedExecutor

    return graph.add(JointClient(graph.context), SingleThreadedExecutor(context=graph.context))


def _assert_within_limits_and_steps(applied):
    for positions in applied:
        assert np.all(positions >= np.array(LOWER) - 1e-12), positions
        assert np.all(positions <= np.array(UPPER) + 1e-12), positions
    steps = [np.max(np.abs(b - a)) for a, b in zip(applied, applied[1:], strict=False)]
    assert max(steps, default=0.0) <= MAX_STEP + 1e-9, max(steps)


@pytest.mark.slow
def test_mujoco_joints_follow_cmd_joint_within_limits_and_hold_on_watchdog(graph):  # noqa: F811
    client = _joint_client(graph)
    graph.driver(backend='mujoco', **JOINT_PARAMS)
    assert wait_for(lambda: client.applied and client.states, 10.0)
    assert wait_for(lambda: client.pub.get_subscription_count() > 0, 5.0)
    start = client.measured('joint1')
    assert abs(start) < 0.01  # home
    # joint1 asked far past its limit (clamped to 0.2); joint4 within range.
    client.command = (['joint1', 'joint4'], [1.5, -2.3])
    assert wait_for(lambda: abs(client.measured('joint1') - 0.2) < 0.02, 10.0), \
        client.measured('joint1')
    assert abs(client.measured('joint4') - (-2.3)) < 0.02
    # Bad messages in between (NaN, unknown name, wrong length) change nothing.
    client.send(['joint1', 'joint4'], [math.nan, -2.3])
    client.send(['joint1', 'elbow'], [0.0, -2.3])
    client.send(['joint1', 'joint4'], [0.0])
    client.command = None
    time.sleep(0.05)
    n_before = len(client.applied_positions())
    time.sleep(0.6)  # past the watchdog: the target is held
    applied = client.applied_positions()
    _assert_within_limits_and_steps(applied)
    held = applied[n_before:]
    assert len(held) > 10
    assert all(np.array_equal(h, held[-1]) for h in held), 'target moved after the stop'
    np.testing.assert_allclose(held[-1], [-2.3, 0.2], atol=1e-9)
    assert abs(client.measured('joint1') - 0.2) < 0.02


def test_configure_refuses_bad_joint_configurations(ros_context):
    def build(**params):
        params = {'backend': 'dry_run', 'camera_rate_hz': 0.0, **JOINT_PARAMS, **params}
        node = DriverNode(context=ros_context, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        node.destroy_node()

    with pytest.raises(BackendError, match='joint_max_velocity has 1 values'):
        build(joint_max_velocity=[1.0])
    with pytest.raises(BackendError, match="not joints of backend 'dry_run'"):
        build(joint_names=['joint1', 'wrist'])
    with pytest.raises(BackendError, match='needs joint_names'):
        build(joint_names=[''])
    register_backend('twist_only_test', _TwistOnly)
    with pytest.raises(BackendError, match='takes end-effector twists only'):
        build(backend='twist_only_test')


class _TwistOnly(DryRunBackend):
    name = 'twist_only_test'
    joint_interfaces = ()


class _BroadcastsItself(DryRunBackend):
    name = 'broadcasts_itself_test'
    publishes_joint_states = False


def test_velocity_interface_and_no_joint_states_republished(graph):  # noqa: F811
    register_backend('broadcasts_itself_test', _BroadcastsItself)
    client = _joint_client(graph)
    driver = graph.driver(backend='broadcasts_itself_test', **{
        **JOINT_PARAMS, 'command_interface': 'joint_velocity'})
    assert wait_for(lambda: client.applied, 5.0)
    assert wait_for(lambda: client.pub.get_subscription_count() > 0, 5.0)
    msg = JointState(name=['joint1', 'joint4'], velocity=[5.0, 0.0])
    msg.header.stamp = client.get_clock().now().to_msg()
    client.pub.publish(msg)
    assert wait_for(lambda: any(m.velocity and m.velocity[1] > 0 for m in client.applied))
    with client.lock:
        moving = [m for m in client.applied if m.velocity and m.velocity[1] > 0]
    assert moving[0].velocity[1] == pytest.approx(0.4)  # clamped to joint1's limit
    assert all(not m.position for m in client.applied)
    time.sleep(0.3)
    assert client.applied[-1].velocity.tolist() == [0.0, 0.0]  # watchdog
    assert not client.states  # the robot publishes joint_states, not the driver
    assert driver.core.command_interface == 'joint_velocity'
    # Operators see the interface and the dropped commands in /diagnostics.
    assert wait_for(lambda: client.diagnostics, 3.0)
    values = {kv.key: kv.value for kv in client.diagnostics[-1].status[0].values}
    assert values['command_interface'] == 'joint_velocity'


def test_joint_limits_can_be_tightened_live_and_bad_ones_are_refused(graph):  # noqa: F811
    client = _joint_client(graph)
    driver = graph.driver(**JOINT_PARAMS)
    assert wait_for(lambda: client.applied, 5.0)
    result = driver.set_parameters([Parameter('joint_position_max', value=[1.0])])[0]
    assert not result.successful and 'joint_position_max has 1 values' in result.reason
    result = driver.set_parameters([Parameter('joint_max_velocity', value=[0.1, -1.0])])[0]
    assert not result.successful and 'must be > 0' in result.reason
    assert driver.set_parameters([Parameter('joint_position_max', value=[-2.4, 0.1])])[0] \
        .successful
    assert driver.core.joint_limits.position_max == (-2.4, 0.1)
    # The arm starts at joint4 = -2.5: a target above the new limit stops at it.
    assert wait_for(lambda: client.pub.get_subscription_count() > 0, 5.0)
    client.command = (['joint1', 'joint4'], [0.5, 0.0])
    assert wait_for(lambda: (a := client.applied_positions()) and
                    np.allclose(a[-1], [-2.4, 0.1]), 5.0), client.applied_positions()[-1]
    client.command = None
    assert all(np.all(p <= np.array([-2.4, 0.1]) + 1e-12)
               for p in client.applied_positions()[-20:])
    values = {}
    for msg in list(client.applied)[-1:]:
        values = dict(zip(msg.name, msg.position, strict=True))
    assert set(values) == {'joint4', 'joint1'}


def test_estop_holds_the_joint_target_until_cleared(graph):  # noqa: F811
    from std_msgs.msg import Bool
    from std_srvs.srv import Trigger

    client = _joint_client(graph)
    graph.driver(**JOINT_PARAMS)
    assert wait_for(lambda: client.applied and client.pub.get_subscription_count() > 0, 5.0)
    client.command = (['joint1', 'joint4'], [0.2, -2.0])  # 0.2 rad at <= 0.008 rad a tick
    assert wait_for(lambda: client.applied_positions()[-1][1] > 0.02, 3.0)
    graph.client.estop_pub.publish(Bool(data=True))
    time.sleep(0.3)
    n = len(client.applied_positions())
    # Commands keep streaming: the target must not move. Wait for six more applied
    # commands rather than a fixed time: a loaded CI machine can stall the client.
    assert wait_for(lambda: len(client.applied_positions()) > n + 5, 5.0)
    held = client.applied_positions()[n:]
    assert all(np.array_equal(h, held[0]) for h in held)
    assert held[0][1] < 0.2  # stopped on the way
    response = graph.client.call(Trigger, '/vla_driver/clear_estop', Trigger.Request())
    assert response.success
    assert wait_for(lambda: np.allclose(client.applied_positions()[-1], [-2.0, 0.2]), 5.0)
    client.command = None
    _assert_within_limits_and_steps(client.applied_positions())
