"""``backend:=moveit_servo``: end-effector twists to MoveIt Servo.

The driver limits the twist (speed, acceleration, workspace) and calls :meth:`send_command`
once per tick; this backend publishes it as ``geometry_msgs/TwistStamped`` on Servo's
twist input (``moveit_servo.twist_topic``, default ``/servo_node/delta_twist_cmds``):

* ``header.frame_id``: ``moveit_servo.frame_id``, default the driver's ``ee_frame`` (the
  frame the driver's limits and workspace are in); Servo rotates the twist from it into its
  planning frame;
* ``header.stamp``: the driver node's clock now (Servo drops commands older than its
  ``incoming_command_timeout``, so both must run on the same clock);
* values in m/s and rad/s (Servo's ``command_in_type: speed_units``);
* one message per driver tick, zero twists included: a hold is an explicit stop, and if
  the driver dies, Servo's own timeout halts the arm.

:meth:`start` waits for ``joint_states`` like the ros2_control backend and then makes Servo
accept twists (``moveit_servo.activation``): on MoveIt Jazzy and later the
``<servo_node>/switch_command_type`` service (moveit_msgs/srv/ServoCommandType, TWIST);
on Humble ``<servo_node>/start_servo`` (std_srvs/Trigger). The end-effector pose comes
from ``moveit_servo.ee_pose_topic`` if set and fresh; otherwise it is unknown (NaN) and
the driver's workspace rule stops linear motion. The servo parameters a user sets are in
docs/ros2_control_and_servo.md.
"""

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from vla_ros.drivers.backend import BackendError, RobotBackend, parameters_from_schema
from vla_ros.drivers.controller_messages import (
    FORWARD_COMMAND,
    UNKNOWN_POSE,
    JointStateCache,
    check_gripper_settings,
    finite_vector,
    gripper_settings,
    twist_stamped,
)

__all__ = ['MoveItServoBackend', 'ACTIVATIONS', 'SERVO_TWIST_COMMAND_TYPE']

#: start() activation -> the service under the servo node that it calls.
ACTIVATIONS = {
    'switch_command_type': 'switch_command_type',  # MoveIt Jazzy+, ServoCommandType TWIST
    'start_servo': 'start_servo',                  # MoveIt Humble, std_srvs/Trigger
    'none': '',
}
#: moveit_msgs/srv/ServoCommandType: JOINT_JOG = 0, TWIST = 1, POSE = 2.
SERVO_TWIST_COMMAND_TYPE = 1


@dataclass
class _Wiring:
    """What attach_node made on the driver node."""

    entities: Any   # ros_io.Entities: destroyed together
    state: Any      # ros_io.JointStateInput
    twist: Any      # TwistStamped publisher
    pose: Any       # ros_io.PoseInput or None
    gripper: Any    # ros_io.GripperOutput or None


def _servo_command_type_srv():
    try:
        from moveit_msgs.srv import ServoCommandType
    except ImportError as err:
        raise BackendError(
            "moveit_servo.activation 'switch_command_type' needs moveit_msgs (installed with "
            'MoveIt: apt install ros-<distro>-moveit-msgs); or switch Servo to TWIST '
            "yourself and set moveit_servo.activation:=none "
            f'({err})') from None
    return ServoCommandType


