"""Fault campaign: inject a fault while the arm moves, time the stop, remove it, recover.

Two halves, both measured on the driver's ``~/applied_twist`` (exactly what reached the
backend):

* :func:`run_node_faults`: the inference node, a dry-run driver and a camera in this
  process. The scripted policy raises, returns NaN, returns the wrong shape or hangs past
  its deadline; the camera stops; the e-stop service is called. Fault times are taken
  where the fault happens (inside the policy call, at the camera switch).
* :func:`run_process_faults`: the driver and the inference node as processes, as
  deployed. The inference process is SIGKILLed while the arm moves, the instruction
  publisher process is killed and restarted, and the driver process is killed and
  restarted.

Each fault reports its stop latency next to a target. When the driver itself detects the
fault (commands stop arriving) it stops at once, so the target is ``watchdog_timeout``
plus one driver period. When the inference node detects it, it sends a zero command on its
next tick and the driver brings the arm to rest through its acceleration limit, so the
target is the detection timeout + one inference period + the deceleration ramp
(``speed / max_linear_acceleration``) + one driver period. Recovery is measured from the
moment the cause is removed to the first commanded motion the driver applies again.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from vla_ros.reliability.graph import (
    CommandMonitor,
    NodeProcess,
    ObservedDriverNode,
    ObservedInferenceNode,
    SpinningGraph,
    node_command,
    wait_until,
    wall_time,
)
from vla_ros.reliability.invariants import Envelope, is_zero, measure_stop

DRIVER_RATE_HZ = 50.0
WATCHDOG_TIMEOUT = 0.25
CONTROL_RATE_HZ = 20.0
INFERENCE_TIMEOUT = 0.3
STALE_IMAGE_TIMEOUT = 0.3
CAMERA_HZ = 20.0
CAMERA_SIZE = (64, 48)
# Circles of ~4.5 cm at ~0.14 m/s: always moving, never near the workspace walls.
POLICY_PARAMS = {'chunk_length': 20, 'control_period': 1.0 / CONTROL_RATE_HZ,
                 'pattern': 'sine', 'velocity': [0.005, 0.005, 0.0],
                 'image_size': list(CAMERA_SIZE)}
INSTRUCTION = 'move in circles'


@dataclass
class FaultRun:
    """The faults of one rig, and what its monitor saw over the whole run."""

    results: list
    unsafe_commands: int
    applied_twists_checked: int
    unsafe_examples: list = field(default_factory=list)


@dataclass
class FaultResult:
    """One injected fault: stop latency against its target, and recovery."""

    fault: str
    detected_by: str  # 'driver' (watchdog), 'inference node', 'none needed'
    detect_timeout_s: float | None
    target_s: float | None
    stop_latency_s: float | None
    speed_at_fault: float = 0.0
    held_until_cleared: bool = True
    recovered: bool = False
    recovery_s: float | None = None
    reason: str = ''
    notes: dict = field(default_factory=dict)

    @property
    def within_target(self) -> bool | None:
        """Whether the stop came no later than the target (None if no stop was due)."""
        if self.target_s is None:
            return None
        return self.stop_latency_s is not None and self.stop_latency_s <= self.target_s

    def as_dict(self) -> dict:
        """JSON-friendly form, numbers rounded to 0.1 ms."""
        out = asdict(self)
        out['within_target'] = self.within_target
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, 4)
        return out


def _speed(twist) -> float:
    return float(np.linalg.norm(np.asarray(twist)[:3]))


def _moving(monitor, since: float = -math.inf, threshold: float = 0.05) -> bool:
    latest = monitor.latest_applied()
    return latest is not None and latest[0] >= since and _speed(latest[1]) > threshold


def _wait_moving(monitor, since: float = -math.inf, timeout: float = 10.0) -> float | None:
    """Wall time at which the driver applied motion again (None on timeout)."""
    if not wait_until(lambda: _moving(monitor, since), timeout, 0.005):
        return None
    for stamp, twist in monitor.applied_since(since):
        if _speed(twist) > 0.05:
            return stamp
    return None


def inference_target(detect_timeout: float, speed: float, limits) -> float:
    """Target stop time for a fault the inference node detects (see module docstring)."""
    ramp = speed / limits.max_linear_acceleration
    return detect_timeout + 1.0 / CONTROL_RATE_HZ + ramp + 1.0 / DRIVER_RATE_HZ


def watchdog_target(watchdog_timeout: float = WATCHDOG_TIMEOUT) -> float:
    """Target stop time for a fault the driver detects: timeout + one driver period."""
    return watchdog_timeout + 1.0 / DRIVER_RATE_HZ


class PolicyFaultSwitch:
    """Turn the scripted policy's fault injection on and off, noting when faults happen."""

    def __init__(self, policy):
        self.policy = policy
        self.fault_times: list[float] = []
        self._predict = policy.predict_chunk
        policy.predict_chunk = self._timed_predict

    def _faulty_call(self) -> bool:
        p = self.policy
        return p.fail_mode is not None and p.calls + 1 > (p.fail_after or 0)

    def _timed_predict(self, observation):
        faulty, started = self._faulty_call(), wall_time()
        if faulty and self.policy.fail_mode == 'hang':
            self.fault_times.append(started)  # the policy stops producing from here on
        try:
            chunk = self._predict(observation)
        except Exception:
            if faulty and self.policy.fail_mode != 'hang':
                self.fault_times.append(wall_time())
            raise
        if faulty:
            self.fault_times.append(wall_time())
        return chunk

    def inject(self, mode: str) -> None:
        """Fail from the next call on."""
        self.policy.hang_seconds = 60.0
        # release() latches; re-arm it so this hang really blocks (test policy internals).
        self.policy._released.clear()
        self.policy.fail_after = self.policy.calls
        self.policy.fail_mode = mode

    def clear(self) -> None:
        """The cause goes away (a hang is released)."""
        self.policy.fail_mode = None
        self.policy.release()


