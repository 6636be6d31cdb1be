"""Pipeline benchmark: the real inference node vs a synchronous observe-infer-act loop.

The inference node runs as its own process (as in deployment) with the scripted policy
set to a fixed latency; this process plays the camera (640x480 rgb8) and records every
command. Both the pipeline and the baseline are measured in the same run.

What is measured:
- control_period_error_ms_p99: |period - nominal| of the commands' header stamps (the
  node's timer) and, separately, of their receive times here (adds DDS transport).
- starved_tick_fraction: share of commands that were holds (all-zero twist) once running.
- stamp_to_command_ms_p50: camera stamp -> first command computed from that frame. It
  splits into the policy's own compute time (its call as measured in the policy process:
  the configured latency plus the sleep's overshoot), the pipeline overhead (decode,
  resize, scheduling, process hop, DDS; = chunk received - stamp - compute, with its parts
  from the node's timing log) and the wait for the next control tick (inherent to a
  fixed-rate timer, mean period/2).
- inference_node_peak_rss_mb: VmHWM of the node process.
Chunks are identified by a per-chunk noise seed (scripted policy ``noise``), so the first
command that uses a chunk can be found from the outside without instrumenting the node.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def _peak_rss_mb(pid: int) -> float:
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


def _period_errors_ms(times, nominal):
    periods = np.diff(np.asarray(times))
    return np.abs(periods - nominal) * 1e3


def _add_parts(parts: dict, timing: dict, stamp: float, received: float) -> bool:
    """Append this chunk's parts; whether its model time was logged."""
    entry = timing.get(round(stamp, 6), {})
    if 'model' not in entry:
        return False
    parts['preprocess'].append(entry['preprocess'])
    parts['model'].append(entry['model'])
    if 'sent' in entry:
        parts['stamp_to_worker'].append(entry['sent'] - stamp)
        parts['process_hop'].append(entry['back'] - entry['sent'] - entry['model']
                                    - entry['preprocess'])
        parts['chunk_to_subscriber'].append(received - entry['back'])
    return True


def run_baseline(latency: float, duration: float, width=640, height=480,
                 control_period=0.1) -> dict:
    """The seed's VLAInferenceLoop shape: observe, infer, act, repeat (no threads)."""
    from vla_ros.images import prepare_image
    from vla_ros.nodes.image_conversion import image_msg_to_rgb, rgb_to_image_msg
    from vla_ros.policies.contract import Observation
    from vla_ros.policies.scripted import ScriptedPolicy

    policy = ScriptedPolicy(latency=latency, chunk_length=8, control_period=control_period,
                            velocity=(0.005, 0, 0, 0, 0, 0))
    frame = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    times = []
    start = time.monotonic()
    next_tick = start
    while time.monotonic() - start < duration:
        msg = rgb_to_image_msg(frame, stamp=time.time())
        obs = Observation(images={'front': prepare_image(image_msg_to_rgb(msg), (224, 224))},
                          instruction='move forward', stamp=time.time())
        chunk = policy.predict_chunk(obs)
        _ = chunk[0] / control_period  # act: the first action only
        times.append(time.monotonic())
        next_tick += control_period
        delay = next_tick - time.monotonic()
        if delay > 0:  # never faster than the nominal rate
            time.sleep(delay)
        else:
            next_tick = time.monotonic()
    errors = _period_errors_ms(times, control_period)
    return {'command_hz': round((len(times) - 1) / (times[-1] - times[0]), 3),
            'control_period_error_ms_p99': round(float(np.percentile(errors, 99)), 2)}


