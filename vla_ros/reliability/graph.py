"""rclpy plumbing of the reliability runs: observed nodes, a command monitor, processes.

* :class:`ObservedInferenceNode` / :class:`ObservedDriverNode` are the real nodes with
  every input callback recorded (what arrived, what reason was reported, whether an
  exception escaped), so a fuzz run can tell that each case was processed and answered.
* :class:`CommandMonitor` subscribes to what the nodes send (``cmd/ee_twist``,
  ``cmd/gripper``, ``cmd_vel``, the driver's ``~/applied_twist``) and counts unsafe
  commands with :mod:`vla_ros.reliability.invariants`.
* :class:`SpinningGraph` spins each node in its own single-threaded executor thread, as
  the nodes' ``main()`` do, and notices when a spin dies.
* :class:`NodeProcess` runs a node as a child process (SIGKILL, restart, RSS).
"""

from __future__ import annotations

import collections
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from vla_ros import bringup
from vla_ros.nodes.driver_node import DriverNode
from vla_ros.nodes.inference_node import InferenceNode
from vla_ros.reliability.invariants import (
    AppliedTwistChecker,
    Envelope,
    envelope_near,
    velocity_violations,
)

# Deep reliable history: a monitor that lags for a moment must not lose commands.
MONITOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=500,
                         reliability=ReliabilityPolicy.RELIABLE)


def wall_time() -> float:
    """Seconds on the clock the nodes stamp messages with (ROS system time)."""
    return time.time()


def wait_until(predicate, timeout: float, period: float = 0.002):
    """Poll ``predicate`` until it is truthy or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(period)


@dataclass
class InputRecord:
    """One input callback: topic kind, the case tag, reasons reported, escaped exception."""

    kind: str
    tag: str
    reasons: list = field(default_factory=list)
    exception: str = ''
    when: float = 0.0


class _Recorder:
    """Shared bookkeeping of the observed nodes."""

    def _init_records(self):
        self.records: collections.deque[InputRecord] = collections.deque(maxlen=20000)
        self._current = threading.local()
        self._records_lock = threading.Lock()

    def _note(self, reason: str) -> None:
        record = getattr(self._current, 'record', None)
        if record is not None:
            record.reasons.append(str(reason))

    def _observe(self, kind: str, tag: str, callback, *args):
        record = InputRecord(kind, tag, when=wall_time())
        self._current.record = record
        try:
            callback(*args)
        except BaseException as exc:
            record.exception = f'{type(exc).__name__}: {exc}'
            raise
        finally:
            self._current.record = None
            with self._records_lock:
                self.records.append(record)

    def find(self, kind: str, tag: str) -> InputRecord | None:
        """The newest record of ``kind`` with ``tag``."""
        with self._records_lock:
            for record in reversed(self.records):
                if record.kind == kind and record.tag == tag:
                    return record
        return None

    def latest(self, kind: str) -> InputRecord | None:
        """The newest record of ``kind``."""
        with self._records_lock:
            return next((r for r in reversed(self.records) if r.kind == kind), None)

    def count(self, kind: str) -> int:
        """How many ``kind`` callbacks ran (within the kept history)."""
        with self._records_lock:
            return sum(1 for r in self.records if r.kind == kind)


class ObservedInferenceNode(_Recorder, InferenceNode):
    """The inference node, with every input callback and reported reason recorded."""

    def __init__(self, *args, **kwargs):
        self._init_records()
        super().__init__(*args, **kwargs)
        report = self._engine.report_input_error

        def report_and_note(message, now):
            self._note(message)
            report(message, now)

        self._engine.report_input_error = report_and_note

    @property
    def engine(self):
        """The node's :class:`~vla_ros.runtime.engine.InferenceEngine`."""
        return self._engine

    @property
    def command_limits(self):
        """The velocity clamp in force (:class:`~vla_ros.actions.safety.SafetyLimits`)."""
        return self._limits

    def _on_image(self, camera, msg, compressed):
        self._observe('compressed' if compressed else 'image', msg.header.frame_id,
                      super()._on_image, camera, msg, compressed)

    def _on_instruction(self, msg):
        self._observe('instruction', msg.data[:200], super()._on_instruction, msg)

    def _on_joint_states(self, msg):
        self._observe('joint_states', msg.header.frame_id, super()._on_joint_states, msg)


