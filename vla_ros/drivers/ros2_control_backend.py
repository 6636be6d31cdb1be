"""``backend:=ros2_control``: joint commands to a robot's ros2_control controllers.

The driver limits joint commands (docs/joint_space.md) and hands them here each tick; this
backend publishes them where ros2_control listens:

* ``ros2_control.output: joint_trajectory`` (``command_interface: joint_position``): a
  one-point ``trajectory_msgs/JointTrajectory`` to a joint_trajectory_controller, reaching
  the target ``time_from_start`` later (default two driver periods), stamp zero = now;
* ``ros2_control.output: forward_command``: ``std_msgs/Float64MultiArray`` with the
  positions (forward_position_controller) or velocities (forward_velocity_controller), in
  ``joint_names`` order, which must be the controller's ``joints`` order.

The joints are the driver's ``joint_names`` and the interface its ``command_interface``
(read from the node in :meth:`attach_node`: one source for both). The state is the newest
``joint_states`` (``ros2_control.joint_states_topic``); :meth:`start` waits up to
``ros2_control.state_timeout`` for every joint to be measured and fails naming the topic
otherwise, so no position is ever invented. The end-effector pose is unknown (NaN). An
optional gripper controller gets the opening mapped to its joint's positions.

This backend has no end-effector twist mode: ``command_interface: ee_twist`` is refused
when the driver attaches it, and a non-zero twist given to :meth:`send_command` raises.
"""

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from vla_ros.drivers.backend import BackendError, RobotBackend, parameters_from_schema
from vla_ros.drivers.controller_messages import (
    FORWARD_COMMAND,
    JOINT_TRAJECTORY,
    OUTPUTS,
    JointStateCache,
    check_gripper_settings,
    default_command_topic,
    finite_vector,
    forward_command,
    gripper_settings,
    joint_trajectory,
)

__all__ = ['Ros2ControlBackend', 'JOINT_INTERFACES']

JOINT_INTERFACES = ('joint_position', 'joint_velocity')


@dataclass
class _Wiring:
    """What attach_node made on the driver node."""

    entities: Any   # ros_io.Entities: destroyed together
    state: Any      # ros_io.JointStateInput
    arm: Any        # publisher of the arm commands
    gripper: Any    # ros_io.GripperOutput or None


