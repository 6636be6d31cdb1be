"""The control process and its shared command slot (issue 18: the tick outside the node).

Pure parts (the slot's layout and torn-read detection, the node's handover decision) run
without ROS; the process itself is started for real and heard by a subscriber.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from vla_ros.nodes.control_relay import Handover
from vla_ros.runtime.command_slot import (
    _PAYLOAD_AT,
    CAPACITY,
    NOTHING_PUBLISHED,
    CommandSlot,
    Feedback,
)


@pytest.fixture
def slot():
    s = CommandSlot.create(prefix='vla_ros_test_cmd')
    yield s
    s.close()


def test_a_written_tick_is_read_back_whole(slot):
    assert slot.read() is None  # nothing written yet
    slot.write(7, [(0, b'twist'), (1, b''), (3, b'x' * 300)])
    assert slot.read() == (7, [(0, b'twist'), (1, b''), (3, b'x' * 300)])
    other = CommandSlot.open(slot.path)  # the control process's mapping
    try:
        assert other.read() == (7, [(0, b'twist'), (1, b''), (3, b'x' * 300)])
        other.report(7, 1, 2, [3, 1])
        assert slot.feedback() == Feedback(7, 1, 2, (3, 1, 0, 0, 0, 0, 0, 0))
    finally:
        other.close()
    assert os.path.exists(slot.path)  # only the owner removes it


def test_a_torn_or_corrupted_write_is_never_read(slot):
    slot.write(3, [(0, b'command for three')])
    slot._mm[_PAYLOAD_AT + 8] ^= 0xFF  # one flipped byte: the CRC no longer matches
    assert slot.read() is None
    slot.write(4, [(0, b'command for four')])
    assert slot.read() == (4, [(0, b'command for four')])
    slot._seq += 1  # a writer stopped half-way: odd sequence
    import struct
    struct.pack_into('<Q', slot._mm, 4, slot._seq)
    assert slot.read() is None


def test_oversized_or_misaddressed_commands_are_refused(slot):
    with pytest.raises(ValueError, match='exceed'):
        slot.write(1, [(0, b'x' * (CAPACITY + 1))])
    with pytest.raises(ValueError, match='topic index'):
        slot.write(1, [(8, b'x')])
    assert slot.read() is None  # nothing half-written
    path = slot.path + '_not_a_slot'
    with open(path, 'wb') as f:
        f.write(b'\0' * (CAPACITY + _PAYLOAD_AT))
    try:
        with pytest.raises(ValueError, match='not a vla_ros command slot'):
            CommandSlot.open(path)
    finally:
        os.unlink(path)


def _feedback(published=NOTHING_PUBLISHED, subscribers=1):
    return Feedback(published, 0, 0, (subscribers, 0, 0, 0, 0, 0, 0, 0))


def test_the_node_publishes_until_the_process_is_ready_and_heard_by_every_subscriber():
    h = Handover()
    assert not h.decide(False, _feedback(subscribers=2), own_subscribers=2, k=1)
    # Ready, but the driver has not matched the process's publisher yet.
    assert not h.decide(True, _feedback(subscribers=1), own_subscribers=2, k=2)
    assert h.decide(True, _feedback(subscribers=2), own_subscribers=2, k=3)
    assert h.relayed_since == 3
    # Once handed over, a subscriber count is not asked for again.
    assert h.decide(True, _feedback(published=3, subscribers=0), own_subscribers=0, k=4)


def test_the_process_takes_over_only_after_its_match_has_held_for_the_settle_time():
    # At openvla_arm start-up the process matched the driver on its side, took over, and
    # the driver (which had not discovered the process yet) heard nothing for 0.27 s: a
    # watchdog trip, 3.2 s after the process started (one announcement period).
    h = Handover(settle_ticks=35)
    assert not h.decide(True, _feedback(subscribers=1), own_subscribers=1, k=1)
    assert not h.decide(True, _feedback(subscribers=1), own_subscribers=1, k=30)
    # The match lapsed: the wait starts over.
    assert not h.decide(True, _feedback(subscribers=0), own_subscribers=1, k=31)
    for k in range(32, 67):
        assert not h.decide(True, _feedback(subscribers=1), own_subscribers=1, k=k), k
    assert h.decide(True, _feedback(subscribers=1), own_subscribers=1, k=67)
    assert h.relayed_since == 67
    h.reset()  # a restarted process waits again
    assert not h.decide(True, _feedback(subscribers=1), own_subscribers=1, k=100)


def test_the_node_takes_back_at_once_when_the_process_dies_or_stops_publishing():
    h = Handover(stall_ticks=3)
    assert h.decide(True, _feedback(), 1, k=10)
    assert not h.decide(False, _feedback(published=10), 1, k=11)  # exited
    assert h.relayed_since is None
    h.reset()
    assert h.decide(True, _feedback(), 1, k=20)
    for k in range(21, 24):  # 20..22 written, none published: 3 in a row allowed
        assert h.decide(True, _feedback(published=NOTHING_PUBLISHED), 1, k=k), k
    assert not h.decide(True, _feedback(published=NOTHING_PUBLISHED), 1, k=24)
    assert h.stalled
    # Stalled stays stalled (the process is restarted, not trusted again) until reset.
    assert not h.decide(True, _feedback(published=23), 1, k=25)
    h.reset()
    assert not h.stalled and h.decide(True, _feedback(published=23), 1, k=26)


def test_deadlines_the_node_itself_skipped_are_not_held_against_the_process():
    h = Handover(stall_ticks=3)
    assert h.decide(True, _feedback(), 1, k=10)
    assert h.decide(True, _feedback(published=10), 1, k=11)
    # The node was stopped for 2 s (SIGSTOP, or starved of CPU): it wrote nothing for
    # 12..30, so nothing was published; that is no fault of the process.
    assert h.decide(True, _feedback(published=11), 1, k=31)
    assert h.decide(True, _feedback(published=31), 1, k=32)
    assert not h.stalled
    # A late slot the process skipped now and then is no stall either.
    for k in range(33, 40):
        assert h.decide(True, _feedback(published=k - 1 if k % 2 else k - 2), 1, k=k)
    assert not h.stalled


@pytest.mark.graph
def test_the_process_publishes_each_deadline_once_and_never_an_old_one(
        slot, ros_context, ros_env):
    import rclpy
    from geometry_msgs.msg import TwistStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.serialization import serialize_message

    from vla_ros.nodes import qos

    period = 0.05
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, '-m', 'vla_ros.runtime.control_process'], env=ros_env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    topic = f'/control_process_test_{os.getpid()}'
    proc.stdin.write(json.dumps({
        'slot': slot.path, 'node_name': 'test_control', 'period': period, 'start': start,
        'priority': 0, 'topics': [[topic, 'geometry_msgs/msg/TwistStamped']]}) + '\n')
    proc.stdin.flush()
    node = rclpy.create_node('control_process_sink', context=ros_context)
    got = []
    node.create_subscription(TwistStamped, topic, lambda m: got.append(m.twist.linear.x),
                             qos.COMMAND)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        assert json.loads(proc.stdout.readline())['ready']

        def k_now():
            return int((time.monotonic() - start) // period)

        def spin(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.01)

        deadline = time.monotonic() + 30.0
        while slot.feedback().subscribers[0] < 1 and time.monotonic() < deadline:
            spin(0.05)
        assert slot.feedback().subscribers[0] == 1
        # A command for a deadline already gone is never published.
        slot.write(k_now() - 2, [(0, serialize_message(TwistStamped()))])
        spin(0.3)
        assert got == [] and slot.feedback().missed >= 4
        # Commands written ahead of their deadlines are published, each once. (Written a
        # whole period ahead and the next only once this one is out: on a loaded machine
        # this test's own loop can be late by more than the process waits for a slot.)
        written = []
        for _ in range(10):
            k = k_now() + 2
            msg = TwistStamped()
            msg.twist.linear.x = float(k)
            slot.write(k, [(0, serialize_message(msg))])
            written.append(float(k))
            end = time.monotonic() + 5.0
            while slot.feedback().published_k < k and time.monotonic() < end:
                spin(0.005)
        spin(0.3)
        assert got == written
        assert slot.feedback().published_k == int(written[-1])
        proc.stdin.write('stop\n')
        proc.stdin.flush()
        assert proc.wait(5.0) == 0
        assert os.path.exists(slot.path)  # told to stop: the node still owns the segment
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        executor.shutdown()
        node.destroy_node()


# A stand-in for the inference node: it owns a slot and starts the control process on it.
_NODE = """
import json, subprocess, sys, time
from vla_ros.runtime.command_slot import CommandSlot
slot = CommandSlot.create(prefix='vla_ros_test_cmd')
proc = subprocess.Popen([sys.executable, '-m', 'vla_ros.runtime.control_process'],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
proc.stdin.write(json.dumps({'slot': slot.path, 'node_name': 'test_control_orphan',
                             'period': 0.05, 'start': time.monotonic(), 'priority': 0,
                             'topics': [['/control_orphan', 'std_msgs/msg/Empty']]}) + chr(10))
proc.stdin.flush()
ready = json.loads(proc.stdout.readline())
print(json.dumps({'slot': slot.path, 'pid': ready['pid']}), flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    """Running (a zombie left for a container's init to reap counts as gone)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


@pytest.mark.graph
def test_a_killed_node_leaves_no_segment_and_no_control_process(ros_env):
    node = subprocess.Popen([sys.executable, '-c', _NODE], env=ros_env,
                            stdout=subprocess.PIPE, text=True)
    try:
        started = json.loads(node.stdout.readline())
        assert os.path.exists(started['slot']) and _alive(started['pid'])
        node.kill()  # as kill -9: the node removes nothing itself
        node.wait(5.0)
        end = time.monotonic() + 10.0
        while (os.path.exists(started['slot']) or _alive(started['pid'])) and \
                time.monotonic() < end:
            time.sleep(0.05)
        assert not os.path.exists(started['slot'])
        assert not _alive(started['pid'])
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