class ObservedDriverNode(_Recorder, DriverNode):
    """The driver node, with input callbacks, rejections and backend calls recorded."""

    def __init__(self, *args, **kwargs):
        self._init_records()
        super().__init__(*args, **kwargs)
        # (wall time, twist, gripper, base) of backend calls not yet taken by take_sent()
        self._sent = collections.deque(maxlen=100000)
        self._sent_lock = threading.Lock()
        send = self.backend.send_command

        def send_and_record(ee_twist, gripper, base_twist, dt):
            with self._sent_lock:
                self._sent.append((wall_time(), np.array(ee_twist, dtype=float), gripper,
                                   None if base_twist is None else np.array(base_twist, float)))
            return send(ee_twist, gripper, base_twist, dt)

        self.backend.send_command = send_and_record
        # (wall time, positions, velocities, gripper) of joint commands (joint interfaces)
        self._sent_joints = collections.deque(maxlen=100000)
        send_joints = self.backend.send_joint_command

        def send_joints_and_record(positions, velocities, gripper, dt):
            with self._sent_lock:
                self._sent_joints.append((
                    wall_time(), None if positions is None else np.array(positions, float),
                    None if velocities is None else np.array(velocities, float), gripper))
            return send_joints(positions, velocities, gripper, dt)

        self.backend.send_joint_command = send_joints_and_record

    def take_sent_joints(self) -> list:
        """Joint commands since the last call: (wall time, positions, velocities, gripper)."""
        with self._sent_lock:
            sent = list(self._sent_joints)
            self._sent_joints.clear()
        return sent

    def take_sent(self) -> list:
        """Backend calls since the last ``take_sent()``: (wall time, twist, gripper, base)."""
        with self._sent_lock:
            sent = list(self._sent)
            self._sent.clear()
        return sent

    @property
    def limits(self):
        """The :class:`~vla_ros.actions.safety.SafetyLimits` in force."""
        return self._limits

    def _reject(self, why):
        self._note(f'dropping command: {why}')
        super()._reject(why)

    def _on_ee_twist(self, msg):
        self._observe('ee_twist', msg.header.frame_id, super()._on_ee_twist, msg)

    def _on_joint(self, msg):
        self._observe('joint', msg.header.frame_id, super()._on_joint, msg)

    def _on_gripper(self, msg):
        self._observe('gripper', msg.header.frame_id, super()._on_gripper, msg)

    def _on_cmd_vel(self, msg):
        self._observe('cmd_vel', msg.header.frame_id, super()._on_cmd_vel, msg)

    def _on_estop_topic(self, msg):
        self._observe('estop', str(bool(msg.data)), super()._on_estop_topic, msg)


def _stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def _twist(msg) -> np.ndarray:
    t = msg.twist
    return np.array([t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z])


