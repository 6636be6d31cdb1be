"""ROS plumbing shared by the backends that talk to a robot's own controllers.

Backends that publish to ros2_control or MoveIt Servo create these on the driver node in
``attach_node`` (docs/joint_space.md) and destroy them in ``stop``. The message contents
come from :mod:`vla_ros.drivers.controller_messages`; this module only moves them.
"""

import math
import os
import time
from typing import Any, Callable, List, Optional

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from vla_ros.drivers.backend import BackendError
from vla_ros.drivers.controller_messages import (
    FORWARD_COMMAND,
    JOINT_TRAJECTORY,
    OUTPUTS,
    GripperMapping,
    JointStateCache,
    forward_command,
    joint_trajectory,
)

__all__ = ['CONTROLLER_COMMAND', 'STATE_INPUT', 'driver_parameter', 'stamp_seconds',
           'JointStateInput', 'PoseInput', 'GripperOutput', 'call_service', 'Entities']

# What ros2_control's controllers and MoveIt Servo subscribe with (system defaults:
# reliable, volatile); a reliable publisher matches them and best-effort subscribers too.
CONTROLLER_COMMAND = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                                reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.VOLATILE)
# Best effort matches both reliable (joint_state_broadcaster) and best-effort publishers.
STATE_INPUT = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                         reliability=ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.VOLATILE)

_REQUIRED = object()


def driver_parameter(node, name: str, default: Any = _REQUIRED):
    """The value of the driver node's parameter ``name``.

    Backends read the driver's ``joint_names``, ``command_interface`` and ``ee_frame`` from
    the node instead of repeating them in parameters of their own. Without ``default``, a
    parameter the node does not declare is a BackendError naming it.
    """
    if not node.has_parameter(name):
        if default is _REQUIRED:
            raise BackendError(f'node {node.get_name()!r} has no parameter {name!r}, which '
                               'this backend reads from the driver')
        return default
    return node.get_parameter(name).value


def stamp_seconds(stamp, node) -> float:
    """A header stamp in seconds; the node's clock now for a zero stamp."""
    if stamp.sec == 0 and stamp.nanosec == 0:
        return node.get_clock().now().nanoseconds * 1e-9
    return stamp.sec + stamp.nanosec * 1e-9


class Entities:
    """Publishers and subscriptions created on someone else's node, destroyed together."""

    def __init__(self, node):
        self.node = node
        self._made: List[Any] = []

    def publisher(self, msg_type, topic: str, qos=CONTROLLER_COMMAND):
        """Create a publisher on the node (kept for :meth:`destroy`)."""
        pub = self.node.create_publisher(msg_type, topic, qos)
        self._made.append(pub)
        return pub

    def subscription(self, msg_type, topic: str, callback, qos=STATE_INPUT):
        """Create a subscription on the node (kept for :meth:`destroy`)."""
        sub = self.node.create_subscription(msg_type, topic, callback, qos)
        self._made.append(sub)
        return sub

    def destroy(self) -> None:
        """Destroy everything created (idempotent)."""
        made, self._made = self._made, []
        for entity in made:
            if hasattr(entity, 'publish'):
                self.node.destroy_publisher(entity)
            else:
                self.node.destroy_subscription(entity)


class JointStateInput:
    """A ``sensor_msgs/JointState`` subscription feeding a :class:`JointStateCache`."""

    def __init__(self, entities: Entities, topic: str, cache: JointStateCache,
                 warn: Callable[[str], None]):
        from sensor_msgs.msg import JointState

        self.topic = topic
        self.cache = cache
        self.rejected = 0
        self._node = entities.node
        self._warn = warn
        self._type = JointState
        sub = entities.subscription(JointState, topic, self._on_message)
        # Errors name the topic as resolved (a relative name is under the driver's namespace).
        self.topic = getattr(sub, 'topic_name', None) or topic

    def _on_message(self, msg) -> None:
        try:
            self.cache.update(stamp_seconds(msg.header.stamp, self._node), msg.name,
                              msg.position, msg.velocity)
        except ValueError as err:
            self.rejected += 1
            if self.rejected == 1 or self.rejected % 100 == 0:
                self._warn(f'{self.topic}: message rejected ({self.rejected} so far): {err}')

    def wait(self, timeout: float) -> None:
        """Return once every required joint was measured; BackendError after ``timeout`` s.

        The driver node may not be spinning yet (it starts the backend while it
        configures), so this takes messages itself with ``wait_for_message``.
        """
        from rclpy.wait_for_message import wait_for_message

        deadline = time.monotonic() + timeout
        while not self.cache.ready:
            left = deadline - time.monotonic()
            if left <= 0.0:
                break
            ok, msg = wait_for_message(self._type, self._node, self.topic,
                                       qos_profile=STATE_INPUT, time_to_wait=min(left, 0.5))
            if ok:
                self._on_message(msg)
        missing = self.cache.missing()
        if missing:
            seen = ('no message at all' if not self.cache.received
                    else f'messages without {", ".join(missing)}')
            raise BackendError(
                f'no usable joint_states on {self.topic!r} within {timeout:g} s ({seen}); '
                'is the robot (joint_state_broadcaster) running, and is the topic right?')


