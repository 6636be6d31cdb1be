"""Pure message builders for robots driven through their own ROS controllers.

The ``ros2_control`` and ``moveit_servo`` backends (:mod:`vla_ros.drivers.ros2_control_backend`,
:mod:`vla_ros.drivers.moveit_servo_backend`) publish what these functions build; nothing
here touches a node, so names, order, units and bad-input errors are tested without ROS.

* :func:`joint_trajectory`: ``trajectory_msgs/JointTrajectory`` for ros2_control's
  joint_trajectory_controller: one point, positions only, header stamp zero ("start now"
  for that controller), ``time_from_start`` ahead.
* :func:`forward_command`: ``std_msgs/Float64MultiArray`` for the forward command
  controllers (forward_position_controller, forward_velocity_controller, ...): ``data`` in
  the controller's joint order, no layout.
* :func:`twist_stamped`: ``geometry_msgs/TwistStamped`` for MoveIt Servo, in m/s and rad/s.
* :class:`GripperMapping`: opening 0 (closed) .. 1 (open) <-> the gripper joint's position.
* :class:`JointStateCache`: the newest ``joint_states`` values, as a :class:`RobotState`.
"""

import math
import threading
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from vla_ros.drivers.backend import BackendError, RobotState

__all__ = ['JOINT_TRAJECTORY', 'FORWARD_COMMAND', 'OUTPUTS', 'default_command_topic',
           'finite_vector', 'duration', 'joint_trajectory', 'forward_command', 'twist_stamped',
           'GripperMapping', 'gripper_settings', 'check_gripper_settings', 'JointStateCache',
           'UNKNOWN_POSE']

JOINT_TRAJECTORY = 'joint_trajectory'
FORWARD_COMMAND = 'forward_command'
OUTPUTS = (JOINT_TRAJECTORY, FORWARD_COMMAND)

# The topics the controllers listen on with their usual names (controller_manager at the
# root namespace); a robot whose controllers are named otherwise sets the topic parameter.
_DEFAULT_TOPICS = {
    (JOINT_TRAJECTORY, 'joint_position'): '/joint_trajectory_controller/joint_trajectory',
    (FORWARD_COMMAND, 'joint_position'): '/forward_position_controller/commands',
    (FORWARD_COMMAND, 'joint_velocity'): '/forward_velocity_controller/commands',
}

#: End-effector pose of a backend that does not know it: NaN position and orientation.
#: The driver's workspace rule stops linear motion for an unknown position.
UNKNOWN_POSE = (np.full(3, np.nan), np.full(4, np.nan))


def default_command_topic(output: str, interface: str) -> str:
    """The usual topic of the controller that takes ``output`` for ``interface``.

    Raises ValueError for a pair no controller takes (a trajectory of velocities).
    """
    if output not in OUTPUTS:
        raise ValueError(f'unknown output {output!r}; one of {", ".join(OUTPUTS)}')
    try:
        return _DEFAULT_TOPICS[(output, interface)]
    except KeyError:
        raise ValueError(
            f"output {output!r} does not take command_interface {interface!r}: the "
            f"joint_trajectory output sends position targets; joint velocities go to a "
            f"forward velocity controller (output 'forward_command')") from None


def finite_vector(values, size: int, what: str) -> np.ndarray:
    """``values`` as a float vector of length ``size``; ValueError naming ``what`` if not."""
    try:
        arr = np.asarray(values, dtype=float).reshape(-1)
    except (TypeError, ValueError) as err:
        raise ValueError(f'{what}: not a vector of numbers ({err})') from None
    if arr.size != size:
        raise ValueError(f'{what}: {arr.size} values for {size} joints')
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f'{what}: non-finite value at index {int(bad[0])} ({arr[bad[0]]})')
    return arr


def duration(seconds: float) -> Tuple[int, int]:
    """``(sec, nanosec)`` of a non-negative duration, as builtin_interfaces/Duration holds it."""
    if not (math.isfinite(seconds) and seconds >= 0.0):
        raise ValueError(f'duration must be finite and >= 0, got {seconds!r}')
    total = int(round(seconds * 1e9))
    return total // 1_000_000_000, total % 1_000_000_000


def _trajectory_types():
    try:
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
    except ImportError as err:  # an environment set up before the dependency was added
        raise ImportError(
            'the joint_trajectory output needs the trajectory_msgs package '
            '(pip install ros-kilted-trajectory-msgs, or apt install '
            f'ros-<distro>-trajectory-msgs): {err}') from err
    return JointTrajectory, JointTrajectoryPoint


