"""The one parameter schema of vla_ros's nodes: names, types, defaults, ranges, meanings.

Pure (no rclpy): the nodes declare their parameters from it (``vla_ros.nodes.declare``),
``vla_ros.bringup`` converts and validates launch strings with it before any node starts,
``vla-ros launch --help`` prints it, ``bag regress`` reads its defaults, and the safety
defaults of :class:`vla_ros.actions.safety.SafetyLimits` come from it. Every default
exists here once; parameter files (``config/robots``, ``config/policies``) only hold
values that differ from it.

Sections: :data:`INFERENCE` (``vla_inference``), :data:`DRIVER` (``vla_driver``, every
backend) and :data:`BACKENDS` (parameters one robot backend reads; today the MuJoCo
simulator's seed, task and camera image size).

Choices that another module defines (chunk strategies, policy names, ...) are read from
that module when needed, so a new strategy or policy needs no edit here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

INFERENCE = 'inference'
DRIVER = 'driver'
NODE_NAMES = {INFERENCE: 'vla_inference', DRIVER: 'vla_driver'}

BOOL, INT, DOUBLE, STRING = 'bool', 'int', 'double', 'string'
STRING_ARRAY, DOUBLE_ARRAY = 'string_array', 'double_array'
TYPES = (BOOL, INT, DOUBLE, STRING, STRING_ARRAY, DOUBLE_ARRAY)


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter.

    ``default`` None means declared with a type but no value (``enable_actuation``:
    unset resolves at run time). ``choices`` is a tuple or a function returning one (read
    lazily from the module that owns the names). ``backend``: the robot backend that reads
    it ('' for the node itself).
    """

    name: str
    type: str
    default: Any
    description: str
    node: str
    read_only: bool = False
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] = ()
    backend: str = ''

    def allowed(self) -> tuple[str, ...]:
        """The allowed values of a string parameter (empty: any)."""
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def summary(self) -> str:
        """Type, default and range in a few words (for help texts)."""
        default = 'unset' if self.default is None else _show(self.default)
        out = f'{self.type}, default {default}'
        if self.range is not None:
            out += f', range [{_show(self.range[0])}, {_show(self.range[1])}]'
        if self.read_only:
            out += ', read-only'
        return out


