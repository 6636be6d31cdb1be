"""Record -> info -> replay through real rclpy processes (isolated domain)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from vla_ros.bags.reader import BagReader

pytestmark = [pytest.mark.graph]

# Publishes a VLA session at the simulated robot's rates once every topic has a
# subscriber, then prints how many messages it sent per topic.
_SESSION_PUBLISHER = r'''
import json, sys, time
import numpy as np
import rclpy
from geometry_msgs.msg import TwistStamped
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from vla_ros.nodes import qos
from vla_ros.nodes.image_conversion import rgb_to_image_msg
from vla_ros.nodes.messages import twist_msg

rclpy.init()
node = rclpy.create_node('session_publisher')
pubs = {
    '/camera/front/image_raw': node.create_publisher(Image, 'camera/front/image_raw', qos.SENSOR),
    '/joint_states': node.create_publisher(JointState, 'joint_states', qos.SENSOR),
    '/cmd/ee_twist': node.create_publisher(TwistStamped, 'cmd/ee_twist', qos.COMMAND),
    '/instruction': node.create_publisher(String, 'instruction', qos.INSTRUCTION),
}
needed = int(sys.argv[1])
deadline = time.monotonic() + 30
while any(p.get_subscription_count() < needed for p in pubs.values()):
    if time.monotonic() > deadline:
        sys.exit('no recorder subscribed')
    time.sleep(0.05)
time.sleep(0.3)
counts = dict.fromkeys(pubs, 0)
pubs['/instruction'].publish(String(data='pick up the cube'))
counts['/instruction'] = 1
start = time.monotonic()
for step in range(100):  # 2 s at 50 Hz
    while time.monotonic() < start + step * 0.02:
        time.sleep(0.001)
    now = node.get_clock().now().nanoseconds * 1e-9
    pubs['/joint_states'].publish(JointState(name=['j%d' % i for i in range(7)],
                                             position=[0.01 * step] * 7))
    counts['/joint_states'] += 1
    if step % 5 == 0:
        frame = np.full((224, 224, 3), step % 256, np.uint8)
        pubs['/camera/front/image_raw'].publish(rgb_to_image_msg(frame, stamp=now))
        pubs['/cmd/ee_twist'].publish(twist_msg([0.01 * step, 0, 0, 0, 0, 0], now, 'base'))
        counts['/camera/front/image_raw'] += 1
        counts['/cmd/ee_twist'] += 1
time.sleep(0.5)
print(json.dumps(counts), flush=True)
node.destroy_node()
rclpy.shutdown()
'''


def _cli(*args):
    return [sys.executable, '-m', 'vla_ros.bags.cli', *args]


def test_record_info_replay_round_trip(tmp_path, ros_env, ros_context):
    import rclpy
    from geometry_msgs.msg import TwistStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from vla_ros.nodes import qos

    bag, killed = tmp_path / 'session', tmp_path / 'killed'
    recorder = subprocess.Popen(_cli('record', '-o', str(bag), '--no-parameters'),
                                env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    victim = subprocess.Popen(_cli('record', '-o', str(killed), '-s', 'mcap',
                                   '--no-parameters'),
                              env=ros_env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        published = subprocess.run([sys.executable, '-c', _SESSION_PUBLISHER, '2'],
                                   env=ros_env, capture_output=True, text=True, timeout=60)
        assert published.returncode == 0, published.stderr
        sent = json.loads(published.stdout)
        time.sleep(0.8)  # > one flush interval
        victim.send_signal(signal.SIGKILL)
        recorder.send_signal(signal.SIGINT)
        out, err = recorder.communicate(timeout=30)
    finally:
        for proc in (recorder, victim):
            if proc.poll() is None:
                proc.kill()
    assert recorder.returncode == 0, err
    assert json.loads(out)['counts'] == sent  # nothing lost at the simulated robot's rates

    info = subprocess.run(_cli('info', str(bag), '--json'), env=ros_env,
                          capture_output=True, text=True, timeout=30)
    counts = {t['name']: t['count'] for t in json.loads(info.stdout)['topics']}
    assert counts == sent and json.loads(info.stdout)['problems'] == []

    # The SIGKILLed recorder's bag is readable up to its last flush: here, all of it.
    with BagReader(killed) as reader:
        assert {t.name: t.message_count for t in reader.topics} == sent
        assert reader.problems  # it says the file was not finished

    # Replay at 10x with remapping and topic selection into this process.
    got = {'twist': [], 'image': 0, 'instruction': []}
    node = rclpy.create_node('replay_listener', context=ros_context)
    deep = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(TwistStamped, '/replayed/ee_twist',
                             lambda m: got['twist'].append((time.monotonic(), m)), deep)
    node.create_subscription(Image, '/camera/front/image_raw',
                             lambda m: got.__setitem__('image', got['image'] + 1), deep)
    node.create_subscription(String, '/instruction',
                             lambda m: got['instruction'].append(m.data), qos.INSTRUCTION)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    stop = threading.Event()
    spin = threading.Thread(target=lambda: [executor.spin_once(timeout_sec=0.05)
                                            for _ in iter(stop.is_set, True)])
    spin.start()
    try:
        replay = subprocess.run(
            _cli('replay', str(bag), '--rate', '10', '--wait-for-subscribers', '10',
                 '--remap', '/cmd/ee_twist:=/replayed/ee_twist', '--no-progress',
                 '--topics', '/cmd/ee_twist', '/camera/front/image_raw', '/instruction'),
            env=ros_env, capture_output=True, text=True, timeout=60)
        time.sleep(0.3)
    finally:
        stop.set()
        spin.join()
        node.destroy_node()
    assert replay.returncode == 0, replay.stderr
    summary = json.loads(replay.stdout)
    assert summary['published'] == {k: sent[k] for k in ('/cmd/ee_twist',
                                                         '/camera/front/image_raw',
                                                         '/instruction')}
    assert len(got['twist']) == sent['/cmd/ee_twist'] and got['image'] == sent[
        '/camera/front/image_raw'] and got['instruction'] == ['pick up the cube']
    # same content (decoded, not bytes) and 10x faster than recorded
    with BagReader(bag) as reader:
        recorded = [reader.decode(m) for m in reader.messages(['/cmd/ee_twist'])]
        span = [m.timestamp for m in reader.messages(['/cmd/ee_twist'])]
    assert [m.twist.linear.x for _, m in got['twist']] == [r.twist.linear.x for r in recorded]
    assert [m.header.stamp.nanosec for _, m in got['twist']] == \
        [r.header.stamp.nanosec for r in recorded]
    replay_span = got['twist'][-1][0] - got['twist'][0][0]
    assert replay_span == pytest.approx((span[-1] - span[0]) * 1e-9 / 10, abs=0.05)


def test_player_offset_loop_unknown_type_and_corrupt_message(tmp_path, ros_context):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    from vla_ros.bags.player import Player, PlayOptions
    from vla_ros.bags.typestore import TypeRegistry
    from vla_ros.bags.writer import BagWriter

    registry = TypeRegistry()
    registry.register_definition('foo_msgs/msg/Bar', 'string name\n')
    text = registry.store.types['std_msgs/msg/String']
    bag = tmp_path / 'mixed'
    with BagWriter(bag, 'sqlite3', 9, registry) as w:
        chatter = w.add_topic('/chatter', 'std_msgs/msg/String')
        bar = w.add_topic('/bar', 'foo_msgs/msg/Bar')
        for i in range(20):  # 10 ms apart from t = 1 s
            data = registry.serialize(text(data=f'm{i}'), 'std_msgs/msg/String')
            w.write(chatter, 10**9 + i * 10**7, data if i != 12 else data[:6])
            w.write(bar, 10**9 + i * 10**7 + 1,
                    registry.serialize(registry.store.types['foo_msgs/msg/Bar'](name='x'),
                                       'foo_msgs/msg/Bar'))
    received = []
    node = rclpy.create_node('loop_listener', context=ros_context)
    node.create_subscription(String, '/chatter', lambda m: received.append(m.data),
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    stop = threading.Event()
    spin = threading.Thread(target=lambda: [executor.spin_once(timeout_sec=0.05)
                                            for _ in iter(stop.is_set, True)])
    spin.start()
    try:
        with BagReader(bag) as reader:
            player = Player(ros_context, reader, PlayOptions(
                rate=2.0, loop=True, max_loops=2, start_offset=0.095,
                wait_for_subscribers=10))
            summary = player.play()
            player.close()
        time.sleep(0.3)
    finally:
        stop.set()
        spin.join()
        node.destroy_node()
    # offset 95 ms: messages 10..19, minus the corrupt 12, twice
    expected = [f'm{i}' for i in range(10, 20) if i != 12]
    assert received == expected * 2
    assert summary.loops == 2 and summary.published == {'/chatter': 18}
    assert summary.skipped == {'/chatter': 2}
    problems = ' '.join(summary.problems)
    assert 'foo_msgs/msg/Bar' in problems and 'not installed' in problems
    assert 'corrupt std_msgs/msg/String message on /chatter' in problems


def test_replay_refuses_what_is_not_a_bag(tmp_path, ros_env):
    out = subprocess.run(_cli('replay', str(tmp_path)), env=ros_env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2 and 'not a rosbag2 bag' in out.stderr
    os.makedirs(tmp_path / 'x')
    out = subprocess.run(_cli('replay', str(tmp_path), '--rate', '0'), env=ros_env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and 'rate' in out.stderr


# Publishes cmd/ee_twist at 100 Hz for 3 s (linear.x = sequence number) once N recorders
# subscribed; says "start" on stderr, then prints the publish stamps (ns) as JSON.
_STREAM_PUBLISHER = r'''
import json, sys, time
import rclpy
from geometry_msgs.msg import TwistStamped
from vla_ros.nodes import qos
from vla_ros.nodes.messages import twist_msg

rclpy.init()
node = rclpy.create_node('stream_publisher')
pub = node.create_publisher(TwistStamped, 'cmd/ee_twist', qos.COMMAND)
deadline = time.monotonic() + 30
while pub.get_subscription_count() < int(sys.argv[1]):
    if time.monotonic() > deadline:
        sys.exit('no recorder subscribed')
    time.sleep(0.05)
time.sleep(1.0)  # the recorders' side of the match may lag the publisher's
print('start', file=sys.stderr, flush=True)
stamps, start = [], time.monotonic()
for i in range(300):
    while time.monotonic() < start + i * 0.01:
        time.sleep(0.0005)
    now = time.time_ns()
    pub.publish(twist_msg([float(i), 0, 0, 0, 0, 0], now * 1e-9, 'base'))
    stamps.append(now)
time.sleep(0.5)
print(json.dumps(stamps), flush=True)
node.destroy_node()
rclpy.shutdown()
'''

FLUSH_INTERVAL = 0.5  # s, the recorder's default


def test_interrupted_recordings_keep_what_was_flushed(tmp_path, ros_env):
    """SIGINT and SIGKILL in the middle of a 100 Hz stream, sqlite3 and mcap.

    SIGINT closes the bag: it holds every message published until the stop. SIGKILL: the
    bag opens (BagReader, ``vla-ros bag info``) and holds an unbroken prefix of the stream
    that reaches at least the last flush, i.e. at most ``FLUSH_INTERVAL`` (+ the writer
    loop's 50 ms poll and scheduling) before the kill is lost.
    """
    from vla_ros.bags.reindex import reindex

    bags = {'sigint': tmp_path / 'sigint', 'kill_sqlite3': tmp_path / 'kill_sqlite3',
            'kill_mcap': tmp_path / 'kill_mcap'}
    storage = {'sigint': 'sqlite3', 'kill_sqlite3': 'sqlite3', 'kill_mcap': 'mcap'}
    procs = {name: subprocess.Popen(
        _cli('record', '/cmd/ee_twist', '-o', str(path), '-s', storage[name],
             '--flush-interval', str(FLUSH_INTERVAL), '--no-parameters'),
        env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for name, path in bags.items()}
    publisher = subprocess.Popen([sys.executable, '-c', _STREAM_PUBLISHER, str(len(bags))],
                                 env=ros_env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    try:
        assert publisher.stderr.readline().strip() == 'start'
        time.sleep(1.7)  # mid-stream, and not at a flush boundary
        stopped_at = time.time_ns()
        procs['kill_sqlite3'].send_signal(signal.SIGKILL)
        procs['kill_mcap'].send_signal(signal.SIGKILL)
        procs['sigint'].send_signal(signal.SIGINT)
        out, _ = procs['sigint'].communicate(timeout=30)
        stamps = json.loads(publisher.communicate(timeout=30)[0])
    finally:
        for proc in (*procs.values(), publisher):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert procs['sigint'].returncode == 0
    assert len(stamps) == 300
    sent_before_stop = sum(1 for s in stamps if s <= stopped_at)
    measured = {'published': len(stamps), 'published_before_stop': sent_before_stop}
    for name, path in bags.items():
        with BagReader(path) as reader:
            messages = list(reader.messages(['/cmd/ee_twist']))
            sequence = [int(reader.decode(m).twist.linear.x) for m in messages]
            problems = list(reader.problems)
        # An unbroken run of the stream: nothing lost in between, nothing reordered. It
        # starts at 0 unless the recorder matched the publisher late (then it is reported).
        first = sequence[0]
        assert sequence == list(range(first, first + len(sequence))), name
        sent = sent_before_stop - first
        lag = (stopped_at - messages[-1].timestamp) * 1e-9
        measured[name] = {'first': first, 'recorded': len(sequence),
                          'lost_before_stop': sent - len(sequence),
                          'last_message_before_stop_s': round(lag, 3),
                          'problems': len(problems)}
        if name == 'sigint':
            assert problems == [] and json.loads(out)['counts'] == {'/cmd/ee_twist':
                                                                    len(sequence)}
            # everything published up to the stop (and what was in flight then)
            assert len(sequence) >= sent
        else:
            assert problems, name  # it says the recording did not finish
            assert len(sequence) <= sent
            assert lag <= FLUSH_INTERVAL + 0.05 + 0.35, (name, lag)  # scheduling margin
    print('\n' + json.dumps(measured))

    info = subprocess.run(_cli('info', str(bags['kill_sqlite3']), '--json'), env=ros_env,
                          capture_output=True, text=True, timeout=30)
    assert info.returncode == 0, info.stderr
    topics = {t['name']: t['count'] for t in json.loads(info.stdout)['topics']}
    assert topics == {'/cmd/ee_twist': measured['kill_sqlite3']['recorded']}
    for name in ('kill_sqlite3', 'kill_mcap'):  # repaired in place, nothing lost
        reindex(bags[name])
        with BagReader(bags[name]) as reader:
            assert reader.problems == [] and reader.message_count == measured[name]['recorded']
