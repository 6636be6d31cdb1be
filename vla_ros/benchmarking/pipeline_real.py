"""Pipeline benchmark with real torch policies: the runtime's designs side by side, one run.

For each mode (``MODE_PARAMS``: where the policy runs, how the control tick is scheduled
and who publishes the commands) the inference node and a dry-run
driver run as their own processes (as deployed); this process plays two 640x480 rgb8
cameras and records commands, chunks and the driver's watchdog. The schedule:

1. the shipped OpenVLA checkpoint (``vla_ros/models/openvla_sim``) runs continuously;
2. a hot swap to another family: an Octo-style model of ~100 M parameters whose
   checkpoint (>= 300 MB, written to a temporary directory) loads while the old policy
   keeps driving (``swap_behavior: keep``); it runs continuously (>= 100 ms per call);
3. a hot swap back to OpenVLA, which runs to the end.

The camera is frame-triggered: each new frame is published once the chunk of the
previous one has arrived (plus a short gap), so the policy runs back to back and a frame
never waits for a busy policy; stamp -> chunk minus the model's own compute time is then
the pipeline's overhead (decode, shared memory or not, resize, scheduling, DDS both ways).
The model's compute time per chunk comes from the engine's timing log
(``VLA_ROS_TIMING_LOG``), written where the policy runs.

Reported per mode: control period error p99 at the publisher (the DDS source timestamp of
each command: when it was written, whichever process wrote it; header stamps carry the
deadline the command is for), at a subscriber (the DDS reception timestamp in this
process) and at this process's callback, over the whole window and during loads/swaps;
the driver's watchdog trips;
starved (hold) ticks separately; overhead p50 per policy; load and swap times; RSS.
"""

import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from vla_ros import dds
from vla_ros.runtime.engine import read_timing_log

MODES = ('thread-timer', 'process-thread', 'process')
# Node parameters of each mode. 'process' and 'thread' run the shipped defaults: the
# commands computed on the node's control thread and published by its control process at
# SCHED_FIFO 10, the node's executor and worker threads at SCHED_FIFO 5, the policy
# process at nice 5; 'process-thread' publishes from the control thread itself with the
# other node threads at normal priority (the design before the control process). The
# '-timer' modes run the design before them (an rclpy timer in the executor, no
# priorities), for a side-by-side; '-normal' the thread without any priority (what a user
# without the rtprio privilege gets).
_BEFORE = {'control_thread': False, 'control_thread_priority': 0, 'policy_niceness': 0,
           'control_process': False, 'node_thread_priority': 0}
_NORMAL = {'control_thread_priority': 0, 'policy_niceness': 0, 'node_thread_priority': 0}
MODE_PARAMS = {
    'process': {'policy_process': True},
    'thread': {'policy_process': False},
    # The control tick publishing from the node's own thread (no control process).
    'process-thread': {'policy_process': True, 'control_process': False,
                       'node_thread_priority': 0},
    'process-timer': {'policy_process': True, **_BEFORE},
    'thread-timer': {'policy_process': False, **_BEFORE},
    'process-normal': {'policy_process': True, **_NORMAL},
    'thread-normal': {'policy_process': False, **_NORMAL},
}
WATCHDOG_TIMEOUT = 0.25
# ~100 M parameters, ~390 MB of float32 weights; 4 image tokens per camera keep one call
# in the 0.1-1 s range on one core instead of seconds.
HEAVY_OCTO = {'width': 1024, 'num_layers': 7, 'mlp_dim': 4096, 'num_heads': 16,
              'image_size': 32, 'camera_names': ['front', 'wrist'], 'uses_proprio': True,
              'proprio_dim': 8, 'chunk_length': 4}
SMOKE_OCTO = {'camera_names': ['front', 'wrist'], 'uses_proprio': True, 'proprio_dim': 8,
              'image_size': 32}


