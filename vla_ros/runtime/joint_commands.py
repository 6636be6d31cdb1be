"""Map a policy's action row to joint targets by name (pure, no rclpy).

LeRobot checkpoints (π₀, π₀.₅, SmolVLA) act in joint space: target joint positions and
a gripper in the training dataset's units. A robot configuration says which joints it
commands (``joint_names``), how the policy's joint values are read
(``joint_action_mode``) and which action drives the gripper. :class:`JointActionMap`
matches the checkpoint's action names to that configuration **by name** and turns one
row into a :class:`JointTarget`; anything that does not match is an error naming both
sides, never a guess by position or count (docs/joint_space.md).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

EE_TWIST = 'ee_twist'
JOINT_POSITION = 'joint_position'
JOINT_VELOCITY = 'joint_velocity'
COMMAND_INTERFACES = (EE_TWIST, JOINT_POSITION, JOINT_VELOCITY)
JOINT_INTERFACES = (JOINT_POSITION, JOINT_VELOCITY)
JOINT_ACTION_MODES = ('absolute', 'delta', 'velocity')
# How each joint interface may read the policy's joint values.
VALID_MODES = {JOINT_POSITION: ('absolute', 'delta'), JOINT_VELOCITY: ('velocity',)}
# An action named so is read as the policy's "task complete" signal (>= 0.5), as in the
# end-effector spaces.
TERMINATE = 'terminate'
# The names a checkpoint gets when it does not name its actions (LeRobot stores only the
# action's shape); lerobot_pi names them so.
_PLACEHOLDER = re.compile(r'action_\d+')


class JointMappingError(ValueError):
    """A checkpoint's actions and a robot's joint configuration do not fit together."""


def placeholder_names(names: Sequence[str]) -> bool:
    """Whether ``names`` are the unnamed-checkpoint placeholders ``action_0, action_1, ...``."""
    return bool(names) and all(_PLACEHOLDER.fullmatch(str(n)) for n in names)


@dataclass(frozen=True)
class JointConfig:
    """The robot side of the mapping: the parameters of docs/joint_space.md."""

    interface: str
    joint_names: tuple[str, ...]
    action_mode: str = 'absolute'
    gripper_action: str = ''
    gripper_closed: float = 0.0
    gripper_open: float = 1.0
    ignored_actions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Refuse what cannot describe a joint-space robot, with the reason."""
        set_ = object.__setattr__
        set_(self, 'joint_names', tuple(n for n in self.joint_names if n))
        set_(self, 'ignored_actions', tuple(n for n in self.ignored_actions if n))
        if self.interface not in JOINT_INTERFACES:
            raise ValueError(f'command_interface {self.interface!r} is not a joint interface '
                             f'({", ".join(JOINT_INTERFACES)})')
        allowed = VALID_MODES[self.interface]
        if self.action_mode not in allowed:
            raise ValueError(f'joint_action_mode {self.action_mode!r} does not go with '
                             f'command_interface {self.interface!r}; valid: '
                             f'{", ".join(allowed)}')
        if not self.joint_names:
            raise ValueError(f'command_interface {self.interface!r} needs joint_names (the arm '
                             f'joints commanded, in the controller\'s order)')
        names = list(self.joint_names)
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f'joint_names has duplicates {duplicates}')
        if self.gripper_action in names:
            raise ValueError(f'gripper_action {self.gripper_action!r} is also in joint_names')
        overlap = sorted(set(self.ignored_actions) & (set(names) | {self.gripper_action}))
        if overlap:
            raise ValueError(f'ignored_actions {overlap} are also joints or the gripper_action')
        if self.gripper_action:
            for label, value in (('gripper_action_closed', self.gripper_closed),
                                 ('gripper_action_open', self.gripper_open)):
                if not math.isfinite(value):
                    raise ValueError(f'{label} must be finite, got {value}')
            if self.gripper_closed == self.gripper_open:
                raise ValueError(f'gripper_action_closed and gripper_action_open are both '
                                 f'{self.gripper_open}: the gripper opening is undefined')


def joint_config_from_params(p: Mapping) -> JointConfig | None:
    """The :class:`JointConfig` of inference-node parameters (None for ``ee_twist``).

    ValueError with the reason when the joint parameters do not fit together.
    """
    interface = p.get('command_interface', EE_TWIST)
    if interface not in COMMAND_INTERFACES:
        raise ValueError(f'command_interface must be one of {COMMAND_INTERFACES}, '
                         f'got {interface!r}')
    if interface == EE_TWIST:
        return None
    return JointConfig(interface=interface, joint_names=tuple(p.get('joint_names') or ()),
                       action_mode=p.get('joint_action_mode', 'absolute'),
                       gripper_action=p.get('gripper_action', '') or '',
                       gripper_closed=float(p.get('gripper_action_closed', 0.0)),
                       gripper_open=float(p.get('gripper_action_open', 1.0)),
                       ignored_actions=tuple(p.get('ignored_actions') or ()))


