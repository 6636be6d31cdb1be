"""The inference node's side of its control process (parameter ``control_process``).

:class:`ControlRelay` starts :mod:`vla_ros.runtime.control_process`, gives it the node's
resolved command topics, and on every control tick either writes the tick's serialized
messages into the shared :class:`~vla_ros.runtime.command_slot.CommandSlot` (the process
publishes them at the deadline) or tells the node to publish them itself.

Who publishes is :class:`Handover`'s decision (pure, tested with plain numbers): the node,
until the process is up and its primary command publisher has matched at least as many
subscribers as the node's own, for as long as discovery may take to be heard
(``DISCOVERY_SETTLE_S``), so the driver never misses a tick at the switch; then the
process; and the node again, at once, if the process exits or stops publishing (no
deadline published for ``STALL_TICKS`` ticks). :meth:`ControlRelay.supervise` (a 1 Hz
timer of the node, never the real-time thread: a child forked from it would inherit
SCHED_FIFO for its imports) restarts a failed process, waiting 1 s, then doubling up to
30 s between attempts.
"""

import json
import math
import subprocess
import sys
import threading
import time

from vla_ros.dds import DISCOVERY_SETTLE_S
from vla_ros.runtime.command_slot import NOTHING_PUBLISHED, CommandSlot, Feedback
from vla_ros.runtime.control_process import type_name

STALL_TICKS = 3
FIRST_RESTART_DELAY_S = 1.0
MAX_RESTART_DELAY_S = 30.0


class Handover:
    """Whether the control process publishes deadline ``k`` (True) or the node does."""

    def __init__(self, stall_ticks: int = STALL_TICKS, settle_ticks: int = 0):
        """``stall_ticks``: written deadlines in a row left unpublished before taking back.

        ``settle_ticks``: deadlines the process's publisher must have matched every
        subscriber of the node's before it takes over. Matched on its side is not heard:
        the driver may discover the new process only from its next periodic announcement
        (``vla_ros.dds.DISCOVERY_SETTLE_S``); until then it drops what the process sends.
        """
        self.stall_ticks = int(stall_ticks)
        self.settle_ticks = int(settle_ticks)
        self.relayed_since: int | None = None  # first deadline handed to the process
        self.stalled = False  # the process stopped publishing: the node took back
        self._last_written: int | None = None
        self._unpublished = 0
        self._matched_since: int | None = None

    def decide(self, ready: bool, feedback: Feedback, own_subscribers: int, k: int) -> bool:
        """Decide for deadline ``k`` from the process's state and the node's primary publisher.

        ``ready``: the process is running and has said so. ``own_subscribers``: matched
        subscriptions of the node's own primary publisher (only read before the switch).
        Only deadlines the node wrote count against the process: when the node itself
        skipped some (stopped, starved of CPU), nothing was there to publish.
        """
        if not ready or self.stalled:
            self.relayed_since = self._last_written = self._matched_since = None
            return False
        if self.relayed_since is None:
            if feedback.subscribers[0] < own_subscribers:
                self._matched_since = None
                return False  # the driver would not hear the process yet
            if self._matched_since is None:
                self._matched_since = k
            if k - self._matched_since < self.settle_ticks:
                return False  # matched, but perhaps not yet heard (see __init__)
            self.relayed_since = self._last_written = k
            self._unpublished = 0
            return True
        if self._last_written == k - 1:  # due a lead + a period ago: it should be out
            self._unpublished = 0 if feedback.published_k >= k - 1 else self._unpublished + 1
            if self._unpublished > self.stall_ticks:
                self.stalled = True
                self.relayed_since = self._last_written = None
                return False
        self._last_written = k
        return True

    def reset(self) -> None:
        """A new process: start over (the node publishes until it has caught up)."""
        self.relayed_since = self._last_written = self._matched_since = None
        self.stalled = False
        self._unpublished = 0