class PoseInput:
    """The newest ``geometry_msgs/PoseStamped`` of the end effector, if fresh and in frame.

    ``frames``: the names the twist frame goes by (the driver's ee_frame and the backend's
    frame_id); a pose in any other frame is ignored, never transformed.
    """

    def __init__(self, entities: Entities, topic: str, frames, max_age: float,
                 warn: Callable[[str], None]):
        from geometry_msgs.msg import PoseStamped

        self.topic, self.frames, self.max_age = topic, tuple(frames), float(max_age)
        self._node = entities.node
        self._warn = warn
        self._newest = None  # (receipt time on the node's clock, position, quaternion)
        self._warned_frame = False
        entities.subscription(PoseStamped, topic, self._on_message)

    def _on_message(self, msg) -> None:
        if msg.header.frame_id not in self.frames:
            if not self._warned_frame:
                self._warned_frame = True
                self._warn(f'{self.topic}: pose in frame {msg.header.frame_id!r}, expected '
                           f'{" or ".join(map(repr, self.frames))} (the twist frame); '
                           'ignoring it')
            return
        p, q = msg.pose.position, msg.pose.orientation
        values = (p.x, p.y, p.z, q.w, q.x, q.y, q.z)
        if not all(math.isfinite(v) for v in values):
            return
        now = self._node.get_clock().now().nanoseconds * 1e-9
        self._newest = (now, values[:3], values[3:])

    def pose(self):
        """``(position, quaternion)`` if a pose arrived within ``max_age`` s, else None."""
        newest = self._newest
        if newest is None:
            return None
        now = self._node.get_clock().now().nanoseconds * 1e-9
        if now - newest[0] > self.max_age:
            return None
        return newest[1], newest[2]


class GripperOutput:
    """Publishes the gripper target to its controller when it changes.

    ``output`` is ``forward_command`` (Float64MultiArray ``[position]``) or
    ``joint_trajectory`` (one point for ``joint``, ``time_from_start`` ahead). A NaN
    opening (the driver knows no gripper target) publishes nothing.
    """

    #: Opening changes smaller than this are not re-sent.
    RESOLUTION = 1e-4

    def __init__(self, entities: Entities, topic: str, output: str, joint: str,
                 mapping: GripperMapping, time_from_start: float):
        if output not in OUTPUTS:
            raise BackendError(f'gripper output {output!r} is not one of {", ".join(OUTPUTS)}')
        if not joint:
            raise BackendError(f'a gripper output on {topic!r} needs the gripper joint name '
                               '(its measured position is the starting target)')
        self.topic, self.output, self.joint = topic, output, joint
        self.mapping = mapping
        self.time_from_start = float(time_from_start)
        self._last: Optional[float] = None
        if output == JOINT_TRAJECTORY:
            msg_type = type(joint_trajectory([joint], [0.0], 1.0))
        else:
            msg_type = type(forward_command([0.0], 1))
        self._pub = entities.publisher(msg_type, topic)

    def message(self, opening: float):
        """The message for ``opening`` (ValueError if not finite)."""
        position = self.mapping.position(opening)
        if self.output == FORWARD_COMMAND:
            return forward_command([position], 1, 'gripper command')
        return joint_trajectory([self.joint], [position], self.time_from_start)

    def send(self, opening: float) -> bool:
        """Publish ``opening`` if it differs from the last one sent; True if published."""
        if not math.isfinite(opening):
            return False
        opening = min(max(float(opening), 0.0), 1.0)
        if self._last is not None and abs(opening - self._last) < self.RESOLUTION:
            return False
        self._pub.publish(self.message(opening))
        self._last = opening
        return True


def call_service(node, srv_type, name: str, request, timeout: float):
    """Call service ``name`` once and return its response, or raise BackendError.

    Runs on a short-lived helper node with its own executor (in the driver node's context
    and namespace), because the driver node is not spinning while it starts its backend.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    helper = rclpy.create_node(f'{node.get_name()}_backend_call_{os.getpid()}',
                               namespace=node.get_namespace(), context=node.context)
    executor = SingleThreadedExecutor(context=node.context)
    try:
        client = helper.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise BackendError(f'service {name!r} is not available after {timeout:g} s')
        future = client.call_async(request)
        executor.add_node(helper)
        executor.spin_until_future_complete(future, timeout_sec=timeout)
        if not future.done():
            raise BackendError(f'service {name!r} did not answer within {timeout:g} s')
        return future.result()
    finally:
        executor.shutdown()
        helper.destroy_node()
