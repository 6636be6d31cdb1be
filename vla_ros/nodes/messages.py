"""Build ROS messages from runtime objects (commands, chunks, status); no node needed."""

import math

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import TwistStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Header
from vla_ros_msgs.msg import ActionChunk, GripperCommand, PolicyStatus


def to_time_msg(seconds: float) -> Time:
    """Float seconds -> builtin_interfaces/Time (non-negative)."""
    nanoseconds = max(0, int(round(seconds * 1e9)))
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def to_seconds(stamp: Time) -> float:
    """builtin_interfaces/Time -> float seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def to_duration_msg(seconds: float) -> Duration:
    """Float seconds -> builtin_interfaces/Duration."""
    nanoseconds = max(0, int(round(seconds * 1e9)))
    return Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def twist_msg(twist: np.ndarray, stamp: float, frame_id: str) -> TwistStamped:
    """A TwistStamped from [vx, vy, vz, wx, wy, wz] (angular part optional for a base)."""
    msg = TwistStamped(header=Header(stamp=to_time_msg(stamp), frame_id=frame_id))
    values = [float(v) for v in twist]
    msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = values[:3]
    if len(values) == 6:
        msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = values[3:]
    return msg


def base_twist_msg(base: np.ndarray, stamp: float, frame_id: str) -> TwistStamped:
    """A base TwistStamped from [vx, vy, wz] (planar base)."""
    msg = TwistStamped(header=Header(stamp=to_time_msg(stamp), frame_id=frame_id))
    msg.twist.linear.x, msg.twist.linear.y = float(base[0]), float(base[1])
    msg.twist.angular.z = float(base[2])
    return msg


def gripper_msg(position: float, stamp: float, frame_id: str = '') -> GripperCommand:
    """A stamped gripper command (0 closed .. 1 open)."""
    return GripperCommand(header=Header(stamp=to_time_msg(stamp), frame_id=frame_id),
                          position=float(position), max_effort=0.0)


def joint_command_msg(names, positions, velocities, stamp: float) -> JointState:
    """A cmd/joint command (docs/joint_space.md): ``position`` or ``velocity``, not both."""
    msg = JointState(header=Header(stamp=to_time_msg(stamp)), name=[str(n) for n in names])
    if positions is not None:
        msg.position = [float(v) for v in positions]
    if velocities is not None:
        msg.velocity = [float(v) for v in velocities]
    return msg


def chunk_msg(result, frame_id: str = '') -> ActionChunk:
    """An ActionChunk from an engine InferenceResult."""
    chunk = result.chunk
    actions = np.asarray(chunk.actions, dtype=np.float32)
    return ActionChunk(
        header=Header(stamp=to_time_msg(chunk.stamp), frame_id=frame_id),
        policy=result.policy, horizon=actions.shape[0], action_dim=actions.shape[1],
        actions=actions.ravel().tolist(), control_period=to_duration_msg(chunk.period),
        dimension_names=list(result.dimension_names),
        buffered_after_command=to_time_msg(result.buffered_after_command)
        if math.isfinite(result.buffered_after_command) else Time())


def status_msg(snapshot, stamp: float) -> PolicyStatus:
    """A PolicyStatus from an engine StatusSnapshot."""
    latency = snapshot.last_inference_latency
    age = snapshot.observation_age
    return PolicyStatus(
        header=Header(stamp=to_time_msg(stamp)), policy=snapshot.policy,
        state=int(snapshot.state),
        last_inference_latency=float(latency) if math.isfinite(latency) else math.nan,
        queue_depth=int(snapshot.queue_depth),
        observation_age=float(age) if math.isfinite(age) else math.nan,
        instruction=snapshot.instruction[:1000], message=snapshot.message[:1000])
