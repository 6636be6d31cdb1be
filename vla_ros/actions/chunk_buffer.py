"""Buffer of timed action chunks with selectable execution strategies (numpy + stdlib only).

Time model: a chunk carries the stamp of the observation it was computed from and the control
period; action ``i`` is meant for ``stamp + i * period`` and serves the control ticks within half
a period of that time. Everything is arithmetic on the times the caller passes; the buffer never
reads a clock. Ticks are expected to be non-decreasing (chunks whose times all passed are
dropped).
"""

from __future__ import annotations

import abc
import bisect
import math
import threading
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

# Slack (in periods) so that times exactly half a period apart, which decimal inputs such as
# 0.35 - 0.2 miss by one ulp, always round to the later action.
_EPS = 1e-9

STATUS_OK = 'ok'
STATUS_EMPTY = 'empty'
STATUS_EXHAUSTED = 'chunk exhausted'
STATUS_NOT_YET_VALID = 'chunk not yet valid'


def tick_index(t: float, stamp: float, period: float) -> int:
    """Return the index of the action nearest to tick ``t`` (ties go to the later action)."""
    return math.floor((t - stamp) / period + 0.5 + _EPS)


def _finite_time(value: float, what: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f'{what} must be finite, got {value!r}')
    return value


@dataclass(frozen=True, eq=False)
class TimedChunk:
    """Actions ``(H, D)`` computed from the observation at ``stamp``, one per ``period``."""

    stamp: float
    period: float
    actions: np.ndarray
    source: str = ''

    def __post_init__(self) -> None:
        stamp = _finite_time(self.stamp, 'chunk stamp')
        period = _finite_time(self.period, 'chunk period')
        if period <= 0.0:
            raise ValueError(f'chunk period must be > 0, got {period!r}')
        actions = np.asarray(self.actions)
        if actions.dtype.kind in 'iub':
            actions = actions.astype(np.float64)
        elif actions.dtype.kind != 'f':
            raise ValueError(f'chunk actions must be real numbers, got dtype {actions.dtype}')
        if actions.ndim != 2 or actions.shape[0] < 1 or actions.shape[1] < 1:
            raise ValueError(f'chunk actions must have shape (H>=1, D>=1), got {actions.shape}')
        if not np.all(np.isfinite(actions)):
            raise ValueError('chunk actions contain NaN or Inf')
        actions = actions.copy()  # the caller may reuse its array
        actions.flags.writeable = False
        object.__setattr__(self, 'stamp', stamp)
        object.__setattr__(self, 'period', period)
        object.__setattr__(self, 'actions', actions)
        object.__setattr__(self, 'source', str(self.source))

    @property
    def horizon(self) -> int:
        """Number of actions H."""
        return self.actions.shape[0]

    @property
    def dim(self) -> int:
        """Action dimension D."""
        return self.actions.shape[1]

    def time_of(self, index: int) -> float:
        """Return the time action ``index`` is meant for."""
        return self.stamp + index * self.period

    def index_for(self, t: float) -> int | None:
        """Return the index of the action serving tick ``t``, or None if no action does."""
        i = tick_index(t, self.stamp, self.period)
        return i if 0 <= i < self.horizon else None

    def remaining(self, t: float) -> int:
        """Return how many actions serve tick ``t`` or later ticks."""
        return max(0, self.horizon - max(0, tick_index(t, self.stamp, self.period)))


@dataclass(frozen=True, eq=False)
class BufferedAction:
    """The action for one control tick and where it came from."""

    action: np.ndarray
    chunk_stamp: float
    index: int
    num_sources: int = 1


class Strategy(abc.ABC):
    """How stored chunks turn into one action per tick. Not thread-safe; see ChunkBuffer."""

    name: ClassVar[str] = ''
    # Constructor keyword -> inference node parameter that sets it (vla_ros.parameters).
    node_parameters: ClassVar[dict[str, str]] = {}

    @abc.abstractmethod
    def add(self, chunk: TimedChunk, now: float) -> None:
        """Store a chunk that arrived at ``now``."""

    @abc.abstractmethod
    def action_at(self, t: float) -> BufferedAction | None:
        """Return the action for tick ``t``, or None if no action is meant for it."""

    @abc.abstractmethod
    def depth(self, t: float) -> int:
        """Return the number of actions available for tick ``t`` and later ticks."""

    @abc.abstractmethod
    def status(self, t: float) -> str:
        """Return 'ok' or why no action is available for ``t`` (no side effects)."""

    @abc.abstractmethod
    def clear(self) -> None:
        """Forget every chunk."""


