"""Replay throughput at 10x and 30x: does every message arrive? Prints one JSON object.

A synthetic session at the simulated robot's rates (two 224x224 rgb8 cameras at 10 Hz,
joint states at 50 Hz, commands at 10 Hz, chunks and status at 5 Hz) is written as a
bag, replayed by ``vla-ros bag replay`` in its own process, and received here by reliable
raw subscribers (no deserialization, depth 1000 by default) that count per topic.
Loss = published - received. The subscriber is kept cheap on purpose: a Python callback
that deserializes 150 KB images falls behind at 30x on a loaded 2-core machine and then
drops from its own history, which measures the subscriber, not the replay.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def make_session_bag(path: Path, seconds: float) -> dict:
    """Write the synthetic session; returns message counts per topic."""
    from vla_ros.bags.typestore import TypeRegistry
    from vla_ros.bags.writer import BagWriter

    reg = TypeRegistry()
    T = reg.store.types

    def header(t):
        sec, nsec = divmod(int(t * 1e9), 1_000_000_000)
        return T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](
            sec=sec, nanosec=nsec), frame_id='base_link')

    def image(t, value):
        return reg.serialize(T['sensor_msgs/msg/Image'](
            header=header(t), height=224, width=224, encoding='rgb8', is_bigendian=0,
            step=672, data=np.full(224 * 224 * 3, value, np.uint8)), 'sensor_msgs/msg/Image')

    counts = {}
    start = 1_700_000_000.0
    with BagWriter(path, 'mcap', 9, reg) as w:
        topics = {
            '/camera/front/image_raw': ('sensor_msgs/msg/Image', 10.0),
            '/camera/wrist/image_raw': ('sensor_msgs/msg/Image', 10.0),
            '/joint_states': ('sensor_msgs/msg/JointState', 50.0),
            '/cmd/ee_twist': ('geometry_msgs/msg/TwistStamped', 10.0),
            '/vla/action_chunk': ('vla_ros_msgs/msg/ActionChunk', 5.0),
            '/vla/status': ('vla_ros_msgs/msg/PolicyStatus', 5.0),
        }
        keys = {name: w.add_topic(name, typ) for name, (typ, _) in topics.items()}
        events = []
        for name, (_, rate) in topics.items():
            for i in range(int(seconds * rate)):
                events.append((start + i / rate + 1e-4 * len(events) % 1e-3, name, i))
        for t, name, i in sorted(events):
            if name.startswith('/camera'):
                data = image(t, i % 256)
            elif name == '/joint_states':
                data = reg.serialize(T['sensor_msgs/msg/JointState'](
                    header=header(t), name=[f'j{k}' for k in range(7)],
                    position=np.full(7, 0.01 * i), velocity=np.zeros(7), effort=np.zeros(0)),
                    'sensor_msgs/msg/JointState')
            elif name == '/cmd/ee_twist':
                data = reg.serialize(T['geometry_msgs/msg/TwistStamped'](
                    header=header(t), twist=T['geometry_msgs/msg/Twist'](
                        linear=T['geometry_msgs/msg/Vector3'](x=0.05, y=0.0, z=0.0),
                        angular=T['geometry_msgs/msg/Vector3'](x=0.0, y=0.0, z=0.0))),
                    'geometry_msgs/msg/TwistStamped')
            elif name == '/vla/action_chunk':
                data = reg.serialize(T['vla_ros_msgs/msg/ActionChunk'](
                    header=header(t), policy='scripted', horizon=8, action_dim=7,
                    actions=np.zeros(56, np.float32),
                    control_period=T['builtin_interfaces/msg/Duration'](sec=0,
                                                                         nanosec=100_000_000),
                    dimension_names=['x', 'y', 'z', 'roll', 'pitch', 'yaw', 'gripper']),
                    'vla_ros_msgs/msg/ActionChunk')
            else:
                data = reg.serialize(T['vla_ros_msgs/msg/PolicyStatus'](
                    header=header(t), policy='scripted', state=2, last_inference_latency=0.01,
                    queue_depth=4, observation_age=0.05, instruction='go', message='running'),
                    'vla_ros_msgs/msg/PolicyStatus')
            w.write(keys[name], int(t * 1e9), data)
            counts[name] = counts.get(name, 0) + 1
    return counts


def replay_once(bag: Path, rate: float, counts: dict, domain: int, depth: int,
                sub_depth: int) -> dict:
    """Replay at ``rate`` into counting subscribers; returns the measurement."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from vla_ros.bags.typestore import rclpy_message_class

    context = rclpy.Context()
    rclpy.init(args=[], context=context, domain_id=domain)
    node = rclpy.create_node('bench_replay_listener', context=context)
    received = dict.fromkeys(counts, 0)
    qos = QoSProfile(depth=sub_depth, reliability=ReliabilityPolicy.RELIABLE)
    types = {'/camera/front/image_raw': 'sensor_msgs/msg/Image',
             '/camera/wrist/image_raw': 'sensor_msgs/msg/Image',
             '/joint_states': 'sensor_msgs/msg/JointState',
             '/cmd/ee_twist': 'geometry_msgs/msg/TwistStamped',
             '/vla/action_chunk': 'vla_ros_msgs/msg/ActionChunk',
             '/vla/status': 'vla_ros_msgs/msg/PolicyStatus'}
    for name in counts:
        node.create_subscription(
            rclpy_message_class(types[name]), name,
            lambda _m, n=name: received.__setitem__(n, received[n] + 1), qos, raw=True)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [executor.spin_once(timeout_sec=0.05)
                                               for _ in iter(stop.is_set, True)])
    spinner.start()
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain))
    try:
        proc = subprocess.run(
            [sys.executable, '-m', 'vla_ros.bags.cli', 'replay', str(bag), '--rate', str(rate),
             '--wait-for-subscribers', '10', '--no-progress', '--queue-depth', str(depth)],
            env=env, capture_output=True, text=True, timeout=600)
        deadline = time.monotonic() + 3.0
        while sum(received.values()) < sum(counts.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        spinner.join()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    if proc.returncode != 0:
        raise RuntimeError(f'replay failed: {proc.stderr[-2000:]}')
    summary = json.loads(proc.stdout)
    published = summary['published']
    total = sum(published.values())
    image_bytes = 224 * 224 * 3
    images = published['/camera/front/image_raw'] + published['/camera/wrist/image_raw']
    return {
        'rate': rate,
        'published': total,
        'received': sum(received.values()),
        'lost': total - sum(received.values()),
        'lost_per_topic': {k: published[k] - received[k] for k in published
                           if published[k] != received[k]},
        'wall_time_s': round(summary['wall_time_s'], 3),
        'bag_time_s': round(summary['bag_time_s'], 3),
        'speedup_achieved': round(summary['bag_time_s'] / summary['wall_time_s'], 2),
        'messages_per_s': round(total / summary['wall_time_s'], 1),
        'image_mb_per_s': round(images * image_bytes / summary['wall_time_s'] / 1e6, 1),
        'late_mean_ms': round(summary['late_mean_ms'], 3),
        'late_max_ms': round(summary['late_max_ms'], 3),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--seconds', type=float, default=60.0, help='bag length (s)')
    parser.add_argument('--rates', type=float, nargs='+', default=[10.0, 30.0])
    parser.add_argument('--queue-depth', type=int, default=1000,
                        help='replay publisher history depth (0 = keep all)')
    parser.add_argument('--subscriber-depth', type=int, default=1000)
    args = parser.parse_args(argv)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    domain = int(os.environ.get('ROS_DOMAIN_ID', '42'))
    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / 'session'
        counts = make_session_bag(bag, args.seconds)
        size = sum(p.stat().st_size for p in bag.iterdir())
        runs = [replay_once(bag, rate, counts, domain, args.queue_depth,
                            args.subscriber_depth) for rate in args.rates]
    print(json.dumps({
        'benchmark': 'bag_replay_throughput',
        'bag': {'seconds': args.seconds, 'messages': sum(counts.values()),
                'bytes': size, 'per_topic': counts},
        'subscriber': f'raw, reliable, depth {args.subscriber_depth}, same machine',
        'publisher_queue_depth': args.queue_depth or 'keep all',
        'runs': runs,
        'lossless': all(r['lost'] == 0 for r in runs),
    }, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