class PeerSide:
    """The test side of an in-process rig: a camera, the instruction, e-stop clients.

    Subclasses build their nodes and a :class:`SpinningGraph` (``self.graph``), then call
    :meth:`_start_peer`.
    """

    def _start_peer(self, context, namespace, name, others):
        import rclpy
        from sensor_msgs.msg import Image
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        from vla_ros.nodes import qos

        self.peer = rclpy.create_node(name, namespace=namespace, context=context)
        self.image_pub = self.peer.create_publisher(Image, 'camera/front/image_raw', qos.SENSOR)
        self.instruction_pub = self.peer.create_publisher(String, 'instruction',
                                                          qos.INSTRUCTION)
        self.estop = self.peer.create_client(Trigger, 'vla_driver/estop')
        self.clear_estop = self.peer.create_client(Trigger, 'vla_driver/clear_estop')
        self.camera_on = True
        self.last_frame_time = -math.inf
        self._frame = np.full((CAMERA_SIZE[1], CAMERA_SIZE[0], 3), 120, dtype=np.uint8)
        self.peer.create_timer(1.0 / CAMERA_HZ, self._camera_tick)
        for node in (*others, self.peer):
            self.graph.add(node)

    def instruct(self, text):
        """Publish the (latched) instruction."""
        from std_msgs.msg import String

        self.instruction_pub.publish(String(data=text))

    def _camera_tick(self):
        from vla_ros.nodes.image_conversion import rgb_to_image_msg

        if self.camera_on:
            now = wall_time()
            self.image_pub.publish(rgb_to_image_msg(self._frame, stamp=now))
            self.last_frame_time = now

    def call(self, client, timeout=30.0):
        """Call a Trigger service; RuntimeError if it is not there or does not answer.

        The timeout bounds a failure only (discovery is slow on a loaded machine).
        """
        from std_srvs.srv import Trigger

        if not client.wait_for_service(timeout_sec=timeout):
            raise RuntimeError(f'service {client.srv_name} not available')
        future = client.call_async(Trigger.Request())
        if not wait_until(future.done, timeout):
            raise RuntimeError(f'service {client.srv_name} did not answer')
        return future.result()

    def close(self):
        """Stop spinning and destroy the nodes."""
        self.graph.close()