def run_pipeline(latency: float, duration: float, control_rate_hz=10.0, chunk_length=8,
                 width=640, height=480, camera_hz=30.0, warmup=3.0) -> dict:
    """Start the inference node, feed it a camera, and record its commands."""
    import rclpy
    from geometry_msgs.msg import TwistStamped
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image
    from std_msgs.msg import String
    from vla_ros_msgs.msg import ActionChunk

    from vla_ros.nodes import qos
    from vla_ros.nodes.image_conversion import rgb_to_image_msg
    from vla_ros.nodes.messages import to_seconds, to_time_msg
    from vla_ros.runtime.engine import read_timing_log

    period = 1.0 / control_rate_hz
    policy_params = json.dumps({'latency': latency, 'chunk_length': chunk_length,
                                'control_period': period, 'noise': 0.0005,
                                'velocity': [0.005, 0.0, 0.0]})
    params = {'policy': 'scripted', 'policy_params': policy_params,
              'control_rate_hz': control_rate_hz, 'inference_rate_hz': 0.0,
              'low_queue_depth': chunk_length - 1, 'chunk_strategy': 'latency_aware',
              'merge_new_weight': 1.0, 'stale_image_timeout': 1.0}
    command = [sys.executable, '-m', 'vla_ros.nodes.inference_node', '--ros-args',
               '-r', '__node:=vla_inference_bench', '--log-level', 'warn']
    for k, v in params.items():
        command += ['-p', f'{k}:={v}' if not isinstance(v, str) or k != 'policy_params'
                    else f"{k}:='{v}'"]
    # The node's timing log: per chunk, the policy's preprocess and compute times and when
    # the node's worker sent the frames and got the chunk back (where the overhead goes).
    timing_fd, timing_log = tempfile.mkstemp(prefix='vla_bench_timing_', suffix='.txt')
    os.close(timing_fd)
    node_proc = subprocess.Popen(command, env=dict(os.environ, VLA_ROS_TIMING_LOG=timing_log))

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(os.environ.get('ROS_DOMAIN_ID', '0')))
    node = rclpy.create_node('pipeline_bench', context=context)
    commands, chunks = [], []
    node.create_subscription(
        TwistStamped, 'cmd/ee_twist',
        lambda m: commands.append((to_seconds(m.header.stamp), time.time(), m.twist.linear.x)),
        qos.COMMAND)
    # Chunk arrival: this process's DDS reception (the middleware's), and the callback,
    # which also waits for this process's executor.
    node.create_subscription(
        ActionChunk, 'vla/action_chunk',
        lambda m, info: chunks.append((to_seconds(m.header.stamp), time.time(),
                                       np.asarray(m.actions, np.float32).reshape(m.horizon,
                                                                                -1),
                                       info['received_timestamp'] * 1e-9)),
        qos.STATUS)
    image_pub = node.create_publisher(Image, 'camera/front/image_raw', qos.SENSOR)
    instruction_pub = node.create_publisher(String, 'instruction', qos.INSTRUCTION)
    frame = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    template = rgb_to_image_msg(frame, frame_id='front_camera')

    def publish_frame():
        # Stamp right before publishing: building the synthetic camera's message is the
        # camera driver's work, not the pipeline's (a real driver stamps at capture).
        template.header.stamp = to_time_msg(time.time())
        image_pub.publish(template)

    node.create_timer(1.0 / camera_hz, publish_frame)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    peak_rss = float('nan')
    try:
        deadline = time.monotonic() + 60.0
        instruction_pub.publish(String(data='move forward'))  # latched: sent once
        while not any(c[2] != 0 for c in commands):
            if time.monotonic() > deadline or node_proc.poll() is not None:
                raise RuntimeError('the inference node never produced a moving command')
            executor.spin_once(timeout_sec=0.1)
        t_start = time.time() + warmup
        end = time.monotonic() + warmup + duration
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.01)
        peak_rss = _peak_rss_mb(node_proc.pid)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        node_proc.send_signal(2)
        try:
            node_proc.wait(10)
        except subprocess.TimeoutExpired:
            node_proc.kill()

    window = [c for c in commands if c[1] >= t_start]
    stamps = [c[0] for c in window]
    receive = [c[1] for c in window]
    err_stamp = _period_errors_ms(stamps, period)
    err_recv = _period_errors_ms(receive, period)
    starved = sum(1 for c in window if c[2] == 0.0)

    timing = read_timing_log(timing_log)
    os.unlink(timing_log)
    # First command that used each chunk: its vx equals that chunk's action for the tick.
    stamp_to_cmd, ready_delay, tick_wait, callback_delay = [], [], [], []
    parts = {'stamp_to_worker': [], 'preprocess': [], 'model': [], 'process_hop': [],
             'chunk_to_subscriber': []}
    overhead_ready = []  # stamp -> chunk of the chunks whose model time is known
    for stamp, called, actions, received in chunks:
        if stamp < t_start:
            continue
        for cmd_stamp, _, vx in commands:
            if cmd_stamp < received - period:
                continue
            i = int(np.floor((cmd_stamp - stamp) / period + 0.5))
            if 0 <= i < len(actions) and abs(vx - actions[i, 0] / period) < 1e-5:
                stamp_to_cmd.append(cmd_stamp - stamp)
                ready_delay.append(received - stamp)
                callback_delay.append(called - stamp)
                tick_wait.append(cmd_stamp - received)
                if _add_parts(parts, timing, stamp, received):
                    overhead_ready.append(received - stamp)
                break
    overhead = [r - m for r, m in zip(overhead_ready, parts['model'], strict=True)]
    p50 = lambda xs: round(float(np.percentile(xs, 50)) * 1e3, 2) if xs else None  # noqa: E731
    return {
        'commands': len(window),
        'command_hz': round((len(stamps) - 1) / (stamps[-1] - stamps[0]), 3),
        'control_period_error_ms_p99': round(float(np.percentile(err_stamp, 99)), 3),
        'control_period_error_ms_p99_at_subscriber': round(float(np.percentile(err_recv, 99)),
                                                           3),
        'starved_tick_fraction': round(starved / max(len(window), 1), 4),
        'chunks_matched': len(stamp_to_cmd),
        'stamp_to_command_ms_p50': p50(stamp_to_cmd),
        'policy_compute_ms': latency * 1e3,
        # Beyond the policy's measured call (its configured sleep, the overshoot of that
        # sleep and its own chunk computation), as the real-model benchmark counts; and
        # beyond the configured latency alone (the figure earlier runs reported).
        'pipeline_overhead_ms_p50': round(p50(overhead), 2) if overhead else None,
        'pipeline_overhead_ms_p50_beyond_configured_latency':
            round(p50(ready_delay) - latency * 1e3, 2) if ready_delay else None,
        'pipeline_overhead_ms_p50_at_subscriber_callback':
            round(p50(callback_delay) - latency * 1e3, 2) if callback_delay else None,
        'tick_wait_ms_p50': p50(tick_wait),
        # Medians of the overhead's parts (process mode) and of the policy's measured call.
        'overhead_parts_ms_p50': {k: p50(v) for k, v in parts.items()},
        'inference_node_peak_rss_mb': round(peak_rss, 1),
    }