class ControlRelay:
    """Start, feed, supervise and stop the control process of one node."""

    def __init__(self, node, publishers: list, period: float, start: float, priority: int,
                 env=None):
        """``publishers``: the node's command publishers, the primary one (ee or joint) first."""
        self._node = node
        self._logger = node.get_logger()
        self._publishers = list(publishers)
        self._index = {id(pub): i for i, pub in enumerate(self._publishers)}
        self._slot = CommandSlot.create()
        self._config = {
            'slot': self._slot.path, 'node_name': f'{node.get_name()}_control',
            'namespace': node.get_namespace(), 'period': period, 'start': start,
            'priority': priority,
            'topics': [(pub.topic_name, type_name(pub.msg_type)) for pub in self._publishers]}
        self._env = env
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._ready = False
        self._closed = False
        self.handover = Handover(settle_ticks=math.ceil(DISCOVERY_SETTLE_S / period))
        self.restarts = 0
        self._failures = 0
        self._next_start = 0.0
        self._start_process()

    # ------------------------------------------------------------- control thread
    def dispatch(self, k: int, messages) -> bool:
        """Hand deadline ``k``'s [(publisher, msg)] to the process (True) or not (False)."""
        proc = self._proc
        ready = self._ready and proc is not None and proc.poll() is None
        own = self._publishers[0].get_subscription_count() \
            if self.handover.relayed_since is None else 0
        relayed = self.handover.decide(ready, self._slot.feedback(), own, k)
        if relayed:
            from rclpy.serialization import serialize_message

            self._slot.write(k, [(self._index[id(pub)], serialize_message(msg))
                                 for pub, msg in messages])
        return relayed

    # ---------------------------------------------------------- executor (1 Hz)
    def supervise(self) -> None:
        """Report a failed process and restart it after the back-off."""
        if self._closed:
            return
        proc = self._proc
        failed = ''
        if proc is not None and proc.poll() is not None:
            failed = f'exited with code {proc.returncode}'
        elif self.handover.stalled:
            failed = 'stopped publishing'
        if failed and proc is not None:
            self._failures += 1
            delay = min(FIRST_RESTART_DELAY_S * 2 ** (self._failures - 1), MAX_RESTART_DELAY_S)
            self._logger.error(f'control process {failed}; the node publishes the commands '
                               f'itself, restart in {delay:.0f} s')
            with self._lock:
                self._proc, self._ready = None, False
            # Not on the executor: a process that ignores 'stop' takes seconds to kill.
            threading.Thread(target=self._stop_process, args=(proc,), daemon=True,
                             name='control-process-stop').start()
            self._next_start = time.monotonic() + delay
            return
        if self._proc is None and time.monotonic() >= self._next_start:
            self.restarts += 1
            self._start_process()
        elif self.relayed:
            self._failures = 0  # publishing again: the next failure waits 1 s again

    @property
    def relayed(self) -> bool:
        """Whether the process publishes the commands now."""
        return self.handover.relayed_since is not None

    @property
    def pid(self) -> int | None:
        """The running process's id."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def describe(self) -> str:
        """One line for diagnostics."""
        if self.relayed:
            fb = self._slot.feedback()
            return f'control process (pid {self.pid}; late {fb.late}, missed {fb.missed})'
        return 'node (control process starting)' if self._proc is not None else 'node'

    def close(self) -> None:
        """Stop the process and remove the shared segment."""
        self._closed = True
        with self._lock:
            proc, self._proc, self._ready = self._proc, None, False
        if proc is not None:
            self._stop_process(proc)
        self._slot.close()

    # -------------------------------------------------------------------- helpers
    def _start_process(self) -> None:
        self.handover.reset()
        # Forget the last process's report (its subscriber counts are not the new one's).
        self._slot.report(NOTHING_PUBLISHED, 0, 0, ())
        proc = subprocess.Popen(
            [sys.executable, '-m', 'vla_ros.runtime.control_process'],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self._env, text=True)
        with self._lock:
            self._proc, self._ready = proc, False
        proc.stdin.write(json.dumps(self._config) + '\n')
        proc.stdin.flush()
        threading.Thread(target=self._await_ready, args=(proc,), daemon=True,
                         name='control-process-ready').start()

    def _await_ready(self, proc) -> None:
        for line in proc.stdout:
            try:
                report = json.loads(line)
            except ValueError:
                continue
            if report.get('ready'):
                if report.get('priority_refused'):
                    self._logger.warning(f'control process runs at normal priority: '
                                         f'{report["priority_refused"]}')
                with self._lock:
                    if self._proc is proc:
                        self._ready = True
                self._logger.info(f'control process {proc.pid} publishes the commands once '
                                  f'its subscribers match')
        # stdout closed: the process ended; supervise() notices.

    @staticmethod
    def _stop_process(proc) -> None:
        try:
            proc.stdin.write('stop\n')
            proc.stdin.flush()
            proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass
        try:
            proc.wait(2.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(2.0)
