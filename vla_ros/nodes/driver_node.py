"""Driver node: the one place commands reach a robot backend.

The safety decisions (command watchdog, latched e-stop, actuation interlock, stale stamps,
NaN rejection, velocity / acceleration / workspace limits) live in the pure, fake-clock
tested :class:`vla_ros.drivers.core.DriverCore`; this node only wires ROS to it: callbacks
hand commands to the core, a timer asks it what to send and sends that to the backend. The
backend (MuJoCo sim, dry run, or a user's arm SDK) sits behind
``vla_ros.drivers.backend.RobotBackend``, knows nothing about ROS, and declares its own
parameters (``BackendParameter``), which this node declares only for the backend in use.

Interface (all topic names relative, so they follow the node's namespace and remappings):

* subscribes ``cmd/ee_twist`` (TwistStamped), ``cmd/joint`` (JointState, with
  ``command_interface`` ``joint_position`` / ``joint_velocity``: docs/joint_space.md),
  ``cmd/gripper`` (GripperCommand), ``cmd_vel`` (TwistStamped, mobile base), ``estop``
  (Bool, latched; True engages); a command for the interface not in use is rejected;
* publishes ``joint_states`` (unless the backend's robot publishes them), ``ee_pose``
  (when the backend knows it),
  ``~/applied_twist`` (exactly what the backend was sent; zero in joint mode),
  ``~/applied_joints`` (joint mode: the joint command the backend was sent; no
  arrays while the interlock is off),
  ``camera/<name>/image_raw``, ``/diagnostics``; with a mobile base ``odom``
  (nav_msgs/Odometry, ``odom_frame`` -> ``base_frame``); with a sim task episode
  ``~/task_status`` and (``publish_task_instruction``) the episode's ``instruction``
  (latched);
* services ``~/estop`` and ``~/clear_estop`` (Trigger), ``~/enable`` (SetBool).

``enable_actuation`` has no fixed default: unless it is set explicitly it resolves to True
for simulated / dry-run backends and to False for hardware, so real motors never move
before someone has deliberately enabled them.
"""

import json
import math
import sys

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, TwistStamped
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterUninitializedException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger
from vla_ros_msgs.msg import GripperCommand

from vla_ros import parameters as schema
from vla_ros.actions.safety import SafetyLimits
from vla_ros.drivers.backend import (
    BackendError,
    backend_parameters,
    create_backend,
    resolve_backend,
)
from vla_ros.drivers.core import DriverCore, resolve_actuation_enabled
from vla_ros.drivers.joint_rules import JointLimits, joint_limits_from_parameters
from vla_ros.nodes import qos
from vla_ros.nodes.declare import declare_parameters
from vla_ros.nodes.image_conversion import rgb_to_image_msg
from vla_ros.nodes.spin import spin_node

try:  # nav_msgs is needed only for a mobile base's odometry
    from nav_msgs.msg import Odometry
except ImportError:  # pragma: no cover - depends on the installation
    Odometry = None

# Parameters that make up SafetyLimits; a change to any of them rebuilds the limits at once.
LIMIT_PARAMS = (
    'max_linear_velocity', 'max_angular_velocity', 'max_linear_acceleration',
    'max_angular_acceleration', 'workspace_min', 'workspace_max',
    'max_base_linear_velocity', 'max_base_angular_velocity',
)
# Parameters that make up JointLimits (joint interfaces only); changes apply at once.
JOINT_LIMIT_PARAMS = ('joint_position_min', 'joint_position_max', 'joint_max_velocity',
                      'joint_max_step')
_WARN_PERIOD = 2.0  # s between repeats of a throttled warning


# ====================================================================== parameters
# Everything the driver node declares is in these two functions (the backend's own
# parameters come from its class); the node reads them back with get_parameter.

def declare_driver_parameters(node: Node) -> None:
    """Declare the driver's own parameters (not the backend's) from the schema."""
    declare_parameters(node, schema.DRIVER_PARAMETERS)