def joint_trajectory(joint_names: Sequence[str], positions, time_from_start: float):
    """A one-point ``JointTrajectory`` reaching ``positions`` after ``time_from_start`` s.

    The header stamp stays zero: joint_trajectory_controller then starts the trajectory on
    arrival and replaces the one it was following, interpolating from its current state.
    Only positions are set: a point with non-zero final velocities is refused by the
    controller's default ``allow_nonzero_velocity_at_trajectory_end: false`` (Jazzy on),
    and velocities of zero would make the arm stop at every point.
    """
    names = _names(joint_names)
    target = finite_vector(positions, len(names), 'joint_trajectory positions')
    if not (math.isfinite(time_from_start) and time_from_start > 0.0):
        raise ValueError(f'time_from_start must be > 0 s, got {time_from_start!r}')
    trajectory_type, point_type = _trajectory_types()
    point = point_type()
    point.positions = [float(v) for v in target]
    point.time_from_start.sec, point.time_from_start.nanosec = duration(time_from_start)
    msg = trajectory_type()
    msg.joint_names = list(names)
    msg.points = [point]
    return msg


def forward_command(values, size: int, what: str = 'forward command'):
    """A ``Float64MultiArray`` with ``values`` (the controller's joint order) as ``data``."""
    from std_msgs.msg import Float64MultiArray

    return Float64MultiArray(data=[float(v) for v in finite_vector(values, size, what)])


def twist_stamped(twist, frame_id: str, stamp):
    """A ``TwistStamped`` of ``[vx, vy, vz, wx, wy, wz]`` (m/s, rad/s) in ``frame_id``.

    ``stamp`` is a builtin_interfaces/Time (the send time: MoveIt Servo drops a command
    older than its ``incoming_command_timeout``).
    """
    from geometry_msgs.msg import TwistStamped

    if not frame_id:
        raise ValueError('a twist for MoveIt Servo needs a frame_id')
    v = finite_vector(twist, 6, 'end-effector twist')
    msg = TwistStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    (msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z,
     msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z) = (float(x) for x in v)
    return msg


def _names(joint_names) -> Tuple[str, ...]:
    names = tuple(str(n) for n in joint_names)
    if not names or any(not n for n in names):
        raise ValueError(f'joint names must be non-empty strings, got {list(joint_names)!r}')
    if len(set(names)) != len(names):
        raise ValueError(f'joint names repeat: {list(names)!r}')
    return names


@dataclass(frozen=True)
class GripperMapping:
    """Linear map between the opening 0 (closed) .. 1 (open) and the gripper joint position."""

    closed: float
    open: float

    def __post_init__(self):
        if not (math.isfinite(self.closed) and math.isfinite(self.open)):
            raise ValueError(f'gripper positions must be finite: closed {self.closed!r}, '
                             f'open {self.open!r}')
        if self.closed == self.open:
            raise ValueError(f'gripper closed and open positions are equal ({self.closed})')

    def position(self, opening: float) -> float:
        """The joint position for ``opening`` (clamped to 0..1; ValueError if not finite)."""
        if not math.isfinite(opening):
            raise ValueError(f'gripper opening must be finite, got {opening!r}')
        fraction = min(max(float(opening), 0.0), 1.0)
        return self.closed + fraction * (self.open - self.closed)

    def opening(self, position: float) -> float:
        """The opening 0..1 of a measured joint ``position`` (clamped; NaN stays NaN)."""
        fraction = (float(position) - self.closed) / (self.open - self.closed)
        return fraction if math.isnan(fraction) else min(max(fraction, 0.0), 1.0)


def gripper_settings(values, prefix: str) -> dict:
    """The gripper keyword arguments of a backend from its ``<prefix>.gripper_*`` values."""
    return {key: values[f'{prefix}.{key}'] for key in (
        'gripper_topic', 'gripper_output', 'gripper_joint', 'gripper_closed', 'gripper_open',
        'gripper_time_from_start')}


def check_gripper_settings(gripper_topic, gripper_output, gripper_joint, gripper_closed,
                           gripper_open) -> Optional[GripperMapping]:
    """Validate the gripper settings; the mapping, or None without a gripper joint."""
    if gripper_output not in OUTPUTS:
        raise BackendError(f'gripper_output {gripper_output!r} is not one of '
                           f'{", ".join(OUTPUTS)}')
    if gripper_topic and not gripper_joint:
        raise BackendError(f'gripper_topic {gripper_topic!r} needs gripper_joint: the '
                           "gripper's measured position is the target it starts from")
    if not gripper_joint:
        return None
    try:
        return GripperMapping(float(gripper_closed), float(gripper_open))
    except ValueError as err:
        raise BackendError(f'gripper: {err}') from None