class Ros2ControlBackend(RobotBackend):
    """Publishes limited joint commands to ros2_control controllers; reads joint_states."""

    name = 'ros2_control'
    is_hardware = True              # the interlock starts disabled
    publishes_joint_states = False  # joint_state_broadcaster does
    joint_interfaces = JOINT_INTERFACES
    parameters = parameters_from_schema('ros2_control')

    @classmethod
    def from_parameters(cls, values, log=None):
        """Build from the driver's parameters (``ros2_control.*``)."""
        p = 'ros2_control'
        return cls(output=values[f'{p}.output'], command_topic=values[f'{p}.command_topic'],
                   time_from_start=values[f'{p}.time_from_start'],
                   joint_states_topic=values[f'{p}.joint_states_topic'],
                   state_timeout=values[f'{p}.state_timeout'],
                   log=log, **gripper_settings(values, p))

    def __init__(self, output=JOINT_TRAJECTORY, command_topic='', time_from_start=0.0,
                 joint_states_topic='/joint_states', state_timeout=5.0, gripper_topic='',
                 gripper_output=FORWARD_COMMAND, gripper_joint='', gripper_closed=0.0,
                 gripper_open=0.04, gripper_time_from_start=0.5,
                 log: Optional[Callable[[str], None]] = None):
        if output not in OUTPUTS:
            raise BackendError(f'ros2_control.output {output!r} is not one of '
                               f'{", ".join(OUTPUTS)}')
        if not (math.isfinite(time_from_start) and time_from_start >= 0.0):
            raise BackendError(f'ros2_control.time_from_start must be >= 0, got '
                               f'{time_from_start!r}')
        self.output = output
        self.command_topic = command_topic
        self.time_from_start = float(time_from_start)
        self.joint_states_topic = joint_states_topic
        self.state_timeout = float(state_timeout)
        self.gripper_topic = gripper_topic
        self.gripper_output = gripper_output
        self.gripper_joint = gripper_joint
        self.gripper_time_from_start = float(gripper_time_from_start)
        self.gripper_mapping = check_gripper_settings(
            gripper_topic, gripper_output, gripper_joint, gripper_closed, gripper_open)
        self._log = log or (lambda line: None)
        self.interface: Optional[str] = None
        self.topic = ''
        self._arm_joints: tuple = ()
        self._period = 0.02  # the driver's tick, learnt from dt (time_from_start 0 = 2 ticks)
        self._io: Optional[_Wiring] = None  # set by attach_node
        self._started = False
        self._velocity_at_rest = True  # the last velocities sent were zeros (or none sent)

    # ------------------------------------------------------------------ driver hooks
    def attach_node(self, node) -> None:
        """Read the driver's joints and interface; create the publishers and subscriptions."""
        from vla_ros.drivers import ros_io

        interface = ros_io.driver_parameter(node, 'command_interface')
        if interface not in JOINT_INTERFACES:
            raise BackendError(
                f"backend 'ros2_control' drives joints only; command_interface is "
                f'{interface!r}: set joint_position or joint_velocity (end-effector twists '
                "go to MoveIt Servo: backend 'moveit_servo')")
        joints = tuple(n for n in ros_io.driver_parameter(node, 'joint_names') if n)
        if not joints:
            raise BackendError("backend 'ros2_control' needs joint_names (the controller's "
                               'joints, in its order)')
        try:
            usual = default_command_topic(self.output, interface)  # refuses a bad pair
            topic = self.command_topic or usual
            cache = JointStateCache(joints, self.gripper_joint, self.gripper_mapping)
        except ValueError as err:
            raise BackendError(f'ros2_control: {err}') from None
        self.release()
        entities = ros_io.Entities(node)
        warn = node.get_logger().warning
        try:
            state = ros_io.JointStateInput(entities, self.joint_states_topic, cache, warn)
            sample = (joint_trajectory(joints, np.zeros(len(joints)), 1.0)
                      if self.output == JOINT_TRAJECTORY
                      else forward_command(np.zeros(len(joints)), len(joints)))
            arm = entities.publisher(type(sample), topic)
            gripper = None
            if self.gripper_topic:
                gripper = ros_io.GripperOutput(
                    entities, self.gripper_topic, self.gripper_output, self.gripper_joint,
                    self.gripper_mapping, self.gripper_time_from_start)
        except BaseException:
            entities.destroy()
            raise
        self.interface, self._arm_joints = interface, joints
        self.topic = topic
        self._io = _Wiring(entities, state, arm, gripper)
        self._log(f'ros2_control: {interface} as {self.output} on {topic} for '
                  f'{len(joints)} joints; state from {state.topic}'
                  + (f'; gripper {self.gripper_joint} on {self.gripper_topic}'
                     if gripper else ''))

    def start(self) -> None:
        """Wait for joint_states of every joint (BackendError naming the topic if none)."""
        if self._io is None:
            raise BackendError("backend 'ros2_control' must be attached to the driver node "
                               '(attach_node) before start()')
        self._io.state.wait(self.state_timeout)
        self._velocity_at_rest = True
        self._started = True

    def stop(self) -> None:
        """Velocity output: send zero velocities; then release the ROS entities."""
        if self._started and self._io is not None and self.interface == 'joint_velocity':
            self._publish_arm(np.zeros(len(self._arm_joints)), dt=0.0)
        self._started = False
        self.release()

    def release(self) -> None:
        """Destroy the publishers and subscriptions made on the driver node (idempotent)."""
        io, self._io = self._io, None
        if io is not None:
            io.entities.destroy()

    # ------------------------------------------------------------------ commands
    def send_joint_command(self, positions, velocities, gripper, dt) -> None:
        """Publish one limited joint command (and the gripper target if it changed).

        Both arrays None (the driver's interlock is off) means hands off: a position
        controller gets nothing (it holds its last target), a velocity controller one
        zero command if the last one it got was not zeros (it keeps the last velocity),
        then nothing; the gripper gets nothing.
        """
        self._require_started()
        values = positions if self.interface == 'joint_position' else velocities
        other = velocities if self.interface == 'joint_position' else positions
        if other is not None:
            raise BackendError(f'ros2_control runs {self.interface}; got the other array')
        if values is None:
            if self.interface == 'joint_velocity' and not self._velocity_at_rest:
                self._publish_arm(np.zeros(len(self._arm_joints)), dt)
        else:
            self._publish_arm(values, dt)
            if self._io.gripper is not None:  # hands off the gripper too while on hold
                self._io.gripper.send(float(gripper))

    def send_command(self, ee_twist, gripper, base_twist, dt) -> None:
        """No twist mode: a zero twist (the driver's stop) is a hold, anything else raises."""
        twist = np.asarray(ee_twist, dtype=float)
        if twist.size and np.any(twist != 0.0):
            raise BackendError("backend 'ros2_control' takes joint commands only "
                               '(command_interface joint_position or joint_velocity), not '
                               'end-effector twists')
        if self._started:
            self.send_joint_command(None, None, gripper, dt)

    def _publish_arm(self, values, dt) -> None:
        n = len(self._arm_joints)
        try:
            if self.output == JOINT_TRAJECTORY:
                if math.isfinite(dt) and dt > 0.0:
                    self._period = float(dt)  # a bad dt (clock jump) keeps the last good one
                ahead = self.time_from_start or 2.0 * self._period
                msg = joint_trajectory(self._arm_joints, values, ahead)
            else:
                msg = forward_command(finite_vector(values, n, self.interface), n)
        except ValueError as err:
            raise BackendError(f'ros2_control: {err}') from None
        self._io.arm.publish(msg)
        if self.interface == 'joint_velocity':
            self._velocity_at_rest = not any(msg.data)

    def _require_started(self):
        if not self._started or self._io is None:
            raise BackendError("backend 'ros2_control' is not started")

    # ------------------------------------------------------------------ state
    @property
    def dof(self) -> int:
        """Number of arm joints (the driver's joint_names; 0 before attach_node)."""
        return len(self._arm_joints)

    @property
    def joint_names(self):
        """Arm joints, then the gripper joint if one is configured."""
        return self._arm_joints + ((self.gripper_joint,) if self.gripper_joint else ())

    def read_state(self):
        """The newest joint_states (stamp: that message's); EE pose unknown (NaN).

        Velocities the robot does not publish are NaN; the gripper opening is NaN
        without a gripper joint. RuntimeError before :meth:`start` succeeded.
        """
        if self._io is None:
            raise RuntimeError("backend 'ros2_control' has no state before attach_node/start")
        return self._io.state.cache.state()
