"""A fixed-rate control loop on its own thread, sleeping to absolute deadlines.

Why not an rclpy timer: its callback runs only when the executor gets to it, after any
image callback in progress (deserialising and converting two 640x480 frames takes
milliseconds) and after the executor's own bookkeeping, all of it competing for the
interpreter lock. This thread wakes at ``start + k * period`` on the monotonic clock and
calls the tick directly (rclpy's ``publish`` is thread-safe), so a tick waits for neither.
Deadlines are absolute: a late tick does not shift the ones after it, and a tick more than
a period late skips the missed deadlines (counted) instead of firing a burst.

:class:`TickSchedule` is the pure deadline arithmetic (tested with a fake clock);
:class:`ControlLoop` is the thread. ``priority > 0`` asks for SCHED_FIFO at that priority
for this thread only (Linux); when the OS refuses (no CAP_SYS_NICE, ``ulimit -r`` 0) it
warns once and runs at normal priority.
"""

import collections
import os
import sys
import threading
import time

TRACE_LENGTH = 100_000  # ticks kept when tracing (~3 h at 10 Hz)


class TickSchedule:
    """Absolute deadlines ``start + k * period``; counts ticks, skipped deadlines, lateness."""

    def __init__(self, period: float, start: float):
        """First deadline one period after ``start``."""
        if not period > 0.0:
            raise ValueError(f'period must be positive, got {period}')
        self.period = float(period)
        self._start = float(start)
        self._k = 1
        self.ticks = 0
        self.skipped = 0
        self.max_lateness = 0.0

    @property
    def next_deadline(self) -> float:
        """When the next tick is due."""
        return self._start + self._k * self.period

    def latest_due(self, now: float) -> float:
        """The last deadline at or before ``now`` (the next one if none has passed).

        A tick woken more than a period late is for this deadline, not the first one it
        missed: a command stamped with that one would arrive stale.
        """
        missed = int(max(0.0, now - self.next_deadline) // self.period)
        return self.next_deadline + missed * self.period

    def wait_time(self, now: float) -> float:
        """Seconds to sleep until the next deadline (0 when it has passed)."""
        return max(0.0, self.next_deadline - now)

    def tick(self, now: float) -> float:
        """Record a tick run at ``now`` (at or after the deadline); its lateness [s].

        The next deadline is the first one after ``now``: deadlines missed entirely are
        skipped (and counted), never run back to back.
        """
        lateness = max(0.0, now - self.next_deadline)
        self.ticks += 1
        self.max_lateness = max(self.max_lateness, lateness)
        missed = int(lateness // self.period)
        self.skipped += missed
        self._k += 1 + missed
        return lateness


def set_fifo_priority(priority: int) -> str:
    """SCHED_FIFO at ``priority`` for the calling thread: '' or why it was refused."""
    if priority <= 0:
        return ''
    if not hasattr(os, 'sched_setscheduler') or not sys.platform.startswith('linux'):
        return 'SCHED_FIFO is available on Linux only'
    try:
        low = os.sched_get_priority_min(os.SCHED_FIFO)
        high = os.sched_get_priority_max(os.SCHED_FIFO)
        if not low <= priority <= high:
            return f'priority {priority} is outside SCHED_FIFO\'s {low}..{high}'
        # pid 0 is the calling thread on Linux (scheduling policies are per thread).
        # Reset on fork: threads and processes started from this thread (a policy
        # process spawned by a load, a restart) must not inherit real-time priority.
        policy = os.SCHED_FIFO | getattr(os, 'SCHED_RESET_ON_FORK', 0)
        os.sched_setscheduler(0, policy, os.sched_param(priority))
    except OSError as exc:
        return (f'{exc.strerror or exc} (grant it with CAP_SYS_NICE or an rtprio limit: '
                f'`ulimit -r {priority}`, or "@group - rtprio {priority}" in '
                f'/etc/security/limits.conf)')
    return ''


class ControlLoop:
    """Call ``tick()`` every ``period`` seconds on a dedicated thread until stopped."""

    def __init__(self, tick, period: float, priority: int = 0, on_warning=None,
                 on_error=None, clock=time.monotonic, name: str = 'vla-control',
                 trace: bool = False, lead: float = 0.0):
        """``on_warning(text)`` reports a refused priority; ``on_error(exc)`` a failed tick.

        ``lead > 0``: wake ``lead`` seconds before each deadline and call
        ``tick(deadline)`` (the command is computed ahead and published at the deadline
        by someone else, e.g. the control process); ``lead == 0``: ``tick()`` at it.

        A tick that raises is reported and the loop goes on (the next tick publishes
        again); without ``on_error`` the exception ends the thread. ``trace`` keeps
        (deadline, tick start, tick end) of the last TRACE_LENGTH ticks in :attr:`trace`
        (for benchmarks: wake-up lateness apart from the tick's own duration).
        """
        self._tick = tick
        self._period = float(period)
        self._priority = int(priority)
        self._warn = on_warning or (lambda text: None)
        self._on_error = on_error
        self._clock = clock
        if not 0.0 <= lead < period:
            raise ValueError(f'lead must be in [0, period), got {lead}')
        self.lead = float(lead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.schedule: TickSchedule | None = None
        self.start_time: float | None = None  # deadlines are start_time + k * period
        self.priority_refused = ''
        self.trace = collections.deque(maxlen=TRACE_LENGTH) if trace else None

    def start(self) -> None:
        """Start the thread; the first tick is one period from now."""
        # The schedule's deadlines are the wake-ups: ``lead`` before the real ones.
        self.start_time = self._clock()
        self.schedule = TickSchedule(self._period, self.start_time - self.lead)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop and join (a tick in progress finishes first)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread.is_alive()

    def _run(self) -> None:
        self.priority_refused = set_fifo_priority(self._priority)
        if self.priority_refused:
            self._warn(f'control loop runs at normal priority: SCHED_FIFO '
                       f'{self._priority} refused: {self.priority_refused}')
        schedule = self.schedule
        # Event.wait sleeps on the monotonic clock and returns at once on stop().
        while not self._stop.wait(schedule.wait_time(self._clock())):
            if self._clock() < schedule.next_deadline:
                continue  # woke early (timer slack): sleep the rest
            start = self._clock()
            deadline = schedule.latest_due(start)
            schedule.tick(start)
            try:
                if self.lead:
                    self._tick(deadline + self.lead)
                else:
                    self._tick()
            except Exception as exc:  # noqa: BLE001 - reported; the loop must go on
                if self._on_error is None:
                    raise
                self._on_error(exc)
            if self.trace is not None:
                self.trace.append((deadline, start, self._clock()))
