"""Joint limits for joint-space commands: pure numpy, no rclpy (docs/joint_space.md).

:class:`JointLimits` is a user's joint configuration; :func:`limit_position_target` and
:func:`limit_joint_velocity` make one tick's command safe, like
:func:`vla_ros.actions.safety.apply_arm_limits` does for twists, and say why they changed
it. Arrays are in ``JointLimits.names`` order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ['JointLimits', 'LimitedJoints', 'limit_position_target', 'limit_joint_velocity',
           'joint_limits_from_parameters', 'command_joint_order', 'JOINT_INTERFACES',
           'COMMAND_INTERFACES']

#: Joint command interfaces a backend may list in ``joint_interfaces``.
JOINT_INTERFACES = ('joint_position', 'joint_velocity')
#: Every value of the ``command_interface`` parameter.
COMMAND_INTERFACES = ('ee_twist',) + JOINT_INTERFACES


def _floats(name: str, values, count: int) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f'{name} must be numbers, got {values!r}') from None
    if len(out) != count:
        raise ValueError(f'{name} has {len(out)} values but joint_names has {count}: '
                         'give one per joint')
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f'{name} must be finite, got {list(out)}')
    return out


@dataclass(frozen=True)
class JointLimits:
    """Position range, speed and per-tick step of every commanded joint.

    ``max_step`` may be given as one value for every joint. Validated at construction:
    unique non-empty names, finite values, ``position_min < position_max``, speeds and
    steps > 0, one value per joint.
    """

    names: tuple[str, ...]
    position_min: tuple[float, ...]
    position_max: tuple[float, ...]
    max_velocity: tuple[float, ...]
    max_step: tuple[float, ...]

    def __post_init__(self) -> None:
        if isinstance(self.names, str):
            raise ValueError(f'joint_names must be a list of names, got {self.names!r}')
        names = tuple(self.names)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f'joint_names must be non-empty names, got {list(names)}')
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f'joint_names lists {duplicates} more than once')
        object.__setattr__(self, 'names', names)
        n = len(names)
        step = self.max_step
        if isinstance(step, (int, float)):
            step = (step,)
        try:
            step = tuple(step)
        except TypeError:
            raise ValueError(f'joint_max_step must be numbers, got {step!r}') from None
        if len(step) == 1:
            step = step * n  # one value for every joint
        fields = {'joint_position_min': self.position_min,
                  'joint_position_max': self.position_max,
                  'joint_max_velocity': self.max_velocity, 'joint_max_step': step}
        values = {k: _floats(k, v, n) for k, v in fields.items()}
        for key in ('joint_max_velocity', 'joint_max_step'):
            bad = [names[i] for i, v in enumerate(values[key]) if not v > 0.0]
            if bad:
                raise ValueError(f'{key} must be > 0 for every joint; not for {bad}')
        bad = [names[i] for i in range(n)
               if not values['joint_position_min'][i] < values['joint_position_max'][i]]
        if bad:
            raise ValueError(f'joint_position_min must be below joint_position_max; not for '
                             f'{bad}')
        object.__setattr__(self, 'position_min', values['joint_position_min'])
        object.__setattr__(self, 'position_max', values['joint_position_max'])
        object.__setattr__(self, 'max_velocity', values['joint_max_velocity'])
        object.__setattr__(self, 'max_step', values['joint_max_step'])

    @property
    def lower(self) -> np.ndarray:
        """Position minima as an array."""
        return np.array(self.position_min)

    @property
    def upper(self) -> np.ndarray:
        """Position maxima as an array."""
        return np.array(self.position_max)

    def step_bound(self, dt: float) -> np.ndarray:
        """Largest change of a position target in a tick of ``dt`` seconds, per joint."""
        return np.minimum(np.array(self.max_step), np.array(self.max_velocity) * max(dt, 0.0))


def joint_limits_from_parameters(values) -> JointLimits:
    """JointLimits from the driver's ``joint_*`` parameter values (ValueError naming them).

    ``values`` maps parameter names to values; a missing or unset (None) one is named.
    """
    keys = ('joint_names', 'joint_position_min', 'joint_position_max', 'joint_max_velocity',
            'joint_max_step')
    missing = [k for k in keys if values.get(k) is None]
    names = values.get('joint_names')
    if names is not None and [n for n in names if n] == []:
        missing.insert(0, 'joint_names')  # the schema's "unset" is ['']
    if missing:
        raise ValueError(f'a joint command_interface needs {", ".join(dict.fromkeys(missing))}'
                         ' (set them in the robot file)')
    for key in keys:
        if isinstance(values[key], (str, bytes, int, float)):  # YAML `0.01`, not `[0.01]`
            raise ValueError(f'{key} must be a list, e.g. [{values[key]}]; got '
                             f'{values[key]!r}')
    return JointLimits(tuple(names), tuple(values['joint_position_min']),
                       tuple(values['joint_position_max']),
                       tuple(values['joint_max_velocity']), tuple(values['joint_max_step']))


def command_joint_order(names, available, owner: str) -> tuple[str, ...]:
    """``names`` (blanks dropped) if they are distinct members of ``available``.

    For backends that receive joint commands for a subset of their joints
    (``attach_node`` reads the driver's ``joint_names``); raises ValueError naming them.
    """
    names = tuple(str(n) for n in names if n)
    bad = [n for n in names if n not in available]
    if not names or bad or len(set(names)) != len(names):
        raise ValueError(f'{owner}: joint commands take distinct joints of '
                         f'{list(available)}, got {list(names)}')
    return names


@dataclass(frozen=True)
class LimitedJoints:
    """A limited joint command; ``reasons`` says what changed it (``clamped`` if any)."""

    values: np.ndarray
    clamped: bool
    reasons: tuple[str, ...]


def _vector(values: Sequence[float], limits: JointLimits, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (len(limits.names),):
        raise ValueError(f'{what} must have shape ({len(limits.names)},), got {arr.shape}')
    if not np.all(np.isfinite(arr)):
        raise ValueError(f'{what} contains NaN or Inf: {arr.tolist()}')
    return arr


def limit_position_target(target: Sequence[float], applied: Sequence[float],
                          limits: JointLimits, dt: float) -> LimitedJoints:
    """The next applied position target: clamp ``target`` to the limits, then step toward it.

    The applied target moves by at most ``min(max_step, max_velocity * dt)`` per joint.
    If ``applied`` lies outside the limits (an arm measured out of range) the result moves
    back toward them by at most that step, never jumps. Raises ValueError for arrays of
    the wrong shape or non-finite values (callers reject those before).
    """
    target = _vector(target, limits, 'target positions')
    applied = _vector(applied, limits, 'applied positions')
    reasons = []
    clamped = np.clip(target, limits.lower, limits.upper)
    if not np.array_equal(clamped, target):
        reasons.append('position limit')
    bound = limits.step_bound(float(dt))
    diff = clamped - applied
    near = np.abs(diff) <= bound
    # Within one step: land on the target exactly (no rounding residue); else one step.
    out = np.where(near, clamped, applied + np.clip(diff, -bound, bound))
    if not near.all():
        reasons.append('step limit')
    return LimitedJoints(out, bool(reasons), tuple(reasons))


def limit_joint_velocity(velocity: Sequence[float], measured: Sequence[float],
                         limits: JointLimits, dt: float) -> LimitedJoints:
    """Clamp velocities to ``+-max_velocity``; zero those crossing a position limit within dt.

    A joint outside its range may only move back toward it. Raises ValueError for arrays
    of the wrong shape or non-finite values.
    """
    velocity = _vector(velocity, limits, 'velocities')
    measured = _vector(measured, limits, 'measured positions')
    reasons = []
    vmax = np.array(limits.max_velocity)
    out = np.clip(velocity, -vmax, vmax)
    if not np.array_equal(out, velocity):
        reasons.append('velocity limit')
    nxt = measured + out * max(float(dt), 0.0)
    crossing = ((out > 0.0) & (nxt > limits.upper)) | ((out < 0.0) & (nxt < limits.lower))
    if crossing.any():
        out[crossing] = 0.0
        reasons.append('position limit')
    return LimitedJoints(out, bool(reasons), tuple(reasons))