def declare_backend_parameters(node: Node, declared) -> dict:
    """Declare a backend's ``BackendParameter`` s read-only on ``node``; return the values."""
    values = {}
    for p in declared:
        if node.has_parameter(p.name):
            raise BackendError(f'backend parameter {p.name!r} collides with a driver parameter; '
                             'prefix it with the backend name')
        kwargs = {}
        if p.minimum is not None or p.maximum is not None:
            if isinstance(p.default, bool):
                raise BackendError(f'backend parameter {p.name!r}: a bool has no range')
            if isinstance(p.default, int):
                kwargs['integer_range'] = [IntegerRange(
                    from_value=int(-2**63 if p.minimum is None else p.minimum),
                    to_value=int(2**63 - 1 if p.maximum is None else p.maximum), step=1)]
            elif isinstance(p.default, float):
                kwargs['floating_point_range'] = [FloatingPointRange(
                    from_value=-math.inf if p.minimum is None else float(p.minimum),
                    to_value=math.inf if p.maximum is None else float(p.maximum), step=0.0)]
        node.declare_parameter(p.name, p.default, ParameterDescriptor(
            description=p.description, read_only=True, **kwargs))
        values[p.name] = node.get_parameter(p.name).value
    return values


def limits_from_parameters(values) -> SafetyLimits:
    """SafetyLimits from the LIMIT_PARAMS values (raises ValueError / TypeError if bad)."""
    values = dict(values)
    for key in ('workspace_min', 'workspace_max'):
        values[key] = [float(v) for v in values[key]]
    return SafetyLimits.from_dict(values)


def check_joint_backend(interface: str, limits: JointLimits, backend) -> None:
    """Refuse a joint interface the backend does not take, or joints it does not have."""
    offered = tuple(getattr(backend, 'joint_interfaces', ()) or ())
    if interface not in offered:
        raise BackendError(
            f"command_interface {interface!r}: backend '{backend.name}' takes "
            f"{', '.join(offered) if offered else 'end-effector twists only'}")
    known = tuple(backend.joint_names)
    unknown = [n for n in limits.names if n not in known]
    if known and unknown:  # a backend that learns its joints later reports none yet
        raise BackendError(f"joint_names {unknown} are not joints of backend "
                           f"'{backend.name}' (it has {list(known)})")


def _stamp_seconds(msg):
    """A header stamp in seconds; None for a zero stamp (hand-made messages)."""
    stamp = msg.header.stamp
    if stamp.sec == 0 and stamp.nanosec == 0:
        return None
    return stamp.sec + stamp.nanosec * 1e-9


def _twist_values(msg):
    linear, angular = msg.twist.linear, msg.twist.angular
    return [linear.x, linear.y, linear.z, angular.x, angular.y, angular.z]