class JointStateCache:
    """The newest measured value of each joint, merged over ``joint_states`` messages.

    ``arm_joints`` (in the controller's order) come first in the state, then the gripper
    joint; an empty ``arm_joints`` takes every joint of the first message, in its order.
    Each joint keeps the stamp of the message that last carried it, and the state's stamp
    is the oldest of them, so a publisher that went quiet shows as an old state rather
    than hiding behind a fresh one. A message that is malformed (lengths, a non-finite
    position of a joint we use) is rejected whole with ValueError; what was stored stays.
    Thread-safe: a subscription writes while the driver's loop reads.
    """

    def __init__(self, arm_joints: Sequence[str] = (), gripper_joint: str = '',
                 gripper: Optional[GripperMapping] = None):
        self._arm = _names(arm_joints) if arm_joints else ()
        self._gripper_joint = str(gripper_joint)
        self._mapping = gripper
        if self._gripper_joint and gripper is None:
            raise ValueError('a gripper joint needs its closed/open positions')
        if self._gripper_joint in self._arm:
            raise ValueError(f'gripper joint {self._gripper_joint!r} is also an arm joint')
        self._values: Dict[str, Tuple[float, float, float]] = {}  # name -> stamp, pos, vel
        self._lock = threading.Lock()
        #: Messages stored so far (rejected ones not counted).
        self.received = 0

    @property
    def arm_joints(self) -> Tuple[str, ...]:
        """The arm joints (those of the first message while none were configured)."""
        return self._arm

    def required(self) -> Tuple[str, ...]:
        """Joints that must have been measured before the state is known."""
        return self._arm + ((self._gripper_joint,) if self._gripper_joint else ())

    def missing(self) -> Tuple[str, ...]:
        """Required joints not measured yet (all of them, as '*', before any message)."""
        with self._lock:
            if not self._arm:
                return ('*',)
            return tuple(n for n in self.required() if n not in self._values)

    @property
    def ready(self) -> bool:
        """Whether every required joint has been measured."""
        return not self.missing()

    def update(self, stamp: float, names, positions, velocities=()) -> None:
        """Store one ``joint_states`` message (``stamp`` in seconds)."""
        names = [str(n) for n in names]
        positions = list(positions)
        velocities = list(velocities)
        if len(positions) != len(names):
            raise ValueError(f'joint_states: {len(names)} names but {len(positions)} positions')
        if velocities and len(velocities) != len(names):
            raise ValueError(f'joint_states: {len(names)} names but {len(velocities)} '
                             'velocities')
        if len(set(names)) != len(names):
            raise ValueError(f'joint_states: a joint name repeats in {names}')
        if not math.isfinite(stamp):
            raise ValueError(f'joint_states: stamp {stamp!r} is not finite')
        with self._lock:
            used = set(self._arm or names) | ({self._gripper_joint} - {''})
            for name, value in zip(names, positions, strict=True):
                if name in used and not math.isfinite(value):
                    raise ValueError(f'joint_states: position of {name!r} is {value}')
            if not self._arm:
                self._arm = tuple(names)
            for i, name in enumerate(names):
                velocity = float(velocities[i]) if velocities else math.nan
                self._values[name] = (float(stamp), float(positions[i]), velocity)
            self.received += 1

    def state(self, ee_pose=UNKNOWN_POSE) -> RobotState:
        """The newest state; RuntimeError naming the joints never measured so far.

        ``ee_pose`` is ``(position (3,), quaternion (w, x, y, z))``; the default is unknown
        (NaN). Velocities a publisher left out are NaN; the gripper opening is NaN without
        a gripper joint.
        """
        missing = self.missing()
        if missing:
            raise RuntimeError(f'no joint_states measurement yet for {", ".join(missing)}')
        with self._lock:
            names = self.required()
            rows = [self._values[n] for n in names]
        gripper = (self._mapping.opening(rows[-1][1]) if self._gripper_joint else math.nan)
        position, orientation = ee_pose
        return RobotState(
            stamp=min(r[0] for r in rows), joint_names=names,
            joint_positions=np.array([r[1] for r in rows]),
            joint_velocities=np.array([r[2] for r in rows]),
            ee_position=np.array(position, dtype=float),
            ee_orientation=np.array(orientation, dtype=float), gripper=gripper)