class _ChunkStore(Strategy):
    """Shared storage: live chunks sorted by stamp, oldest first, at most ``max_chunks``."""

    def __init__(self, max_chunks: int = 32) -> None:
        if isinstance(max_chunks, bool) or not isinstance(max_chunks, int) or max_chunks < 1:
            raise ValueError(f'max_chunks must be an integer >= 1, got {max_chunks!r}')
        self.max_chunks = max_chunks
        self._chunks: list[TimedChunk] = []
        self._had_chunks = False

    def _keep_on_overflow(self) -> TimedChunk | None:
        """Return a chunk that must survive the ``max_chunks`` cap (the one being executed)."""
        return None

    def _store(self, chunk: TimedChunk, now: float) -> None:
        bisect.insort_right(self._chunks, chunk, key=lambda c: c.stamp)
        self._had_chunks = True
        self._prune(now)
        keep = self._keep_on_overflow()
        while len(self._chunks) > self.max_chunks:
            oldest = next(c for c in self._chunks if c is not keep)
            self._chunks.remove(oldest)

    def _prune(self, t: float) -> None:
        # A chunk with no action for t or later can never contribute again.
        self._chunks = [c for c in self._chunks if c.remaining(t) > 0]

    def depth(self, t: float) -> int:
        """Return the most actions any live chunk still has for ``t`` and later ticks."""
        return max((c.remaining(t) for c in self._chunks), default=0)

    def status(self, t: float) -> str:
        """Return 'ok' or why no stored chunk has an action for ``t``."""
        if not self._chunks:
            return STATUS_EXHAUSTED if self._had_chunks else STATUS_EMPTY
        if any(c.index_for(t) is not None for c in self._chunks):
            return STATUS_OK
        if any(tick_index(t, c.stamp, c.period) < 0 for c in self._chunks):
            return STATUS_NOT_YET_VALID
        return STATUS_EXHAUSTED

    def clear(self) -> None:
        """Forget every chunk."""
        self._chunks = []
        self._had_chunks = False


class RecedingHorizon(_ChunkStore):
    """Execute a chunk for ``execute_steps`` ticks, then switch to the newest chunk.

    ``execute_steps >= horizon`` runs each chunk open loop until it is used up.
    """

    name = 'receding_horizon'
    node_parameters = {'execute_steps': 'execute_steps'}

    def __init__(self, execute_steps: int = 5, max_chunks: int = 32) -> None:
        super().__init__(max_chunks)
        if isinstance(execute_steps, bool) or not isinstance(execute_steps, int):
            raise ValueError(f'execute_steps must be an integer, got {execute_steps!r}')
        if execute_steps < 1:
            raise ValueError(f'execute_steps must be >= 1, got {execute_steps}')
        self.execute_steps = execute_steps
        self._reset_active()

    def _reset_active(self) -> None:
        self._active: TimedChunk | None = None
        self._executed = 0
        self._last_t: float | None = None  # last tick served, so repeats are not new steps

    def _keep_on_overflow(self) -> TimedChunk | None:
        return self._active

    def add(self, chunk: TimedChunk, now: float) -> None:
        """Store a chunk; it becomes active once the active one has run its steps."""
        self._store(chunk, now)
        if self._active is not None and self._active not in self._chunks:
            self._active = None

    def action_at(self, t: float) -> BufferedAction | None:
        """Serve ``t`` from the active chunk, switching chunks as the strategy says."""
        self._prune(t)
        active = self._active if self._active in self._chunks else None
        repeat = t == self._last_t
        if active is not None and active.index_for(t) is not None and (
            repeat or self._executed < self.execute_steps
        ):
            chosen = active
        else:
            chosen = next((c for c in reversed(self._chunks) if c.index_for(t) is not None), None)
        if chosen is None:
            return None
        if chosen is not active:
            self._active, self._executed = chosen, 0
        if not repeat or chosen is not active:
            self._executed += 1
        self._last_t = t
        i = chosen.index_for(t)
        return BufferedAction(np.array(chosen.actions[i], dtype=np.float64), chosen.stamp, i, 1)

    def clear(self) -> None:
        """Forget every chunk and the execution progress."""
        super().clear()
        self._reset_active()


