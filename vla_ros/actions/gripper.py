"""Gripper command hygiene: a binary mode with hysteresis and a minimum dwell time (pure).

A policy's gripper output is a continuous opening (0 closed .. 1 open) that drivers
threshold. Outputs that hover near the threshold make the gripper chatter: it opens for a
tick or two while holding an object and drops it. :class:`GripperFilter` in ``binary``
mode turns the opening into 0 or 1 and changes its mind only when the output crosses the
far threshold (hysteresis) and the current state has lasted ``min_dwell_s`` (dwell).
``continuous`` passes every value through unchanged (today's behaviour).

:func:`chatter_events` measures what the filter is for: reversals of the (thresholded)
gripper state within a short window after the first grasp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ['GRIPPER_MODES', 'GripperFilterConfig', 'GripperFilter', 'chatter_events']

GRIPPER_MODES = ('continuous', 'binary')


@dataclass(frozen=True)
class GripperFilterConfig:
    """Mode, hysteresis thresholds (normalized opening) and minimum dwell (s).

    Binary mode closes when the policy's opening falls to ``close_threshold`` or below
    and opens when it rises to ``open_threshold`` or above; in between the state stays.
    Defaults are the measured choice documented in docs/results.md.
    """

    mode: str = 'continuous'
    close_threshold: float = 0.3
    open_threshold: float = 0.7
    min_dwell_s: float = 0.5

    def __post_init__(self):
        if self.mode not in GRIPPER_MODES:
            raise ValueError(f'gripper_mode must be one of {GRIPPER_MODES}, got {self.mode!r}')
        for name in ('close_threshold', 'open_threshold', 'min_dwell_s'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise ValueError(f'gripper_{name} must be a finite number, got {value!r}')
        if not 0.0 <= self.close_threshold < self.open_threshold <= 1.0:
            raise ValueError(
                f'gripper thresholds need 0 <= close_threshold < open_threshold <= 1, got '
                f'close {self.close_threshold}, open {self.open_threshold}')
        if not 0.0 <= self.min_dwell_s <= 10.0:
            raise ValueError(f'gripper_min_dwell_s must be in [0, 10] s, got {self.min_dwell_s}')


class GripperFilter:
    """Stateful filter of commanded openings: ``filter(value, now) -> opening``."""

    def __init__(self, config: GripperFilterConfig | None = None):
        """Start with no known state (the first command decides it)."""
        self.config = config or GripperFilterConfig()
        self._closed: bool | None = None
        self._since = -math.inf

    def reset(self) -> None:
        """Forget the state (a new episode, a robot whose gripper state is unknown)."""
        self._closed, self._since = None, -math.inf

    @property
    def closed(self) -> bool | None:
        """The binary state (None before the first command or in continuous mode)."""
        return self._closed

    def __call__(self, value: float, now: float) -> float:
        """Filter one commanded opening at time ``now`` (s)."""
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f'gripper opening must be finite, got {value}')
        cfg = self.config
        if cfg.mode == 'continuous':
            return value
        if self._closed is None or now < self._since:
            # First command (or the clock went back, e.g. a replayed bag): take the
            # nearer side of the band's middle as the state. It was not a change the
            # gripper made, so the next real change need not wait for the dwell.
            self._closed = value < (cfg.close_threshold + cfg.open_threshold) / 2
            self._since = -math.inf
        elif now - self._since >= cfg.min_dwell_s - 1e-9 or now < self._since:
            if self._closed and value >= cfg.open_threshold:
                self._closed, self._since = False, now
            elif not self._closed and value <= cfg.close_threshold:
                self._closed, self._since = True, now
        return 0.0 if self._closed else 1.0


def chatter_events(openings, period: float, threshold: float = 0.5,
                   window: float = 0.5) -> list[float]:
    """Times (s) of gripper reversals within ``window`` s of the previous change.

    ``openings`` are the commanded openings, one per control tick of ``period`` seconds,
    thresholded at ``threshold`` as a driver would (below = closed). Only changes after the
    first close (the grasp) count: an open -> close -> open (or close -> open -> close)
    whose middle state lasted less than ``window`` is one event, at the time of the
    reversal.
    """
    if not period > 0:
        raise ValueError(f'period must be positive, got {period}')
    events, state, last_change, grasped = [], None, -math.inf, False
    for i, value in enumerate(openings):
        closed = float(value) < threshold
        now = i * period
        if state is not None and closed != state:
            if grasped and now - last_change < window - 1e-9:
                events.append(round(now, 6))
            grasped = grasped or closed
            last_change = now
        state = closed
    return events
