"""The recorder adapts to the publishers' QoS as they come and go (issue 18).

The recorder runs in a thread (its own rclpy context); publishers live in this process
or in a child process that exits, as ``vla-ros instruct`` does.
"""

import subprocess
import sys
import threading
import time

import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from vla_ros.bags.reader import BagReader
from vla_ros.bags.recorder import TopicSelection, record

pytestmark = [pytest.mark.graph]

BEST_EFFORT = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.VOLATILE)


class _Recording:
    """``record()`` in a thread; ``wait_log`` waits for a line of its log.

    A context manager: leaving the block stops the recorder even when the test failed,
    so no recording thread outlives its test (one left running aborted its worker
    process at exit with "terminate called without an active exception").
    """

    def __init__(self, path, selection=None):
        self.lines: list[str] = []
        self.stop = threading.Event()
        self.result = {}
        self.thread = threading.Thread(target=self._run, args=(path, selection), daemon=True)
        self.thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        self.thread.join(timeout=30)

    def _run(self, path, selection):
        try:
            self.result['summary'] = record(
                path, selection or TopicSelection.vla_default(), stop_event=self.stop,
                log=self.lines.append, storage='mcap', parameters_node=None)
        except BaseException as exc:  # noqa: BLE001 - re-raised by finish()
            self.result['error'] = exc

    def wait_log(self, text, since=0, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines[since:]):
                return
            time.sleep(0.02)
        raise AssertionError(f'{text!r} not logged; log: {self.lines}')

    def finish(self, settle=0.5):
        time.sleep(settle)
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), 'the recorder did not stop within 30 s'
        if 'error' in self.result:
            raise self.result['error']
        return self.result['summary']


def _instructions(path):
    with BagReader(path) as reader:
        return [reader.decode(m).data for m in reader.messages(topics=['/instruction'])]


# Publishes one latched instruction and exits as soon as its two subscribers (the
# inference node stand-in and the recorder) are matched and acknowledged it.
_SHORT_LIVED = r'''
import sys, time
import rclpy
from rclpy.duration import Duration
from std_msgs.msg import String
from vla_ros.nodes import qos
rclpy.init()
node = rclpy.create_node('short_lived_instruct')
pub = node.create_publisher(String, '/instruction', qos.INSTRUCTION)
pub.publish(String(data=sys.argv[1]))
deadline = time.monotonic() + 60
while not (pub.get_subscription_count() >= 2
           and pub.wait_for_all_acked(Duration(seconds=0.1))):
    if time.monotonic() > deadline:
        sys.exit('never acknowledged')
    time.sleep(0.01)
'''


def _wait_for_recorder(context, timeout=30.0):
    import rclpy

    probe = rclpy.create_node('recorder_probe', context=context)
    try:
        deadline = time.monotonic() + timeout
        while 'vla_bag_recorder' not in probe.get_node_names():
            assert time.monotonic() < deadline, 'the recorder never appeared'
            time.sleep(0.05)
    finally:
        probe.destroy_node()
    time.sleep(1.0)  # several discovery polls


