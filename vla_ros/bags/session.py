"""A recorded VLA session decoded from a bag: inputs, chunks and commands on one timeline.

Shared by lock-step regression and the dataset reader. Topic names are found relative to
the robot's namespace (detected from ``cmd/ee_twist`` / ``cmd/joint`` / ``instruction``
when not given). A control tick is what the node published with one header stamp: a twist
(``cmd/ee_twist``) or, on a joint-space robot (docs/joint_space.md), a joint command
(``cmd/joint``), each with the gripper and base commands of the same stamp.
Times: ``recv`` is the bag timestamp (receive time, s), ``stamp`` the header stamp (s).
Undecodable messages are counted in :attr:`Session.problems`, never fatal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vla_ros.bags.reader import BagReader
from vla_ros.nodes.image_conversion import (
    ImageConversionError,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
)

_SUFFIXES = ('/cmd/ee_twist', '/cmd/joint', '/instruction', '/vla/action_chunk',
             '/joint_states')


def _seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def _buffered_after(chunk_msg) -> float | None:
    # Absent in bags recorded before the field existed (decoded with their own definition).
    stamp = getattr(chunk_msg, 'buffered_after_command', None)
    if stamp is None or (stamp.sec == 0 and stamp.nanosec == 0):
        return None
    return _seconds(stamp)


def _stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


@dataclass
class ImageRecord:
    """One camera frame."""

    recv: float
    stamp: float
    rgb: np.ndarray


@dataclass
class JointStateRecord:
    """One measured joint_states message."""

    recv: float
    names: tuple[str, ...]
    positions: np.ndarray


@dataclass
class TickRecord:
    """One published control tick: the commands with one header stamp.

    ``ee_twist`` is None on a joint-space robot, whose tick has ``joint_names`` and
    ``joint_positions`` or ``joint_velocities`` instead (none of them when the node
    published no joint command on that tick, e.g. a hold before joint_states arrived).
    """

    recv: float
    stamp: float
    stamp_ns: int
    ee_twist: np.ndarray | None
    gripper: float | None = None
    base: np.ndarray | None = None
    joint_names: tuple[str, ...] = ()
    joint_positions: np.ndarray | None = None
    joint_velocities: np.ndarray | None = None


@dataclass
class ChunkRecord:
    """One published action chunk (its stamp is the observation's camera stamp)."""

    recv: float
    stamp: float
    policy: str
    actions: np.ndarray
    period: float
    dimension_names: tuple
    # The stamp of the last command the node computed before buffering the chunk (None:
    # not recorded, as in bags from before the field existed, or no command yet).
    buffered_after_command: float | None = None


@dataclass
class Session:
    """Everything regression and dataset export need from one bag."""

    namespace: str
    images: dict[str, list[ImageRecord]] = field(default_factory=dict)
    instructions: list[tuple[float, str]] = field(default_factory=list)
    joint_states: list[JointStateRecord] = field(default_factory=list)
    chunks: list[ChunkRecord] = field(default_factory=list)
    statuses: list[tuple[float, float]] = field(default_factory=list)  # (recv, latency)
    status_instructions: list[tuple[float, str]] = field(default_factory=list)
    ticks: list[TickRecord] = field(default_factory=list)
    parameters: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def joint_space(self) -> bool:
        """Whether the ticks are joint commands (``cmd/joint``), not twists."""
        return bool(self.ticks) and self.ticks[0].ee_twist is None

    def transport_delay(self) -> float:
        """Median delay from a tick's stamp to its reception in the bag (>= 0)."""
        delays = [t.recv - t.stamp for t in self.ticks]
        return max(0.0, float(np.median(delays))) if delays else 0.0


def detect_namespace(reader: BagReader) -> str:
    """The namespace of the VLA topics in the bag ('' for the root)."""
    for suffix in _SUFFIXES:
        for topic in reader.topics:
            if topic.name.endswith(suffix):
                return topic.name[:-len(suffix)]
    return ''


def load_session(reader: BagReader, namespace: str | None = None,
                 cameras: tuple[str, ...] | None = None, compressed: bool = False) -> Session:
    """Decode the session topics of ``reader`` (cameras: all if None)."""
    import json

    from vla_ros.bags.recorder import PARAMETERS_KEY

    ns = detect_namespace(reader) if namespace is None else \
        ('/' + namespace.strip('/') if namespace.strip('/') else '')
    session = Session(namespace=ns)
    raw = reader.metadata.custom_data.get(PARAMETERS_KEY)
    if raw:
        try:
            session.parameters = json.loads(raw)
        except ValueError:
            session.problems.append(f'custom_data {PARAMETERS_KEY} is not JSON; ignored')
    suffix = '/image_raw/compressed' if compressed else '/image_raw'
    camera_topics = {}
    for topic in reader.topics:
        name = topic.name
        if name.startswith(f'{ns}/camera/') and name.endswith(suffix) \
                and name.count('/') == ns.count('/') + 3 + compressed:
            camera = name[len(f'{ns}/camera/'):-len(suffix)]
            if cameras is None or camera in cameras:
                camera_topics[name] = camera
    handlers = {f'{ns}/instruction': '_instruction', f'{ns}/joint_states': '_joints',
                f'{ns}/vla/action_chunk': '_chunk', f'{ns}/vla/status': '_status',
                f'{ns}/cmd/ee_twist': '_twist', f'{ns}/cmd/joint': '_joint_command',
                f'{ns}/cmd/gripper': '_gripper', f'{ns}/cmd_vel': '_base'}
    grippers, bases, joint_commands = {}, {}, {}
    wanted = list(handlers) + list(camera_topics)
    for message in reader.messages(wanted):
        try:
            msg = reader.decode(message)
        except (ValueError, KeyError) as exc:
            session.problems.append(str(exc))
            continue
        recv = message.timestamp * 1e-9
        if message.topic in camera_topics:
            try:
                rgb = compressed_msg_to_rgb(msg) if compressed else image_msg_to_rgb(msg)
            except ImageConversionError as exc:
                session.problems.append(f'{message.topic} at {recv:.3f}s: {exc}')
                continue
            session.images.setdefault(camera_topics[message.topic], []).append(
                ImageRecord(recv, _seconds(msg.header.stamp), rgb))
            continue
        kind = handlers[message.topic]
        if kind == '_instruction':
            session.instructions.append((recv, str(msg.data)))
        elif kind == '_joints':
            session.joint_states.append(JointStateRecord(
                recv, tuple(msg.name), np.asarray(msg.position, dtype=np.float64)))
        elif kind == '_chunk':
            dim = int(msg.action_dim)
            actions = np.asarray(msg.actions, dtype=np.float32)
            if dim <= 0 or actions.size != dim * int(msg.horizon):
                session.problems.append(f'action chunk at {recv:.3f}s has inconsistent '
                                        f'shape; ignored')
                continue
            session.chunks.append(ChunkRecord(
                recv, _seconds(msg.header.stamp), str(msg.policy),
                actions.reshape(int(msg.horizon), dim), _seconds(msg.control_period),
                tuple(msg.dimension_names), _buffered_after(msg)))
        elif kind == '_status':
            session.statuses.append((recv, float(msg.last_inference_latency)))
            session.status_instructions.append((recv, str(msg.instruction)))
        elif kind == '_twist':
            t = msg.twist
            session.ticks.append(TickRecord(
                recv, _seconds(msg.header.stamp), _stamp_ns(msg.header.stamp),
                np.array([t.linear.x, t.linear.y, t.linear.z,
                          t.angular.x, t.angular.y, t.angular.z])))
        elif kind == '_joint_command':
            joint_commands[_stamp_ns(msg.header.stamp)] = (
                recv, _seconds(msg.header.stamp), tuple(msg.name),
                np.asarray(msg.position, dtype=np.float64) if len(msg.position) else None,
                np.asarray(msg.velocity, dtype=np.float64) if len(msg.velocity) else None)
        elif kind == '_gripper':
            grippers[_stamp_ns(msg.header.stamp)] = (recv, _seconds(msg.header.stamp),
                                                     float(msg.position))
        elif kind == '_base':
            t = msg.twist
            bases[_stamp_ns(msg.header.stamp)] = np.array([t.linear.x, t.linear.y,
                                                           t.angular.z])
    if joint_commands and not session.ticks:
        session.ticks = _joint_ticks(joint_commands, grippers)
    elif joint_commands:
        session.problems.append(f'both cmd/ee_twist and cmd/joint under {ns or "/"}; the '
                                f'{len(joint_commands)} cmd/joint messages are not compared')
    for tick in session.ticks:
        tick.gripper = grippers[tick.stamp_ns][2] if tick.stamp_ns in grippers else None
        tick.base = bases.get(tick.stamp_ns)
    session.ticks.sort(key=lambda t: t.stamp)
    _drop_cut_first_tick(session)
    _drop_cut_last_tick(session)
    _instruction_in_effect_at_start(session, reader.start_ns * 1e-9)
    return session


def _joint_ticks(joint_commands: dict, grippers: dict) -> list[TickRecord]:
    """Joint-space ticks: every stamp with a joint or a gripper command.

    The node publishes no joint command on a tick that holds before joint_states
    arrived, but still its gripper: such a tick is kept, with no joint values.
    """
    ticks = []
    for stamp_ns in sorted(set(joint_commands) | set(grippers)):
        if stamp_ns in joint_commands:
            recv, stamp, names, positions, velocities = joint_commands[stamp_ns]
        else:
            (recv, stamp, _), names, positions, velocities = grippers[stamp_ns], (), None, None
        ticks.append(TickRecord(recv, stamp, stamp_ns, None, joint_names=names,
                                joint_positions=positions, joint_velocities=velocities))
    return ticks


def _tick_parts(tick: TickRecord) -> dict[str, bool]:
    return {'cmd/gripper': tick.gripper is not None, 'cmd_vel': tick.base is not None,
            'cmd/joint': bool(tick.joint_names)}


def _drop_cut_first_tick(session: Session) -> None:
    """Drop the first tick when the recording began between its messages.

    The recorder subscribes to each topic as it discovers it, so the first tick may
    have its gripper command but not its joint command (or the reverse): that tick
    cannot be compared.
    """
    if len(session.ticks) < 2:
        return
    first, second = (_tick_parts(t) for t in session.ticks[:2])
    cut = [name for name in first if second[name] and not first[name]]
    if cut:
        session.ticks.pop(0)
        session.problems.append(f'the recording began during the first control tick '
                                f'({" and ".join(cut)} not recorded); that tick is not '
                                f'compared')


def _drop_cut_last_tick(session: Session) -> None:
    """Drop the last tick when the recording stopped between its messages.

    The node publishes a tick's twist, then its gripper (and base) command; a recorder
    stopped with Ctrl-C in between keeps the twist only. That tick cannot be compared,
    while the same gap earlier in the bag is a real difference and stays.
    """
    if len(session.ticks) < 2:
        return
    last, before = session.ticks[-1], session.ticks[-2]
    cut = [name for name, now, prev in (('cmd/gripper', last.gripper, before.gripper),
                                        ('cmd_vel', last.base, before.base))
           if now is None and prev is not None]
    if cut:
        session.ticks.pop()
        session.problems.append(f'the recording ended during the last control tick '
                                f'({" and ".join(cut)} not recorded); that tick is not '
                                f'compared')


def _instruction_in_effect_at_start(session: Session, bag_start: float) -> None:
    """Date the node's instruction from the bag's start if its chunks prove it had one.

    The bag time of a message is the recorder's receive time. A latched instruction
    reaches the inference node and the recorder when each matches the publisher, which
    can be a second apart; and a recorder started after the instruction's publisher
    exited never receives it. Either way the node computed chunks before the bag shows
    an instruction (no chunk is computed without one); the instruction it used is the
    one its PolicyStatus reports, or else the first one recorded.
    """
    if not session.chunks:
        return
    # Regression replays a chunk at its receive time less the transport delay: the
    # instruction must be in effect by then, not merely by the chunk's arrival.
    first_chunk = min(c.recv for c in session.chunks) - session.transport_delay()
    first_recorded = session.instructions[0][0] if session.instructions else float('inf')
    if first_recorded <= first_chunk:
        return
    text = next((t for recv, t in session.status_instructions
                 if t.strip() and recv < first_recorded), '')
    if not text and session.instructions:
        text = session.instructions[0][1]
    if not text:
        return
    start = min(bag_start, first_chunk)
    if session.instructions and session.instructions[0][1] == text:
        session.instructions[0] = (start, text)
    else:
        session.instructions.insert(0, (start, text))