class MoveItServoBackend(RobotBackend):
    """Publishes limited end-effector twists to MoveIt Servo; reads joint_states."""

    name = 'moveit_servo'
    is_hardware = True              # the interlock starts disabled
    publishes_joint_states = False  # the robot's joint_state_broadcaster does
    joint_interfaces = ()           # end-effector twists only
    parameters = parameters_from_schema('moveit_servo')

    @classmethod
    def from_parameters(cls, values, log=None):
        """Build from the driver's parameters (``moveit_servo.*``)."""
        p = 'moveit_servo'
        return cls(twist_topic=values[f'{p}.twist_topic'], frame_id=values[f'{p}.frame_id'],
                   activation=values[f'{p}.activation'], servo_node=values[f'{p}.servo_node'],
                   ee_pose_topic=values[f'{p}.ee_pose_topic'],
                   ee_pose_timeout=values[f'{p}.ee_pose_timeout'],
                   joint_states_topic=values[f'{p}.joint_states_topic'],
                   state_timeout=values[f'{p}.state_timeout'],
                   log=log, **gripper_settings(values, p))

    def __init__(self, twist_topic='/servo_node/delta_twist_cmds', frame_id='',
                 activation='switch_command_type', servo_node='/servo_node',
                 ee_pose_topic='', ee_pose_timeout=0.5, joint_states_topic='/joint_states',
                 state_timeout=5.0, gripper_topic='', gripper_output=FORWARD_COMMAND,
                 gripper_joint='', gripper_closed=0.0, gripper_open=0.04,
                 gripper_time_from_start=0.5, log: Optional[Callable[[str], None]] = None):
        if activation not in ACTIVATIONS:
            raise BackendError(f'moveit_servo.activation {activation!r} is not one of '
                               f'{", ".join(ACTIVATIONS)}')
        if not twist_topic:
            raise BackendError('moveit_servo.twist_topic must name a topic')
        self.twist_topic = twist_topic
        self.frame_id = frame_id
        self.activation = activation
        self.servo_node = servo_node.rstrip('/') or '/servo_node'
        self.ee_pose_topic = ee_pose_topic
        self.ee_pose_timeout = float(ee_pose_timeout)
        self.joint_states_topic = joint_states_topic
        self.state_timeout = float(state_timeout)
        self.gripper_topic = gripper_topic
        self.gripper_output = gripper_output
        self.gripper_joint = gripper_joint
        self.gripper_time_from_start = float(gripper_time_from_start)
        self.gripper_mapping = check_gripper_settings(
            gripper_topic, gripper_output, gripper_joint, gripper_closed, gripper_open)
        self._log = log or (lambda line: None)
        self.frame = ''
        self._node = None
        self._io: Optional[_Wiring] = None  # set by attach_node
        self._started = False

    # ------------------------------------------------------------------ driver hooks
    def attach_node(self, node) -> None:
        """Resolve the twist frame and joints from the driver; create the ROS entities."""
        from vla_ros.drivers import ros_io

        interface = ros_io.driver_parameter(node, 'command_interface', 'ee_twist')
        if interface != 'ee_twist':
            raise BackendError(f"backend 'moveit_servo' takes end-effector twists; "
                               f'command_interface is {interface!r} (joint commands go to '
                               "ros2_control controllers: backend 'ros2_control')")
        ee_frame = ros_io.driver_parameter(node, 'ee_frame')
        frame = self.frame_id or ee_frame
        if not frame:
            raise BackendError('moveit_servo: no twist frame (moveit_servo.frame_id and the '
                               "driver's ee_frame are empty)")
        joints = tuple(n for n in ros_io.driver_parameter(node, 'joint_names', ()) if n)
        try:
            cache = JointStateCache(joints, self.gripper_joint, self.gripper_mapping)
        except ValueError as err:
            raise BackendError(f'moveit_servo: {err}') from None
        self.release()
        from geometry_msgs.msg import TwistStamped

        entities = ros_io.Entities(node)
        warn = node.get_logger().warning
        try:
            state = ros_io.JointStateInput(entities, self.joint_states_topic, cache, warn)
            twist = entities.publisher(TwistStamped, self.twist_topic)
            names = sorted({frame, ee_frame} - {''})
            pose = (ros_io.PoseInput(entities, self.ee_pose_topic, names, self.ee_pose_timeout,
                                     warn)
                    if self.ee_pose_topic else None)
            gripper = None
            if self.gripper_topic:
                gripper = ros_io.GripperOutput(
                    entities, self.gripper_topic, self.gripper_output, self.gripper_joint,
                    self.gripper_mapping, self.gripper_time_from_start)
        except BaseException:
            entities.destroy()
            raise
        self.frame = frame
        self._node = node
        self._io = _Wiring(entities, state, twist, pose, gripper)
        self._log(f'moveit_servo: twists in {frame!r} on {self.twist_topic}; state from '
                  f'{state.topic}; end-effector pose '
                  + (f'from {self.ee_pose_topic}' if pose else
                     'unknown (no ee_pose_topic: linear motion stays stopped)'))

    def start(self) -> None:
        """Wait for joint_states, then make Servo accept twists (BackendError if not)."""
        if self._io is None:
            raise BackendError("backend 'moveit_servo' must be attached to the driver node "
                               '(attach_node) before start()')
        self._io.state.wait(self.state_timeout)
        self._activate()
        self._started = True

    def _activate(self) -> None:
        from vla_ros.drivers import ros_io

        service = ACTIVATIONS[self.activation]
        if not service:
            return
        name = f'{self.servo_node}/{service}'
        if self.activation == 'switch_command_type':
            srv = _servo_command_type_srv()
            request = srv.Request(command_type=SERVO_TWIST_COMMAND_TYPE)
        else:
            from std_srvs.srv import Trigger

            srv, request = Trigger, Trigger.Request()
        response = ros_io.call_service(self._node, srv, name, request, self.state_timeout)
        if not response.success:
            raise BackendError(f'{name} refused ({getattr(response, "message", "")!r}): '
                               'Servo does not accept twists')
        self._log(f'moveit_servo: {name} accepted')

    def stop(self) -> None:
        """Publish one zero twist (Servo halts), then release the ROS entities."""
        if self._started and self._io is not None:
            self._publish(np.zeros(6))
        self._started = False
        self.release()

    def release(self) -> None:
        """Destroy the publishers and subscriptions made on the driver node (idempotent)."""
        io, self._io = self._io, None
        if io is not None:
            io.entities.destroy()

    # ------------------------------------------------------------------ commands
    def send_command(self, ee_twist, gripper, base_twist, dt) -> None:
        """Publish the limited twist (zeros too) and the gripper target if it changed."""
        if not self._started or self._io is None:
            raise BackendError("backend 'moveit_servo' is not started")
        self._publish(ee_twist)
        if self._io.gripper is not None:
            self._io.gripper.send(float(gripper))

    def _publish(self, ee_twist) -> None:
        try:
            msg = twist_stamped(finite_vector(ee_twist, 6, 'end-effector twist'), self.frame,
                                self._node.get_clock().now().to_msg())
        except ValueError as err:
            raise BackendError(f'moveit_servo: {err}') from None
        self._io.twist.publish(msg)

    # ------------------------------------------------------------------ state
    @property
    def dof(self) -> int:
        """Number of arm joints (known once attached, or once joint_states arrived)."""
        return len(self._io.state.cache.arm_joints) if self._io is not None else 0

    @property
    def joint_names(self):
        """Arm joints, then the gripper joint if one is configured."""
        if self._io is None:
            return ()
        return self._io.state.cache.required() if self._io.state.cache.arm_joints else ()

    def read_state(self):
        """The newest joint_states, the end-effector pose if known (else NaN).

        RuntimeError before :meth:`start` succeeded.
        """
        if self._io is None:
            raise RuntimeError("backend 'moveit_servo' has no state before attach_node/start")
        pose = self._io.pose.pose() if self._io.pose is not None else None
        return self._io.state.cache.state(pose if pose is not None else UNKNOWN_POSE)
