"""Run an :class:`InferenceEngine` in lock-step with a clock the caller advances.

The inference node drives the engine from a control timer and a worker thread. Offline
callers drive the same engine here (``vla-ros eval`` rollouts in simulated time, bag
regression's engine schedule on recorded time): every control tick they hand in the
newest inputs and call :meth:`LockstepInference.tick`,
which lets the engine decide whether to start an inference (``inference_due``), runs the
policy at once, makes its chunk available ``latency`` seconds of that clock later, and
returns ``command_at(now)``. So the scheduling, chunk timing, strategy, error holds and
deadlines measured offline are the ones the robot runs. No wall clock is read for
scheduling; wall time is only measured per inference, for reporting.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from vla_ros.actions.chunk_buffer import make_strategy
from vla_ros.runtime.commands import Command
from vla_ros.runtime.engine import InferenceEngine, InferenceJob

# Slack for "the chunk has arrived": tick times come from arithmetic, latencies from users.
_ARRIVAL_SLACK = 1e-9


def default_inference_interval(chunk_length: int, strategy: str = 'receding_horizon',
                               strategy_params: dict | None = None) -> int:
    """Control ticks between inferences of ``vla-ros eval``'s default schedule.

    A receding horizon replans after ``execute_steps`` (capped at the chunk length);
    other strategies infer every tick. Training uses it as the default spacing of a
    history window's frames, which are the frames earlier inferences looked at.
    """
    if strategy == 'receding_horizon':
        execute_steps = make_strategy(strategy, **(strategy_params or {})).execute_steps
        return max(1, min(execute_steps, int(chunk_length)))
    return 1


@dataclass
class _Pending:
    job: InferenceJob
    chunk: object
    error: str
    arrival: float


class LockstepInference:
    """One simulated inference worker in front of an engine (at most one in flight)."""

    def __init__(self, engine: InferenceEngine, latency: float = 0.0) -> None:
        """``latency``: simulated seconds between an observation and its usable chunk."""
        latency = float(latency)
        if not (math.isfinite(latency) and latency >= 0):
            raise ValueError(f'inference latency must be >= 0 seconds, got {latency!r}')
        self.engine = engine
        self.latency = latency
        self._pending: _Pending | None = None
        self.inference_wall_s: list[float] = []
        self.errors: list[str] = []
        self.chunks_buffered = 0  # chunks the engine accepted into its buffer

    @property
    def in_flight(self) -> bool:
        """Whether an inference has started and its chunk has not arrived yet."""
        return self._pending is not None

    def deliver(self, now: float) -> None:
        """Hand the engine the in-flight chunk if its latency has passed by ``now``."""
        pending = self._pending
        if pending is not None and pending.arrival <= now + _ARRIVAL_SLACK:
            self._pending = None
            if self.engine.finish_inference(pending.job, pending.chunk, pending.error,
                                            pending.arrival) is not None:
                self.chunks_buffered += 1

    def maybe_infer(self, now: float) -> bool:
        """Start (and compute) an inference if the engine says one is due at ``now``."""
        if self._pending is not None or not self.engine.inference_due(now):
            return False
        job = self.engine.begin_inference(now)
        if job is None:
            return False
        started = time.perf_counter()
        chunk, error = self.engine.compute_chunk(job)
        self.inference_wall_s.append(time.perf_counter() - started)
        if error:
            self.errors.append(error)
        self._pending = _Pending(job, chunk, error, now + self.latency)
        self.deliver(now)  # zero latency: usable on this very tick
        return True

    def tick(self, now: float) -> Command:
        """One control tick: deliver, maybe infer, then the engine's command for ``now``.

        Inputs (frames, proprioception, instruction) must already be set for ``now``.
        """
        self.deliver(now)
        self.maybe_infer(now)
        return self.engine.command_at(now)