class CommandMonitor(Node):
    """Record and check every command the inference node and the driver send.

    ``command_envelope`` applies to ``cmd/ee_twist`` (the inference node clamps
    velocities; ``watch_commands=False`` leaves the command topics out); the check on
    ``<driver>/applied_twist`` covers acceleration and workspace too. :meth:`audit` puts
    violations into :attr:`unsafe` as ``(topic, stamp, reasons)``.
    """

    def __init__(self, context, command_envelope: Envelope, driver_envelope: Envelope,
                 driver_period: float, driver_name: str = 'vla_driver',
                 name: str = 'vla_reliability_monitor', keep: int = 200000,
                 watch_commands: bool = True, **node_kwargs):
        super().__init__(name, context=context, **node_kwargs)
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from vla_ros_msgs.msg import GripperCommand, PolicyStatus

        from vla_ros.nodes import qos

        self.lock = threading.Lock()
        self.command_envelope = command_envelope
        self._envelope_history = [(-math.inf, command_envelope)]
        self.applied_checker = AppliedTwistChecker(driver_envelope, driver_period)
        self.applied = collections.deque(maxlen=keep)  # (stamp, twist)
        self.commands = collections.deque(maxlen=keep)  # (stamp, received, twist)
        self.poses = collections.deque(maxlen=2000)  # (stamp, xyz)
        self.unsafe: list[tuple[str, float, list[str]]] = []
        self._pending = []  # (topic, stamp, twist, extra) waiting for audit()
        self.counts = collections.Counter()
        self.statuses = collections.deque(maxlen=50)
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.base_limits = (math.inf, math.inf)
        if watch_commands:  # off when the commands are the fuzzed input, not an output
            self.create_subscription(TwistStamped, 'cmd/ee_twist', self._on_command,
                                     MONITOR_QOS)
            self.create_subscription(GripperCommand, 'cmd/gripper', self._on_gripper,
                                     MONITOR_QOS)
            self.create_subscription(TwistStamped, 'cmd_vel', self._on_cmd_vel, MONITOR_QOS)
        self.create_subscription(TwistStamped, f'{driver_name}/applied_twist', self._on_applied,
                                 MONITOR_QOS)
        self.create_subscription(PoseStamped, 'ee_pose', self._on_pose, qos.SENSOR)
        self.create_subscription(PolicyStatus, 'vla/status', self._on_status, MONITOR_QOS)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 50)

    # ------------------------------------------------------------------ limits
    def set_command_envelope(self, envelope: Envelope, when: float) -> None:
        """The inference node's clamp changed at ``when``."""
        with self.lock:
            self._envelope_history.append((when, envelope))
            self.command_envelope = envelope

    def audit(self) -> list:
        """Check every sample received so far; return all unsafe ones found.

        Checks run here rather than on arrival, so limit changes recorded just after they
        took effect are known before the samples around them are judged.
        """
        with self.lock:
            pending, self._pending = self._pending, []
            grace = self.applied_checker.grace
            for topic, stamp, twist, extra in pending:
                if topic == 'cmd/ee_twist':
                    envelope = envelope_near(self._envelope_history, stamp, grace)
                    self._flag(topic, stamp, velocity_violations(twist, envelope))
                elif topic == 'applied_twist':
                    self._flag(topic, stamp, self.applied_checker.check(stamp, twist, extra))
                else:
                    self._flag(topic, stamp, extra)
            return list(self.unsafe)

    # --------------------------------------------------------------- callbacks
    def _flag(self, topic, stamp, reasons):
        if reasons:
            self.unsafe.append((topic, stamp, reasons))

    def _on_command(self, msg):
        stamp, twist = _stamp(msg), _twist(msg)
        with self.lock:
            self.counts['cmd/ee_twist'] += 1
            self.commands.append((stamp, wall_time(), twist))
            self._pending.append(('cmd/ee_twist', stamp, twist, None))

    def _on_gripper(self, msg):
        with self.lock:
            self.counts['cmd/gripper'] += 1
            ok = math.isfinite(msg.position) and 0.0 <= msg.position <= 1.0
            self._pending.append(('cmd/gripper', _stamp(msg), None, [] if ok else [
                f'gripper position {msg.position} outside [0, 1]']))

    def _on_cmd_vel(self, msg):
        twist = _twist(msg)
        with self.lock:
            self.counts['cmd_vel'] += 1
            linear, angular = self.base_limits
            reasons = [] if np.all(np.isfinite(twist)) else [f'non-finite {twist.tolist()}']
            if not reasons and (np.linalg.norm(twist[:2]) > linear + 1e-6
                                or abs(twist[5]) > angular + 1e-6):
                reasons.append(f'base twist {twist.tolist()} over {self.base_limits}')
            self._pending.append(('cmd_vel', _stamp(msg), twist, reasons))

    def _on_pose(self, msg):
        p = msg.pose.position
        with self.lock:
            self.poses.append((_stamp(msg), (p.x, p.y, p.z)))

    def _position_before(self, stamp):
        for pose_stamp, xyz in reversed(self.poses):
            if pose_stamp < stamp:
                return xyz
        return None

    def _on_applied(self, msg):
        stamp, twist = _stamp(msg), _twist(msg)
        with self.lock:
            self.counts['applied_twist'] += 1
            self.applied.append((stamp, twist))
            self._pending.append(('applied_twist', stamp, twist, self._position_before(stamp)))

    def _on_status(self, msg):
        with self.lock:
            self.counts['vla/status'] += 1
            self.statuses.append((wall_time(), msg.state, msg.message, msg.instruction))

    def _on_diagnostics(self, msg):
        with self.lock:
            for status in msg.status:
                self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}
                self.diagnostics[status.name]['message'] = status.message

    # ----------------------------------------------------------------- queries
    def latest_command(self):
        """(stamp, received, twist) of the newest inference command, or None."""
        with self.lock:
            return self.commands[-1] if self.commands else None

    def latest_applied(self):
        """(stamp, twist) of the newest applied twist, or None."""
        with self.lock:
            return self.applied[-1] if self.applied else None

    def applied_since(self, t0: float):
        """Applied (stamp, twist) samples stamped at or after ``t0``."""
        with self.lock:
            return [(s, t) for s, t in self.applied if s >= t0]

    def last_message(self) -> str:
        """Message of the newest PolicyStatus ('' before the first)."""
        with self.lock:
            return self.statuses[-1][2] if self.statuses else ''

    def unsafe_count(self) -> int:
        """Number of unsafe commands seen so far (audits pending samples first)."""
        return len(self.audit())


