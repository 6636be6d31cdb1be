"""Turn one action of an action space into robot commands (pure, no rclpy).

Policies speak in their action space's units: displacement per control period for the
end effector and the base (metres, radians), a normalized gripper opening, a terminate
flag. Drivers take velocities. The conversion divides by the chunk's control period so a
command means the same motion whatever rate the control timer runs at.

Joint-space robots (``command_interface`` ``joint_position`` / ``joint_velocity``,
docs/joint_space.md) get joint targets instead, matched by name
(:class:`ActionToJointCommand`, :mod:`vla_ros.runtime.joint_commands`).
"""

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from vla_ros.actions.spaces import ActionSpace
from vla_ros.runtime.joint_commands import (
    JOINT_POSITION,
    JointActionMap,
    JointConfig,
)

ARM_LINEAR = ('x', 'y', 'z')
ARM_ANGULAR = ('roll', 'pitch', 'yaw')
BASE = ('base_x', 'base_y', 'base_yaw')


@dataclass(frozen=True)
class Command:
    """What the inference node publishes on one control tick.

    ``hold`` commands have zero twists and ``gripper=None`` (leave the gripper as it is).
    ``action`` is the (clipped) action vector the command was converted from, ``None``
    for holds; offline rollouts record it.

    Joint interfaces fill ``joint_names`` and one of ``joint_positions`` /
    ``joint_velocities`` (in ``joint_names`` order) and leave ``ee_twist`` zero. A joint
    hold is the last measured positions (position interface) or zeros (velocity); with no
    measured positions a position hold has no joint command at all (``joint_names``
    empty), so nothing is published and the driver's watchdog holds the arm.
    """

    ee_twist: np.ndarray = field(default_factory=lambda: np.zeros(6))
    gripper: float | None = None
    base_twist: np.ndarray | None = None
    terminate: bool = False
    hold: bool = True
    reason: str = ''
    action: np.ndarray | None = None
    joint_names: tuple[str, ...] = ()
    joint_positions: np.ndarray | None = None
    joint_velocities: np.ndarray | None = None

    @property
    def has_joints(self) -> bool:
        """Whether this command carries a joint command (cmd/joint)."""
        return bool(self.joint_names)

    @classmethod
    def hold_command(cls, reason: str, has_base: bool = False) -> 'Command':
        """Zero velocity, gripper unchanged, with the reason stated."""
        return cls(base_twist=np.zeros(3) if has_base else None, hold=True, reason=reason)


def joint_hold(config: JointConfig, reason: str,
               measured: Mapping[str, float] | None) -> Command:
    """A joint-space hold: measured positions (position interface) or zero velocities."""
    names = config.joint_names
    if config.interface != JOINT_POSITION:
        return Command(hold=True, reason=reason, joint_names=names,
                       joint_velocities=np.zeros(len(names)))
    if measured is None or any(j not in measured for j in names):
        return Command(hold=True, reason=reason)  # nothing to hold at: publish nothing
    return Command(hold=True, reason=reason, joint_names=names,
                   joint_positions=np.array([measured[j] for j in names], dtype=np.float64))