class TemporalEnsemble(_ChunkStore):
    """ACT temporal ensembling: weighted average of every chunk's action for the tick.

    Contributors are ordered oldest first with weights ``exp(-m * i)``; ``m = 0`` is a plain
    average, larger ``m`` favours older chunks, negative ``m`` newer ones.
    """

    name = 'temporal_ensemble'
    node_parameters = {'m': 'ensemble_coefficient'}

    def __init__(self, m: float = 0.01, max_chunks: int = 32) -> None:
        super().__init__(max_chunks)
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m):
            raise ValueError(f'm must be a finite number, got {m!r}')
        self.m = float(m)

    def add(self, chunk: TimedChunk, now: float) -> None:
        """Store a chunk for ensembling."""
        self._store(chunk, now)

    def action_at(self, t: float) -> BufferedAction | None:
        """Average the actions all live chunks hold for ``t``."""
        self._prune(t)
        rows, newest, newest_index = [], None, 0
        for chunk in self._chunks:
            i = chunk.index_for(t)
            if i is not None:
                rows.append(chunk.actions[i])
                newest, newest_index = chunk, i
        if newest is None:
            return None
        logw = -self.m * np.arange(len(rows), dtype=np.float64)
        w = np.exp(logw - logw.max())  # shift so no weight overflows for m < 0
        w /= w.sum()  # normalising first keeps every partial sum within the action range
        action = w @ np.asarray(rows, dtype=np.float64)
        return BufferedAction(action, newest.stamp, newest_index, len(rows))


@dataclass
class _PlanEntry:
    time: float
    period: float
    action: np.ndarray
    stamp: float
    index: int
    sources: int


class LatencyAware(Strategy):
    """One plan of timed actions; new chunks skip actions their inference delay made stale.

    Overlapping times are blended ``(1 - new_weight) * old + new_weight * new`` and times past
    the old plan are appended.
    """

    name = 'latency_aware'
    node_parameters = {'new_weight': 'merge_new_weight'}

    def __init__(self, new_weight: float = 0.7) -> None:
        if (isinstance(new_weight, bool) or not isinstance(new_weight, (int, float))
                or not 0.0 <= new_weight <= 1.0):
            raise ValueError(f'new_weight must be a number in [0, 1], got {new_weight!r}')
        self.new_weight = float(new_weight)
        self.clear()

    @staticmethod
    def _passed(entry: _PlanEntry, t: float) -> bool:
        return tick_index(t, entry.time, entry.period) >= 1

    def add(self, chunk: TimedChunk, now: float) -> None:
        """Merge a chunk into the plan, dropping everything meant for before ``now``."""
        self._had_chunks = True
        plan = [e for e in self._plan if not self._passed(e, now)]
        times = [e.time for e in plan]
        half = chunk.period / 2.0
        # Inference delay d in periods: actions 0..d-1 were meant for ticks already gone.
        delay = max(0, tick_index(now, chunk.stamp, chunk.period))
        added = []
        for i in range(delay, chunk.horizon):
            t_new = chunk.time_of(i)
            new = chunk.actions[i].astype(np.float64)
            j = bisect.bisect_left(times, t_new)
            near = [k for k in (j - 1, j) if 0 <= k < len(plan)
                    and abs(plan[k].time - t_new) < half]
            if near:
                k = min(near, key=lambda k: abs(plan[k].time - t_new))
                old = plan[k]
                old.action = (1.0 - self.new_weight) * old.action + self.new_weight * new
                old.stamp, old.index, old.sources = chunk.stamp, i, old.sources + 1
                # Re-time the entry onto the new chunk's grid: keeping the old time would
                # leave a gap of up to half a period before the appended new actions.
                old.time, old.period = t_new, chunk.period
                times[k] = t_new
            else:
                added.append(_PlanEntry(t_new, chunk.period, new, chunk.stamp, i, 1))
        plan.extend(added)
        plan.sort(key=lambda e: e.time)
        self._plan = plan
        self._times = [e.time for e in plan]

    def _find(self, t: float) -> _PlanEntry | None:
        j = bisect.bisect_left(self._times, t)
        hits = [self._plan[k] for k in (j - 1, j) if 0 <= k < len(self._plan)
                and tick_index(t, self._plan[k].time, self._plan[k].period) == 0]
        return min(hits, key=lambda e: abs(e.time - t), default=None)

    def action_at(self, t: float) -> BufferedAction | None:
        """Return the plan entry within half a period of ``t``."""
        entry = self._find(t)
        if entry is None:
            return None
        return BufferedAction(entry.action.copy(), entry.stamp, entry.index, entry.sources)

    def depth(self, t: float) -> int:
        """Return the number of plan entries for ``t`` and later ticks."""
        return sum(1 for e in self._plan if tick_index(t, e.time, e.period) <= 0)

    def status(self, t: float) -> str:
        """Return 'ok' or why the plan has no action for ``t``."""
        if not self._plan:
            return STATUS_EXHAUSTED if self._had_chunks else STATUS_EMPTY
        if self._find(t) is not None:
            return STATUS_OK
        if any(tick_index(t, e.time, e.period) < 0 for e in self._plan):
            return STATUS_NOT_YET_VALID
        return STATUS_EXHAUSTED

    def clear(self) -> None:
        """Forget the plan."""
        self._plan: list[_PlanEntry] = []
        self._times: list[float] = []
        self._had_chunks = False


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (RecedingHorizon, TemporalEnsemble, LatencyAware)
}


