"""What counts as an unsafe command, and when a stop happened (pure numpy, no rclpy).

A command is unsafe when it is not finite, exceeds the configured velocity limits, speeds
up faster than the acceleration limits allow, or moves the end effector further out of
the workspace box. The checks mirror the guarantees of the driver's safety layer so that
a fuzz or fault run can count violations from the outside, on ``~/applied_twist``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

STAMP_RESOLUTION = 1e-6  # s: float64 epoch seconds resolve ~2.4e-7 s; two stamps per dt


@dataclass(frozen=True)
class Envelope:
    """Limits a command must respect; ``None`` leaves a check out.

    The inference node only clamps velocities; the driver also bounds acceleration and
    keeps the end effector in ``workspace`` (``(min_xyz, max_xyz)``).
    """

    max_linear_velocity: float
    max_angular_velocity: float
    max_linear_acceleration: float | None = None
    max_angular_acceleration: float | None = None
    workspace: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    tolerance: float = 1e-6

    @classmethod
    def from_limits(cls, limits, with_dynamics: bool = True) -> Envelope:
        """An envelope from a :class:`vla_ros.actions.safety.SafetyLimits`."""
        if not with_dynamics:
            return cls(limits.max_linear_velocity, limits.max_angular_velocity)
        return cls(limits.max_linear_velocity, limits.max_angular_velocity,
                   limits.max_linear_acceleration, limits.max_angular_acceleration,
                   (tuple(limits.workspace_min), tuple(limits.workspace_max)))

    def loosest(self, other: Envelope) -> Envelope:
        """Per-limit maximum of two envelopes (used while a limit change takes effect)."""
        def top(a, b):
            return None if a is None or b is None else max(a, b)

        workspace = None
        if self.workspace is not None and other.workspace is not None:
            workspace = (tuple(np.minimum(self.workspace[0], other.workspace[0])),
                         tuple(np.maximum(self.workspace[1], other.workspace[1])))
        return replace(self, max_linear_velocity=max(self.max_linear_velocity,
                                                     other.max_linear_velocity),
                       max_angular_velocity=max(self.max_angular_velocity,
                                                other.max_angular_velocity),
                       max_linear_acceleration=top(self.max_linear_acceleration,
                                                   other.max_linear_acceleration),
                       max_angular_acceleration=top(self.max_angular_acceleration,
                                                    other.max_angular_acceleration),
                       workspace=workspace)


def _norm(v) -> float:
    # Scaled, so huge finite components give a huge norm rather than an overflow warning.
    v = np.asarray(v, dtype=np.float64)
    peak = float(np.max(np.abs(v))) if v.size else 0.0
    if peak == 0.0 or not math.isfinite(peak):
        return peak
    return peak * float(np.linalg.norm(v / peak))


def velocity_violations(twist, envelope: Envelope) -> list[str]:
    """Why a 6-D twist is unsafe on its own ([] if it is not)."""
    try:
        t = np.asarray(twist, dtype=np.float64)
    except (TypeError, ValueError):
        return [f'not numeric: {twist!r}']
    if t.shape != (6,):
        return [f'shape {t.shape}, expected (6,)']
    if not np.all(np.isfinite(t)):
        return [f'non-finite twist {t.tolist()}']
    out = []
    tol = envelope.tolerance
    if _norm(t[:3]) > envelope.max_linear_velocity + tol:
        out.append(f'linear speed {_norm(t[:3]):.6f} > {envelope.max_linear_velocity}')
    if _norm(t[3:]) > envelope.max_angular_velocity + tol:
        out.append(f'angular speed {_norm(t[3:]):.6f} > {envelope.max_angular_velocity}')
    return out


def workspace_violations(position, twist, envelope: Envelope, margin: float = 0.0) -> list[str]:
    """Outside the box (by more than ``margin``), no linear component may point further out."""
    if envelope.workspace is None or position is None:
        return []
    pos = np.asarray(position, dtype=np.float64)
    v = np.asarray(twist, dtype=np.float64)[:3]
    lo, hi = (np.asarray(b, dtype=np.float64) for b in envelope.workspace)
    out = []
    for axis, name in enumerate('xyz'):
        if pos[axis] > hi[axis] + margin and v[axis] > envelope.tolerance:
            out.append(f'{name} = {pos[axis]:.4f} above {hi[axis]} and moving further out')
        if pos[axis] < lo[axis] - margin and v[axis] < -envelope.tolerance:
            out.append(f'{name} = {pos[axis]:.4f} below {lo[axis]} and moving further out')
    return out


class AppliedTwistChecker:
    """Check the stream of twists a driver applied (one per control period).

    Velocity limits hold for every twist. Acceleration: the driver moves from the previous
    applied twist by at most ``max_acceleration * dt`` with ``dt`` capped at three periods,
    so a speed can grow by at most that much per tick (stops may be immediate). When ticks
    are missing from the stream (``gap > 1.5`` periods), the bound over the whole gap is
    used instead and the gap is counted.
    """

    def __init__(self, envelope: Envelope, period: float, grace: float = 0.5):
        """``grace``: seconds around a limit change during which both envelopes are accepted.

        Check samples after the changes were recorded (or with a lag of ``grace``): a
        sample stamped just before a recorded change may already be under the new limits.
        """
        self.period = float(period)
        self.grace = float(grace)
        self._history = [(-math.inf, envelope)]
        self._last: tuple[float, np.ndarray] | None = None
        self.checked = 0
        self.gaps = 0

    def set_envelope(self, envelope: Envelope, when: float) -> None:
        """Limits changed at time ``when`` (same clock as the twist stamps)."""
        self._history.append((float(when), envelope))

    def envelope_at(self, stamp: float) -> Envelope:
        """The loosest envelope in force within ``grace`` of ``stamp``."""
        return envelope_near(self._history, stamp, self.grace)

    def reset(self) -> None:
        """Forget the previous twist (e.g. a restarted driver starts from rest)."""
        self._last = None

    def check(self, stamp: float, twist, position=None) -> list[str]:
        """Return why this applied twist is unsafe ([] if it is not)."""
        envelope = self.envelope_at(stamp)
        self.checked += 1
        reasons = velocity_violations(twist, envelope)
        if reasons:
            return reasons
        t = np.asarray(twist, dtype=np.float64)
        if self._last is not None and stamp > self._last[0]:
            gap = stamp - self._last[0]
            if gap > 1.5 * self.period:
                self.gaps += 1
                dt = gap
            else:
                dt = min(max(gap, 1e-4), 3 * self.period)
            previous = self._last[1]
            for part, acc, name in ((slice(0, 3), envelope.max_linear_acceleration, 'linear'),
                                    (slice(3, 6), envelope.max_angular_acceleration,
                                     'angular')):
                if acc is None:
                    continue
                growth = _norm(t[part]) - _norm(previous[part])
                # Epoch stamps as float seconds carry ~0.2 us of rounding each.
                if growth > acc * (dt + STAMP_RESOLUTION) + envelope.tolerance:
                    reasons.append(f'{name} speed grew by {growth:.6f} in {dt:.4f} s '
                                   f'(limit {acc} m/s^2 or rad/s^2)')
        reasons += workspace_violations(position, t, envelope, margin=envelope.tolerance)
        self._last = (stamp, t)
        return reasons


def envelope_near(history, stamp: float, grace: float) -> Envelope:
    """The loosest envelope of ``(since, envelope)`` changes within ``grace`` of ``stamp``."""
    active = [e for t, e in history if t <= stamp - grace]
    envelope = active[-1] if active else history[0][1]
    for t, e in history:
        if stamp - grace < t <= stamp + grace:
            envelope = envelope.loosest(e)
    return envelope


def is_zero(twist) -> bool:
    """Whether every component of a twist is exactly zero (what the driver sends to stop)."""
    return bool(np.all(np.asarray(twist, dtype=np.float64) == 0.0))


@dataclass(frozen=True)
class StopMeasurement:
    """When the first zero twist followed a fault, and whether motion resumed too early."""

    fault_time: float
    stop_time: float | None
    moved_during_fault: bool

    @property
    def latency(self) -> float | None:
        """Seconds from the fault to the first zero applied twist (None: never stopped)."""
        return None if self.stop_time is None else self.stop_time - self.fault_time


def measure_stop(samples, fault_time: float, fault_end: float | None = None) -> StopMeasurement:
    """Find the first all-zero twist at or after ``fault_time`` in ``(stamp, twist)`` samples.

    ``moved_during_fault``: a non-zero twist followed the stop before ``fault_end`` (when the
    cause was removed), i.e. the stop did not hold for as long as the fault lasted.
    """
    stop_time = None
    moved = False
    for stamp, twist in samples:
        if stamp < fault_time:
            continue
        if stop_time is None:
            if is_zero(twist):
                stop_time = stamp
        elif (fault_end is None or stamp < fault_end) and not is_zero(twist):
            moved = True
    return StopMeasurement(fault_time, stop_time, moved)