def _show(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(_show(v) for v in value) + ']'
    return repr(value)


# ---------------------------------------------------------------- lazily read choices
def _policies() -> tuple[str, ...]:
    from vla_ros.policies.registry import available_policies  # torch-free

    return tuple(available_policies())


def _strategies() -> tuple[str, ...]:
    from vla_ros.actions.chunk_buffer import STRATEGIES

    return tuple(sorted(STRATEGIES))


def _swap_behaviors() -> tuple[str, ...]:
    from vla_ros.runtime.engine import SWAP_BEHAVIORS

    return tuple(SWAP_BEHAVIORS)


def _chunk_timings() -> tuple[str, ...]:
    from vla_ros.runtime.engine import CHUNK_TIMINGS

    return tuple(CHUNK_TIMINGS)


def _gripper_modes() -> tuple[str, ...]:
    from vla_ros.actions.gripper import GRIPPER_MODES

    return tuple(GRIPPER_MODES)


def _dtypes() -> tuple[str, ...]:
    from vla_ros.policies.torch_policy import DTYPES  # imports torch only when loading

    return tuple(DTYPES)


def _command_interfaces() -> tuple[str, ...]:
    from vla_ros.runtime.joint_commands import COMMAND_INTERFACES

    return tuple(COMMAND_INTERFACES)


def _joint_action_modes() -> tuple[str, ...]:
    from vla_ros.runtime.joint_commands import JOINT_ACTION_MODES

    return tuple(JOINT_ACTION_MODES)


def _tasks() -> tuple[str, ...]:
    from vla_ros.sim.tasks import TASKS

    return ('',) + tuple(sorted(TASKS))


def _splits() -> tuple[str, ...]:
    from vla_ros.sim.tasks import SPLITS

    return tuple(SPLITS)


# ---------------------------------------------------------------- safety limits
# The limits in force unless a robot file, the sim profile of bringup or the user sets
# others. These are the values the driver has always enforced and the fault campaign and
# soak audited (2 m/s^2 and 8 rad/s^2: full speed within 0.125 s; stops are immediate
# whatever the acceleration limit). The workspace is the sim table top in the arm-base
# frame (x 0.2..0.9, y +-0.5, top at z = 0) less a margin at the far edges and 1 cm above
# the surface.
SAFETY_DEFAULTS = {
    'max_linear_velocity': 0.25,
    'max_angular_velocity': 1.0,
    'max_linear_acceleration': 2.0,
    'max_angular_acceleration': 8.0,
    'workspace_min': (0.2, -0.45, 0.01),
    'workspace_max': (0.8, 0.45, 0.6),
    'max_base_linear_velocity': 0.5,
    'max_base_angular_velocity': 1.0,
}
_SPEED_RANGE = (0.001, 2.0)          # m/s
_TURN_RANGE = (0.001, 2 * math.pi)  # rad/s


def _velocity_limits(node: str, role: str) -> list[ParameterSpec]:
    """The velocity limits both nodes apply (the inference node as a first clamp)."""
    d = SAFETY_DEFAULTS
    return [
        ParameterSpec('max_linear_velocity', DOUBLE, d['max_linear_velocity'],
                      f'end-effector linear speed limit [m/s]{role}', node,
                      range=_SPEED_RANGE),
        ParameterSpec('max_angular_velocity', DOUBLE, d['max_angular_velocity'],
                      f'end-effector angular speed limit [rad/s]{role}', node,
                      range=_TURN_RANGE),
        ParameterSpec('max_base_linear_velocity', DOUBLE, d['max_base_linear_velocity'],
                      f'mobile base planar speed limit [m/s]{role}', node,
                      range=_SPEED_RANGE),
        ParameterSpec('max_base_angular_velocity', DOUBLE, d['max_base_angular_velocity'],
                      f'mobile base yaw rate limit [rad/s]{role}', node,
                      range=_TURN_RANGE),
    ]


def _index(specs: list[ParameterSpec]) -> dict[str, ParameterSpec]:
    out = {}
    for spec in specs:
        assert spec.name not in out, spec.name
        assert spec.type in TYPES, spec
        out[spec.name] = spec
    return out


_I = INFERENCE
INFERENCE_PARAMETERS = _index([
    ParameterSpec('policy', STRING, 'scripted',
                  'registry name of the policy (vla-ros policies lists them); changing it '
                  'loads the new policy in the background', _I, choices=_policies),
    ParameterSpec('policy_params', STRING, '{}',
                  'extra constructor arguments of the policy, a JSON/YAML mapping', _I),
    ParameterSpec('model_path', STRING, '', 'checkpoint directory or file of the policy', _I),
    ParameterSpec('device', STRING, 'cpu', 'torch device, e.g. cpu or cuda:0', _I),
    ParameterSpec('dtype', STRING, 'float32', 'weights dtype of torch policies', _I,
                  choices=_dtypes),
    ParameterSpec('unnorm_key', STRING, '',
                  'dataset key of the normalization statistics (mandatory if several)', _I),
    ParameterSpec('chunk_strategy', STRING, 'receding_horizon',
                  'how chunks become per-tick actions', _I, choices=_strategies),
    ParameterSpec('execute_steps', INT, 4,
                  'receding horizon: actions executed from a chunk before the newest is used',
                  _I, range=(1, 1000)),
    ParameterSpec('ensemble_coefficient', DOUBLE, 0.01,
                  'temporal ensembling: weight exp(-m*i), i = 0 for the oldest prediction',
                  _I, range=(0.0, 10.0)),
    ParameterSpec('merge_new_weight', DOUBLE, 0.7,
                  'latency-aware merging: weight of the new chunk on overlapping steps',
                  _I, range=(0.0, 1.0)),
    ParameterSpec('control_rate_hz', DOUBLE, 10.0, 'command publishing rate [Hz]', _I,
                  read_only=True, range=(1.0, 200.0)),
    ParameterSpec('inference_rate_hz', DOUBLE, 5.0,
                  'policy rate [Hz] (0 = only when the buffer runs low)', _I,
                  read_only=True, range=(0.0, 30.0)),
    ParameterSpec('low_queue_depth', INT, 2,
                  'run the policy early when at most this many actions remain', _I,
                  range=(0, 1000)),
    ParameterSpec('stale_image_timeout', DOUBLE, 1.0,
                  'hold when the newest image is older than this [s]', _I,
                  range=(0.01, 60.0)),
    ParameterSpec('inference_timeout', DOUBLE, 2.0,
                  'report a policy running longer than this as past its deadline [s]', _I,
                  range=(0.01, 600.0)),
    ParameterSpec('chunk_timing', STRING, 'observation',
                  'observation: action i is for the frame stamp + i * period, late actions '
                  'are skipped; arrival: a chunk starts when it arrives (single-step '
                  'policies)', _I, choices=_chunk_timings),
    ParameterSpec('swap_behavior', STRING, 'hold',
                  'while a new policy loads: hold (zero command) or keep (old policy runs)',
                  _I, choices=_swap_behaviors),
    ParameterSpec('gripper_mode', STRING, 'continuous',
                  'gripper command hygiene: continuous (the policy\'s opening as is) or '
                  'binary (0/1 with hysteresis between the thresholds and a minimum dwell)',
                  _I, choices=_gripper_modes),
    ParameterSpec('gripper_close_threshold', DOUBLE, 0.3,
                  'binary gripper: close when the opening falls to this or below (must be '
                  'below gripper_open_threshold)', _I, range=(0.0, 1.0)),
    ParameterSpec('gripper_open_threshold', DOUBLE, 0.7,
                  'binary gripper: open when the opening rises to this or above', _I,
                  range=(0.0, 1.0)),
    ParameterSpec('gripper_min_dwell_s', DOUBLE, 0.5,
                  'binary gripper: keep a state at least this long before changing it [s]',
                  _I, range=(0.0, 10.0)),
    ParameterSpec('cameras', STRING_ARRAY, ('front',),
                  'camera names; topics are camera/<name>/image_raw[/compressed]', _I,
                  read_only=True),
    ParameterSpec('image_transport', STRING, 'raw',
                  'raw (sensor_msgs/Image) or compressed (CompressedImage)', _I,
                  read_only=True, choices=('raw', 'compressed')),
    ParameterSpec('use_joint_states', BOOL, False,
                  'subscribe to joint_states for proprioception', _I, read_only=True),
    ParameterSpec('proprio_joints', STRING_ARRAY, ('',),
                  'joint_states names forming the proprio vector, in order (empty: all '
                  'positions as published)', _I, read_only=True),
    ParameterSpec('gripper_joints', STRING_ARRAY, ('',),
                  'finger joints averaged into a 0..1 opening appended to the proprio vector',
                  _I, read_only=True),
    ParameterSpec('gripper_open_position', DOUBLE, 0.04,
                  'finger position of a fully open gripper', _I, read_only=True,
                  range=(1e-6, 10.0)),
    ParameterSpec('ee_frame', STRING, 'base_link',
                  'frame of the end-effector twist commands', _I),
    # Joint-space robots (docs/joint_space.md): the policy's actions matched by name.
    ParameterSpec('command_interface', STRING, 'ee_twist',
                  'what the robot is commanded with: ee_twist (cmd/ee_twist) or joint_position '
                  '/ joint_velocity (cmd/joint, sensor_msgs/JointState; the policy\'s action '
                  'names are matched to joint_names)', _I, read_only=True,
                  choices=_command_interfaces),
    ParameterSpec('joint_names', STRING_ARRAY, ('',),
                  'joint interfaces: the arm joints commanded, in the controller\'s order',
                  _I, read_only=True),
    ParameterSpec('joint_action_mode', STRING, 'absolute',
                  'how the policy\'s joint values are read: absolute targets, delta (added to '
                  'the measured positions) or velocity; joint_position takes absolute or '
                  'delta, joint_velocity takes velocity', _I, read_only=True,
                  choices=_joint_action_modes),
    ParameterSpec('gripper_action', STRING, '',
                  "joint interfaces: the policy action that drives the gripper ('' = none)",
                  _I, read_only=True),
    ParameterSpec('gripper_action_closed', DOUBLE, 0.0,
                  'value of gripper_action (dataset units) for a closed gripper; mapped '
                  'linearly to the 0..1 opening of cmd/gripper', _I, read_only=True),
    ParameterSpec('gripper_action_open', DOUBLE, 1.0,
                  'value of gripper_action (dataset units) for an open gripper', _I,
                  read_only=True),
    ParameterSpec('ignored_actions', STRING_ARRAY, ('',),
                  'joint interfaces: policy actions deliberately not commanded (any other '
                  'action that is not a joint or the gripper_action is an error)', _I,
                  read_only=True),
    ParameterSpec('base_frame', STRING, 'base_footprint',
                  'frame of the base velocity commands', _I),
    *_velocity_limits(_I, ', a first clamp at the source (the driver enforces its own)'),
    ParameterSpec('torch_threads', INT, 1,
                  'intra-op threads for torch policies (0 = torch default). One is fastest '
                  'for small models on a busy CPU: the control loop and ROS need cores too',
                  _I, range=(0, 256)),
    ParameterSpec('status_rate_hz', DOUBLE, 5.0, 'PolicyStatus rate [Hz]', _I,
                  read_only=True, range=(0.1, 100.0)),
    ParameterSpec('policy_process', BOOL, True,
                  'load and run the policy in its own process (frames via shared memory; a '
                  'crash or hang is a hold and a restart); false: a thread of the node '
                  'process', _I, read_only=True),
    # Control-loop scheduling (issue 18's period targets).
    ParameterSpec('control_thread', BOOL, True,
                  'publish commands from a dedicated thread that sleeps to absolute '
                  'deadlines (false: an rclpy timer in the executor; the timer is always used '
                  'with use_sim_time)', _I, read_only=True),
    ParameterSpec('control_thread_priority', INT, 10,
                  'SCHED_FIFO priority of the control thread (0 = normal scheduling); needs '
                  'CAP_SYS_NICE or an rtprio limit (ulimit -r), else one warning and normal '
                  'priority', _I, read_only=True, range=(0, 99)),
    ParameterSpec('control_process', BOOL, True,
                  'publish the commands from a small process of their own, which wakes on '
                  'each deadline with nothing else in its interpreter; the node computes each '
                  'command control_process_lead_s ahead and hands it over through shared '
                  'memory (false: the control thread publishes itself)', _I, read_only=True),
    ParameterSpec('control_process_lead_s', DOUBLE, 0.01,
                  'how long before its deadline the node computes a command for the control '
                  'process [s]; a command that comes later is published late (counted)', _I,
                  read_only=True, range=(0.001, 0.05)),
    ParameterSpec('node_thread_priority', INT, 5,
                  'SCHED_FIFO priority of the node\'s executor and policy-process worker '
                  'threads (0 = normal scheduling), below control_thread_priority: the '
                  'thread holding the interpreter lock when the control thread wakes is then '
                  'not preempted by other programs; threads and processes they start run at '
                  'normal priority', _I, read_only=True, range=(0, 99)),
    ParameterSpec('policy_niceness', INT, 5,
                  'nice value of the policy process while it infers (higher = yields the CPU '
                  'to the control loop and the driver; loading always runs at 10)', _I,
                  read_only=True, range=(0, 19)),
])

_D = DRIVER
DRIVER_PARAMETERS = _index([
    ParameterSpec('backend', STRING, 'mujoco',
                  "robot backend: 'mujoco', 'dry_run' or 'package.module:Class'", _D,
                  read_only=True),
    ParameterSpec('rate_hz', DOUBLE, 50.0, 'control loop rate [Hz]', _D, read_only=True,
                  range=(1.0, 1000.0)),
    ParameterSpec('camera_rate_hz', DOUBLE, 10.0,
                  'camera publish rate [Hz]; 0 disables images', _D, read_only=True,
                  range=(0.0, 120.0)),
    ParameterSpec('watchdog_timeout', DOUBLE, 0.25,
                  'zero the arm twist when the newest cmd/ee_twist is older than this (since '
                  'arrival, or since its stamp if that is older) [s]', _D, range=(0.01, 10.0)),
    ParameterSpec('enable_actuation', BOOL, None,
                  'actuation interlock; unset: true for sim / dry run, false for hardware; '
                  'also toggled by the ~/enable service', _D),
    *_velocity_limits(_D, ''),
    ParameterSpec('max_linear_acceleration', DOUBLE, SAFETY_DEFAULTS['max_linear_acceleration'],
                  'end-effector linear acceleration limit [m/s^2]', _D, range=(0.01, 50.0)),
    ParameterSpec('max_angular_acceleration', DOUBLE,
                  SAFETY_DEFAULTS['max_angular_acceleration'],
                  'end-effector angular acceleration limit [rad/s^2]', _D,
                  range=(0.01, 200.0)),
    ParameterSpec('workspace_min', DOUBLE_ARRAY, SAFETY_DEFAULTS['workspace_min'],
                  'lower corner [x, y, z] of the end-effector workspace box in ee_frame [m]',
                  _D),
    ParameterSpec('workspace_max', DOUBLE_ARRAY, SAFETY_DEFAULTS['workspace_max'],
                  'upper corner [x, y, z] of the end-effector workspace box in ee_frame [m]',
                  _D),
    ParameterSpec('ee_frame', STRING, 'base_link',
                  'frame of ee_pose and of the end-effector twists (the arm base frame)', _D,
                  read_only=True),
    ParameterSpec('odom_frame', STRING, 'odom', 'mobile base only: frame of the odom pose',
                  _D, read_only=True),
    ParameterSpec('base_frame', STRING, 'base_link',
                  'mobile base only: child frame of odom (the base twist is expressed in it)',
                  _D, read_only=True),
    ParameterSpec('command_interface', STRING, 'ee_twist',
                  'how the arm is commanded: ee_twist (cmd/ee_twist), joint_position or '
                  'joint_velocity (cmd/joint, limited by the joint_* parameters; the backend '
                  'must list the interface); docs/joint_space.md', _D, read_only=True,
                  choices=('ee_twist', 'joint_position', 'joint_velocity')),
    ParameterSpec('joint_names', STRING_ARRAY, ('',),
                  'joint interfaces: the arm joints commanded, in the controller\'s order '
                  "(must be joints of the backend; [''] = none)", _D, read_only=True),
    ParameterSpec('joint_position_min', DOUBLE_ARRAY, None,
                  'joint interfaces: lower position limit per joint_names entry [rad or m]',
                  _D),
    ParameterSpec('joint_position_max', DOUBLE_ARRAY, None,
                  'joint interfaces: upper position limit per joint_names entry [rad or m]',
                  _D),
    ParameterSpec('joint_max_velocity', DOUBLE_ARRAY, None,
                  'joint interfaces: speed limit per joint_names entry [rad/s or m/s]', _D),
    ParameterSpec('joint_max_step', DOUBLE_ARRAY, (0.05,),
                  'joint_position: largest change of a position target per driver tick '
                  '[rad or m]; one value for every joint or one per joint_names entry', _D),
    ParameterSpec('autostart', BOOL, True,
                  'configure and activate at start (runs without a lifecycle manager); '
                  'false: wait in unconfigured for configure / activate transitions', _D,
                  read_only=True),
    ParameterSpec('publish_task_instruction', BOOL, True,
                  "with a sim task episode: publish its instruction on 'instruction' "
                  '(latched); false to give instructions yourself', _D, read_only=True),
])

# Parameters the built-in robot backends read. The backend classes build their
# ``BackendParameter`` s from these (vla_ros.drivers.backend.parameters_from_schema), so
# each default exists once; the driver declares only the selected backend's. A user
# plugin backend lists its own on its class. Flat names: launch files, robot configs and
# recorded sessions have always set them so.
def _mobile(backend: str) -> ParameterSpec:
    return ParameterSpec('mobile', BOOL, False,
                         'give the simulated / dry-run robot a mobile base', _D,
                         read_only=True, backend=backend)


def _controller_outputs() -> tuple[str, ...]:
    from vla_ros.drivers.controller_messages import OUTPUTS

    return OUTPUTS


def _servo_activations() -> tuple[str, ...]:
    from vla_ros.drivers.moveit_servo_backend import ACTIVATIONS

    return tuple(ACTIVATIONS)


def _joint_state_input(backend: str) -> list[ParameterSpec]:
    """The robot's own joint_states, read by the backends that talk to its controllers."""
    return [
        ParameterSpec(f'{backend}.joint_states_topic', STRING, '/joint_states',
                      "sensor_msgs/JointState topic of the robot (ros2_control's "
                      'joint_state_broadcaster); the state the driver reads is its newest '
                      'message', _D, read_only=True, backend=backend),
        ParameterSpec(f'{backend}.state_timeout', DOUBLE, 5.0,
                      'the backend fails to start unless joint_states with every joint in '
                      'joint_names (and the gripper joint) arrive within this [s]', _D,
                      read_only=True, range=(0.1, 300.0), backend=backend),
    ]


def _gripper_output(backend: str) -> list[ParameterSpec]:
    """A gripper driven by its own controller (opening 0..1 mapped to joint positions)."""
    return [
        ParameterSpec(f'{backend}.gripper_topic', STRING, '',
                      "command topic of the gripper's controller, e.g. "
                      "'/gripper_controller/commands' ('' = no gripper output)", _D,
                      read_only=True, backend=backend),
        ParameterSpec(f'{backend}.gripper_output', STRING, 'forward_command',
                      "message of the gripper command: 'forward_command' "
                      "(std_msgs/Float64MultiArray [position]) or 'joint_trajectory' "
                      '(trajectory_msgs/JointTrajectory of the gripper joint); sent when the '
                      'target changes', _D, read_only=True, choices=_controller_outputs,
                      backend=backend),
        ParameterSpec(f'{backend}.gripper_joint', STRING, '',
                      'gripper joint in joint_states (required with a gripper_topic): its '
                      'measured position is the opening the driver starts from', _D,
                      read_only=True, backend=backend),
        ParameterSpec(f'{backend}.gripper_closed', DOUBLE, 0.0,
                      'gripper joint position of a closed gripper (opening 0) [rad or m]', _D,
                      read_only=True, backend=backend),
        ParameterSpec(f'{backend}.gripper_open', DOUBLE, 0.04,
                      'gripper joint position of an open gripper (opening 1) [rad or m]', _D,
                      read_only=True, backend=backend),
        ParameterSpec(f'{backend}.gripper_time_from_start', DOUBLE, 0.5,
                      "joint_trajectory gripper output: time to reach a new target [s]", _D,
                      read_only=True, range=(0.01, 10.0), backend=backend),
    ]


BACKENDS = {
    'dry_run': _index([_mobile('dry_run')]),
    # Joint commands to ros2_control controllers (docs/ros2_control_and_servo.md).
    'ros2_control': _index([
        ParameterSpec('ros2_control.output', STRING, 'joint_trajectory',
                      "'joint_trajectory': trajectory_msgs/JointTrajectory to a "
                      "joint_trajectory_controller (joint_position); 'forward_command': "
                      'std_msgs/Float64MultiArray to a forward position or velocity '
                      'controller', _D, read_only=True, choices=_controller_outputs,
                      backend='ros2_control'),
        ParameterSpec('ros2_control.command_topic', STRING, '',
                      "controller command topic ('' = the usual one: "
                      '/joint_trajectory_controller/joint_trajectory, '
                      '/forward_position_controller/commands or '
                      '/forward_velocity_controller/commands)', _D, read_only=True,
                      backend='ros2_control'),
        ParameterSpec('ros2_control.time_from_start', DOUBLE, 0.0,
                      'joint_trajectory output: time the controller takes to reach each '
                      'target [s] (0 = two driver periods)', _D, read_only=True,
                      range=(0.0, 10.0), backend='ros2_control'),
        *_joint_state_input('ros2_control'),
        *_gripper_output('ros2_control'),
    ]),
    # End-effector twists to MoveIt Servo (docs/ros2_control_and_servo.md).
    'moveit_servo': _index([
        ParameterSpec('moveit_servo.twist_topic', STRING, '/servo_node/delta_twist_cmds',
                      "geometry_msgs/TwistStamped input of MoveIt Servo (its "
                      'cartesian_command_in_topic, resolved under the servo node)', _D,
                      read_only=True, backend='moveit_servo'),
        ParameterSpec('moveit_servo.frame_id', STRING, '',
                      "frame_id of the twists ('' = the driver's ee_frame, the frame its "
                      'limits and workspace are in); only to give that same frame the name '
                      'the robot model uses: the twist values are not transformed', _D,
                      read_only=True, backend='moveit_servo'),
        ParameterSpec('moveit_servo.activation', STRING, 'switch_command_type',
                      "how start() makes Servo accept twists: 'switch_command_type' (MoveIt "
                      "Jazzy and later: <servo_node>/switch_command_type TWIST), "
                      "'start_servo' (Humble: <servo_node>/start_servo), 'none' (done "
                      'elsewhere)', _D, read_only=True, choices=_servo_activations,
                      backend='moveit_servo'),
        ParameterSpec('moveit_servo.servo_node', STRING, '/servo_node',
                      'fully qualified name of the servo node (its services are called '
                      'under it)', _D, read_only=True, backend='moveit_servo'),
        ParameterSpec('moveit_servo.ee_pose_topic', STRING, '',
                      'geometry_msgs/PoseStamped of the end effector in the twist frame, '
                      "e.g. UR's /tcp_pose_broadcaster/pose ('' = unknown pose: the "
                      "driver's workspace rule then stops all linear motion)", _D,
                      read_only=True, backend='moveit_servo'),
        ParameterSpec('moveit_servo.ee_pose_timeout', DOUBLE, 0.5,
                      'an end-effector pose older than this is unknown [s]', _D,
                      read_only=True, range=(0.01, 10.0), backend='moveit_servo'),
        *_joint_state_input('moveit_servo'),
        *_gripper_output('moveit_servo'),
    ]),
    'mujoco': _index([
        _mobile('mujoco'),
        ParameterSpec('seed', INT, 0, 'seed of the simulated scene', _D, read_only=True,
                      range=(0, 2**31 - 1), backend='mujoco'),
        ParameterSpec('image_width', INT, 224, 'rendered camera image width [px]', _D,
                      read_only=True, range=(16, 4096), backend='mujoco'),
        ParameterSpec('image_height', INT, 224, 'rendered camera image height [px]', _D,
                      read_only=True, range=(16, 4096), backend='mujoco'),
        ParameterSpec('task', STRING, '',
                      "lay the scene out as an episode of a sim task ('reach', 'push', "
                      "'pick_up'); its instruction and outcome are published on "
                      '~/task_status (the instruction also on instruction, see '
                      'publish_task_instruction)', _D, read_only=True, choices=_tasks,
                      backend='mujoco'),
        ParameterSpec('task_seed', INT, 1000, 'episode seed of the sim task', _D,
                      read_only=True, range=(0, 2**31 - 1), backend='mujoco'),
        ParameterSpec('task_split', STRING, 'test',
                      "sim task episode stream: 'test' (held-out layouts and paraphrases) or "
                      "'train' (the training instruction templates)", _D, read_only=True,
                      choices=_splits, backend='mujoco'),
    ]),
}


def node_parameters(node: str, backends=tuple(BACKENDS)) -> dict[str, ParameterSpec]:
    """Every parameter ``node`` declares (the driver: with those of ``backends``)."""
    if node == INFERENCE:
        return dict(INFERENCE_PARAMETERS)
    if node == DRIVER:
        out = dict(DRIVER_PARAMETERS)
        for backend in backends:
            out.update(BACKENDS[backend])
        return out
    raise ValueError(f'unknown node {node!r}; known: {INFERENCE!r}, {DRIVER!r}')


def defaults(node: str) -> dict[str, Any]:
    """Declared default of every parameter of ``node`` (lists for arrays; None if unset)."""
    return {name: list(s.default) if isinstance(s.default, tuple) else s.default
            for name, s in node_parameters(node).items()}


def spec(node: str, name: str) -> ParameterSpec:
    """The spec of parameter ``name`` of ``node`` (ValueError naming the known ones)."""
    specs = node_parameters(node)
    try:
        return specs[name]
    except KeyError:
        raise ValueError(f'{NODE_NAMES[node]} has no parameter {name!r}'
                         f'{did_you_mean(name, specs)}') from None


def did_you_mean(name: str, known) -> str:
    """' (did you mean a, b?)' for names close to ``name`` ('' if none)."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=3)
    return f' (did you mean {", ".join(close)}?)' if close else ''


# ---------------------------------------------------------------- values
class ParameterValueError(ValueError):
    """A value that does not fit its parameter's type, range or choices."""


def _where(spec: ParameterSpec) -> str:
    return f'{spec.type} parameter of {NODE_NAMES[spec.node]}: {spec.description}'


def _number(spec: ParameterSpec, value, integer: bool):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterValueError(f'{spec.name}: {value!r} is not '
                                  f'{"an integer" if integer else "a number"} ({_where(spec)})')
    if integer and not isinstance(value, int):
        raise ParameterValueError(f'{spec.name}: {value!r} is not an integer ({_where(spec)})')
    if not math.isfinite(value):
        raise ParameterValueError(f'{spec.name}: {value!r} is not finite ({_where(spec)})')
    if spec.range is not None and not spec.range[0] <= value <= spec.range[1]:
        raise ParameterValueError(f'{spec.name}: {value!r} is outside '
                                  f'[{_show(spec.range[0])}, {_show(spec.range[1])}] '
                                  f'({_where(spec)})')
    return int(value) if integer else float(value)


def check(spec: ParameterSpec, value, strict_doubles: bool = False):
    """``value`` (already typed, e.g. from YAML) as the declared type, or ParameterValueError.

    Integers are accepted for doubles and returned as floats, unless ``strict_doubles``:
    a ROS parameter file is typed by its YAML, and a node refuses an INTEGER for a DOUBLE
    parameter, so a file must say ``10.0``.
    """
    kind = spec.type
    if kind in (DOUBLE, DOUBLE_ARRAY) and strict_doubles:
        items = value if kind == DOUBLE_ARRAY and isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, int) and not isinstance(v, bool) for v in items):
            raise ParameterValueError(
                f'{spec.name}: {value!r} is written as an integer but the parameter is a '
                f'double; write it with a decimal point (e.g. {_show(float(items[0]))}) '
                f'({_where(spec)})')
    if kind == BOOL:
        if not isinstance(value, bool):
            raise ParameterValueError(f'{spec.name}: {value!r} is not true or false '
                                      f'({_where(spec)})')
        return value
    if kind in (INT, DOUBLE):
        return _number(spec, value, kind == INT)
    if kind == STRING:
        if not isinstance(value, str):
            raise ParameterValueError(f'{spec.name}: {value!r} is not a string '
                                      f'({_where(spec)})')
        allowed = spec.allowed()
        if allowed and value not in allowed:
            raise ParameterValueError(f'{spec.name}: {value!r} is not one of '
                                      f'{", ".join(map(repr, allowed))}')
        return value
    if not isinstance(value, (list, tuple)) or not value:
        # rcl and launch_ros cannot type an empty list.
        raise ParameterValueError(f'{spec.name}: {value!r} is not a non-empty list '
                                  f'({_where(spec)})')
    if kind == STRING_ARRAY:
        if not all(isinstance(v, str) for v in value):
            raise ParameterValueError(f'{spec.name}: {value!r} is not a list of strings '
                                      f'({_where(spec)})')
        return [str(v) for v in value]
    bare = ParameterSpec(spec.name, DOUBLE, None, spec.description, spec.node)
    return [_number(bare, v, integer=False) for v in value]