class ActionToCommand:
    """Map action vectors of one action space to :class:`Command` objects."""

    def __init__(self, space: ActionSpace):
        names = list(space.names)
        missing = [n for n in ARM_LINEAR + ARM_ANGULAR if n not in names]
        if missing:
            raise ValueError(
                f'action space {space.name!r} lacks end-effector dimensions {missing}; '
                f'it has {names}')
        self.space = space
        self._linear = [names.index(n) for n in ARM_LINEAR]
        self._angular = [names.index(n) for n in ARM_ANGULAR]
        self._gripper = names.index('gripper') if 'gripper' in names else None
        self._base = [names.index(n) for n in BASE] if all(n in names for n in BASE) else None
        self._terminate = names.index('terminate') if 'terminate' in names else None

    @property
    def has_base(self) -> bool:
        """Whether the space commands a mobile base."""
        return self._base is not None

    def hold(self, reason: str, measured=None) -> Command:
        """A hold of this space: zero twists (and base), gripper unchanged."""
        return Command.hold_command(reason, self.has_base)

    def __call__(self, action: np.ndarray, period: float, measured=None) -> Command:
        """Convert one action (space units per ``period`` seconds) to velocities."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.space.dim,):
            raise ValueError(f'action has shape {action.shape}, expected ({self.space.dim},)')
        if not np.all(np.isfinite(action)):
            raise ValueError('action contains NaN or Inf')
        if not period > 0:
            raise ValueError(f'control period must be positive, got {period}')
        action = self.space.clip(action)
        twist = np.concatenate([action[self._linear], action[self._angular]]) / period
        gripper = None
        if self._gripper is not None:
            gripper = float(np.clip(action[self._gripper], 0.0, 1.0))
        base = action[self._base] / period if self._base is not None else None
        terminate = bool(self._terminate is not None and action[self._terminate] >= 0.5)
        return Command(ee_twist=twist, gripper=gripper, base_twist=base,
                       terminate=terminate, hold=False, reason='', action=action)


class ActionToJointCommand:
    """Map action rows of a policy to joint :class:`Command` objects (by name).

    Construction raises :class:`~vla_ros.runtime.joint_commands.JointMappingError` when
    the policy's action names do not fit the robot's joint configuration.
    """

    has_base = False

    def __init__(self, space: ActionSpace, config: JointConfig, names_known: bool = True):
        self.space = space
        self.map = JointActionMap(space.names, config, names_known)

    def hold(self, reason: str, measured: Mapping[str, float] | None = None) -> Command:
        """See :func:`joint_hold`."""
        return joint_hold(self.map.config, reason, measured)

    def __call__(self, action: np.ndarray, period: float,
                 measured: Mapping[str, float] | None = None) -> Command:
        """One action row (dataset units) -> joint targets; ValueError if malformed.

        Joint values are not clipped here: the driver's joint limits apply; a row that
        cannot become a target (delta without measured positions) is a hold.
        """
        if not period > 0:
            raise ValueError(f'control period must be positive, got {period}')
        target = self.map(action, measured)
        if target.hold_reason:
            return self.hold(target.hold_reason, measured)
        return Command(gripper=target.gripper, terminate=target.terminate, hold=False,
                       reason='', action=np.asarray(action, dtype=np.float64),
                       joint_names=target.names, joint_positions=target.positions,
                       joint_velocities=target.velocities)


def make_converter(space: ActionSpace, joints: JointConfig | None, names_known: bool = True):
    """The converter for a policy's action space on a robot (ValueError if they do not fit).

    ``joints`` None: end-effector twists (:class:`ActionToCommand`); otherwise joint
    targets matched by name (:class:`ActionToJointCommand`).
    """
    if joints is None:
        try:
            return ActionToCommand(space)
        except ValueError as exc:
            raise ValueError(f'{exc}. A checkpoint acting in joint space needs a joint-space '
                             f'robot configuration (command_interface joint_position, see '
                             f'docs/joint_space.md)') from exc
    return ActionToJointCommand(space, joints, names_known)


@dataclass(frozen=True)
class OutgoingCommand:
    """What is published on one tick, after the node-side velocity clamp."""

    ee_twist: np.ndarray
    gripper: float | None
    base_twist: np.ndarray | None
    terminate: bool
    hold: bool
    reason: str
    joint_names: tuple[str, ...] = ()
    joint_positions: np.ndarray | None = None
    joint_velocities: np.ndarray | None = None


def shape_command(command: Command, limits, last_gripper: float | None) -> OutgoingCommand:
    """Clamp velocities and fill the held gripper: the node's tick, minus the publishing.

    Shared by the inference node and lock-step bag regression so both produce the same
    numbers. ``limits`` is a :class:`vla_ros.actions.safety.SafetyLimits`.
    """
    from vla_ros.actions.safety import clamp_velocity, limit_base

    gripper = command.gripper if command.gripper is not None else last_gripper
    base = limit_base(command.base_twist, limits) if command.base_twist is not None else None
    # Joint targets pass as they are: the driver's joint limits are the ones that apply.
    return OutgoingCommand(clamp_velocity(command.ee_twist, limits), gripper, base,
                           command.terminate, command.hold, command.reason,
                           command.joint_names, command.joint_positions,
                           command.joint_velocities)
