"""The inference node: cameras + instruction in, a safe command on every control tick out.

Thin ROS adapter over :class:`vla_ros.runtime.engine.InferenceEngine`. By default
(``policy_process: true``) the policy loads and runs in its own process
(:class:`vla_ros.runtime.remote_policy.RemotePolicy`): model code never holds this
interpreter's lock, so the control tick cannot wait for it, and a crash or hang of the
model is a hold and a restart, not a dead node. ``policy_process: false`` runs the policy
in an :class:`InferenceWorker` thread of this process, as before (fault-injection tests
use it to reach the policy object). Every executor callback is short (image conversion
~1 ms, the control tick O(1)) and a single-threaded executor serves them: rclpy's
multi-threaded executor adds more scheduling jitter than it saves here. Callbacks still
sit in separate callback groups so the node stays correct when composed into a
multi-threaded process. The control tick itself runs on its own deadline thread by
default (:mod:`vla_ros.nodes.control_scheduling`), outside the executor.
"""

import json
import os
import threading
import time
import unicodedata

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TwistStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, String
from vla_ros_msgs.msg import ActionChunk, GripperCommand, PolicyStatus

from vla_ros.inference_config import (
    ENGINE_PARAMS,
    POLICY_PARAMS,
    command_limits,
    engine_config,
    parse_policy_params,
    policy_arguments,
)
from vla_ros.nodes import qos
from vla_ros.nodes.camera_intake import CameraIntake
from vla_ros.nodes.control_relay import ControlRelay
from vla_ros.nodes.control_scheduling import start_control_tick, stop_control_tick
from vla_ros.nodes.declare import declare_parameters
from vla_ros.nodes.image_cdr import read_image
from vla_ros.nodes.image_conversion import (
    ImageConversionError,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
)
from vla_ros.nodes.messages import (
    base_twist_msg,
    chunk_msg,
    gripper_msg,
    joint_command_msg,
    status_msg,
    to_seconds,
    twist_msg,
)
from vla_ros.nodes.spin import spin_node
from vla_ros.parameters import INFERENCE_PARAMETERS
from vla_ros.policies.registry import available_policies, policy_info
from vla_ros.runtime.commands import shape_command
from vla_ros.runtime.engine import InferenceEngine
from vla_ros.runtime.joint_commands import joint_config_from_params
from vla_ros.runtime.policy_process import NICENESS_ENV
from vla_ros.runtime.policy_process import load as load_policy
from vla_ros.runtime.process_worker import ProcessInferenceWorker
from vla_ros.runtime.proprio import ProprioLayout
from vla_ros.runtime.remote_policy import RemotePolicy, SpareProcess
from vla_ros.runtime.worker import InferenceWorker

__all__ = ['ENGINE_PARAMS', 'POLICY_PARAMS', 'InferenceNode',
           'instruction_problem', 'main', 'parse_policy_params', 'untrained_warning']

MAX_INSTRUCTION_CHARS = 2000


def instruction_problem(text: str) -> str:
    """Why an instruction is refused ('' if it is usable)."""
    if not text.strip():
        return 'empty instruction'
    if len(text) > MAX_INSTRUCTION_CHARS:
        return f'instruction too long ({len(text)} > {MAX_INSTRUCTION_CHARS} characters)'
    # rclpy decodes invalid UTF-8 with U+FFFD; control characters are no language either.
    if '\ufffd' in text:
        return 'instruction is not valid UTF-8 (decoded with replacement characters)'
    if any(unicodedata.category(c) == 'Cc' and c not in '\t\n\r' for c in text):
        return 'instruction contains control characters'
    return ''


