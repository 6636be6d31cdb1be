"""Turn one action of an action space into robot commands (pure, no rclpy).

Policies speak in their action space's units: displacement per control period for the
end effector and the base (metres, radians), a normalized gripper opening, a terminate
flag. Drivers take velocities. The conversion divides by the chunk's control period so a
command means the same motion whatever rate the control timer runs at.
"""

from dataclasses import dataclass, field

import numpy as np

from vla_ros.actions.spaces import ActionSpace

ARM_LINEAR = ('x', 'y', 'z')
ARM_ANGULAR = ('roll', 'pitch', 'yaw')
BASE = ('base_x', 'base_y', 'base_yaw')


@dataclass(frozen=True)
class Command:
    """What the inference node publishes on one control tick.

    ``hold`` commands have zero twists and ``gripper=None`` (leave the gripper as it is).
    ``action`` is the (clipped) action vector the command was converted from, ``None``
    for holds; offline rollouts record it.
    """

    ee_twist: np.ndarray = field(default_factory=lambda: np.zeros(6))
    gripper: float | None = None
    base_twist: np.ndarray | None = None
    terminate: bool = False
    hold: bool = True
    reason: str = ''
    action: np.ndarray | None = None

    @classmethod
    def hold_command(cls, reason: str, has_base: bool = False) -> 'Command':
        """Zero velocity, gripper unchanged, with the reason stated."""
        return cls(base_twist=np.zeros(3) if has_base else None, hold=True, reason=reason)


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

    def __call__(self, action: np.ndarray, period: float) -> Command:
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


@dataclass(frozen=True)
class OutgoingCommand:
    """What is published on one tick, after the node-side velocity clamp."""

    ee_twist: np.ndarray
    gripper: float | None
    base_twist: np.ndarray | None
    terminate: bool
    hold: bool
    reason: str


def shape_command(command: Command, limits, last_gripper: float | None) -> OutgoingCommand:
    """Clamp velocities and fill the held gripper: the node's tick, minus the publishing.

    Shared by the inference node and lock-step bag regression so both produce the same
    numbers. ``limits`` is a :class:`vla_ros.actions.safety.SafetyLimits`.
    """
    from vla_ros.actions.safety import clamp_velocity, limit_base

    gripper = command.gripper if command.gripper is not None else last_gripper
    base = limit_base(command.base_twist, limits) if command.base_twist is not None else None
    return OutgoingCommand(clamp_velocity(command.ee_twist, limits), gripper, base,
                           command.terminate, command.hold, command.reason)
