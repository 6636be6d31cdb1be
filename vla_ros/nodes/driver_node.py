"""Driver node: the one place commands reach a robot backend.

Everything between a policy and the motors that must hold even when the policy misbehaves
lives here: a command watchdog, a latched e-stop, an actuation interlock, NaN rejection and
velocity / acceleration / workspace limits. The backend (MuJoCo sim, dry run, or a user's arm
SDK) sits behind ``vla_ros.drivers.backend.RobotBackend`` and knows nothing about ROS.

Interface (all topic names relative, so they follow the node's namespace and remappings):

* subscribes ``cmd/ee_twist`` (TwistStamped), ``cmd/gripper`` (GripperCommand),
  ``cmd_vel`` (TwistStamped, mobile base), ``estop`` (Bool, latched; True engages);
* publishes ``joint_states``, ``ee_pose``, ``~/applied_twist`` (exactly what the backend
  was sent), ``camera/<name>/image_raw`` and ``/diagnostics``;
* services ``~/estop`` and ``~/clear_estop`` (Trigger), ``~/enable`` (SetBool).

``enable_actuation`` has no fixed default: unless it is set explicitly it resolves to True
for simulated / dry-run backends and to False for hardware, so real motors never move
before someone has deliberately enabled them.
"""

import json
import math
import threading
from typing import Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, TwistStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.time import Time
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger
from vla_ros_msgs.msg import GripperCommand

from vla_ros import parameters as schema
from vla_ros.actions.safety import (
    SafetyLimits,
    UnsafeCommandError,
    apply_arm_limits,
    check_finite,
    limit_base,
)
from vla_ros.drivers.backend import make_backend
from vla_ros.nodes import qos
from vla_ros.nodes.declare import declare_parameters
from vla_ros.nodes.image_conversion import rgb_to_image_msg
from vla_ros.nodes.spin import spin_node

# Parameters that make up SafetyLimits; a change to any of them rebuilds the limits at once.
LIMIT_PARAMS = (
    'max_linear_velocity', 'max_angular_velocity', 'max_linear_acceleration',
    'max_angular_acceleration', 'workspace_min', 'workspace_max',
    'max_base_linear_velocity', 'max_base_angular_velocity',
)
_WARN_PERIOD = 2.0  # s between repeats of a throttled warning


# Node parameters each built-in backend takes; user 'module:Class' backends get none.
_BACKEND_PARAMS = {
    'mujoco': lambda node: dict(
        mobile=node._param('mobile'), seed=node._param('seed'),
        image_size=(node._param('image_width'), node._param('image_height')),
        task=node._param('task'), task_seed=node._param('task_seed'),
        task_split=node._param('task_split')),
    'dry_run': lambda node: dict(mobile=node._param('mobile'), log=node.get_logger().info),
}


def _no_params(node):
    return {}


def _twist_array(msg, topic) -> np.ndarray:
    linear, angular = msg.twist.linear, msg.twist.angular
    return check_finite(
        [linear.x, linear.y, linear.z, angular.x, angular.y, angular.z], topic)


