"""Soak run: simulated arm, cameras at full rate and the inference node for a long time.

The driver (MuJoCo backend, both cameras rendering at ``camera_rate_hz``) and the
inference node run as processes from the ``sim_arm`` bringup files, with the scripted
policy drawing circles so the arm always moves and never reaches the workspace walls. This
process publishes the instruction and watches every command. Measured:

* RSS of both processes, sampled every ``sample_period`` s; growth is judged from the end
  of the warm-up to the end of the run against ``rss_growth_bound_mb``;
* starved ticks: inference commands that were holds (all-zero twist; the circle pattern
  never commands zero), and the node's own ``hold_ticks`` counter from /diagnostics. A hold
  inside an injected fault window (``stall_every``: the inference process is SIGSTOPped
  for ``stall_seconds``) is counted as explained; any other is unexplained;
* driver stops: the applied twist dropping to zero at once (the watchdog; a policy hold
  decelerates instead), explained when inside a stall window; and, to tell why an
  unexplained one happened, the largest gap between command stamps (the inference node's
  timer stalled), the command delivery delay (stamp to arrival here) and the largest gap
  between driver ticks (the driver process stalled);
* unsafe commands (velocity, acceleration, workspace on ``~/applied_twist``), and the stop
  latency of every injected stall against the watchdog target;
* messages received per topic, and with a bag recorder plugged in through ``recorder``
  (:func:`vla_ros.reliability.soak_bag.bag_recorder`: ``vla-ros bag record`` as a child
  process), messages published vs recorded per reliable topic and received vs recorded
  per camera (see :mod:`vla_ros.reliability.soak_bag` for how the windows are aligned).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from vla_ros import bringup
from vla_ros.parameters import SAFETY_DEFAULTS
from vla_ros.reliability.graph import (
    CommandMonitor,
    NodeProcess,
    SpinningGraph,
    wait_until,
    wall_time,
)
from vla_ros.reliability.invariants import Envelope, is_zero, measure_stop

INSTRUCTION = 'move in circles'


@dataclass(frozen=True)
class SoakConfig:
    """What to run and for how long."""

    duration: float = 600.0
    warmup: float = 10.0
    camera_rate_hz: float = 30.0
    driver_rate_hz: float = 50.0
    control_rate_hz: float = 10.0
    watchdog_timeout: float = 0.25
    policy: str = 'scripted'
    policy_params: dict = dataclasses.field(default_factory=lambda: {
        'chunk_length': 8, 'pattern': 'sine', 'velocity': [0.005, 0.005, 0.0]})
    stall_every: float = 0.0  # s between injected inference stalls (0: none)
    stall_seconds: float = 0.5
    recovery_window: float = 2.0  # s after a stall whose holds count as explained
    sample_period: float = 2.0
    rss_growth_bound_mb: float = 16.0
    namespace: str = 'soak'
    driver_parameters: dict = dataclasses.field(default_factory=dict)  # overrides


class _Counter:
    """Counts messages the monitor does not, and keeps the header stamps a bag is checked by.

    Subscribed before the nodes start; reliable topics get the monitor's deep reliable
    history so that, once matched, this process sees every message a publisher sends.
    """

    def __init__(self, node):
        from geometry_msgs.msg import TwistStamped
        from sensor_msgs.msg import Image, JointState
        from vla_ros_msgs.msg import ActionChunk, PolicyStatus

        from vla_ros.nodes import qos
        from vla_ros.reliability.graph import MONITOR_QOS

        self.counts = {}
        self.stamps = {}
        for topic, kind, profile in (('camera/front/image_raw', Image, qos.SENSOR),
                                     ('camera/wrist/image_raw', Image, qos.SENSOR),
                                     ('joint_states', JointState, qos.SENSOR),
                                     ('vla/action_chunk', ActionChunk, MONITOR_QOS),
                                     ('vla/status', PolicyStatus, MONITOR_QOS),
                                     ('cmd/ee_twist', TwistStamped, MONITOR_QOS),
                                     ('vla_driver/applied_twist', TwistStamped, MONITOR_QOS)):
            self.stamps[topic] = []
            node.create_subscription(kind, topic, self._keep(topic), profile, raw=True)
            if topic not in ('cmd/ee_twist', 'vla_driver/applied_twist'):  # the monitor's
                self.counts[topic] = 0

    def _keep(self, topic):
        from vla_ros.reliability.soak_bag import header_stamp_ns

        stamps = self.stamps[topic]

        def callback(msg):
            stamps.append(header_stamp_ns(msg))
            if topic in self.counts:
                self.counts[topic] += 1
        return callback


def _node_specs(config: SoakConfig):
    driver, inference = bringup.nodes('sim_arm', {})
    driver = dataclasses.replace(driver, parameters={
        **driver.parameters, 'camera_rate_hz': config.camera_rate_hz,
        'rate_hz': config.driver_rate_hz, 'watchdog_timeout': config.watchdog_timeout,
        **config.driver_parameters})
    inference = dataclasses.replace(inference, parameters={
        **inference.parameters, 'policy': config.policy,
        'policy_params': json.dumps(config.policy_params),
        'control_rate_hz': config.control_rate_hz})
    return driver, inference


def _process(spec, namespace, env, log_path):
    import sys

    command = [sys.executable, '-m', spec.module, *bringup.ros_args(spec, namespace),
               '--log-level', 'warn']
    return NodeProcess(command, env, log_path)


def _diag_value(monitor, suffix, key):
    with monitor.lock:
        for name, values in monitor.diagnostics.items():
            if name.endswith(suffix) and key in values:
                return int(values[key])
    return None


def run_soak(context, env, config: SoakConfig = SoakConfig(), recorder=None,
             log_dir=None, progress=None) -> dict:
    """Run the soak; return the measurements (see the module docstring).

    ``recorder(namespace, env)`` (optional) starts a bag recording and returns an object
    whose ``stop()`` returns ``{topic: messages recorded}``; it is stopped after the node
    processes. A :class:`~vla_ros.reliability.soak_bag.BagRecording` (from
    :func:`~vla_ros.reliability.soak_bag.bag_recorder`) also yields ``result['bag']``
    with published vs recorded counts.
    """
    import rclpy
    from std_msgs.msg import String

    from vla_ros.actions.safety import SafetyLimits
    from vla_ros.nodes import qos

    log_dir = log_dir or tempfile.mkdtemp(prefix='vla_soak_')
    env = dict(env, MUJOCO_GL=env.get('MUJOCO_GL', 'egl'))
    driver_spec, inference_spec = _node_specs(config)
    driver = _process(driver_spec, config.namespace, env, os.path.join(log_dir, 'driver.log'))
    inference = _process(inference_spec, config.namespace, env,
                         os.path.join(log_dir, 'inference.log'))
    limits = SafetyLimits()  # the driver's defaults (vla_ros.parameters)
    graph = SpinningGraph(context)
    monitor = graph.add(CommandMonitor(
        context, Envelope(limits.max_linear_velocity, limits.max_angular_velocity),
        Envelope.from_limits(limits),
        1.0 / config.driver_rate_hz, namespace=config.namespace))
    peer = rclpy.create_node('vla_soak_peer', namespace=config.namespace, context=context)
    counter = _Counter(peer)
    graph.add(peer)
    instruction_pub = peer.create_publisher(String, 'instruction', qos.INSTRUCTION)
    recording = None
    samples, stalls = [], []
    result = {'config': dataclasses.asdict(config), 'logs': log_dir}
    try:
        driver.start()
        inference.start()
        instruction_pub.publish(String(data=INSTRUCTION))
        if recorder is not None:
            recording = recorder(config.namespace, env)
        moving = wait_until(lambda: (c := monitor.latest_command()) is not None
                            and not is_zero(c[2]), 120.0, 0.05)
        if not moving:
            raise RuntimeError(f'the soak never started moving (logs in {log_dir})')
        if hasattr(recording, 'wait_subscribed'):
            recording.wait_subscribed(peer)
        t_start = wall_time()
        t_measure = t_start + config.warmup
        t_end = t_measure + config.duration
        holds_at_start = None
        next_stall = t_measure + config.stall_every if config.stall_every > 0 else math.inf
        next_sample = wall_time()
        while wall_time() < t_end:
            now = wall_time()
            if now >= next_sample:
                samples.append((now - t_start, driver.rss_mb(), inference.rss_mb()))
                next_sample += config.sample_period
                if progress:
                    progress(now - t_start, samples[-1])
            if holds_at_start is None and now >= t_measure:
                holds_at_start = (_diag_value(monitor, ': inference', 'hold_ticks'),
                                  _diag_value(monitor, ': inference', 'control_ticks'))
            if now >= next_stall and now + config.stall_seconds + 2.0 < t_end:
                stalls.append(_stall(inference, monitor, config))
                next_stall += config.stall_every
            if not (driver.alive() and inference.alive()):
                raise RuntimeError(f'a node process died (logs in {log_dir})')
            time.sleep(0.05)
        monitor.audit()
        result.update(_summarise(monitor, counter, samples, stalls, config, t_measure, t_end,
                                 holds_at_start))
    finally:
        # Publishers first, then the recorder: everything sent is in flight or delivered
        # before the bag is closed, so the bag can be compared with what was published.
        # Inference before the driver: no commands arrive while the driver shuts down.
        inference_code = inference.stop()
        result['exit_codes'] = {'driver': driver.stop(), 'inference': inference_code}
        try:
            if recording is not None:
                time.sleep(0.5)
                recorded = recording.stop()
                if hasattr(recording, 'stamps'):
                    from vla_ros.reliability.soak_bag import bag_report

                    result['bag'] = bag_report(recording, counter.stamps)
                else:
                    result['bag'] = {'recorded': recorded}
        finally:
            graph.close()
    if recording is None:
        result['bag'] = {'recorded': None, 'note': 'bag comparison not run: no recorder '
                         'given (pass run_soak(recorder=soak_bag.bag_recorder(...)))'}
    return result


def _stall(inference, monitor, config):
    """SIGSTOP the inference process: its commands stop, as if it hung or the host froze."""
    speed = monitor.latest_applied()
    speed = float(np.linalg.norm(speed[1][:3])) if speed else 0.0
    fault_time = wall_time()
    os.kill(inference.pid, signal.SIGSTOP)
    try:
        time.sleep(config.stall_seconds)
    finally:
        os.kill(inference.pid, signal.SIGCONT)
    resumed_at = wall_time()
    # The monitor's subscription can lag on a loaded machine: wait (bounded) until it has
    # the driver's samples up to the resume, so the stop is judged on what the driver did,
    # not on what had arrived here by then (the samples are judged by their stamps).
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        latest = monitor.latest_applied()
        if latest is not None and latest[0] >= resumed_at:
            break
        time.sleep(0.02)
    m = measure_stop(monitor.applied_since(fault_time), fault_time, fault_end=resumed_at)
    return {'start': fault_time, 'end': resumed_at, 'speed_at_fault': round(speed, 4),
            'stop_latency_s': None if m.latency is None else round(m.latency, 4),
            'held_until_resumed': not m.moved_during_fault}


def _inside(t, windows) -> bool:
    return any(a <= t <= b for a, b in windows)


def _watchdog_stops(applied, max_step: float) -> list[float]:
    """Stamps at which the applied twist dropped to zero faster than braking allows.

    A policy hold decelerates through the acceleration limit (at most ``max_step`` m/s per
    tick), so a zero straight after a faster speed is the driver stopping on its own.
    """
    stops = []
    for (_, before), (stamp, twist) in zip(applied, applied[1:], strict=False):
        if is_zero(twist) and np.linalg.norm(before[:3]) > max_step:
            stops.append(stamp)
    return stops


def _summarise(monitor, counter, samples, stalls, config, t_measure, t_end, holds_at_start):
    measured = [s for s in samples if s[0] >= config.warmup]
    with monitor.lock:
        commands = [c for c in monitor.commands if t_measure <= c[0] <= t_end]
        applied = [a for a in monitor.applied if t_measure <= a[0] <= t_end]
        counts = dict(monitor.counts)
    windows = [(s['start'], s['end'] + config.recovery_window) for s in stalls]
    holds = [c[0] for c in commands if is_zero(c[2])]
    explained = [t for t in holds if _inside(t, windows)]
    gaps = np.diff([a[0] for a in applied]) if len(applied) > 1 else np.array([0.0])
    stamp_gaps = np.diff([c[0] for c in commands]) if len(commands) > 1 else np.array([0.0])
    delays = np.array([c[1] - c[0] for c in commands]) if commands else np.array([0.0])
    # Driver default max_linear_acceleration times one period, plus 1 %.
    stops = _watchdog_stops(applied, 1.01 * SAFETY_DEFAULTS['max_linear_acceleration']
                            / config.driver_rate_hz)
    hold_ticks = _diag_value(monitor, ': inference', 'hold_ticks')
    control_ticks = _diag_value(monitor, ': inference', 'control_ticks')
    target = config.watchdog_timeout + 1.0 / config.driver_rate_hz
    rss = {}
    for i, name in ((1, 'driver'), (2, 'inference')):
        values = [s[i] for s in measured if not math.isnan(s[i])]
        if values:
            slope = np.polyfit([s[0] for s in measured], values, 1)[0] * 60 \
                if len(values) > 2 else 0.0
            rss[name] = {'start_mb': round(values[0], 1), 'end_mb': round(values[-1], 1),
                         'max_mb': round(max(values), 1),
                         'growth_mb': round(values[-1] - values[0], 1),
                         'slope_mb_per_min': round(float(slope), 3)}
    return {
        'soak_duration_s': round(t_end - t_measure, 1),
        'rss': rss,
        'rss_growth_bound_mb': config.rss_growth_bound_mb,
        'rss_within_bound': all(r['growth_mb'] <= config.rss_growth_bound_mb
                                for r in rss.values()),
        'rss_samples': [(round(t, 1), round(d, 1), round(i, 1)) for t, d, i in samples],
        'commands': len(commands),
        'command_rate_hz': round(len(commands) / max(t_end - t_measure, 1e-9), 2),
        'applied': len(applied),
        'driver_rate_hz': round(len(applied) / max(t_end - t_measure, 1e-9), 2),
        'driver_max_gap_s': round(float(gaps.max()), 4),
        'driver_gap_p99_s': round(float(np.percentile(gaps, 99)), 4),
        'command_stamp_max_gap_s': round(float(stamp_gaps.max()), 4),
        'command_delay_p99_s': round(float(np.percentile(delays, 99)), 4),
        'command_delay_max_s': round(float(delays.max()), 4),
        'driver_stops_explained_by_faults': sum(1 for t in stops if _inside(t, windows)),
        'driver_stops_unexplained': [round(t - t_measure, 2) for t in stops
                                     if not _inside(t, windows)],
        'starved_ticks': len(holds),
        'starved_ticks_explained_by_faults': len(explained),
        'starved_ticks_unexplained': len(holds) - len(explained),
        'node_hold_ticks': None if hold_ticks is None or not holds_at_start or
        holds_at_start[0] is None else hold_ticks - holds_at_start[0],
        'node_control_ticks': None if control_ticks is None or not holds_at_start or
        holds_at_start[1] is None else control_ticks - holds_at_start[1],
        'injected_stalls': stalls,
        'stall_stop_target_s': round(target, 4),
        'stall_stops_within_target': all(s['stop_latency_s'] is not None and
                                         s['stop_latency_s'] <= target for s in stalls),
        'unsafe_commands': len(monitor.unsafe),
        'unsafe_examples': monitor.unsafe[:3],
        'messages_received': {**{k: v for k, v in counts.items()}, **counter.counts},
    }

