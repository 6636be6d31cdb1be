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
multi-threaded process.
"""

import json
import threading
import unicodedata

import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TwistStamped
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, String
from vla_ros_msgs.msg import ActionChunk, GripperCommand, PolicyStatus

from vla_ros.actions.safety import SafetyLimits
from vla_ros.nodes import qos
from vla_ros.nodes.image_conversion import (
    ImageConversionError,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
)
from vla_ros.nodes.messages import (
    base_twist_msg,
    chunk_msg,
    gripper_msg,
    status_msg,
    to_seconds,
    twist_msg,
)
from vla_ros.nodes.spin import spin_node
from vla_ros.policies.registry import available_policies, policy_info
from vla_ros.runtime.commands import shape_command
from vla_ros.runtime.engine import SWAP_BEHAVIORS, EngineConfig, InferenceEngine
from vla_ros.runtime.policy_process import load as load_policy
from vla_ros.runtime.process_worker import ProcessInferenceWorker
from vla_ros.runtime.proprio import ProprioLayout
from vla_ros.runtime.remote_policy import RemotePolicy, SpareProcess
from vla_ros.runtime.worker import InferenceWorker

STRATEGIES = ('receding_horizon', 'temporal_ensemble', 'latency_aware')
# Changing any of these reloads the policy in the background.
POLICY_PARAMS = ('policy', 'policy_params', 'model_path', 'device', 'dtype', 'unnorm_key')
# Families whose policies are learned models: without a checkpoint they act at random.
LEARNED_FAMILIES = ('rt1', 'openvla', 'octo', 'pi0', 'rt2')
ENGINE_PARAMS = ('chunk_strategy', 'execute_steps', 'ensemble_coefficient',
                 'merge_new_weight', 'low_queue_depth', 'stale_image_timeout',
                 'inference_timeout', 'swap_behavior', 'chunk_timing')


def _float_range(lo, hi):
    return [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]


def _int_range(lo, hi):
    return [IntegerRange(from_value=lo, to_value=hi, step=1)]


def parse_policy_params(text: str) -> dict:
    """Parse the ``policy_params`` parameter (a JSON or YAML mapping)."""
    if not text.strip():
        return {}
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f'policy_params is not valid YAML/JSON: {exc}') from exc
    if not isinstance(value, dict):
        raise ValueError(f'policy_params must be a mapping, got {type(value).__name__}')
    return value


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
        self._declare_parameters()
        p = self._params()
        self._engine = InferenceEngine(self._engine_config(p))
        self._proprio_layout = ProprioLayout(
            tuple(j for j in p['proprio_joints'] if j),
            tuple(j for j in p['gripper_joints'] if j), p['gripper_open_position'])
        self._ee_frame = p['ee_frame']
        self._base_frame = p['base_frame']
        self._limits = self._command_limits(p)
        self._load_lock = threading.Lock()
        self._load_generation = 0
        self._input_error = ''
        self._process_mode = bool(p['policy_process'])
        self._remotes: set[RemotePolicy] = set()  # every policy process started, to close
        self._spares = SpareProcess()  # torch imported ahead of the next swap or restart
        self._starting: RemotePolicy | None = None  # the policy process loading now
        self._shutting_down = False

        sensors = MutuallyExclusiveCallbackGroup()
        control = MutuallyExclusiveCallbackGroup()
        status = MutuallyExclusiveCallbackGroup()
        self._ee_pub = self.create_publisher(TwistStamped, 'cmd/ee_twist', qos.COMMAND)
        self._gripper_pub = self.create_publisher(GripperCommand, 'cmd/gripper', qos.COMMAND)
        self._base_pub = self.create_publisher(TwistStamped, 'cmd_vel', qos.COMMAND)
        self._terminate_pub = self.create_publisher(Bool, 'cmd/terminate', qos.COMMAND)
        self._chunk_pub = self.create_publisher(ActionChunk, 'vla/action_chunk', qos.STATUS)
        self._status_pub = self.create_publisher(PolicyStatus, 'vla/status', qos.STATUS)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)

        for camera in p['cameras']:
            if p['image_transport'] == 'compressed':
                self.create_subscription(
                    CompressedImage, f'camera/{camera}/image_raw/compressed',
                    lambda m, c=camera: self._on_image(c, m, compressed=True),
                    qos.SENSOR, callback_group=sensors)
            else:
                self.create_subscription(
                    Image, f'camera/{camera}/image_raw',
                    lambda m, c=camera: self._on_image(c, m, compressed=False),
                    qos.SENSOR, callback_group=sensors)
        self.create_subscription(String, 'instruction', self._on_instruction,
                                 qos.INSTRUCTION, callback_group=sensors)
        if p['use_joint_states']:
            self.create_subscription(JointState, 'joint_states', self._on_joint_states,
                                     qos.SENSOR, callback_group=sensors)

        if self._process_mode:
            self._worker = ProcessInferenceWorker(self._engine, self._now, self._publish_chunk,
                                                  on_event=self._log_event)
        else:
            self._worker = InferenceWorker(self._engine, self._now, self._publish_chunk)
        self._worker.start()
        self.create_timer(1.0 / p['control_rate_hz'], self._on_control_tick,
                          callback_group=control)
        self.create_timer(1.0 / p['status_rate_hz'], self._on_status_tick,
                          callback_group=status)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=status)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._start_policy_load(p)

    # ------------------------------------------------------------ parameters
    def _declare_parameters(self):
        def d(text, **kw):
            return ParameterDescriptor(description=text, **kw)

        self.declare_parameter('policy', 'scripted', d(
            'registry name of the policy (vla-ros policies lists them); changing it '
            'loads the new policy in the background'))
        self.declare_parameter('policy_params', '{}', d(
            'extra constructor arguments of the policy, a JSON/YAML mapping'))
        self.declare_parameter('model_path', '', d('checkpoint directory or file'))
        self.declare_parameter('device', 'cpu', d('torch device, e.g. cpu or cuda:0'))
        self.declare_parameter('dtype', 'float32', d('float32, bfloat16 or float16'))
        self.declare_parameter('unnorm_key', '', d(
            'dataset key of the normalization statistics (mandatory if several)'))
        self.declare_parameter('chunk_strategy', 'receding_horizon', d(
            f'how chunks become per-tick actions: {", ".join(STRATEGIES)}'))
        self.declare_parameter('execute_steps', 4, d(
            'receding horizon: actions executed from a chunk before the newest is used',
            integer_range=_int_range(1, 1000)))
        self.declare_parameter('ensemble_coefficient', 0.01, d(
            'temporal ensembling: weight exp(-m*i), i = 0 for the oldest prediction',
            floating_point_range=_float_range(0.0, 10.0)))
        self.declare_parameter('merge_new_weight', 0.7, d(
            'latency-aware merging: weight of the new chunk on overlapping steps',
            floating_point_range=_float_range(0.0, 1.0)))
        self.declare_parameter('control_rate_hz', 10.0, d(
            'command publishing rate', read_only=True,
            floating_point_range=_float_range(1.0, 200.0)))
        self.declare_parameter('inference_rate_hz', 5.0, d(
            'policy rate (0 = only when the buffer runs low)', read_only=True,
            floating_point_range=_float_range(0.0, 30.0)))
        self.declare_parameter('low_queue_depth', 2, d(
            'run the policy early when at most this many actions remain',
            integer_range=_int_range(0, 1000)))
        self.declare_parameter('stale_image_timeout', 1.0, d(
            'hold when the newest image is older than this (s)',
            floating_point_range=_float_range(0.01, 60.0)))
        self.declare_parameter('inference_timeout', 2.0, d(
            'report a policy running longer than this as past its deadline (s)',
            floating_point_range=_float_range(0.01, 600.0)))
        self.declare_parameter('chunk_timing', 'observation', d(
            'observation: action i is for the frame stamp + i * period, late actions are '
            'skipped; arrival: a chunk starts when it arrives (single-step policies)'))
        self.declare_parameter('swap_behavior', 'hold', d(
            'while a new policy loads: hold (zero command) or keep (old policy runs)'))
        self.declare_parameter('cameras', ['front'], d(
            'camera names; topics are camera/<name>/image_raw[/compressed]', read_only=True))
        self.declare_parameter('image_transport', 'raw', d(
            'raw (sensor_msgs/Image) or compressed (CompressedImage)', read_only=True))
        self.declare_parameter('use_joint_states', False, d(
            'subscribe to joint_states for proprioception', read_only=True))
        self.declare_parameter('proprio_joints', [''], d(
            'joint_states names forming the proprio vector, in order (empty: all positions '
            'as published)', read_only=True))
        self.declare_parameter('gripper_joints', [''], d(
            'finger joints averaged into a 0..1 opening appended to the proprio vector',
            read_only=True))
        self.declare_parameter('gripper_open_position', 0.04, d(
            'finger position of a fully open gripper', read_only=True,
            floating_point_range=_float_range(1e-6, 10.0)))
        self.declare_parameter('ee_frame', 'base_link', d(
            'frame of the end-effector twist commands'))
        self.declare_parameter('base_frame', 'base_footprint', d(
            'frame of the base velocity commands'))
        self.declare_parameter('max_linear_velocity', 0.25, d(
            'clamp of the commanded end-effector speed (m/s); the driver enforces its own',
            floating_point_range=_float_range(0.001, 5.0)))
        self.declare_parameter('max_angular_velocity', 1.0, d(
            'clamp of the commanded end-effector angular speed (rad/s)',
            floating_point_range=_float_range(0.001, 20.0)))
        self.declare_parameter('max_base_linear_velocity', 0.5, d(
            'clamp of the commanded base speed (m/s)',
            floating_point_range=_float_range(0.001, 5.0)))
        self.declare_parameter('max_base_angular_velocity', 1.0, d(
            'clamp of the commanded base yaw rate (rad/s)',
            floating_point_range=_float_range(0.001, 20.0)))
        self.declare_parameter('torch_threads', 1, d(
            'intra-op threads for torch policies (0 = torch default). One is fastest for '
            'small models on a busy CPU: the control loop and ROS need cores too',
            integer_range=_int_range(0, 256)))
        self.declare_parameter('status_rate_hz', 5.0, d(
            'PolicyStatus rate', read_only=True, floating_point_range=_float_range(0.1, 100.0)))
        self.declare_parameter('policy_process', True, d(
            'load and run the policy in its own process (frames via shared memory; a crash '
            'or hang is a hold and a restart); false: a thread of the node process',
            read_only=True))

    def _params(self, overrides=None) -> dict:
        values = {name: self.get_parameter(name).value
                  for name in self._parameters}
        for param in overrides or []:
            values[param.name] = param.value
        return values

    @staticmethod
    def _command_limits(p: dict) -> SafetyLimits:
        # A first clamp at the source; the driver applies the full limits again.
        return SafetyLimits(max_linear_velocity=p['max_linear_velocity'],
                            max_angular_velocity=p['max_angular_velocity'],
                            max_base_linear_velocity=p['max_base_linear_velocity'],
                            max_base_angular_velocity=p['max_base_angular_velocity'])

    @staticmethod
    def _engine_config(p: dict) -> EngineConfig:
        strategy_params = {
            'receding_horizon': {'execute_steps': p['execute_steps']},
            'temporal_ensemble': {'m': p['ensemble_coefficient']},
            'latency_aware': {'new_weight': p['merge_new_weight']},
        }.get(p['chunk_strategy'], {})
        return EngineConfig(
            control_rate_hz=p['control_rate_hz'], inference_rate_hz=p['inference_rate_hz'],
            low_queue_depth=p['low_queue_depth'], stale_image_timeout=p['stale_image_timeout'],
            inference_timeout=p['inference_timeout'], chunk_strategy=p['chunk_strategy'],
            strategy_params=strategy_params, swap_behavior=p['swap_behavior'],
            chunk_timing=p['chunk_timing'])

    def _validate_parameters(self, params) -> SetParametersResult:
        p = self._params(params)
        try:
            if p['policy'] not in available_policies():
                raise ValueError(f'unknown policy {p["policy"]!r}; available: '
                                 f'{", ".join(available_policies())}')
            parse_policy_params(p['policy_params'])
            if p['chunk_strategy'] not in STRATEGIES:
                raise ValueError(f'chunk_strategy must be one of {STRATEGIES}')
            if p['swap_behavior'] not in SWAP_BEHAVIORS:
                raise ValueError(f'swap_behavior must be one of {SWAP_BEHAVIORS}')
            if p['dtype'] not in ('float32', 'bfloat16', 'float16'):
                raise ValueError('dtype must be float32, bfloat16 or float16')
            self._engine_config(p)
            self._command_limits(p)
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params) -> None:
        names = {param.name for param in params}
        p = self._params()
        self._ee_frame, self._base_frame = p['ee_frame'], p['base_frame']
        self._limits = self._command_limits(p)
        if names & set(ENGINE_PARAMS):
            self._engine.reconfigure(self._engine_config(p))
        if names & set(POLICY_PARAMS):
            self._start_policy_load(p)

    # ---------------------------------------------------------- policy swap
    def _start_policy_load(self, p: dict) -> None:
        """Load in a thread; the engine switches atomically when it is ready."""
        name = p['policy']
        config = parse_policy_params(p['policy_params'])
        for key in ('model_path', 'unnorm_key'):
            if p[key]:
                config[key] = p[key]
        if p['model_path']:
            config.setdefault('device', p['device'])
            config.setdefault('dtype', p['dtype'])
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
                self._engine.finish_policy_load(name, policy, error, note=note)
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
            policy = RemotePolicy(name, config, torch_threads, spares=self._spares)
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

    def _on_image(self, camera: str, msg, compressed: bool) -> None:
        try:
            rgb = compressed_msg_to_rgb(msg) if compressed else image_msg_to_rgb(msg)
        except ImageConversionError as exc:
            self._input_error = f'camera {camera!r}: {exc}'
            self._engine.report_input_error(self._input_error, self._now())
            self.get_logger().warning(self._input_error, throttle_duration_sec=2.0)
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
        retriever = getattr(self._engine.policy, 'retriever', None)
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
            self._engine.set_proprio(self._proprio_layout.vector(list(msg.name),
                                                                 msg.position))
        except ValueError as exc:
            self._engine.report_input_error(f'joint_states: {exc}', self._now())

    def _on_control_tick(self) -> None:
        now = self._now()
        out = shape_command(self._engine.command_at(now), self._limits,
                            self._engine.last_gripper)
        self._ee_pub.publish(twist_msg(out.ee_twist, now, self._ee_frame))
        if out.gripper is not None:
            self._gripper_pub.publish(gripper_msg(out.gripper, now, self._ee_frame))
        if out.base_twist is not None:
            self._base_pub.publish(base_twist_msg(out.base_twist, now, self._base_frame))
        if out.terminate:
            self._terminate_pub.publish(Bool(data=True))
        if self._engine.inference_due(now):
            self._worker.wake()

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
                 3: DiagnosticStatus.WARN, 4: DiagnosticStatus.ERROR}[int(s.state)]
        values = {'policy': s.policy, 'state': s.state.name,
                  'last_inference_latency_s': f'{s.last_inference_latency:.4f}',
                  'queue_depth': str(s.queue_depth),
                  'observation_age_s': f'{s.observation_age:.3f}',
                  'inferences': str(s.inferences), 'errors': str(s.errors),
                  'control_ticks': str(s.ticks), 'hold_ticks': str(s.hold_ticks)}
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
        self._worker.stop()
        self._spares.close()
        for remote in remotes:
            remote.close()
        super().destroy_node()


def untrained_warning(name: str, config: dict) -> str:
    """A loud note when a learned policy starts without a checkpoint ('' otherwise)."""
    try:
        family = policy_info(name).family
    except ValueError:
        return ''
    if family in LEARNED_FAMILIES and not config.get('model_path'):
        return (f'UNTRAINED POLICY: {name!r} has no model_path, so it runs randomly '
                f'initialised weights and its actions are meaningless; set model_path to a '
                f'checkpoint')
    return ''


def main(args=None):
    """Entry point of ``ros2 run vla_ros inference_node``."""
    spin_node(InferenceNode, args)


if __name__ == '__main__':
    main()