class _NodeRig(PeerSide):
    """Inference node + dry-run driver + camera + monitor in this process."""

    def __init__(self, context, namespace='faults'):
        from rclpy.parameter import Parameter

        self.graph = SpinningGraph(context)
        params = {'policy': 'scripted', 'policy_params': json.dumps(POLICY_PARAMS),
                  'control_rate_hz': CONTROL_RATE_HZ, 'inference_rate_hz': 5.0,
                  'inference_timeout': INFERENCE_TIMEOUT,
                  'stale_image_timeout': STALE_IMAGE_TIMEOUT, 'execute_steps': 4,
                  # The faults are switched on the policy object: it must live in this
                  # process (the policy process's own faults: test_policy_process.py).
                  'policy_process': False}
        self.inference = ObservedInferenceNode(
            context=context, namespace=namespace,
            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        self.driver = ObservedDriverNode(
            context=context, namespace=namespace, parameter_overrides=[
                Parameter('backend', value='dry_run'), Parameter('camera_rate_hz', value=0.0),
                Parameter('rate_hz', value=DRIVER_RATE_HZ),
                Parameter('watchdog_timeout', value=WATCHDOG_TIMEOUT)])
        self.limits = self.driver.limits
        self.monitor = CommandMonitor(
            context, Envelope.from_limits(self.inference.command_limits, False),
            Envelope.from_limits(self.limits), 1.0 / DRIVER_RATE_HZ, namespace=namespace)
        self._start_peer(context, namespace, 'vla_fault_peer',
                         (self.driver, self.monitor, self.inference))
        self.instruct(INSTRUCTION)


def _settle(monitor, seconds=0.6):
    """Let the arm move steadily before the next fault (the stop is measured from motion)."""
    start = wall_time()
    ok = _wait_moving(monitor, timeout=10.0)
    time.sleep(max(0.0, seconds - (wall_time() - start)))
    return ok is not None


def _hold_and_measure(rig_or_monitor, fault_time, hold_for):
    """Keep the fault in place ``hold_for`` s after the stop; return the measurement."""
    monitor = rig_or_monitor
    wait_until(lambda: measure_stop(monitor.applied_since(fault_time), fault_time).stop_time
               is not None, hold_for + 3.0, 0.005)
    time.sleep(hold_for)
    return measure_stop(monitor.applied_since(fault_time), fault_time, fault_end=wall_time())


def run_node_faults(context, hold_for: float = 0.4, repeats: int = 1) -> FaultRun:
    """Policy faults, camera stop and e-stop against the in-process nodes."""
    rig = _NodeRig(context)
    results = []
    try:
        if not _wait_moving(rig.monitor, timeout=20.0):
            raise RuntimeError(f'the node rig never moved: {rig.monitor.last_message()!r}')
        switch = PolicyFaultSwitch(rig.inference.engine.policy)
        for _ in range(repeats):
            for mode in ('raise', 'nan', 'wrong_shape', 'hang'):
                results.append(_policy_fault(rig, switch, mode, hold_for))
            results.append(_camera_fault(rig, hold_for))
            results.append(_estop_fault(rig, hold_for))
        unsafe = rig.monitor.audit()
        run = FaultRun(results, len(unsafe), rig.monitor.applied_checker.checked, unsafe[:3])
    finally:
        rig.close()
    return run


def _policy_fault(rig, switch, mode, hold_for):
    _settle(rig.monitor)
    speed = _speed(rig.monitor.latest_applied()[1])
    seen = len(switch.fault_times)
    switch.inject(mode)
    if not wait_until(lambda: len(switch.fault_times) > seen, 5.0):
        switch.clear()
        raise RuntimeError(f'policy fault {mode!r} never fired')
    fault_time = switch.fault_times[seen]
    m = _hold_and_measure(rig.monitor, fault_time, hold_for)
    reason = rig.monitor.last_message()
    cleared = wall_time()
    switch.clear()
    resumed = _wait_moving(rig.monitor, since=cleared)
    timeout = INFERENCE_TIMEOUT if mode == 'hang' else 0.0
    return FaultResult(
        fault=f'policy_{mode}', detected_by='inference node', detect_timeout_s=timeout,
        target_s=inference_target(timeout, speed, rig.limits), stop_latency_s=m.latency,
        speed_at_fault=speed, held_until_cleared=not m.moved_during_fault,
        recovered=resumed is not None,
        recovery_s=None if resumed is None else resumed - cleared, reason=reason)


def _camera_fault(rig, hold_for):
    _settle(rig.monitor)
    speed = _speed(rig.monitor.latest_applied()[1])
    rig.camera_on = False
    time.sleep(0.001)
    fault_time = rig.last_frame_time + 1.0 / CAMERA_HZ  # the frame that never came
    m = _hold_and_measure(rig.monitor, fault_time, hold_for)
    reason = rig.monitor.last_message()
    cleared = wall_time()
    rig.camera_on = True
    resumed = _wait_moving(rig.monitor, since=cleared)
    # Stale after stale_image_timeout from the LAST frame, one camera period before.
    timeout = STALE_IMAGE_TIMEOUT - 1.0 / CAMERA_HZ
    return FaultResult(
        fault='camera_stopped', detected_by='inference node', detect_timeout_s=timeout,
        target_s=inference_target(timeout, speed, rig.limits), stop_latency_s=m.latency,
        speed_at_fault=speed, held_until_cleared=not m.moved_during_fault,
        recovered=resumed is not None,
        recovery_s=None if resumed is None else resumed - cleared, reason=reason)


def _estop_fault(rig, hold_for):
    _settle(rig.monitor)
    speed = _speed(rig.monitor.latest_applied()[1])
    fault_time = wall_time()
    rig.call(rig.estop)
    m = _hold_and_measure(rig.monitor, fault_time, hold_for)
    cleared = wall_time()
    rig.call(rig.clear_estop)
    resumed = _wait_moving(rig.monitor, since=cleared)
    return FaultResult(
        fault='estop_service', detected_by='driver', detect_timeout_s=0.0,
        target_s=watchdog_target(0.0), stop_latency_s=m.latency, speed_at_fault=speed,
        held_until_cleared=not m.moved_during_fault, recovered=resumed is not None,
        recovery_s=None if resumed is None else resumed - cleared,
        reason='e-stop engaged (service); includes the service round trip')


# ------------------------------------------------------------------ processes
class ProcessRig:
    """Driver and inference node as processes; camera and monitor in this process."""

    def __init__(self, context, env, namespace='faultproc', log_dir=None):
        import rclpy
        from sensor_msgs.msg import Image

        from vla_ros.actions.safety import SafetyLimits
        from vla_ros.nodes import qos

        self.env = dict(env)
        self.namespace = namespace
        self.log_dir = log_dir or tempfile.mkdtemp(prefix='vla_faults_')
        self.driver = self.driver_process()
        self.inference = NodeProcess(node_command(
            'vla_ros.nodes.inference_node', 'vla_inference',
            {'policy': 'scripted', 'policy_params': json.dumps(POLICY_PARAMS),
             'control_rate_hz': CONTROL_RATE_HZ, 'inference_rate_hz': 5.0,
             'inference_timeout': INFERENCE_TIMEOUT,
             'stale_image_timeout': STALE_IMAGE_TIMEOUT}, namespace=namespace), self.env,
            os.path.join(self.log_dir, 'inference.log'))
        self.limits = SafetyLimits()  # the driver's defaults (vla_ros.parameters)
        self.graph = SpinningGraph(context)
        self.monitor = self.graph.add(CommandMonitor(
            context,
            Envelope(self.limits.max_linear_velocity, self.limits.max_angular_velocity),
            Envelope.from_limits(self.limits),
            1.0 / DRIVER_RATE_HZ, namespace=namespace))
        self.peer = rclpy.create_node('vla_fault_camera', namespace=namespace, context=context)
        self.image_pub = self.peer.create_publisher(Image, 'camera/front/image_raw', qos.SENSOR)
        self._frame = np.full((CAMERA_SIZE[1], CAMERA_SIZE[0], 3), 120, dtype=np.uint8)
        self.peer.create_timer(1.0 / CAMERA_HZ, self._camera_tick)
        self.graph.add(self.peer)
        self.instruction = None

    def _camera_tick(self):
        from vla_ros.nodes.image_conversion import rgb_to_image_msg

        self.image_pub.publish(rgb_to_image_msg(self._frame, stamp=wall_time()))

    def driver_process(self, **parameters):
        """The driver process (not started), with extra parameters if given."""
        return NodeProcess(node_command(
            'vla_ros.nodes.driver_node', 'vla_driver',
            {'backend': 'dry_run', 'camera_rate_hz': 0.0, 'rate_hz': DRIVER_RATE_HZ,
             'watchdog_timeout': WATCHDOG_TIMEOUT, **parameters}, namespace=self.namespace),
            self.env, os.path.join(self.log_dir, 'driver.log'))

    def enable_driver(self, timeout=10.0):
        """Call the driver's ~/enable service (the operator re-enabling actuation)."""
        from std_srvs.srv import SetBool

        client = self.peer.create_client(SetBool, 'vla_driver/enable')
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise RuntimeError('the restarted driver offers no ~/enable service')
            future = client.call_async(SetBool.Request(data=True))
            if not wait_until(future.done, timeout) or not future.result().success:
                raise RuntimeError('enabling the restarted driver failed')
        finally:
            self.peer.destroy_client(client)

    def instruction_process(self, text):
        """Start an instruction publisher process (kept alive until killed)."""
        import sys

        command = [sys.executable, '-m', 'vla_ros.reliability.peers', 'instruction', text,
                   '--namespace', self.namespace]
        return NodeProcess(command, self.env,
                           os.path.join(self.log_dir, 'instruction.log')).start()

    def close(self):
        """Stop the processes (SIGINT, then SIGKILL) and the in-process nodes."""
        for proc in (self.inference, self.driver, self.instruction):
            if proc is not None:
                proc.stop(timeout=5.0)
        self.graph.close()


def run_process_faults(context, env, hold_for: float = 0.5,
                       startup_timeout: float = 60.0) -> FaultRun:
    """SIGKILL of the inference process, instruction publisher and driver restarts."""
    rig = ProcessRig(context, env)
    results = []
    try:
        rig.driver.start()
        rig.inference.start()
        rig.instruction = rig.instruction_process(INSTRUCTION)
        if _wait_moving(rig.monitor, timeout=startup_timeout) is None:
            raise RuntimeError(f'processes never moved the arm (logs in {rig.log_dir})')
        results.append(_kill_inference(rig, hold_for, startup_timeout))
        results.append(_restart_instruction_publisher(rig, startup_timeout))
        results.append(_restart_driver(rig, startup_timeout))
        unsafe = rig.monitor.audit()
        run = FaultRun(results, len(unsafe), rig.monitor.applied_checker.checked, unsafe[:3])
    finally:
        rig.close()
    return run


def _kill_inference(rig, hold_for, startup_timeout):
    _settle(rig.monitor)
    speed = _speed(rig.monitor.latest_applied()[1])
    fault_time = rig.inference.kill()  # SIGKILL: no goodbye message, nothing flushed
    m = _hold_and_measure(rig.monitor, fault_time, hold_for)
    cleared = wall_time()
    rig.inference.start()
    resumed = _wait_moving(rig.monitor, since=cleared, timeout=startup_timeout)
    return FaultResult(
        fault='inference_process_sigkill', detected_by='driver',
        detect_timeout_s=WATCHDOG_TIMEOUT, target_s=watchdog_target(),
        stop_latency_s=m.latency, speed_at_fault=speed,
        held_until_cleared=not m.moved_during_fault, recovered=resumed is not None,
        recovery_s=None if resumed is None else resumed - cleared,
        reason='watchdog: no cmd/ee_twist', notes={'recovery_includes': 'process start'})


def _restart_instruction_publisher(rig, startup_timeout):
    """The arm keeps its task when the publisher dies; a new publisher's task is taken."""
    _settle(rig.monitor)
    killed = rig.instruction.kill()
    time.sleep(1.0)
    after = rig.monitor.applied_since(killed)
    kept_moving = bool(after) and all(not is_zero(t) for _, t in after)
    started = wall_time()
    rig.instruction = rig.instruction_process('move in circles backwards')
    reversed_at = None

    def status_has_new_task():
        with rig.monitor.lock:
            return any(s[0] >= started and 'backwards' in s[3] for s in rig.monitor.statuses)

    if wait_until(status_has_new_task, startup_timeout, 0.01):
        reversed_at = wall_time()
    resumed = _wait_moving(rig.monitor, since=started, timeout=startup_timeout)
    return FaultResult(
        fault='instruction_publisher_restart', detected_by='none needed',
        detect_timeout_s=None, target_s=None, stop_latency_s=None,
        held_until_cleared=True, recovered=reversed_at is not None and resumed is not None,
        recovery_s=None if reversed_at is None else reversed_at - started,
        reason='the latched instruction stays in force while no publisher exists',
        notes={'kept_moving_without_publisher': kept_moving,
               'recovery_includes': 'process start; new instruction in vla/status'})


def _restart_driver(rig, startup_timeout):
    """The driver dies and restarts; the new one waits for an operator, then ramps up.

    It restarts with actuation disabled, as a hardware driver does, so the monitor can
    see it (holding still) before it moves: a restart must not resume motion by itself.
    """
    _settle(rig.monitor)
    rig.driver.kill()
    with rig.monitor.lock:
        rig.monitor.applied_checker.reset()  # a new driver starts from rest
    started = wall_time()
    rig.driver = rig.driver_process(enable_actuation=False)
    rig.driver.start()
    seen = wait_until(lambda: len(rig.monitor.applied_since(started)) >= 10, startup_timeout)
    held = bool(seen) and all(is_zero(t) for _, t in rig.monitor.applied_since(started))
    enabled = wall_time()
    rig.enable_driver()
    resumed = _wait_moving(rig.monitor, since=enabled, timeout=10.0)
    first = [t for _, t in rig.monitor.applied_since(enabled) if not is_zero(t)][:1]
    ramp_ok = bool(first) and _speed(first[0]) <= \
        rig.limits.max_linear_acceleration * 3.0 / DRIVER_RATE_HZ + 1e-6
    return FaultResult(
        fault='driver_process_restart', detected_by='none needed', detect_timeout_s=None,
        target_s=None, stop_latency_s=None, recovered=resumed is not None,
        recovery_s=None if resumed is None else resumed - enabled,
        reason='a restarted driver holds until enabled, then ramps up from rest',
        notes={'held_until_enabled': held, 'first_applied_speed':
               round(_speed(first[0]), 4) if first else None,
               'started_from_rest': ramp_ok,
               'process_start_s': None if not seen else round(enabled - started, 3),
               'recovery_includes': 'the ~/enable call'})