class DriverNode(Node):
    """Watchdog, e-stop, interlock and safety limits in front of a ``RobotBackend``."""

    def __init__(self, context=None, node_name: str = 'vla_driver', **node_kwargs):
        super().__init__(node_name, context=context, **node_kwargs)
        self._declare_parameters()
        p = self._param
        self._rate_hz = p('rate_hz')
        self._period = 1.0 / self._rate_hz
        self._watchdog_timeout = p('watchdog_timeout')
        self._frame = p('ee_frame')
        self._limits = self._limits_from({n: p(n) for n in LIMIT_PARAMS})

        backend = p('backend')
        self.backend = make_backend(backend, **_BACKEND_PARAMS.get(backend, _no_params)(self))
        self._resolve_enable_actuation()
        # Registered after declaring: declarations (already checked by the descriptors)
        # must not reach callbacks that use state not yet built.
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

        # Shared between subscriber / service threads and the control loop.
        self._lock = threading.Lock()
        self._ee_cmd: Optional[np.ndarray] = None
        self._ee_received: Optional[Time] = None
        self._base_cmd: Optional[np.ndarray] = None
        self._base_received: Optional[Time] = None
        self._gripper_cmd: Optional[float] = None
        self._estop = False
        # Control-loop state (only touched from the exclusive control group).
        self._applied = np.zeros(6)
        self._gripper_target: Optional[float] = None
        self._last_tick: Optional[Time] = None
        self._watchdog_tripped = True
        self._clamped_count = 0
        self._rejected_count = 0

        self.backend.start()
        self._gripper_target = float(self.backend.read_state().gripper)

        # Input callbacks only store values under the lock, so they may run beside the loop.
        inputs = MutuallyExclusiveCallbackGroup()
        self.create_subscription(
            TwistStamped, 'cmd/ee_twist', self._on_ee_twist, qos.COMMAND, callback_group=inputs)
        self.create_subscription(
            GripperCommand, 'cmd/gripper', self._on_gripper, qos.COMMAND, callback_group=inputs)
        self.create_subscription(
            TwistStamped, 'cmd_vel', self._on_cmd_vel, qos.COMMAND, callback_group=inputs)
        self.create_subscription(
            Bool, 'estop', self._on_estop_topic, qos.LATCHED, callback_group=inputs)
        self.create_service(Trigger, '~/estop', self._srv_estop, callback_group=inputs)
        self.create_service(
            Trigger, '~/clear_estop', self._srv_clear_estop, callback_group=inputs)
        self.create_service(SetBool, '~/enable', self._srv_enable, callback_group=inputs)

        self._joint_pub = self.create_publisher(JointState, 'joint_states', qos.SENSOR)
        self._pose_pub = self.create_publisher(PoseStamped, 'ee_pose', qos.SENSOR)
        self._applied_pub = self.create_publisher(TwistStamped, '~/applied_twist', qos.STATUS)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)

        # The backend (MuJoCo in particular) is not thread-safe: every call into it after
        # start() runs in this one mutually exclusive group.
        backend_group = MutuallyExclusiveCallbackGroup()
        self.create_timer(self._period, self._control_tick, callback_group=backend_group)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=backend_group)
        if getattr(self.backend, 'task_instance', None) is not None:
            # Ground truth of the simulated episode (a simulator feature, not a sensor).
            self._task_pub = self.create_publisher(String, '~/task_status', qos.LATCHED)
            self.create_timer(0.5, self._publish_task_status, callback_group=backend_group)
        self._image_pubs = {}
        camera_rate = p('camera_rate_hz')
        if camera_rate > 0.0:
            for name in self.backend.cameras():
                self._image_pubs[name] = self.create_publisher(
                    Image, f'camera/{name}/image_raw', qos.SENSOR)
            if self._image_pubs:
                self.create_timer(
                    1.0 / camera_rate, self._camera_tick, callback_group=backend_group)
        self.get_logger().info(
            f"driving '{self.backend.name}' at {self._rate_hz:.0f} Hz, actuation "
            f"{'enabled' if self._actuation_enabled else 'DISABLED (call ~/enable)'}")

    @property
    def estop_engaged(self) -> bool:
        """Whether the e-stop is engaged (only ``~/clear_estop`` clears it)."""
        return self._estop

    @property
    def actuation_enabled(self) -> bool:
        """Whether the actuation interlock lets commands through."""
        return self._actuation_enabled

    # ------------------------------------------------------------------ parameters
    def _param(self, name):
        return self.get_parameter(name).value

    def _declare_parameters(self):
        declare_parameters(self, schema.node_parameters(schema.DRIVER))

    def _resolve_enable_actuation(self):
        try:
            enabled = bool(self._param('enable_actuation'))
        except ParameterUninitializedException:
            enabled = not self.backend.is_hardware
            # Store the resolved value so `ros2 param get` shows what is in force.
            self.set_parameters([Parameter('enable_actuation', value=enabled)])
        self._actuation_enabled = enabled

    @staticmethod
    def _limits_from(values):
        values = dict(values)
        for key in ('workspace_min', 'workspace_max'):
            values[key] = [float(v) for v in values[key]]
        return SafetyLimits.from_dict(values)

    def _validate_parameters(self, params):
        """Reject bad values; ranges and types were already checked by the descriptors."""
        for param in params:
            if param.name in ('workspace_min', 'workspace_max'):
                value = list(param.value) if param.value is not None else []
                if len(value) != 3 or not all(math.isfinite(float(v)) for v in value):
                    return SetParametersResult(
                        successful=False, reason=f'{param.name} must be 3 finite numbers')
        names = {param.name for param in params}
        if names & set(LIMIT_PARAMS):
            # Build the whole limit set as it would be, so a bad combination is refused.
            merged = {n: self._param(n) for n in LIMIT_PARAMS}
            merged.update({p.name: p.value for p in params if p.name in LIMIT_PARAMS})
            try:
                self._limits_from(merged)
            except (ValueError, TypeError) as err:
                return SetParametersResult(successful=False, reason=f'invalid limits: {err}')
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params):
        names = {param.name for param in params}
        if names & set(LIMIT_PARAMS):
            # One reference swap: the control loop sees either the old or the new set.
            self._limits = self._limits_from({n: self._param(n) for n in LIMIT_PARAMS})
        if 'watchdog_timeout' in names:
            self._watchdog_timeout = self._param('watchdog_timeout')
        if 'enable_actuation' in names:
            enabled = bool(self._param('enable_actuation'))
            if enabled != getattr(self, '_actuation_enabled', None):
                self.get_logger().info(f"actuation {'enabled' if enabled else 'disabled'}")
            with self._lock:
                self._actuation_enabled = enabled
                # Require a command sent after enabling, not one queued while disabled.
                self._ee_cmd = None

    # ------------------------------------------------------------------ inputs
    def _command_time(self, msg, topic):
        """When a command counts as sent: arrival, or its stamp if that is older.

        A command delayed in transit or queued while this process was stalled must not
        run for a full watchdog timeout after it finally arrives. A zero stamp (hand-made
        messages) counts as sent on arrival. Returns None for a command already too old.
        """
        now = self.get_clock().now()
        stamp = msg.header.stamp
        if stamp.sec == 0 and stamp.nanosec == 0:
            return now
        sent = Time.from_msg(stamp, clock_type=now.clock_type)
        age = (now - sent).nanoseconds * 1e-9
        if age > self._watchdog_timeout:
            self._reject(f'{topic} is stale: stamped {age:.3f} s ago '
                         f'(> watchdog_timeout {self._watchdog_timeout:.3f} s)')
            return None
        return min(now, sent)

    def _on_ee_twist(self, msg):
        try:
            twist = _twist_array(msg, 'cmd/ee_twist')
        except UnsafeCommandError as err:
            self._reject(err)
            return
        sent = self._command_time(msg, 'cmd/ee_twist')
        if sent is None:
            return
        with self._lock:
            self._ee_cmd = twist
            self._ee_received = sent

    def _on_gripper(self, msg):
        if not (math.isfinite(msg.position) and math.isfinite(msg.max_effort)):
            self._reject(f'cmd/gripper is not finite: {msg.position}, {msg.max_effort}')
            return
        with self._lock:
            self._gripper_cmd = min(max(float(msg.position), 0.0), 1.0)

    def _on_cmd_vel(self, msg):
        if not self.backend.supports_base:
            self.get_logger().warning(
                f"backend '{self.backend.name}' has no mobile base; ignoring cmd_vel",
                throttle_duration_sec=_WARN_PERIOD)
            return
        try:
            twist = _twist_array(msg, 'cmd_vel')
        except UnsafeCommandError as err:
            self._reject(err)
            return
        sent = self._command_time(msg, 'cmd_vel')
        if sent is None:
            return
        with self._lock:
            # Planar base: vx, vy, wz.
            self._base_cmd = twist[[0, 1, 5]]
            self._base_received = sent

    def _reject(self, why):
        self._rejected_count += 1
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
        with self._lock:
            was = self._estop
            self._estop = True
        if not was:
            self.get_logger().error(f'E-STOP engaged ({source})')

    def _srv_estop(self, request, response):
        self._engage_estop('~/estop service')
        response.success, response.message = True, 'e-stop engaged'
        return response

    def _srv_clear_estop(self, request, response):
        with self._lock:
            was = self._estop
            self._estop = False
            # Commands that arrived during the e-stop must not run once it clears.
            self._ee_cmd = None
            self._base_cmd = None
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
        # Measured dt (bounded) so acceleration limits hold if a tick runs late.
        dt = self._period if self._last_tick is None else min(
            max((now - self._last_tick).nanoseconds * 1e-9, 1e-4), 3 * self._period)
        self._last_tick = now
        timeout = self._watchdog_timeout
        with self._lock:
            estop, enabled = self._estop, self._actuation_enabled
            ee_cmd, ee_age = self._ee_cmd, self._age(self._ee_received, now)
            base_cmd, base_age = self._base_cmd, self._age(self._base_received, now)
            gripper_cmd = self._gripper_cmd

        allowed = enabled and not estop
        fresh = ee_cmd is not None and ee_age <= timeout
        self._log_watchdog(not fresh)
        state = self.backend.read_state()
        if allowed and fresh:
            limited = apply_arm_limits(
                ee_cmd, self._applied, np.asarray(state.ee_position), dt, self._limits)
            twist = np.asarray(limited.twist, dtype=float)
            if limited.clamped:
                self._clamped_count += 1
        else:
            # Stops are immediate: decelerating through the acceleration limit would
            # lengthen the stop, which is exactly what an e-stop or watchdog must not do.
            twist = np.zeros(6)
        if allowed and gripper_cmd is not None:
            self._gripper_target = gripper_cmd
        base = None
        if self.backend.supports_base:
            base = np.zeros(3)
            if allowed and base_cmd is not None and base_age <= timeout:
                base = limit_base(base_cmd, self._limits)

        self.backend.send_command(twist, self._gripper_target, base, dt)
        self._applied = twist
        self._publish_applied(twist, now)
        self._publish_state(self.backend.read_state(), now)

    @staticmethod
    def _age(received, now):
        return math.inf if received is None else (now - received).nanoseconds * 1e-9

    def _log_watchdog(self, tripped):
        # Log transitions only; it starts tripped (no command yet) without a warning.
        if tripped == self._watchdog_tripped:
            return
        self._watchdog_tripped = tripped
        if tripped:
            self.get_logger().warning(
                f'watchdog: no cmd/ee_twist for {self._watchdog_timeout:.3f} s; holding still')
        elif not tripped:
            self.get_logger().info('watchdog: ee commands flowing')

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
        self._joint_pub.publish(joints)

        pose = PoseStamped()
        pose.header.stamp = stamp
        pose.header.frame_id = self._frame
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = map(
            float, state.ee_position)
        o = pose.pose.orientation
        o.w, o.x, o.y, o.z = map(float, state.ee_orientation)
        self._pose_pub.publish(pose)

    def _camera_tick(self):
        stamp = self.get_clock().now().to_msg()
        for name, pub in self._image_pubs.items():
            pub.publish(rgb_to_image_msg(
                self.backend.render(name), stamp=stamp, frame_id=f'{name}_camera'))

    def _publish_diagnostics(self):
        with self._lock:
            estop, enabled = self._estop, self._actuation_enabled
        status = DiagnosticStatus(name=f'{self.get_name()}: driver', hardware_id=self.backend.name)
        if estop:
            status.level, status.message = DiagnosticStatus.ERROR, 'e-stop engaged'
        elif not enabled:
            status.level, status.message = DiagnosticStatus.WARN, 'actuation disabled'
        elif self._watchdog_tripped:
            status.level, status.message = DiagnosticStatus.OK, 'idle (watchdog: no commands)'
        else:
            status.level, status.message = DiagnosticStatus.OK, 'commands flowing'
        values = {
            'watchdog_tripped': self._watchdog_tripped, 'estop': estop,
            'actuation_enabled': enabled, 'clamped_count': self._clamped_count,
            'rejected_count': self._rejected_count, 'backend': self.backend.name,
        }
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)

    def destroy_node(self):
        """Leave the robot still and release the backend before the node goes away.

        Call it from the thread that spun the node: GL contexts of simulated cameras are
        bound to the thread that rendered with them.
        """
        backend = getattr(self, 'backend', None)
        try:
            if backend is not None:
                try:
                    base = np.zeros(3) if backend.supports_base else None
                    backend.send_command(np.zeros(6), self._gripper_target, base, self._period)
                finally:
                    backend.stop()
        finally:
            super().destroy_node()


def main(args=None):
    """Entry point of ``ros2 run vla_ros driver_node``."""
    spin_node(DriverNode, args)


if __name__ == '__main__':
    main()
