"""The control process: publishes the inference node's commands exactly at each deadline.

Why a process: a thread of the node, even at real-time priority, must take the node's
interpreter lock to publish, and the executor thread holds it while it deserialises
640x480 frames; on a loaded machine that holder can itself be preempted. Measured in the
pipeline benchmark this left 2-4 ms of period error p99 at the node. This process has no
subscriptions, no executor and no other Python thread, so its interpreter is free when the
deadline comes: it sleeps to ``start + k * period`` on the monotonic clock (shared with
the node), reads deadline ``k``'s serialized commands from a
:class:`~vla_ros.runtime.command_slot.CommandSlot` and publishes them as they are.

It decides nothing: the node computes every command (holds, filters, limits) a little
ahead (``control_process_lead_s``) and writes it. If the slot for ``k`` has not come by
the deadline the process waits up to half a period for it (published late, counted),
then skips the deadline (counted; it never publishes an older deadline's command).
Nothing is published before the node writes, so a stalled or dead node leaves the
driver's command watchdog to stop the robot, as before. It exits when the node asks
(``stop`` on stdin), when its stdin closes, or when its parent changes (the node died).
A node that died (killed, say) cannot remove the slot's segment, so this process does,
unless told ``stop``: the node then still owns it and may start another process on it.

Started by :class:`vla_ros.nodes.control_relay.ControlRelay` as
``python -m vla_ros.runtime.control_process`` with a JSON configuration on stdin.
"""

import importlib
import json
import os
import select
import signal
import sys
import time

from vla_ros.runtime.command_slot import NOTHING_PUBLISHED, CommandSlot
from vla_ros.runtime.control_loop import set_fifo_priority

POLL_S = 0.0002  # while waiting for a late slot
REPORT_EVERY = 5  # ticks between subscriber-count reports (a graph query each)


def message_class(type_name: str):
    """'geometry_msgs/msg/TwistStamped' -> the Python message class."""
    package, kind, name = type_name.split('/')
    return getattr(importlib.import_module(f'{package}.{kind}'), name)


def type_name(cls) -> str:
    """The inverse of :func:`message_class`."""
    return f'{cls.__module__.split(".")[0]}/msg/{cls.__name__}'


def run(config: dict, stdin=None) -> int:
    """Publish until told to stop; the exit code."""
    import rclpy
    from rclpy.qos import QoSProfile

    from vla_ros.nodes import qos

    stdin = sys.stdin if stdin is None else stdin
    parent = os.getppid()
    slot = CommandSlot.open(config['slot'])
    rclpy.init(args=['--ros-args', '--disable-rosout-logs'])
    node = rclpy.create_node(config['node_name'], namespace=config.get('namespace', '/'))
    profile: QoSProfile = qos.COMMAND
    publishers = [node.create_publisher(message_class(kind), name, profile)
                  for name, kind in config['topics']]
    period, start = float(config['period']), float(config['start'])
    refused = set_fifo_priority(int(config.get('priority', 0)))
    print(json.dumps({'ready': True, 'pid': os.getpid(), 'priority_refused': refused}),
          flush=True)
    published, late, missed = NOTHING_PUBLISHED, 0, 0
    k = max(1, int((time.monotonic() - start) // period) + 1)
    ticks = 0
    node_gone = False
    try:
        while True:
            deadline = start + k * period
            told = _told_to_stop(stdin, max(0.0, deadline - time.monotonic()))
            node_gone = told == 'closed' or os.getppid() != parent
            if told or node_gone:
                break
            got = slot.read()
            while (got is None or got[0] < k) and time.monotonic() < deadline + period / 2:
                time.sleep(POLL_S)
                got = slot.read()
            if got is not None and got[0] == k:
                for index, data in got[1]:
                    publishers[index].publish(data)
                published = k
                late += time.monotonic() > deadline + 0.001
            else:
                missed += 1
            ticks += 1
            if ticks % REPORT_EVERY == 1:
                counts = [p.get_subscription_count() for p in publishers]
            slot.report(published, late, missed, counts)
            # The next deadline after now: a stall skips deadlines instead of bursting.
            k = max(k + 1, int((time.monotonic() - start) // period) + 1)
    finally:
        slot.close()
        if node_gone:
            slot.remove()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _told_to_stop(stdin, timeout: float) -> str:
    """Sleep up to ``timeout`` [s]; 'stop' or 'closed' if stdin said so meanwhile, else ''."""
    end = time.monotonic() + timeout
    while True:
        remaining = end - time.monotonic()
        if remaining <= 0:
            return ''
        readable, _, _ = select.select([stdin], [], [], remaining)
        if readable:
            line = stdin.readline()
            if not line:
                return 'closed'
            if line.strip() == 'stop':
                return 'stop'


def main(argv=None) -> int:
    """Entry point: ``python -m vla_ros.runtime.control_process`` (configuration on stdin)."""
    # A terminal's Ctrl-C reaches the whole process group: the node stops this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = json.loads(sys.stdin.readline())
    return run(config)


if __name__ == '__main__':
    sys.exit(main())