class SpinningGraph:
    """Nodes spun each by its own single-threaded executor in a background thread."""

    def __init__(self, context):
        self.context = context
        self._spinning = []  # (node, executor, thread)
        self.errors: list[tuple[str, str]] = []  # (node name, exception) of dead spins

    def add(self, node):
        """Spin ``node`` until :meth:`close` (or until a callback raises)."""
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(node)
        thread = threading.Thread(target=self._spin, args=(node, executor),
                                  name=f'spin-{node.get_name()}', daemon=True)
        self._spinning.append((node, executor, thread))
        thread.start()
        return node

    def _spin(self, node, executor):
        try:
            executor.spin()
        except Exception as exc:  # noqa: BLE001 - a callback escaped: the node is dead
            self.errors.append((node.get_name(), f'{type(exc).__name__}: {exc}'))
        finally:
            # Destroy in the spinning thread, as main() does (GL contexts of the sim).
            try:
                node.destroy_node()
            except Exception as exc:  # noqa: BLE001 - reported, not lost in a daemon thread
                self.errors.append((node.get_name(), f'destroy: {exc}'))

    def alive(self, node) -> bool:
        """Whether ``node`` is still being spun."""
        return any(n is node and t.is_alive() for n, _, t in self._spinning)

    def close(self) -> None:
        """Stop every executor and wait for the threads."""
        for _, executor, _ in self._spinning:
            executor.shutdown(timeout_sec=2.0)
        for _, _, thread in self._spinning:
            thread.join(timeout=5.0)
        self._spinning.clear()


def node_command(module: str, name: str, parameters: dict, param_files=(),
                 namespace: str = '', log_level: str = 'warn') -> list[str]:
    """Command line of a node process, built like ``vla-ros launch`` builds it."""
    spec = bringup.NodeSpec(module.rsplit('.', 1)[-1], module, name, tuple(param_files),
                            dict(parameters))
    return [sys.executable, '-m', module, *bringup.ros_args(spec, namespace),
            '--log-level', log_level]


def rss_mb(pid: int) -> float:
    """Resident set size of a process [MiB] (NaN if it is gone)."""
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return math.nan


class NodeProcess:
    """One node in a child process of its own (own process group), restartable."""

    def __init__(self, command: list[str], env: dict, log_path=None):
        """``env`` must carry the isolated ROS_DOMAIN_ID and localhost discovery."""
        self.command = list(command)
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> NodeProcess:
        """Start (or restart) the process."""
        out = open(self.log_path, 'a') if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(self.command, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if self.log_path:
                out.close()
        self.starts += 1
        return self

    @property
    def pid(self) -> int | None:
        """Process id of the running process."""
        return None if self.proc is None else self.proc.pid

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL) -> float:
        """Send ``sig`` (SIGKILL by default) and return the wall time it was sent."""
        sent = wall_time()
        if self.alive():
            os.kill(self.proc.pid, sig)
        if sig == signal.SIGKILL and self.proc is not None:
            self.proc.wait(10)
        return sent

    def rss_mb(self) -> float:
        """Resident set size [MiB]."""
        return rss_mb(self.proc.pid) if self.alive() else math.nan

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT (clean shutdown), then SIGKILL after ``timeout``; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode
