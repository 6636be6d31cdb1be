"""Safety limits for arm and base velocity commands: pure numpy functions, no rclpy.

Arm twists are arrays ``[vx, vy, vz, wx, wy, wz]`` (m/s, rad/s); base twists ``[vx, vy, wz]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np

from vla_ros.parameters import SAFETY_DEFAULTS as _DEFAULTS


class UnsafeCommandError(ValueError):
    """A command that cannot be made safe by clamping (NaN, Inf or wrong shape)."""


_SCALARS = ('max_linear_velocity', 'max_angular_velocity', 'max_linear_acceleration',
            'max_angular_acceleration', 'max_base_linear_velocity', 'max_base_angular_velocity')


@dataclass(frozen=True)
class SafetyLimits:
    """Velocity, acceleration and workspace limits; every scalar must be finite and > 0.

    Defaults: the driver's (``vla_ros.parameters.SAFETY_DEFAULTS``, the one place they live).
    """

    max_linear_velocity: float = _DEFAULTS['max_linear_velocity']
    max_angular_velocity: float = _DEFAULTS['max_angular_velocity']
    max_linear_acceleration: float = _DEFAULTS['max_linear_acceleration']
    max_angular_acceleration: float = _DEFAULTS['max_angular_acceleration']
    workspace_min: tuple[float, float, float] = _DEFAULTS['workspace_min']
    workspace_max: tuple[float, float, float] = _DEFAULTS['workspace_max']
    max_base_linear_velocity: float = _DEFAULTS['max_base_linear_velocity']
    max_base_angular_velocity: float = _DEFAULTS['max_base_angular_velocity']

    def __post_init__(self) -> None:
        for name in _SCALARS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f'safety limit {name} must be a number, got {value!r}')
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f'safety limit {name} must be finite and > 0, got {value!r}')
            object.__setattr__(self, name, float(value))
        bounds = {}
        for name in ('workspace_min', 'workspace_max'):
            value = getattr(self, name)
            try:
                xyz = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                raise ValueError(f'safety limit {name} must be 3 numbers, got {value!r}') from None
            if len(xyz) != 3 or not all(math.isfinite(v) for v in xyz):
                raise ValueError(f'safety limit {name} must be 3 finite numbers, got {value!r}')
            bounds[name] = xyz
            object.__setattr__(self, name, xyz)
        lo, hi = bounds['workspace_min'], bounds['workspace_max']
        if any(a >= b for a, b in zip(lo, hi, strict=True)):
            raise ValueError(f'workspace_min {lo} must be below workspace_max {hi} on every axis')

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SafetyLimits:
        """Build limits from a mapping (e.g. YAML); missing keys keep their defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f'unknown safety limit keys {unknown}; known keys: {sorted(known)}')
        return cls(**dict(data))


@dataclass(frozen=True)
class LimitedCommand:
    """A limited arm twist; ``reasons`` says what changed it (``clamped`` if any)."""

    twist: np.ndarray
    clamped: bool
    reasons: tuple[str, ...]


def check_finite(vec: Any, what: str, size: int = 6) -> np.ndarray:
    """Return ``vec`` as a float64 array of ``size``; raise UnsafeCommandError if it is not."""
    try:
        arr = np.array(vec, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise UnsafeCommandError(f'{what} is not numeric: {exc}') from None
    if arr.shape != (size,):
        raise UnsafeCommandError(f'{what} must have shape ({size},), got {arr.shape}')
    if not np.all(np.isfinite(arr)):
        raise UnsafeCommandError(f'{what} contains NaN or Inf: {arr.tolist()}')
    return arr


def _check_dt(dt: float) -> float:
    dt = float(dt)
    if not (math.isfinite(dt) and dt >= 0.0):
        raise ValueError(f'dt must be finite and >= 0, got {dt!r}')
    return dt


def _norm(v: np.ndarray) -> float:
    # Scale first so huge finite components do not overflow to inf.
    peak = float(np.max(np.abs(v)))
    return 0.0 if peak == 0.0 else peak * float(np.linalg.norm(v / peak))


def _clamp_norm(v: np.ndarray, limit: float) -> np.ndarray:
    n = _norm(v)
    return v if n <= limit else (v / n) * limit


def clamp_velocity(twist: Any, limits: SafetyLimits) -> np.ndarray:
    """Scale the linear and the angular part down to their maximum norms, keeping direction."""
    t = check_finite(twist, 'twist')
    return np.concatenate([_clamp_norm(t[:3], limits.max_linear_velocity),
                           _clamp_norm(t[3:], limits.max_angular_velocity)])


def limit_acceleration(previous: Any, requested: Any, dt: float,
                       limits: SafetyLimits) -> np.ndarray:
    """Move from ``previous`` towards ``requested`` by at most ``max_acceleration * dt``.

    The linear and angular changes are bounded in norm, each keeping its direction.
    """
    prev = check_finite(previous, 'previous twist')
    req = check_finite(requested, 'requested twist')
    dt = _check_dt(dt)
    out = req.copy()
    for part, acc in ((slice(0, 3), limits.max_linear_acceleration),
                      (slice(3, 6), limits.max_angular_acceleration)):
        # Half differences: the full difference of huge opposite values would overflow.
        half = req[part] / 2.0 - prev[part] / 2.0
        step = acc * dt
        n = _norm(half)
        if 2.0 * n > step:
            out[part] = prev[part] + (half / n) * step
    return out


def enforce_workspace(position: Any, twist: Any, dt: float, limits: SafetyLimits) -> np.ndarray:
    """Zero each linear component that would take ``position`` out of the box within ``dt``.

    Outside the box, a component is kept only if it brings that axis closer to the box.
    """
    pos = check_finite(position, 'position', size=3)
    out = check_finite(twist, 'twist')
    dt = _check_dt(dt)
    lo = np.asarray(limits.workspace_min)
    hi = np.asarray(limits.workspace_max)
    with np.errstate(over='ignore'):  # a far-out position moving farther: inf is "out"
        nxt = pos + out[:3] * dt
    dist_now = np.maximum(np.maximum(lo - pos, pos - hi), 0.0)
    dist_next = np.maximum(np.maximum(lo - nxt, nxt - hi), 0.0)
    v = out[:3]
    toward = ((pos > hi) & (v < 0.0)) | ((pos < lo) & (v > 0.0))
    # Outside after dt is only fine when heading back without overshooting further out.
    leaving = (v != 0.0) & (dist_next > 0.0) & ~(toward & (dist_next <= dist_now))
    out[:3][leaving] = 0.0
    return out


def limit_base(twist_base: Any, limits: SafetyLimits) -> np.ndarray:
    """Clamp a base twist ``[vx, vy, wz]``: planar speed by norm, yaw rate by magnitude."""
    t = check_finite(twist_base, 'base twist', size=3)
    wz = min(max(t[2], -limits.max_base_angular_velocity), limits.max_base_angular_velocity)
    return np.append(_clamp_norm(t[:2], limits.max_base_linear_velocity), wz)


def apply_arm_limits(requested: Any, previous: Any, position: Any, dt: float,
                     limits: SafetyLimits) -> LimitedCommand:
    """Make an arm twist safe: velocity clamp, acceleration limit, then workspace.

    Never raises for bad data: a non-finite request gives a zero twist, an unknown position
    stops linear motion, a bad ``dt`` (clock jump) allows no change. The output is always
    finite and within the velocity limits.
    """
    reasons = []
    try:
        dt = _check_dt(dt)
    except (TypeError, ValueError):
        dt, reasons = 0.0, ['invalid dt']
    try:
        req = check_finite(requested, 'requested twist')
    except UnsafeCommandError:
        return LimitedCommand(np.zeros(6), True, ('non-finite command',))
    try:
        prev = clamp_velocity(previous, limits)  # a previous command over the limits is clamped
    except UnsafeCommandError:
        prev = np.zeros(6)
        reasons.append('invalid previous command')
    out = clamp_velocity(req, limits)
    if not np.array_equal(out, req):
        reasons.append('velocity clamped')
    # Both ends are inside the (convex) velocity balls, so every step between them is too.
    limited = limit_acceleration(prev, out, dt, limits)
    if not np.array_equal(limited, out):
        reasons.append('acceleration limited')
    try:
        pos = check_finite(position, 'position', size=3)
    except UnsafeCommandError:
        limited[:3] = 0.0
        reasons.append('non-finite position')
    else:
        bounded = enforce_workspace(pos, limited, dt, limits)
        if not np.array_equal(bounded, limited):
            reasons.append('workspace')
        limited = bounded
    return LimitedCommand(limited, bool(reasons), tuple(reasons))