@dataclass(frozen=True)
class JointTarget:
    """One row as joint commands: exactly one of ``positions`` / ``velocities`` is set.

    ``hold_reason`` non-empty: the row could not become a target (e.g. delta mode without
    measured positions); the caller holds.
    """

    names: tuple[str, ...]
    positions: np.ndarray | None = None
    velocities: np.ndarray | None = None
    gripper: float | None = None
    terminate: bool = False
    hold_reason: str = ''


class JointActionMap:
    """Checkpoint action names -> configured joints, gripper and terminate (by name)."""

    def __init__(self, action_names: Sequence[str], config: JointConfig,
                 names_known: bool = True):
        """Match ``action_names`` (the policy's, in row order) to ``config``.

        ``names_known`` False (or the ``action_i`` placeholders): the checkpoint does not
        name its actions, so nothing can be matched and :class:`JointMappingError` says
        to set ``action_names``.
        """
        names = [str(n) for n in action_names]
        self.config = config
        self.action_names = tuple(names)
        joints = list(config.joint_names)
        gripper = [config.gripper_action] if config.gripper_action else []
        if not names_known or placeholder_names(names):
            example = {'action_names': joints + gripper}
            raise JointMappingError(
                f'the checkpoint does not name its {len(names)} action dimensions (they are '
                f'{names}), so they cannot be matched to the robot joints {joints}: set '
                f'policy_params action_names to the checkpoint\'s action names in order '
                f'(its training dataset\'s "action" feature names, e.g. {example})')
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise JointMappingError(f'checkpoint actions {names} name {duplicates} twice')
        known = set(joints) | set(config.ignored_actions) | {TERMINATE}
        if config.gripper_action:
            known.add(config.gripper_action)
        missing = [j for j in joints if j not in names]
        if config.gripper_action and config.gripper_action not in names:
            missing.append(f'{config.gripper_action} (gripper_action)')
        unknown = [n for n in names if n not in known]
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f'missing {missing}')
            if unknown:
                parts.append(f'unknown {unknown} (neither a joint, the gripper_action nor in '
                             f'ignored_actions)')
            robot = f'robot joints {joints}' + (
                f' + gripper_action {config.gripper_action!r}' if gripper else '')
            raise JointMappingError(
                f'checkpoint actions {names} vs {robot}: {"; ".join(parts)}. Match '
                f'joint_names / gripper_action / ignored_actions to the checkpoint, or set '
                f'policy_params action_names if the checkpoint\'s '
                f'names are not these')
        self._joints = np.array([names.index(j) for j in joints], dtype=np.intp)
        self._gripper = names.index(config.gripper_action) if config.gripper_action else None
        self._terminate = names.index(TERMINATE) if TERMINATE in names else None

    @property
    def dim(self) -> int:
        """Length of an action row."""
        return len(self.action_names)

    def gripper_opening(self, value: float) -> float:
        """A gripper action value (dataset units) as 0 closed .. 1 open (clipped)."""
        c = self.config
        return float(np.clip((value - c.gripper_closed) / (c.gripper_open - c.gripper_closed),
                             0.0, 1.0))

    def __call__(self, action, measured: Mapping[str, float] | None = None) -> JointTarget:
        """One action row -> a :class:`JointTarget`; ValueError if the row is malformed.

        ``measured``: the newest joint positions by name (from ``joint_states``); delta
        mode adds the row to them and holds, with the reason, when any joint is absent.
        """
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.dim,):
            raise ValueError(f'action has shape {action.shape}, expected ({self.dim},)')
        if not np.all(np.isfinite(action)):
            raise ValueError('action contains NaN or Inf')
        c = self.config
        names = c.joint_names
        values = action[self._joints]
        gripper = None if self._gripper is None else self.gripper_opening(action[self._gripper])
        terminate = bool(self._terminate is not None and action[self._terminate] >= 0.5)
        if c.action_mode == 'velocity':
            return JointTarget(names, velocities=values, gripper=gripper, terminate=terminate)
        if c.action_mode == 'delta':
            absent = [j for j in names if measured is None or j not in measured]
            if absent:
                return JointTarget(names, gripper=gripper, terminate=terminate,
                                   hold_reason=f'delta joint actions need measured positions; '
                                               f'joint_states has none for {absent}')
            values = values + np.array([measured[j] for j in names], dtype=np.float64)
        return JointTarget(names, positions=values, gripper=gripper, terminate=terminate)