def make_strategy(name: str, **params: object) -> Strategy:
    """Build a strategy by name; unknown names or parameters raise ValueError."""
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ValueError(f'unknown chunk strategy {name!r}; choose one of {sorted(STRATEGIES)}')
    try:
        return cls(**params)
    except TypeError as exc:  # unexpected keyword
        raise ValueError(f'invalid parameters for {name!r}: {exc}') from exc


class ChunkBuffer:
    """Thread-safe buffer: chunks come from the inference thread, ticks from the control loop."""

    def __init__(self, strategy: Strategy | str = 'temporal_ensemble', **params: object) -> None:
        if isinstance(strategy, str):
            strategy = make_strategy(strategy, **params)
        elif params:
            raise ValueError('parameters are only accepted with a strategy name')
        if not isinstance(strategy, Strategy):
            raise ValueError(f'strategy must be a Strategy or a name, got {strategy!r}')
        self._strategy = strategy
        self._lock = threading.Lock()
        self._dim: int | None = None
        self._last_starved_reason = ''

    @property
    def strategy(self) -> Strategy:
        """The strategy in use."""
        return self._strategy

    @property
    def dim(self) -> int | None:
        """Action dimension of the stored chunks (None until the first chunk)."""
        return self._dim

    @property
    def last_starved_reason(self) -> str:
        """Why the latest ``action_at`` returned None ('' if it returned an action)."""
        with self._lock:
            return self._last_starved_reason

    def add(self, chunk: TimedChunk, now: float) -> None:
        """Store a chunk received at ``now``; a different action dimension raises ValueError."""
        if not isinstance(chunk, TimedChunk):
            raise ValueError(f'expected a TimedChunk, got {type(chunk).__name__}')
        now = _finite_time(now, 'now')
        with self._lock:
            if self._dim is not None and chunk.dim != self._dim:
                raise ValueError(f'chunk action dimension {chunk.dim} != buffer dimension '
                                 f'{self._dim}')
            self._strategy.add(chunk, now)
            self._dim = chunk.dim

    def action_at(self, t: float) -> BufferedAction | None:
        """Return the action for tick ``t``, or None when starved (never a stale action)."""
        t = _finite_time(t, 'tick time')
        with self._lock:
            reason = self._strategy.status(t)
            result = self._strategy.action_at(t)
            self._last_starved_reason = '' if result is not None else (
                reason if reason != STATUS_OK else STATUS_EXHAUSTED)
            return result

    def depth(self, t: float) -> int:
        """Return the number of actions available for ``t`` and later ticks."""
        with self._lock:
            return self._strategy.depth(_finite_time(t, 'tick time'))

    def status(self, t: float) -> str:
        """Return 'ok', 'empty', 'chunk exhausted' or 'chunk not yet valid' for tick ``t``."""
        with self._lock:
            return self._strategy.status(_finite_time(t, 'tick time'))

    def is_starved(self, t: float) -> bool:
        """Return whether no action is available for ``t`` (no side effects)."""
        return self.status(t) != STATUS_OK

    def clear(self) -> None:
        """Forget every chunk (e.g. at the start of an episode)."""
        with self._lock:
            self._strategy.clear()
            self._dim = None
            self._last_starved_reason = ''