def convert(spec: ParameterSpec, text: str):
    """A launch-argument string as the parameter's declared type (ParameterValueError).

    Numbers are typed by the parameter, not by how they are written (``0`` for a double
    is 0.0); strings are taken as written (``model_path:=123`` stays '123'); arrays are a
    YAML flow list (``[front, wrist]``) or a single item.
    """
    import yaml

    text = str(text)
    kind = spec.type
    if kind == STRING:
        return check(spec, text)
    if kind == BOOL:
        lowered = text.strip().lower()
        if lowered not in ('true', 'false'):
            raise ParameterValueError(f'{spec.name}:={text!r} is not true or false '
                                      f'({_where(spec)})')
        return lowered == 'true'
    if kind in (INT, DOUBLE):
        try:
            value = int(text.strip()) if kind == INT else float(text.strip())
        except ValueError:
            raise ParameterValueError(
                f'{spec.name}:={text!r} is not {"an integer" if kind == INT else "a number"} '
                f'({_where(spec)})') from None
        return check(spec, value)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if not isinstance(value, list):
        value = [text.strip()] if kind == STRING_ARRAY else [value]
    if kind == STRING_ARRAY:
        value = [v if isinstance(v, str) else _show(v) for v in value]
    else:
        value = [_as_float(spec, v) for v in value]
    return check(spec, value)


def _as_float(spec: ParameterSpec, item):
    if isinstance(item, str):
        try:
            return float(item)
        except ValueError:
            pass
    if isinstance(item, (int, float)) and not isinstance(item, bool):
        return float(item)
    raise ParameterValueError(f'{spec.name}: {item!r} is not a number ({_where(spec)})')