def run(latency=0.3, duration=20.0) -> dict:
    """Baseline and pipeline side by side, with the targets of the runtime issue."""
    from vla_ros import dds

    # The profile a deployment gets, for this process's camera publisher as for the node:
    # without it most 640x480 frames are lost (run as `vla-ros bench pipeline` with no
    # profile variable, 1.5-8.5 % of ticks starved on frames that never came).
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    dds.apply_default_profile()
    baseline = run_baseline(latency, min(duration, 10.0))
    pipeline = run_pipeline(latency, duration)
    # Camera at 2 Hz: the worker is idle when each frame arrives, so the frame does not
    # wait for a busy worker and stamp -> chunk is decode + scheduling + compute only.
    triggered = run_pipeline(latency, duration, camera_hz=2.0)
    result = {
        'benchmark': 'pipeline', 'policy_latency_ms': latency * 1e3, 'control_rate_hz': 10.0,
        'chunk_length': 8, 'camera': '640x480 rgb8 @ 30 Hz',
        'pipeline': pipeline, 'synchronous_baseline': baseline,
        'frame_triggered_2hz_camera': triggered,
        'command_rate_ratio_vs_baseline': round(pipeline['command_hz'] /
                                                baseline['command_hz'], 2),
        'targets': {'control_period_error_ms_p99 <= 2': pipeline[
            'control_period_error_ms_p99'] <= 2.0,
                    'starved_tick_fraction == 0': pipeline['starved_tick_fraction'] == 0.0,
                    'pipeline_overhead_ms_p50 <= 5 (frame-triggered)': (
                        triggered['pipeline_overhead_ms_p50'] or 1e9) <= 5.0},
    }
    return result


def main(argv=None) -> int:
    """Print the benchmark's JSON object."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--latency', type=float, default=0.3)
    parser.add_argument('--duration', type=float, default=20.0)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.latency, args.duration), indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