class InferenceNode(Node):
    """Run a VLA policy at a fixed rate and publish commands at the control rate."""

    def __init__(self, context=None, **kwargs):
        super().__init__(kwargs.pop('node_name', 'vla_inference'), context=context, **kwargs)
        declare_parameters(self, INFERENCE_PARAMETERS)
        p = self._params()
        # A joint-space robot (docs/joint_space.md) gets cmd/joint instead of cmd/ee_twist;
        # a configuration that does not fit together stops the node here, with the reason.
        self._joints = joint_config_from_params(p)
        self._engine = InferenceEngine(engine_config(p), joints=self._joints)
        self._use_proprio = bool(p['use_joint_states'])
        self._proprio_layout = ProprioLayout(
            tuple(j for j in p['proprio_joints'] if j),
            tuple(j for j in p['gripper_joints'] if j), p['gripper_open_position'])
        self._ee_frame = p['ee_frame']
        self._base_frame = p['base_frame']
        self._limits = command_limits(p)
        self._load_lock = threading.Lock()
        self._load_generation = 0
        self._input_error = ''
        self._process_mode = bool(p['policy_process'])
        self._remotes: set[RemotePolicy] = set()  # every policy process started, to close
        # The policy processes' environment: their inference niceness (policy_niceness).
        self._policy_env = (dict(os.environ, **{NICENESS_ENV: str(p['policy_niceness'])})
                            if p['policy_niceness'] > 0 else None)
        self._spares = SpareProcess()  # torch imported ahead of the next swap or restart
        self._starting: RemotePolicy | None = None  # the policy process loading now
        self._shutting_down = False

        sensors = MutuallyExclusiveCallbackGroup()
        control = MutuallyExclusiveCallbackGroup()
        status = MutuallyExclusiveCallbackGroup()
        self._ee_pub = self._joint_pub = None
        if self._joints is None:
            self._ee_pub = self.create_publisher(TwistStamped, 'cmd/ee_twist', qos.COMMAND)
        else:
            self._joint_pub = self.create_publisher(JointState, 'cmd/joint', qos.COMMAND)
        self._gripper_pub = self.create_publisher(GripperCommand, 'cmd/gripper', qos.COMMAND)
        self._base_pub = self.create_publisher(TwistStamped, 'cmd_vel', qos.COMMAND)
        self._terminate_pub = self.create_publisher(Bool, 'cmd/terminate', qos.COMMAND)
        self._chunk_pub = self.create_publisher(ActionChunk, 'vla/action_chunk', qos.STATUS)
        self._status_pub = self.create_publisher(PolicyStatus, 'vla/status', qos.STATUS)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)

        # Frames start every inference: taken on a thread of their own (camera_intake).
        self._intake = CameraIntake(self, p['node_thread_priority'], on_error=lambda exc:
                                    self.get_logger().error(
                                        f'camera intake: {type(exc).__name__}: {exc}',
                                        throttle_duration_sec=2.0))
        for camera in p['cameras']:
            if p['image_transport'] == 'compressed':
                self._intake.subscribe(
                    CompressedImage, f'camera/{camera}/image_raw/compressed',
                    lambda m, c=camera: self._on_image(c, m, compressed=True), qos.SENSOR)
            else:  # raw: the frame's CDR bytes, read by image_cdr (no Python message)
                self._intake.subscribe(
                    Image, f'camera/{camera}/image_raw',
                    lambda data, c=camera: self._on_raw_image(c, data), qos.SENSOR, raw=True)
        self.create_subscription(String, 'instruction', self._on_instruction,
                                 qos.INSTRUCTION, callback_group=sensors)
        if p['use_joint_states'] or self._joints is not None:
            self.create_subscription(JointState, 'joint_states', self._on_joint_states,
                                     qos.SENSOR, callback_group=sensors)

        # Read by spin_node for the executor thread; the worker thread sets its own. Only
        # in process mode: in thread mode the worker runs the model itself.
        self.executor_priority = p['node_thread_priority']
        if self._process_mode:
            self._worker = ProcessInferenceWorker(self._engine, self._now, self._publish_chunk,
                                                  on_event=self._log_event,
                                                  priority=p['node_thread_priority'])
        else:
            self._worker = InferenceWorker(self._engine, self._now, self._publish_chunk)
        self._worker.start()
        self._intake.start()
        relay = p['control_process'] and p['control_thread'] and \
            not self.get_parameter('use_sim_time').value
        self._relay: ControlRelay | None = None
        self._control_loop = start_control_tick(
            self, p['control_rate_hz'], self._on_control_tick, p['control_thread'],
            p['control_thread_priority'], callback_group=control,
            lead=p['control_process_lead_s'] if relay else 0.0)
        if relay and self._control_loop is not None:
            primary = self._ee_pub if self._ee_pub is not None else self._joint_pub
            self._relay = ControlRelay(
                self, [primary, self._gripper_pub, self._base_pub, self._terminate_pub],
                1.0 / p['control_rate_hz'], self._control_loop.start_time,
                p['control_thread_priority'])
            self.create_timer(1.0, self._relay.supervise, callback_group=status)
        self.create_timer(1.0 / p['status_rate_hz'], self._on_status_tick,
                          callback_group=status)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=status)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._start_policy_load(p)

    # ------------------------------------------------------------ parameters
    def _params(self, overrides=None) -> dict:
        values = {name: self.get_parameter(name).value
                  for name in self._parameters}
        for param in overrides or []:
            values[param.name] = param.value
        return values

    def _validate_parameters(self, params) -> SetParametersResult:
        p = self._params(params)
        try:
            if p['policy'] not in available_policies():
                raise ValueError(f'unknown policy {p["policy"]!r}; available: '
                                 f'{", ".join(available_policies())}')
            parse_policy_params(p['policy_params'])
            for name in ('chunk_strategy', 'swap_behavior', 'chunk_timing', 'gripper_mode',
                         'dtype'):
                allowed = INFERENCE_PARAMETERS[name].allowed()
                if p[name] not in allowed:
                    raise ValueError(f'{name} must be one of {allowed}')
            engine_config(p)
            command_limits(p)
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params) -> None:
        names = {param.name for param in params}
        p = self._params()
        self._ee_frame, self._base_frame = p['ee_frame'], p['base_frame']
        self._limits = command_limits(p)
        if names & set(ENGINE_PARAMS):
            self._engine.reconfigure(engine_config(p))
        if names & set(POLICY_PARAMS):
            self._start_policy_load(p)

    # ---------------------------------------------------------- policy swap
    def _start_policy_load(self, p: dict) -> None:
        """Load in a thread; the engine switches atomically when it is ready."""
        name, config = policy_arguments(p)
        with self._load_lock:
            self._load_generation += 1
            generation = self._load_generation
            # A newer request supersedes a load in progress: stop it now rather than let
            # it finish (seconds of CPU) only to be discarded.
            superseded, self._starting = self._starting, None
            if superseded is not None and superseded is not self._engine.policy:
                threading.Thread(target=superseded.close, daemon=True).start()
        self._engine.begin_policy_load(name)
        self.get_logger().info(f'loading policy {name!r} with {json.dumps(config)}'
                               + (' in its own process' if self._process_mode else ''))
        note = untrained_warning(name, config)
        if note:
            self.get_logger().warning(note)

        def load():
            policy, error = None, ''
            try:
                policy = self._make_policy(name, config, p['torch_threads'], generation)
            except Exception as exc:  # noqa: BLE001 - report any load failure, keep old policy
                error = f'{type(exc).__name__}: {exc}'
            with self._load_lock:
                if generation != self._load_generation or self._shutting_down:
                    if isinstance(policy, RemotePolicy):
                        policy.close()  # a newer request superseded this one
                        self._remotes.discard(policy)
                    return
                old = self._engine.policy
                refused = self._engine.finish_policy_load(name, policy, error, note=note)
                if refused and policy is not None:
                    # Loaded, but its actions do not fit this robot (e.g. joint names).
                    if isinstance(policy, RemotePolicy):
                        policy.close_when_idle()
                        self._remotes.discard(policy)
                    policy, error = None, refused
            if policy is None:
                self.get_logger().error(f'failed to load policy {name!r}: {error}')
                return
            if isinstance(old, RemotePolicy) and old is not policy:
                old.close_when_idle()  # the switch is done: the old process may go
                with self._load_lock:
                    self._remotes.discard(old)
            warm = (f' (warm-up inference {policy.warmup_seconds * 1e3:.0f} ms)'
                    if isinstance(policy, RemotePolicy) and policy.warmup_seconds else '')
            self.get_logger().info(f'policy {name!r} active{warm}')
            self._worker.wake()

        threading.Thread(target=load, name=f'load-{name}', daemon=True).start()

    def _make_policy(self, name: str, config: dict, torch_threads: int, generation: int):
        if self._process_mode:
            policy = RemotePolicy(name, config, torch_threads, spares=self._spares,
                                  env=self._policy_env)
            with self._load_lock:
                if self._shutting_down or generation != self._load_generation:
                    raise RuntimeError('superseded')  # not reported: see load()
                self._remotes.add(policy)
                self._starting = policy
            try:
                policy.start()
            except BaseException:
                with self._load_lock:
                    self._remotes.discard(policy)
                raise
            finally:
                with self._load_lock:
                    if self._starting is policy:
                        self._starting = None
            return policy
        # The same load as in a policy process: warm-up inference before READY.
        policy, _ = load_policy(name, config, torch_threads, warmup=True)
        return policy

    def _log_event(self, level: str, text: str) -> None:
        # One call site per severity: rclpy refuses a severity change at the same line.
        if level == 'info':
            self.get_logger().info(text)
        elif level == 'warn':
            self.get_logger().warning(text)
        else:
            self.get_logger().error(text)

    # ------------------------------------------------------------ callbacks
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_raw_image(self, camera: str, data: bytes) -> None:
        try:
            msg = read_image(data)
        except ImageConversionError as exc:
            self._reject_image(camera, exc)
            return
        self._on_image(camera, msg, compressed=False)

    def _reject_image(self, camera: str, exc: Exception) -> None:
        self._input_error = f'camera {camera!r}: {exc}'
        self._engine.report_input_error(self._input_error, self._now())
        self.get_logger().warning(self._input_error, throttle_duration_sec=2.0)

    def _on_image(self, camera: str, msg, compressed: bool) -> None:
        try:
            rgb = compressed_msg_to_rgb(msg) if compressed else image_msg_to_rgb(msg)
        except ImageConversionError as exc:
            self._reject_image(camera, exc)
            return
        stamp = to_seconds(msg.header.stamp)
        self._engine.set_image(camera, rgb, stamp if stamp > 0 else self._now())
        self._worker.wake()

    def _on_instruction(self, msg: String) -> None:
        text = msg.data
        reason = instruction_problem(text)
        if reason:
            self._engine.report_input_error(f'rejected {reason}', self._now())
            self.get_logger().warning(f'rejected {reason}; keeping the current one')
            return
        self.get_logger().info(f'instruction: {text!r}')
        policy = self._engine.policy
        retriever = policy.retriever if policy is not None else None
        if retriever is not None:  # say what the policy will actually be asked to do
            try:
                match = retriever.resolve(text)
                if not match.exact:
                    self.get_logger().info(f'policy will follow its nearest known instruction '
                                           f'{match.instruction!r} (similarity '
                                           f'{match.similarity:.2f})')
            except Exception as exc:  # noqa: BLE001 - logging only; inference reports errors
                self.get_logger().warning(f'instruction retrieval failed: {exc}')
        self._engine.set_instruction(text)
        self._worker.wake()

    def _on_joint_states(self, msg: JointState) -> None:
        try:
            if msg.name and len(msg.name) != len(msg.position):
                raise ValueError(f'{len(msg.name)} names but {len(msg.position)} positions')
            if self._joints is not None:  # joint holds and delta actions need them by name
                self._engine.set_joint_positions(list(msg.name), msg.position)
            if self._use_proprio:
                self._engine.set_proprio(self._proprio_layout.vector(list(msg.name),
                                                                     msg.position))
        except ValueError as exc:
            self._engine.report_input_error(f'joint_states: {exc}', self._now())

    def _on_control_tick(self, deadline: float | None) -> None:
        """The command for ``deadline`` (monotonic; None: now), published at it.

        With the control process the tick runs ``control_process_lead_s`` ahead: the
        command is computed for the deadline and handed over, and the process publishes
        it on time; until it has taken over (or after it failed) the node sleeps to the
        deadline and publishes it itself.
        """
        ahead = 0.0 if deadline is None else deadline - time.monotonic()
        now = self._now() + max(ahead, 0.0)
        messages = self._command_messages(now)
        relay, loop = self._relay, self._control_loop
        relayed = False
        if relay is not None and deadline is not None:
            relayed = relay.dispatch(
                round((deadline - loop.start_time) / loop.schedule.period), messages)
        if not relayed:
            if deadline is not None:
                time.sleep(max(0.0, deadline - time.monotonic()))
            for publisher, msg in messages:
                publisher.publish(msg)
        if self._engine.inference_due(now):
            self._worker.wake()

    def _command_messages(self, now: float) -> list:
        """The engine's command for ``now`` as [(publisher, message)]."""
        out = shape_command(self._engine.command_at(now), self._limits,
                            self._engine.last_gripper)
        messages = []
        if self._ee_pub is not None:
            messages.append((self._ee_pub, twist_msg(out.ee_twist, now, self._ee_frame)))
        elif out.joint_names:  # a position hold without measured joints publishes nothing
            messages.append((self._joint_pub, joint_command_msg(
                out.joint_names, out.joint_positions, out.joint_velocities, now)))
        if out.gripper is not None:
            messages.append((self._gripper_pub, gripper_msg(out.gripper, now, self._ee_frame)))
        if out.base_twist is not None:
            messages.append((self._base_pub, base_twist_msg(out.base_twist, now,
                                                            self._base_frame)))
        if out.terminate:
            messages.append((self._terminate_pub, Bool(data=True)))
        return messages

    def _publish_chunk(self, result) -> None:
        # The worker thread may finish a chunk while Ctrl-C shuts the context down.
        if self._shutting_down or not self.context.ok():
            return
        try:
            self._chunk_pub.publish(chunk_msg(result))
        except Exception:  # noqa: BLE001 - rclpy raises several types once shut down
            if self.context.ok() and not self._shutting_down:
                raise

    def _on_status_tick(self) -> None:
        self._status_pub.publish(status_msg(self._engine.status(self._now()), self._now()))

    def _publish_diagnostics(self) -> None:
        s = self._engine.status(self._now())
        level = {0: DiagnosticStatus.WARN, 1: DiagnosticStatus.OK, 2: DiagnosticStatus.OK,
                 3: DiagnosticStatus.WARN, 4: DiagnosticStatus.ERROR,
                 5: DiagnosticStatus.OK}[int(s.state)]
        values = {'policy': s.policy, 'state': s.state.name,
                  'last_inference_latency_s': f'{s.last_inference_latency:.4f}',
                  'queue_depth': str(s.queue_depth),
                  'observation_age_s': f'{s.observation_age:.3f}',
                  'inferences': str(s.inferences), 'errors': str(s.errors),
                  'control_ticks': str(s.ticks), 'hold_ticks': str(s.hold_ticks),
                  'command_publisher': self._relay.describe() if self._relay else 'node'}
        status = DiagnosticStatus(
            level=level, name=f'{self.get_fully_qualified_name()}: inference',
            message=s.message[:500], hardware_id='vla_ros',
            values=[KeyValue(key=k, value=v) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)

    def destroy_node(self):
        """Stop the worker and the policy processes before the node goes away."""
        with self._load_lock:
            self._shutting_down = True
            remotes = list(self._remotes)
        self._intake.stop()
        stop_control_tick(self._control_loop)
        if self._relay is not None:
            self._relay.close()
        self._worker.stop()
        self._spares.close()
        for remote in remotes:
            remote.close()
        super().destroy_node()


def untrained_warning(name: str, config: dict) -> str:
    """A loud note when a learned policy starts without a checkpoint ('' otherwise)."""
    try:
        learned = policy_info(name).learned
    except ValueError:
        return ''
    if learned and not config.get('model_path'):
        return (f'UNTRAINED POLICY: {name!r} has no model_path, so it runs randomly '
                f'initialised weights and its actions are meaningless; set model_path to a '
                f'checkpoint')
    return ''


def main(args=None):
    """Entry point of ``ros2 run vla_ros inference_node``."""
    from vla_ros.memory import keep_freed_memory

    keep_freed_memory()
    spin_node(InferenceNode, args)


if __name__ == '__main__':
    main()