# ====================================================================== node
class DriverNode(LifecycleNode):
    """ROS adapter around a :class:`DriverCore` and a ``RobotBackend``; a lifecycle node.

    configure builds the backend (connects) and the ROS interfaces, activate opens the
    lifecycle gate of the core, deactivate closes it (the robot holds still, state is still
    published), cleanup / shutdown stop and release the backend. With ``autostart`` (the
    default) the node configures and activates itself, so it runs without a lifecycle
    manager exactly like a plain node.
    """

    def __init__(self, context=None, node_name: str = 'vla_driver', **node_kwargs):
        super().__init__(node_name, context=context, **node_kwargs)
        declare_driver_parameters(self)
        p = self._param
        self._rate_hz = p('rate_hz')
        self._period = 1.0 / self._rate_hz
        self._frame = p('ee_frame')
        self.backend = None
        self.core = None
        self._entities = []  # (destroy function, entity) made by configure
        self._estop_carried = False  # an e-stop survives cleanup / configure
        self._configure_error = None
        # The backend's parameters exist (and are checked) for the node's whole life.
        backend_class = resolve_backend(p('backend'))
        self._backend_values = declare_backend_parameters(
            self, backend_parameters(backend_class))
        # Registered after declaring: declarations (already checked by the descriptors)
        # must not reach callbacks that use state not yet built.
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        if p('autostart'):
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise self._configure_error or RuntimeError('driver failed to configure')
            if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                raise RuntimeError('driver failed to activate')

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state):
        """Build and start the backend, the core and every ROS interface."""
        try:
            self._configure()
        except Exception as err:  # noqa: BLE001 - reported, and re-raised by autostart
            self._configure_error = err
            self.get_logger().error(f'configure failed: {type(err).__name__}: {err}')
            self._release()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state):
        """Open the lifecycle gate (a fresh command is needed to move)."""
        self.core.set_active(True)
        self.get_logger().info(
            f"active: driving '{self.backend.name}' at {self._rate_hz:.0f} Hz, actuation "
            f"{'enabled' if self.core.actuation_enabled else 'DISABLED (call ~/enable)'}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state):
        """Close the lifecycle gate: hold still, keep publishing state."""
        self.core.set_active(False)
        self.get_logger().info('inactive: holding still')
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state):
        """Stop the robot and release the backend and the ROS interfaces."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state):
        """Like cleanup, from any state."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state):
        """A transition raised: leave the robot still and released."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _keep(self, entity, destroy):
        self._entities.append((destroy, entity))
        return entity

    def _configure(self):
        p = self._param
        self.backend = create_backend(p('backend'), self._backend_values,
                                      log=self.get_logger().info)
        try:
            user_enabled = bool(p('enable_actuation'))
        except ParameterUninitializedException:
            user_enabled = None
        enabled = resolve_actuation_enabled(user_enabled, self.backend.is_hardware)
        if user_enabled is None:
            # Store the resolved value so `ros2 param get` shows what is in force.
            self.set_parameters([Parameter('enable_actuation', value=enabled)])

        interface = p('command_interface')
        joint_limits = None
        self._joint_index = (None, None)  # (state joint names, indices of joint_names)
        if interface != 'ee_twist':
            try:
                joint_limits = joint_limits_from_parameters(self._joint_values())
            except ValueError as err:  # a configuration error: the message says which
                raise BackendError(f'command_interface {interface!r}: {err}') from err
            check_joint_backend(interface, joint_limits, self.backend)
            if self.backend.supports_base:
                self.get_logger().warning(
                    f'{interface}: cmd_vel is not applied (joint commands drive the arm only)')
        try:
            self.backend.attach_node(self)
        except BackendError:
            raise
        except ValueError as err:
            raise BackendError(f"backend '{self.backend.name}': {err}") from err
        self.backend.start()
        self.core = DriverCore(
            lambda: self.get_clock().now().nanoseconds * 1e-9,
            limits_from_parameters({n: p(n) for n in LIMIT_PARAMS}),
            period=self._period, watchdog_timeout=p('watchdog_timeout'), enabled=enabled,
            supports_base=self.backend.supports_base,
            initial_gripper=float(self.backend.read_state().gripper), active=False,
            command_interface=interface, joint_limits=joint_limits)
        if self._estop_carried:
            self.core.engage_estop()

        # Input callbacks only hand values to the core (it locks), so they may run beside
        # the loop.
        inputs = MutuallyExclusiveCallbackGroup()
        sub, srv, pub = self.destroy_subscription, self.destroy_service, self.destroy_publisher
        for msg_type, topic, callback, profile in (
                (TwistStamped, 'cmd/ee_twist', self._on_ee_twist, qos.COMMAND),
                (JointState, 'cmd/joint', self._on_joint, qos.COMMAND),
                (GripperCommand, 'cmd/gripper', self._on_gripper, qos.COMMAND),
                (TwistStamped, 'cmd_vel', self._on_cmd_vel, qos.COMMAND),
                (Bool, 'estop', self._on_estop_topic, qos.LATCHED)):
            self._keep(self.create_subscription(
                msg_type, topic, callback, profile, callback_group=inputs), sub)
        for srv_type, name, callback in (
                (Trigger, '~/estop', self._srv_estop),
                (Trigger, '~/clear_estop', self._srv_clear_estop),
                (SetBool, '~/enable', self._srv_enable)):
            self._keep(self.create_service(srv_type, name, callback, callback_group=inputs),
                       srv)

        def publisher(msg_type, topic, profile):
            return self._keep(self.create_publisher(msg_type, topic, profile), pub)

        self._joint_pub = (publisher(JointState, 'joint_states', qos.SENSOR)
                           if self.backend.publishes_joint_states else None)
        self._applied_joints_pub = (publisher(JointState, '~/applied_joints', qos.STATUS)
                                    if self.core.joint_mode else None)
        self._pose_pub = publisher(PoseStamped, 'ee_pose', qos.SENSOR)
        self._applied_pub = publisher(TwistStamped, '~/applied_twist', qos.STATUS)
        self._diag_pub = publisher(DiagnosticArray, '/diagnostics', 10)
        self._odom_pub = None
        if self.backend.supports_base:
            if Odometry is None:
                self.get_logger().error(
                    'nav_msgs is not installed: no odom for the mobile base '
                    '(pip install ros-kilted-nav-msgs)')
            else:
                self._odom_pub = publisher(Odometry, 'odom', qos.SENSOR)
                self._odom_frames = (p('odom_frame'), p('base_frame'))

        # The backend (MuJoCo in particular) is not thread-safe: every call into it after
        # start() runs in this one mutually exclusive group.
        backend_group = MutuallyExclusiveCallbackGroup()

        def timer(period, callback):
            return self._keep(self.create_timer(period, callback, callback_group=backend_group),
                              self.destroy_timer)

        timer(self._period, self._control_tick)
        timer(1.0, self._publish_diagnostics)
        if self.backend.task_status() is not None:
            # Ground truth of the simulated episode (a simulator feature, not a sensor).
            self._task_pub = publisher(String, '~/task_status', qos.LATCHED)
            timer(0.5, self._publish_task_status)
        instruction = self.backend.task_instruction()
        if instruction and p('publish_task_instruction'):
            # Latched like an operator's instruction: a late inference node still gets it.
            publisher(String, 'instruction', qos.INSTRUCTION).publish(String(data=instruction))
            self.get_logger().info(f'task instruction published: {instruction!r}')
        self._image_pubs = {}
        camera_rate = p('camera_rate_hz')
        if camera_rate > 0.0:
            for name in self.backend.cameras():
                self._image_pubs[name] = publisher(Image, f'camera/{name}/image_raw', qos.SENSOR)
            if self._image_pubs:
                timer(1.0 / camera_rate, self._camera_tick)

    def _release(self):
        """Destroy the timers first (no tick after the stop), stop the robot, release all."""
        entities, self._entities = self._entities, []
        for destroy, entity in entities:
            if destroy == self.destroy_timer:
                destroy(entity)
        backend, core = self.backend, self.core
        self.backend = self.core = None
        if core is not None:
            self._estop_carried = core.estop_engaged
        try:
            if backend is not None:
                try:
                    if core is not None:
                        self._send_stop(backend, core)
                finally:
                    backend.stop()
        finally:
            for destroy, entity in entities:
                if destroy != self.destroy_timer:
                    destroy(entity)

    def _send_stop(self, backend, core):
        if not core.joint_mode:
            stop = core.stop_output()
            backend.send_command(stop.ee_twist, stop.gripper, stop.base_twist, stop.dt)
            return
        if not core.actuation_enabled:
            return  # interlock off: the arm is not the driver's to command (see _joint_tick)
        measured = self._measured_joints(backend.read_state(), core)
        stop = core.stop_output(measured)
        if stop.joint_positions is not None or stop.joint_velocities is not None:
            backend.send_joint_command(stop.joint_positions, stop.joint_velocities,
                                       stop.gripper, stop.dt)

    def _joint_values(self) -> dict:
        values = {'joint_names': self._param('joint_names')}
        for name in JOINT_LIMIT_PARAMS:
            try:
                values[name] = self._param(name)
            except ParameterUninitializedException:
                values[name] = None
        return values

    def _measured_joints(self, state, core):
        """The measured positions of joint_names (None if the state lacks some)."""
        names = tuple(state.joint_names)
        if self._joint_index[0] != names:
            index = {n: i for i, n in enumerate(names)}
            wanted = core.joint_limits.names
            self._joint_index = (names, None if any(n not in index for n in wanted)
                                 else [index[n] for n in wanted])
        indices = self._joint_index[1]
        if indices is None:
            return None
        return np.asarray(state.joint_positions, float)[indices]

    @property
    def estop_engaged(self) -> bool:
        """Whether the e-stop is engaged (only ``~/clear_estop`` clears it)."""
        return self._estop_carried if self.core is None else self.core.estop_engaged

    @property
    def actuation_enabled(self) -> bool:
        """Whether the actuation interlock lets commands through (not the lifecycle gate)."""
        return False if self.core is None else self.core.actuation_enabled

    @property
    def _limits(self) -> SafetyLimits:
        if self.core is None:  # unconfigured: what configure would use
            return limits_from_parameters({n: self._param(n) for n in LIMIT_PARAMS})
        return self.core.limits

    # ------------------------------------------------------------------ parameters
    def _param(self, name):
        return self.get_parameter(name).value

    def _validate_parameters(self, params):
        """Reject bad values; ranges and types were already checked by the descriptors."""
        for param in params:
            if param.name in ('workspace_min', 'workspace_max'):
                value = list(param.value) if param.value is not None else []
                if len(value) != 3 or not all(math.isfinite(float(v)) for v in value):
                    return SetParametersResult(
                        successful=False, reason=f'{param.name} must be 3 finite numbers')
        names = {param.name for param in params}
        if names & set(JOINT_LIMIT_PARAMS) and self.core is not None and self.core.joint_mode:
            merged = self._joint_values()
            merged.update({p.name: p.value for p in params if p.name in JOINT_LIMIT_PARAMS})
            try:
                joint_limits_from_parameters(merged)
            except (ValueError, TypeError) as err:
                return SetParametersResult(successful=False,
                                           reason=f'invalid joint limits: {err}')
        if names & set(LIMIT_PARAMS):
            # Build the whole limit set as it would be, so a bad combination is refused.
            merged = {n: self._param(n) for n in LIMIT_PARAMS}
            merged.update({p.name: p.value for p in params if p.name in LIMIT_PARAMS})
            try:
                limits_from_parameters(merged)
            except (ValueError, TypeError) as err:
                return SetParametersResult(successful=False, reason=f'invalid limits: {err}')
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params):
        if self.core is None:
            return  # unconfigured: configure reads the parameters
        names = {param.name for param in params}
        if names & set(LIMIT_PARAMS):
            # One reference swap: the control loop sees either the old or the new set.
            self.core.set_limits(
                limits_from_parameters({n: self._param(n) for n in LIMIT_PARAMS}))
        if names & set(JOINT_LIMIT_PARAMS) and self.core.joint_mode:
            self.core.set_joint_limits(joint_limits_from_parameters(self._joint_values()))
        if 'watchdog_timeout' in names:
            self.core.set_watchdog_timeout(self._param('watchdog_timeout'))
        if 'enable_actuation' in names:
            enabled = bool(self._param('enable_actuation'))
            if self.core.set_enabled(enabled):
                self.get_logger().info(f"actuation {'enabled' if enabled else 'disabled'}")

    # ------------------------------------------------------------------ inputs
    def _on_ee_twist(self, msg):
        why = self.core.command_ee_twist(_twist_values(msg), _stamp_seconds(msg))
        if why is not None:
            self._reject(why)

    def _on_joint(self, msg):
        why = self.core.command_joints(list(msg.name), list(msg.position),
                                       list(msg.velocity), _stamp_seconds(msg))
        if why is not None:
            self._reject(why)

    def _on_gripper(self, msg):
        why = self.core.command_gripper(msg.position, msg.max_effort)
        if why is not None:
            self._reject(why)

    def _on_cmd_vel(self, msg):
        if not self.core.supports_base:
            self.get_logger().warning(
                f"backend '{self.backend.name}' has no mobile base; ignoring cmd_vel",
                throttle_duration_sec=_WARN_PERIOD)
            return
        why = self.core.command_base_twist(_twist_values(msg), _stamp_seconds(msg))
        if why is not None:
            self._reject(why)

    def _reject(self, why):
        """Log a rejected command (the core counted it)."""
        self.get_logger().warning(
            f'dropping command: {why}', throttle_duration_sec=_WARN_PERIOD)

    def _on_estop_topic(self, msg):
        if msg.data:
            self._engage_estop('estop topic')
        else:
            self.get_logger().info(
                'estop False received; the e-stop only clears via ~/clear_estop',
                throttle_duration_sec=_WARN_PERIOD)

    def _engage_estop(self, source):
        if self.core.engage_estop():
            self.get_logger().error(f'E-STOP engaged ({source})')

    def _srv_estop(self, request, response):
        self._engage_estop('~/estop service')
        response.success, response.message = True, 'e-stop engaged'
        return response

    def _srv_clear_estop(self, request, response):
        was = self.core.clear_estop()
        if was:
            self.get_logger().warning('e-stop cleared')
        response.success = True
        response.message = 'e-stop cleared' if was else 'e-stop was not engaged'
        return response

    def _srv_enable(self, request, response):
        result = self.set_parameters([Parameter('enable_actuation', value=request.data)])[0]
        response.success = result.successful
        response.message = result.reason or (
            'actuation enabled' if request.data else 'actuation disabled')
        return response

    # ------------------------------------------------------------------ control loop
    def _control_tick(self):
        now = self.get_clock().now()
        state = self.backend.read_state()
        if self.core.joint_mode:
            self._joint_tick(state, now)
        else:
            out = self.core.tick(np.asarray(state.ee_position), now=now.nanoseconds * 1e-9)
            self._log_watchdog(out.watchdog_changed)
            self.backend.send_command(out.ee_twist, out.gripper, out.base_twist, out.dt)
            self._publish_applied(out.ee_twist, now)
        self._publish_state(self.backend.read_state(), now)

    def _joint_tick(self, state, now):
        measured = self._measured_joints(state, self.core)
        if measured is None or not np.all(np.isfinite(measured)):
            # Nothing safe to command without knowing where the arm is.
            self.get_logger().warning(
                f'no finite measured positions for joint_names '
                f'{list(self.core.joint_limits.names)} yet (state has '
                f'{list(state.joint_names)}); not commanding',
                throttle_duration_sec=_WARN_PERIOD)
            return
        out = self.core.tick(np.asarray(state.ee_position), now=now.nanoseconds * 1e-9,
                             joint_positions=measured)
        self._log_watchdog(out.watchdog_changed)
        positions, velocities = out.joint_positions, out.joint_velocities
        if not self.core.actuation_enabled:
            # Interlock off: hands off the arm. Re-sending the held target would pull an
            # arm moved meanwhile (pendant, another node) back to it; send no arm command.
            positions = velocities = None
        self.backend.send_joint_command(positions, velocities, out.gripper, out.dt)
        self._publish_applied(out.ee_twist, now)
        msg = JointState(name=list(self.core.joint_limits.names))
        msg.header.stamp = now.to_msg()
        if positions is not None:
            msg.position = [float(v) for v in positions]
        if velocities is not None:
            msg.velocity = [float(v) for v in velocities]
        self._applied_joints_pub.publish(msg)

    def _log_watchdog(self, tripped):
        # The core reports transitions only; it starts tripped (no command yet) silently.
        topic = 'cmd/joint' if self.core.joint_mode else 'cmd/ee_twist'
        if tripped is True:
            self.get_logger().warning(
                f'watchdog: no {topic} for {self.core.watchdog_timeout:.3f} s; '
                'holding still')
        elif tripped is False:
            self.get_logger().info(f'watchdog: {topic} commands flowing')

    def _publish_task_status(self):
        self._task_pub.publish(String(data=json.dumps(self.backend.task_status())))

    def _publish_applied(self, twist, now):
        msg = TwistStamped()
        msg.header.stamp = now.to_msg()
        msg.header.frame_id = self._frame
        (msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z,
         msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z) = map(float, twist)
        self._applied_pub.publish(msg)

    def _publish_state(self, state, now):
        stamp = now.to_msg()
        joints = JointState()
        joints.header.stamp = stamp
        joints.name = list(state.joint_names)
        joints.position = [float(v) for v in state.joint_positions]
        joints.velocity = [float(v) for v in state.joint_velocities]
        if self._joint_pub is not None:
            self._joint_pub.publish(joints)

        # Backends that do not know the pose report NaN (ros2_control; moveit_servo
        # without a fresh ee_pose_topic): publish nothing rather than a NaN pose.
        if np.all(np.isfinite(state.ee_position)) and np.all(np.isfinite(state.ee_orientation)):
            pose = PoseStamped()
            pose.header.stamp = stamp
            pose.header.frame_id = self._frame
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = map(
                float, state.ee_position)
            o = pose.pose.orientation
            o.w, o.x, o.y, o.z = map(float, state.ee_orientation)
            self._pose_pub.publish(pose)
        if self._odom_pub is not None and state.base_pose is not None:
            self._odom_pub.publish(self._odometry(state, stamp))

    def _odometry(self, state, stamp):
        odom = Odometry()
        odom.header.stamp = stamp
        odom.header.frame_id, odom.child_frame_id = self._odom_frames
        x, y, yaw = map(float, state.base_pose)
        odom.pose.pose.position.x, odom.pose.pose.position.y = x, y
        q = odom.pose.pose.orientation
        q.w, q.z = math.cos(yaw / 2.0), math.sin(yaw / 2.0)
        if state.base_twist is not None:
            vx, vy, wz = map(float, state.base_twist)
            odom.twist.twist.linear.x, odom.twist.twist.linear.y = vx, vy
            odom.twist.twist.angular.z = wz
        return odom

    def _camera_tick(self):
        stamp = self.get_clock().now().to_msg()
        for name, pub in self._image_pubs.items():
            pub.publish(rgb_to_image_msg(
                self.backend.render(name), stamp=stamp, frame_id=f'{name}_camera'))

    def _publish_diagnostics(self):
        status = self.core.status()
        level = {'ok': DiagnosticStatus.OK, 'warn': DiagnosticStatus.WARN,
                 'error': DiagnosticStatus.ERROR}[status.level]
        msg = DiagnosticStatus(name=f'{self.get_name()}: driver', hardware_id=self.backend.name,
                               level=level, message=status.message)
        values = {
            'watchdog_tripped': status.watchdog_tripped, 'estop': status.estop,
            'actuation_enabled': status.actuation_enabled,
            'clamped_count': status.clamped_count, 'rejected_count': status.rejected_count,
            'backend': self.backend.name, 'command_interface': self.core.command_interface,
        }
        msg.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[msg])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    def destroy_node(self):
        """Leave the robot still and release the backend before the node goes away.

        Call it from the thread that spun the node: GL contexts of simulated cameras are
        bound to the thread that rendered with them.
        """
        try:
            if getattr(self, 'backend', None) is not None:
                self._release()
        finally:
            super().destroy_node()


def main(args=None):
    """Entry point of ``ros2 run vla_ros driver_node``."""
    try:
        spin_node(DriverNode, args)
    except BackendError as err:  # a user's configuration error: the message, no traceback
        print(f'vla_driver: {err}', file=sys.stderr)
        sys.exit(2)


if __name__ == '__main__':
    main()
