"""The control loop's deadline arithmetic (fake clock) and its thread's life cycle."""

import os
import threading
import time

import pytest

from vla_ros.runtime.control_loop import ControlLoop, TickSchedule, set_fifo_priority
from vla_ros.runtime.policy_process import NICENESS_ENV, apply_niceness


def test_deadlines_are_absolute_so_lateness_does_not_accumulate():
    s = TickSchedule(0.1, start=100.0)
    assert s.next_deadline == pytest.approx(100.1)
    assert s.wait_time(100.0) == pytest.approx(0.1)
    assert s.tick(100.103) == pytest.approx(0.003)  # 3 ms late
    # The next deadline is still on the grid, not 0.1 s after the late tick.
    assert s.next_deadline == pytest.approx(100.2)
    assert s.wait_time(100.15) == pytest.approx(0.05)
    assert s.tick(100.2) == pytest.approx(0.0)
    assert (s.ticks, s.skipped) == (2, 0)
    assert s.max_lateness == pytest.approx(0.003)


def test_a_tick_late_by_more_than_a_period_skips_instead_of_bursting():
    s = TickSchedule(0.1, start=0.0)
    s.tick(0.35)  # deadline 0.1; 0.2 and 0.3 were missed entirely
    assert s.skipped == 2
    assert s.next_deadline == pytest.approx(0.4)
    assert s.wait_time(0.35) == pytest.approx(0.05)  # no back-to-back catch-up tick
    assert s.wait_time(0.5) == 0.0


def test_a_late_tick_is_for_the_last_deadline_due_not_the_first_missed():
    s = TickSchedule(0.1, start=0.0)
    assert s.latest_due(0.05) == pytest.approx(0.1)  # none passed: the next one
    assert s.latest_due(0.1) == pytest.approx(0.1)
    assert s.latest_due(0.35) == pytest.approx(0.3)  # 0.1 and 0.2 were missed


def test_a_loop_woken_late_stamps_its_command_with_a_current_deadline():
    # Before: woken 0.35 s late (a start-up stall), the tick was told the first deadline
    # it missed; its command, stamped 0.25 s in the past, reached the driver stale.
    times = iter([0.0, 0.35, 0.35, 0.35])
    calls = []

    def tick(deadline):
        calls.append(deadline)
        loop._stop.set()

    loop = ControlLoop(tick, 0.1, clock=lambda: next(times, 0.35), lead=0.01)
    loop.start()
    loop._thread.join(5.0)
    assert calls == [pytest.approx(0.3)]  # not 0.1
    assert loop.schedule.skipped == 2


def test_period_must_be_positive():
    with pytest.raises(ValueError, match='positive'):
        TickSchedule(0.0, start=0.0)


def test_priority_zero_asks_nothing_and_an_impossible_priority_is_refused_with_a_reason():
    assert set_fifo_priority(0) == ''
    reason = set_fifo_priority(1000)  # outside 1..99: refused, never raised
    assert reason


def test_loop_ticks_on_its_thread_and_stops_promptly():
    ticks, threads = [], set()

    def tick():
        ticks.append(time.monotonic())
        threads.add(threading.current_thread().name)

    loop = ControlLoop(tick, 0.01, name='test-control')
    loop.start()
    time.sleep(0.2)
    start = time.monotonic()
    loop.stop()
    assert time.monotonic() - start < 0.5
    assert not loop.running
    n = len(ticks)
    assert n >= 5, n  # 20 due; a loaded CI machine still manages a few
    assert threads == {'test-control'}
    time.sleep(0.05)
    assert len(ticks) == n  # no tick after stop()
    assert loop.schedule.ticks == n


def test_a_failing_tick_is_reported_and_the_loop_goes_on():
    calls, errors = [], []

    def tick():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError('boom')

    loop = ControlLoop(tick, 0.01, on_error=errors.append)
    loop.start()
    deadline = time.monotonic() + 5.0
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    loop.stop()
    assert len(calls) >= 3
    assert [str(e) for e in errors] == ['boom']


def test_refused_priority_warns_once_and_still_ticks(monkeypatch):
    import vla_ros.runtime.control_loop as control_loop

    monkeypatch.setattr(control_loop, 'set_fifo_priority', lambda p: 'Operation not permitted')
    warnings, ticks = [], []
    loop = ControlLoop(lambda: ticks.append(1), 0.01, priority=10, on_warning=warnings.append)
    loop.start()
    deadline = time.monotonic() + 5.0
    while len(ticks) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    loop.stop()
    assert len(ticks) >= 3
    assert len(warnings) == 1 and 'normal priority' in warnings[0]
    assert loop.priority_refused == 'Operation not permitted'


def test_policy_process_niceness_from_its_environment():
    result = {}

    def run(env):
        result['applied'] = apply_niceness(env)
        result['nice'] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    for env, expected in (({}, 0), ({NICENESS_ENV: 'x'}, 0), ({NICENESS_ENV: '7'}, 7)):
        before = os.getpriority(os.PRIO_PROCESS, 0)
        thread = threading.Thread(target=run, args=(env,))  # per thread: leaves pytest's
        thread.start()
        thread.join()
        assert result['applied'] == expected
        assert result['nice'] == (max(before, 7) if expected else before)


def test_with_a_lead_the_tick_runs_ahead_and_is_told_its_deadline():
    calls = []
    loop = ControlLoop(lambda deadline: calls.append((time.monotonic(), deadline)), 0.05,
                       lead=0.02)
    loop.start()
    time.sleep(0.33)
    loop.stop()
    assert len(calls) >= 4
    for k, (when, deadline) in enumerate(calls, start=1):
        # On the grid start + k * period, and called about `lead` before it.
        assert deadline == pytest.approx(loop.start_time + k * 0.05)
        assert deadline - 0.02 <= when < deadline  # wakes at deadline - lead, never after
    with pytest.raises(ValueError, match='lead'):
        ControlLoop(lambda d: None, 0.05, lead=0.05)


def test_threads_and_processes_started_from_a_real_time_thread_run_at_normal_priority():
    # The node's executor runs at SCHED_FIFO (node_thread_priority); a policy load or a
    # restart it starts must not: a torch process at real-time priority would starve the
    # machine.
    import subprocess
    import sys

    seen = {}

    def parent():
        seen['refused'] = set_fifo_priority(3)
        seen['parent'] = os.sched_getscheduler(0) & ~getattr(os, 'SCHED_RESET_ON_FORK', 0)
        child = threading.Thread(target=lambda: seen.setdefault('thread',
                                                                os.sched_getscheduler(0)))
        child.start()
        child.join()
        seen['process'] = int(subprocess.run(
            [sys.executable, '-c', 'import os; print(os.sched_getscheduler(0))'],
            capture_output=True, text=True, check=True).stdout)

    thread = threading.Thread(target=parent)
    thread.start()
    thread.join()
    if seen['refused']:  # no privilege here: nothing was raised, so nothing to reset
        assert seen['parent'] == os.SCHED_OTHER
    else:
        assert seen['parent'] == os.SCHED_FIFO
    assert seen['thread'] == os.SCHED_OTHER and seen['process'] == os.SCHED_OTHER