def test_latched_instruction_from_a_short_lived_publisher_is_recorded(tmp_path, ros_env,
                                                                      ros_context):
    """An inference node subscribes, a recorder runs, then a short-lived latched publisher.

    Before: the recorder saw /instruction (the inference node's subscription) with no
    publisher and subscribed best effort, volatile: the sample was lost.
    """
    import rclpy
    from std_msgs.msg import String

    from vla_ros.nodes import qos

    inference = rclpy.create_node('inference_stand_in', context=ros_context)
    received = []
    inference.create_subscription(String, '/instruction', received.append, qos.INSTRUCTION)
    try:
        with _Recording(tmp_path / 'bag') as recording:
            _wait_for_recorder(ros_context)
            out = subprocess.run([sys.executable, '-c', _SHORT_LIVED, 'pick up the cube'],
                                 env=ros_env, capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            summary = recording.finish()
    finally:
        inference.destroy_node()
    assert summary.counts.get('/instruction') == 1, summary
    assert _instructions(tmp_path / 'bag') == ['pick up the cube']


def test_recorder_started_after_the_instruction_gets_it(tmp_path, ros_context):
    import rclpy
    from std_msgs.msg import String

    from vla_ros.nodes import qos

    node = rclpy.create_node('latched_publisher', context=ros_context)
    try:
        pub = node.create_publisher(String, '/instruction', qos.INSTRUCTION)
        pub.publish(String(data='stack the blocks'))
        time.sleep(0.5)
        with _Recording(tmp_path / 'bag') as recording:
            deadline = time.monotonic() + 30
            while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            summary = recording.finish(settle=1.0)
    finally:
        node.destroy_node()
    assert summary.counts.get('/instruction') == 1, summary
    assert _instructions(tmp_path / 'bag') == ['stack the blocks']


def test_a_sample_both_probes_receive_is_written_once(tmp_path, ros_context):
    """Before any publisher exists the recorder has two subscriptions on the topic.

    Discovery polls are off (only the first, at start), so the pair stays; a poll that
    saw the publisher would replace it with one subscription, and under load it did so
    before this test saw both probes matched (a CI failure: 1 subscription, not 2). The
    sample is published once both sides matched: a best-effort reader drops samples from
    a writer it has not matched yet, even when the writer already counts it. Nothing
    spins the recorder; ``stop()`` takes what both probes hold.
    """
    import rclpy
    from rclpy.duration import Duration
    from std_msgs.msg import String

    from vla_ros.bags.recorder import Recorder
    from vla_ros.nodes import qos

    recorder = Recorder(ros_context, tmp_path / 'bag', TopicSelection.vla_default(),
                        storage='mcap', parameters_node=None, discovery_interval=3600.0)
    node = rclpy.create_node('after_match', context=ros_context)
    try:
        probes = recorder._topics['/instruction'].subscriptions
        assert len(probes) == 2  # the best-effort and the latched probe
        pub = node.create_publisher(String, '/instruction', qos.INSTRUCTION)
        deadline = time.monotonic() + 30
        while ((pub.get_subscription_count() < 2
                or any(p.get_publisher_count() < 1 for p in probes))
               and time.monotonic() < deadline):
            time.sleep(0.01)
        assert pub.get_subscription_count() == 2
        assert [p.get_publisher_count() for p in probes] == [1, 1]
        pub.publish(String(data='once'))
        assert pub.wait_for_all_acked(Duration(seconds=10))
        summary = recorder.stop()
    finally:
        node.destroy_node()
        if recorder._thread.is_alive():  # the test failed before stop(): stop it anyway
            recorder.stop()
    assert _instructions(tmp_path / 'bag') == ['once']
    assert summary.counts['/instruction'] == 1


def test_publishers_coming_and_going_with_other_qos(tmp_path, ros_context):
    """Latched + best-effort publishers on one topic: re-subscribed, nothing lost or doubled."""
    import rclpy
    from std_msgs.msg import String

    from vla_ros.nodes import qos

    node = rclpy.create_node('qos_mix', context=ros_context)
    try:
        with _Recording(tmp_path / 'bag') as recording:
            recording.wait_log('recording /instruction')
            latched = node.create_publisher(String, '/instruction', qos.INSTRUCTION)
            latched.publish(String(data='latched'))
            deadline = time.monotonic() + 30
            while latched.get_subscription_count() == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            # A best-effort publisher appears: a reliable subscription would not match it.
            mark = len(recording.lines)
            best_effort = node.create_publisher(String, '/instruction', BEST_EFFORT)
            recording.wait_log('-> best_effort/volatile', since=mark)
            deadline = time.monotonic() + 30
            while best_effort.get_subscription_count() == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            # The recorder's side of the match may lag this one, and a best-effort
            # reader drops what comes from a writer it has not matched yet.
            time.sleep(1.0)
            for i in range(5):
                best_effort.publish(String(data=f'best effort {i}'))
                time.sleep(0.05)
            # It exits: the recorder goes back to reliable transient local; the latched
            # sample it already has is delivered again and must not be written twice.
            mark = len(recording.lines)
            node.destroy_publisher(best_effort)
            recording.wait_log('best_effort/volatile -> reliable/transient_local', since=mark)
            time.sleep(1.0)
            summary = recording.finish()
    finally:
        node.destroy_node()
    recorded = _instructions(tmp_path / 'bag')
    assert recorded.count('latched') == 1, recorded
    assert [r for r in recorded if r.startswith('best effort')] == \
        [f'best effort {i}' for i in range(5)], recorded
    assert summary.counts['/instruction'] == len(recorded)


def test_samples_waiting_in_a_replaced_or_stopped_subscription_are_kept(tmp_path, ros_context):
    """Re-subscribing (new publisher QoS) or stopping must not drop samples not yet taken.

    The middleware acknowledges a sample on arrival, so a publisher may be gone before
    the executor calls back. Nothing spins the recorder here until the end: the first
    sample waits in the best-effort probe that discovery then replaces, the second in
    the replacement when the recorder stops.
    """
    import rclpy
    from rclpy.duration import Duration
    from std_msgs.msg import String

    from vla_ros.bags.recorder import Recorder

    recorder = Recorder(ros_context, tmp_path / 'bag', TopicSelection.vla_default(),
                        storage='mcap', parameters_node=None, discovery_interval=3600.0)
    node = rclpy.create_node('reliable_volatile', context=ros_context)
    try:
        # Reliable, volatile: only the best-effort probe matches, and a replacement
        # subscription cannot get the sample again from history.
        pub = node.create_publisher(String, '/instruction', 10)
        deadline = time.monotonic() + 30
        best_effort_probe = recorder._topics['/instruction'].subscriptions[0]
        while ((pub.get_subscription_count() < 1 or best_effort_probe.get_publisher_count() < 1)
               and time.monotonic() < deadline):
            time.sleep(0.01)  # both sides matched: the probe does not drop the sample
        pub.publish(String(data='first'))
        assert pub.wait_for_all_acked(Duration(seconds=10))
        while (not recorder.node.get_publishers_info_by_topic('/instruction')
               and time.monotonic() < deadline):
            time.sleep(0.01)
        recorder._discover()  # the publisher seen: re-subscribed reliable, volatile
        assert [p.reliability for p in recorder._topics['/instruction'].profiles] == [
            ReliabilityPolicy.RELIABLE]
        while pub.get_subscription_count() != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        pub.publish(String(data='second'))
        assert pub.wait_for_all_acked(Duration(seconds=10))
        summary = recorder.stop()
    finally:
        node.destroy_node()
        if recorder._thread.is_alive():  # the test failed before stop(): stop it anyway
            recorder.stop()
    assert summary.counts.get('/instruction') == 2, summary
    assert _instructions(tmp_path / 'bag') == ['first', 'second']