def write_checkpoint(directory: str, overrides: dict) -> dict:
    """Write a randomly initialised Octo-style checkpoint; its size and parameter count."""
    from vla_ros.policies.registry import make_policy

    policy = make_policy('octo', **overrides)
    path = policy.save_pretrained(directory)
    size = sum(f.stat().st_size for f in Path(path).iterdir())
    return {'path': str(path), 'size_mb': round(size / 2**20, 1),
            'parameters_m': round(policy.num_parameters() / 1e6, 1)}


class _Recorder:
    """The benchmark's ROS side: cameras, subscriptions, parameter changes."""

    def __init__(self, context, namespace: str, width: int, height: int, gap: float):
        import rclpy
        from geometry_msgs.msg import TwistStamped
        from rcl_interfaces.srv import SetParametersAtomically
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import String
        from vla_ros_msgs.msg import ActionChunk, PolicyStatus

        from vla_ros.nodes import qos
        from vla_ros.nodes.image_conversion import rgb_to_image_msg
        from vla_ros.nodes.messages import to_seconds

        self._to_seconds = to_seconds
        self.node = rclpy.create_node('pipeline_real_bench', namespace=namespace,
                                      context=context)
        self.commands, self.chunks = [], []
        self.node.create_subscription(TwistStamped, 'cmd/ee_twist', self._on_command,
                                      qos.COMMAND)
        self.node.create_subscription(ActionChunk, 'vla/action_chunk', self._on_chunk,
                                      qos.STATUS)
        self.status = None
        self.node.create_subscription(PolicyStatus, 'vla/status',
                                      lambda m: setattr(self, 'status', m), qos.STATUS)
        self.instruction_pub = self.node.create_publisher(String, 'instruction',
                                                          qos.INSTRUCTION)
        self.joints = self.node.create_publisher(JointState, 'bench_joint_states', qos.SENSOR)
        self.joint_state = JointState(name=[f'j{i}' for i in range(8)], position=[0.0] * 8)
        self.node.create_timer(0.02, lambda: self.joints.publish(self.joint_state))
        self.cams = [self.node.create_publisher(Image, f'camera/{c}/image_raw', qos.SENSOR)
                     for c in ('front', 'wrist')]
        frame = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)
        self.template = rgb_to_image_msg(frame, frame_id='camera')
        # Atomically: policy and model_path change in one step (set_parameters applies them
        # one by one, which starts a load of the new policy with the old checkpoint first).
        self.params = self.node.create_client(SetParametersAtomically,
                                              'vla_inference/set_parameters_atomically')
        self.gap = gap
        self._last_frame = -math.inf
        self._pending = None  # stamp of the frame whose chunk we wait for
        self._ready_at = 0.0
        self.node.create_timer(0.005, self._camera)

    def _on_command(self, msg, info):
        t = msg.twist
        moving = any(v != 0.0 for v in (t.linear.x, t.linear.y, t.linear.z,
                                        t.angular.x, t.angular.y, t.angular.z))
        # Middleware times (system clock, ns): when the publisher wrote the sample and when
        # this process's DDS reader got it; then when this executor ran the callback.
        self.commands.append((info['source_timestamp'] * 1e-9,
                              info['received_timestamp'] * 1e-9, moving, time.time()))

    def _on_chunk(self, msg, info):
        stamp = self._to_seconds(msg.header.stamp)
        # (frame stamp, this callback ran, policy, this process's DDS reader got it)
        self.chunks.append((stamp, time.time(), msg.policy, info['received_timestamp'] * 1e-9))
        if self._pending is not None and stamp >= self._pending - 1e-6:
            self._pending = None
            self._ready_at = time.time() + self.gap

    def _camera(self):
        from vla_ros.nodes.messages import to_time_msg

        now = time.time()
        # Frame-triggered: the next frame a short gap after the last one's chunk came
        # back (or 3 s after it was sent, in case its chunk was dropped: a swap, an error).
        if self._pending is not None:
            if now - self._last_frame < 3.0:
                return
        elif now < self._ready_at:
            return
        stamp = time.time()
        self.template.header.stamp = to_time_msg(stamp)
        for pub in self.cams:
            pub.publish(self.template)
        self._last_frame = stamp
        self._pending = stamp

    def set_parameters(self, **values) -> None:
        from rcl_interfaces.srv import SetParametersAtomically
        from rclpy.parameter import Parameter

        if not self.params.wait_for_service(timeout_sec=20.0):
            raise RuntimeError('the inference node has no set_parameters service')
        request = SetParametersAtomically.Request(parameters=[
            Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        future = self.params.call_async(request)
        deadline = time.monotonic() + 20.0
        while not future.done():
            if time.monotonic() > deadline:
                raise RuntimeError('set_parameters timed out')
            time.sleep(0.01)
        result = future.result().result
        if not result.successful:
            raise RuntimeError(f'set_parameters refused: {result.reason}')


def _rss_mb(pid, key='VmHWM:'):
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith(key):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return None


def _children(pid):
    """Process ids of ``pid``'s direct children (none once it has exited)."""
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


def _is_policy_process(pid) -> bool:
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return b'vla_ros.runtime.policy_process' in f.read()
    except OSError:
        return False


def _p(values, q, scale=1e3):
    return round(float(np.percentile(values, q)) * scale, 3) if len(values) else None


def run_mode(mode: str, context, env: dict, heavy_dir: str, phase: float, log_dir: str,
             width=640, height=480, gap=0.02, load_timeout=300.0, label: str = '') -> dict:
    """One mode: OpenVLA, swap to the heavy model and back; the measurements.

    ``label`` names this run's namespace and logs (a mode may run several times).
    """
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    from vla_ros.models import model_path
    from vla_ros.paths import config_dir
    from vla_ros.reliability.graph import NodeProcess, node_command

    label = (label or mode).replace('-', '_')
    namespace = f'bench_real_{label}'
    arm = str(config_dir('robots', 'arm.yaml'))
    timing_log = os.path.join(log_dir, f'timing_{label}.txt')
    tick_trace = os.path.join(log_dir, f'ticks_{label}.txt')
    node_env = dict(env, VLA_ROS_TIMING_LOG=timing_log, VLA_ROS_TICK_TRACE=tick_trace)
    openvla = model_path('openvla')
    driver = NodeProcess(node_command(
        'vla_ros.nodes.driver_node', 'vla_driver',
        {'backend': 'dry_run', 'camera_rate_hz': 0.0, 'watchdog_timeout': WATCHDOG_TIMEOUT},
        param_files=[arm], namespace=namespace, log_level='info'), env,
        os.path.join(log_dir, f'driver_{label}.log'))
    inference = NodeProcess(node_command(
        'vla_ros.nodes.inference_node', 'vla_inference',
        {'policy': 'openvla', 'model_path': openvla, **MODE_PARAMS[mode],
         'cameras': ['front', 'wrist'], 'control_rate_hz': 10.0, 'inference_rate_hz': 0.0,
         'low_queue_depth': 1000, 'chunk_strategy': 'receding_horizon', 'execute_steps': 1,
         'chunk_timing': 'arrival', 'swap_behavior': 'keep', 'stale_image_timeout': 3.0,
         'inference_timeout': 5.0, 'torch_threads': 1,
         # Proprio from this process (8 values, as the policies were built for): the
         # dry-run arm has no finger joints.
         'proprio_joints': [''], 'gripper_joints': ['']},
        param_files=[arm], namespace=namespace, log_level='info')
        + ['--ros-args', '-r', 'joint_states:=bench_joint_states'], node_env,
        os.path.join(log_dir, f'inference_{label}.log'))
    recorder = _Recorder(context, namespace, width, height, gap)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(recorder.node)
    spinning = threading.Event()
    spinning.set()

    def spin():
        while spinning.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    events = {}
    loadavg = {'start': os.getloadavg()}
    policy_rss = {}
    try:
        driver.start()
        inference.start()
        spinner.start()
        recorder.instruction_pub.publish(String(data='pick up the red cube'))

        def wait_chunks(policy, since, timeout):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not inference.alive():
                    raise RuntimeError(f'the inference node exited ({mode}); see {log_dir}')
                if any(c[2] == policy and c[1] >= since for c in recorder.chunks):
                    return next(c[1] for c in recorder.chunks
                                if c[2] == policy and c[1] >= since)
                time.sleep(0.02)
            status = recorder.status.message if recorder.status else 'no status'
            raise RuntimeError(f'no {policy!r} chunk within {timeout} s ({mode}); '
                               f'status: {status}')

        wait_chunks('openvla', 0.0, load_timeout)
        time.sleep(1.0)  # settle: the first commands after start are not the loop's state
        t_start = time.time()
        time.sleep(phase)
        events['swap_to_octo_requested'] = time.time()
        recorder.set_parameters(policy='octo', model_path=heavy_dir)
        events['first_octo_chunk'] = wait_chunks('octo', events['swap_to_octo_requested'],
                                                 load_timeout)
        time.sleep(phase)
        for kid in _children(inference.pid):
            if _is_policy_process(kid):
                policy_rss[kid] = _rss_mb(kid)
        events['swap_to_openvla_requested'] = time.time()
        recorder.set_parameters(policy='openvla', model_path=openvla)
        events['first_openvla_chunk_after_swap'] = wait_chunks(
            'openvla', events['swap_to_openvla_requested'], load_timeout)
        time.sleep(phase)
        t_end = time.time()
        node_rss = _rss_mb(inference.pid)
        loadavg['end'] = os.getloadavg()
    finally:
        driver.stop()  # first: the inference node's exit must not count as a trip
        exit_code = inference.stop(timeout=20.0)
        spinning.clear()
        if spinner.is_alive():
            spinner.join(2.0)
        executor.shutdown()
        recorder.node.destroy_node()

    return _summarise(mode, recorder, events, t_start, t_end, timing_log,
                      os.path.join(log_dir, f'driver_{label}.log'), node_rss, policy_rss,
                      loadavg, exit_code, os.path.join(log_dir, f'inference_{label}.log'),
                      tick_trace)


def _summarise(mode, recorder, events, t_start, t_end, timing_log, driver_log, node_rss,
               policy_rss, loadavg, exit_code, inference_log, tick_trace=None) -> dict:
    period = 0.1
    window = [c for c in recorder.commands if t_start <= c[1] <= t_end]
    stamps = np.array([c[0] for c in window])  # written by the publisher
    received = np.array([c[1] for c in window])  # arrived at this subscriber's middleware
    called = np.array([c[3] for c in window])  # this process's callback ran
    err_node = np.abs(np.diff(stamps) - period)
    err_sub = np.abs(np.diff(received) - period)
    err_callback = np.abs(np.diff(called) - period)
    loads = [(events['swap_to_octo_requested'], events['first_octo_chunk']),
             (events['swap_to_openvla_requested'], events['first_openvla_chunk_after_swap'])]

    def in_loads(t):
        return any(a <= t <= b for a, b in loads)

    during = np.array([in_loads(t) for t in received[1:]])
    starved = sum(1 for c in window if not c[2])
    # Driver watchdog: every "no cmd/ee_twist" warning after commands first flowed.
    trips, flowing = 0, False
    with open(driver_log) as f:
        for line in f:
            if 'ee commands flowing' in line:
                flowing = True
            elif 'watchdog: no cmd/ee_twist' in line and flowing:
                trips += 1
    gaps = np.diff(received)
    # Overhead: chunk received - frame stamp - the model's own compute for that frame.
    timing = read_timing_log(timing_log) if os.path.exists(timing_log) else {}
    per_policy = {}
    for stamp, called, policy, got in recorder.chunks:
        if not t_start <= got <= t_end:
            continue
        logged = timing.get(round(stamp, 6), {})
        model = logged.get('model')
        if model is None:
            continue
        entry = per_policy.setdefault(policy, {'overhead': [], 'compute': [], 'to_worker': [],
                                               'hop': [], 'preprocess': [], 'back': [],
                                               'overhead_callback': [], 'prepared': []})
        # At the subscriber's DDS reception (as for the commands); its callback, which
        # waits for this process's busy executor, separately.
        entry['overhead'].append(got - stamp - model)
        entry['overhead_callback'].append(called - stamp - model)
        entry['compute'].append(model)
        entry['preprocess'].append(logged['preprocess'])
        if 'sent' in logged:  # process mode: where the overhead goes
            entry['prepared'].append(logged['prepared'] > 0)
            entry['to_worker'].append(logged['sent'] - stamp)
            entry['hop'].append(logged['back'] - logged['sent'] - model - logged['preprocess'])
            entry['back'].append(got - logged['back'])
    with open(inference_log) as f:
        tracebacks = f.read().count('Traceback')
    # The control thread's own trace (monotonic clock; absent with an rclpy timer): how
    # late it woke after each deadline, apart from how long the tick itself took.
    wake, duration = [], []
    if tick_trace and os.path.exists(tick_trace):
        offset = time.time() - time.monotonic()
        with open(tick_trace) as f:
            for line in f:
                deadline, start, end = (float(x) for x in line.split())
                if t_start <= deadline + offset <= t_end:
                    wake.append(start - deadline)
                    duration.append(end - start)
    return {
        'mode': mode,
        'window_s': round(t_end - t_start, 1),
        'commands': len(window),
        'command_hz': round((len(stamps) - 1) / (stamps[-1] - stamps[0]), 3),
        'control_period_error_ms_p99': _p(err_node, 99),
        'control_period_error_ms_max': _p(err_node, 100),
        'control_period_error_ms_p99_at_subscriber': _p(err_sub, 99),
        'control_period_error_ms_max_at_subscriber': _p(err_sub, 100),
        'control_period_error_ms_p99_at_subscriber_callback': _p(err_callback, 99),
        'control_period_error_ms_p99_during_loads_and_swaps': _p(err_node[during], 99),
        'control_period_error_ms_p99_at_subscriber_during_loads_and_swaps':
            _p(err_sub[during], 99),
        'control_thread_wake_lateness_ms_p50': _p(wake, 50),
        'control_thread_wake_lateness_ms_p99': _p(wake, 99),
        'control_thread_wake_lateness_ms_max': _p(wake, 100),
        'control_tick_duration_ms_p50': _p(duration, 50),
        'control_tick_duration_ms_p99': _p(duration, 99),
        'driver_watchdog_trips': trips,
        'command_gaps_over_watchdog_timeout_at_subscriber': int(np.sum(gaps >
                                                                       WATCHDOG_TIMEOUT)),
        'starved_or_hold_tick_fraction': round(starved / max(len(window), 1), 4),
        'per_policy': {
            name: {'chunks': len(v['compute']),
                   'model_compute_ms_p50': _p(v['compute'], 50),
                   'pipeline_overhead_ms_p50': _p(v['overhead'], 50),
                   'pipeline_overhead_ms_p90': _p(v['overhead'], 90),
                   'pipeline_overhead_ms_p50_at_subscriber_callback':
                       _p(v['overhead_callback'], 50),
                   # Its parts (process mode): frame stamp -> the worker sends it to the
                   # policy process; the resize there; the process hop beyond resize and
                   # model; chunk back at the worker -> received here.
                   'overhead_parts_ms_p50': {
                       'stamp_to_worker': _p(v['to_worker'], 50),
                       'preprocess': _p(v['preprocess'], 50),
                       'process_hop': _p(v['hop'], 50),
                       'chunk_to_subscriber': _p(v['back'], 50)},
                   # Chunks whose second camera the policy process had preprocessed
                   # while idle (process mode; 0 for one-camera policies).
                   'second_camera_prepared_fraction':
                       round(float(np.mean(v['prepared'])), 3) if v['prepared'] else None}
            for name, v in per_policy.items()},
        'swap_to_heavy_octo_s': round(events['first_octo_chunk']
                                      - events['swap_to_octo_requested'], 2),
        'swap_back_to_openvla_s': round(events['first_openvla_chunk_after_swap']
                                        - events['swap_to_openvla_requested'], 2),
        'inference_node_peak_rss_mb': node_rss,
        'policy_process_peak_rss_mb': sorted(v for v in policy_rss.values() if v),
        'inference_node_exit_code': exit_code,
        'tracebacks_in_node_log': tracebacks,
        'load_average_1_5_15': {k: [round(x, 2) for x in v] for k, v in loadavg.items()},
    }


def run(phase: float = 20.0, modes=MODES, heavy: dict | None = None, log_dir=None,
        load_timeout: float = 300.0) -> dict:
    """Both modes, one after the other, in one run; the targets of issue 18."""
    import rclpy

    # The profile a deployment gets (vla_ros.dds), for this process's participant (the
    # subscriber measured here) as for the nodes.
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    dds.apply_default_profile()
    env = dict(os.environ)
    env.setdefault('OMP_NUM_THREADS', '1')
    env['PYTHONUNBUFFERED'] = '1'
    log_dir = log_dir or tempfile.mkdtemp(prefix='vla_bench_real_')
    with tempfile.TemporaryDirectory(prefix='vla_heavy_ckpt_') as tmp:
        checkpoint = write_checkpoint(tmp, heavy or HEAVY_OCTO)
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=int(os.environ.get('ROS_DOMAIN_ID', '0')))
        try:
            results = {}
            for i, mode in enumerate(modes):
                # A mode listed again (alternating A/B runs) gets its own key: mode_2, ...
                n = list(modes[:i + 1]).count(mode)
                key = mode if n == 1 else f'{mode}_{n}'
                results[key] = run_mode(mode, context, env, checkpoint['path'], phase,
                                        log_dir, load_timeout=load_timeout, label=key)
        finally:
            rclpy.try_shutdown(context=context)
    out = {'benchmark': 'pipeline_real', 'phase_s': phase, 'camera': '2 x 640x480 rgb8, '
           'frame-triggered', 'control_rate_hz': 10.0,
           'heavy_checkpoint': {k: v for k, v in checkpoint.items() if k != 'path'},
           'logs': log_dir, 'cpu_count': os.cpu_count(), **results}
    if 'process' in results:
        r = results['process']
        overhead = [v['pipeline_overhead_ms_p50'] for v in r['per_policy'].values()
                    if v['pipeline_overhead_ms_p50'] is not None]
        out['targets_process_mode'] = {
            'control_period_error_ms_p99 <= 2': (r['control_period_error_ms_p99'] or 1e9)
            <= 2.0,
            'control_period_error_ms_p99_at_subscriber <= 3': (
                r['control_period_error_ms_p99_at_subscriber'] or 1e9) <= 3.0,
            'driver_watchdog_trips == 0': r['driver_watchdog_trips'] == 0,
            'pipeline_overhead_ms_p50 <= 5 (every policy)': bool(overhead)
            and max(overhead) <= 5.0,
        }
    return out


def main(argv=None) -> int:
    """Print the benchmark's JSON object (and save it with --output)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--phase', type=float, default=20.0,
                        help='seconds of each of the three phases')
    parser.add_argument('--modes', default=','.join(MODES),
                        help=f'comma-separated, run in this order: {", ".join(MODE_PARAMS)}')
    parser.add_argument('--output', help='also write the JSON here')
    args = parser.parse_args(argv)
    result = run(args.phase, tuple(args.modes.split(',')))
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + '\n')
    return 0


if __name__ == '__main__':
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
