"""The one description of what each shipped configuration starts.

Both ``launch/*.launch.py`` (for ``ros2 launch`` on a full ROS 2 install) and
``vla-ros launch`` (for pip-only machines) read the node list, parameter files and
argument-derived parameters from here, so the two paths cannot drift apart.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vla_ros.paths import config_dir
from vla_ros.policies.instruction_retrieval import INSTRUCTIONS_FILE


@dataclass(frozen=True)
class LaunchArgument:
    """A launch argument: ``name:=value`` on the command line."""

    name: str
    default: str
    description: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeSpec:
    """One node to start: executable, name, parameter files, overrides, remappings."""

    executable: str
    module: str
    name: str
    param_files: tuple[str, ...]
    parameters: dict = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Configuration:
    """A shipped configuration: which robot, which policy defaults."""

    description: str
    robot: str
    policy_file: str


CONFIGURATIONS = {
    'sim_arm': Configuration(
        '7-DoF arm in MuJoCo driven by the scripted test policy (no model needed)',
        robot='arm', policy_file='scripted'),
    'openvla_arm': Configuration(
        '7-DoF arm with an OpenVLA-family policy (256-bin action tokens)',
        robot='arm', policy_file='openvla'),
    'octo_arm': Configuration(
        '7-DoF arm with an Octo-style diffusion policy (action chunks)',
        robot='arm', policy_file='octo'),
    'pi0_arm': Configuration(
        '7-DoF arm with a pi0-style flow-matching policy (50-step chunks)',
        robot='arm', policy_file='pi0'),
    'rt2_arm': Configuration(
        '7-DoF arm with an RT-2-style VLM that writes actions as text',
        robot='arm', policy_file='rt2'),
    'rt1_mobile': Configuration(
        'Mobile manipulator (arm on a planar base) with an RT-1 policy, 11-D actions',
        robot='mobile_manipulator', policy_file='rt1'),
}

ARGUMENTS = (
    LaunchArgument('namespace', '', 'namespace of all nodes (one robot per namespace)'),
    LaunchArgument('sim', 'true', 'true: MuJoCo simulated robot; false: the hardware '
                   'backend named by the backend argument', ('true', 'false')),
    LaunchArgument('backend', 'dry_run', 'driver backend when sim:=false (dry_run or a '
                   'registered hardware backend)'),
    LaunchArgument('policy', '', 'policy registry name (empty: the configuration default)'),
    LaunchArgument('model_path', '', 'checkpoint directory or file of the policy'),
    LaunchArgument('unnorm_key', '', 'dataset key of the normalization statistics'),
    LaunchArgument('device', '', 'torch device (empty: the configuration default)'),
    LaunchArgument('chunk_strategy', '', 'receding_horizon, temporal_ensemble or '
                   'latency_aware (empty: the configuration default)'),
    LaunchArgument('control_rate_hz', '', 'command rate of the inference node'),
    LaunchArgument('inference_rate_hz', '', 'policy rate (0 = when the buffer runs low)'),
    LaunchArgument('enable_actuation', '', 'driver actuation interlock (empty: on for '
                   'simulation, off for hardware)', ('', 'true', 'false')),
    LaunchArgument('params_file', '', 'extra ROS parameter file applied last to both nodes'),
    LaunchArgument('task', '', "sim only: lay the scene out as a task episode ('reach', "
                   "'push', 'pick_up'); the driver publishes its instruction and outcome "
                   'on vla_driver/task_status'),
    LaunchArgument('task_seed', '1000', 'sim only: episode seed of the task'),
    LaunchArgument('task_split', 'test', "sim only: 'test' (held-out paraphrases) or 'train' "
                   '(the training instruction templates) episode stream'),
    LaunchArgument('publish_task_instruction', 'true', 'with task:=...: the driver publishes '
                   "the episode's instruction on instruction (latched); false if you give "
                   'your own', ('true', 'false')),
)

# Launch argument -> inference node parameter, applied only when the argument is set.
_INFERENCE_OVERRIDES = ('policy', 'model_path', 'unnorm_key', 'device', 'chunk_strategy',
                        'control_rate_hz', 'inference_rate_hz')


def arguments(configuration: str) -> tuple[LaunchArgument, ...]:
    """The launch arguments of ``configuration`` (the same for every shipped one)."""
    _get(configuration)
    return ARGUMENTS


def _get(configuration: str) -> Configuration:
    try:
        return CONFIGURATIONS[configuration]
    except KeyError:
        raise ValueError(f'unknown configuration {configuration!r}; available: '
                         f'{", ".join(sorted(CONFIGURATIONS))}') from None


def resolve_arguments(configuration: str, given: dict[str, str]) -> dict[str, str]:
    """Fill defaults and validate ``name:=value`` arguments (strings, as launch gives)."""
    known = {a.name: a for a in arguments(configuration)}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f'unknown launch argument(s) {unknown}; known: {sorted(known)}')
    values = {name: str(given.get(name, a.default)) for name, a in known.items()}
    for name, value in values.items():
        choices = known[name].choices
        if choices and value not in choices:
            raise ValueError(f'{name}:={value!r} is not one of {choices}')
    return values


def _typed(value: str):
    """Interpret a launch-argument string like a ROS parameter value (YAML scalar)."""
    return yaml.safe_load(value)


def configured_policy(configuration: str, args: dict[str, str]) -> str:
    """The policy a configuration runs: the ``policy`` argument or its YAML default."""
    if args.get('policy'):
        return args['policy']
    path = config_dir('policies', f'{_get(configuration).policy_file}.yaml')
    data = yaml.safe_load(path.read_text())
    return next(iter(data.values()))['ros__parameters']['policy']


def shipped_checkpoint(policy: str) -> str:
    """The checkpoint this project trained for ``policy`` in simulation ('' if none)."""
    from vla_ros.models import DEFAULTS, model_path

    if policy not in DEFAULTS:
        return ''
    try:
        return model_path(policy)
    except ValueError:
        return ''


# How the shipped sim checkpoints were trained: both cameras rendered at 64 px (the
# policies' input size, so nothing is resampled on the way), and the
# expert's full arm7 range (0.05 m / 0.25 rad per 0.1 s step = 0.5 m/s, 2.5 rad/s) with no
# acceleration ramp; the hardware defaults in config/robots/arm.yaml are more cautious.
SHIPPED_SIM_LIMITS = {'max_linear_velocity': 0.5, 'max_angular_velocity': 2.5}
# They were also trained and evaluated acting every 0.1 s on the state just observed. In
# the graph that takes inference at the control rate (a one-step chunk covers one tick)
# and frames fresher than the 10 Hz default camera gives: with both, pick-ups through the
# graph took as long as in the rollout (median 5.5 s from the instruction, ~3 s of it
# loading, against 8.5 s with the defaults; 7/8 against 6/8 succeeded; docs/results.md).
SHIPPED_SIM_DRIVER = {'image_width': 64, 'image_height': 64, **SHIPPED_SIM_LIMITS,
                      'max_linear_acceleration': 20.0, 'max_angular_acceleration': 100.0,
                      'camera_rate_hz': 30.0}
SHIPPED_SIM_INFERENCE = {'cameras': ['front', 'wrist'], **SHIPPED_SIM_LIMITS}
SHIPPED_SIM_RATES = {'inference_rate_hz': 10.0}  # unless given as launch arguments


def nodes(configuration: str, given: dict[str, str]) -> list[NodeSpec]:
    """The nodes of ``configuration`` with parameters derived from the arguments."""
    config = _get(configuration)
    args = resolve_arguments(configuration, given)
    extra = (args['params_file'],) if args['params_file'] else ()

    driver_params = {'backend': 'mujoco' if args['sim'] == 'true' else args['backend']}
    if args['task']:
        if args['sim'] != 'true':
            raise ValueError('task:=... needs sim:=true (it lays out the simulated scene)')
        driver_params.update(
            task=args['task'], task_seed=int(args['task_seed']), task_split=args['task_split'],
            publish_task_instruction=args['publish_task_instruction'] == 'true')
    if args['enable_actuation']:
        driver_params['enable_actuation'] = args['enable_actuation'] == 'true'
    inference_params = {name: _typed(args[name]) for name in _INFERENCE_OVERRIDES
                        if args[name] != ''}
    for name in ('policy', 'model_path', 'unnorm_key', 'device', 'chunk_strategy'):
        if name in inference_params:
            inference_params[name] = str(args[name])  # keep strings strings ('1e-3', 'on')
    if args['sim'] == 'true' and not args['model_path']:
        # Sim mode defaults to the checkpoint this project trained in the same simulator.
        checkpoint = shipped_checkpoint(configured_policy(configuration, args))
        if checkpoint:
            inference_params['model_path'] = checkpoint
            inference_params.update(SHIPPED_SIM_INFERENCE)
            for name, value in SHIPPED_SIM_RATES.items():
                inference_params.setdefault(name, value)
            driver_params.update(SHIPPED_SIM_DRIVER)
            if (Path(checkpoint) / INSTRUCTIONS_FILE).is_file():
                # Paraphrases the policy never saw reach it as its nearest training
                # instruction (vla_ros.policies.instruction_retrieval).
                inference_params['policy_params'] = json.dumps({'instruction_set': 'checkpoint'})
    return [
        NodeSpec('driver_node', 'vla_ros.nodes.driver_node', 'vla_driver',
                 (str(config_dir('robots', f'{config.robot}.yaml')),) + extra,
                 driver_params),
        NodeSpec('inference_node', 'vla_ros.nodes.inference_node', 'vla_inference',
                 (str(config_dir('robots', f'{config.robot}.yaml')),
                  str(config_dir('policies', f'{config.policy_file}.yaml'))) + extra,
                 inference_params),
    ]


def ros_args(spec: NodeSpec, namespace: str = '') -> list[str]:
    """``--ros-args`` for starting ``spec`` as a plain process (what launch_ros does)."""
    out = ['--ros-args', '-r', f'__node:={spec.name}']
    if namespace:
        out += ['-r', f'__ns:=/{namespace.strip("/")}']
    for path in spec.param_files:
        out += ['--params-file', path]
    for name, value in spec.parameters.items():
        text = yaml.safe_dump(value, default_flow_style=True).strip()
        if text.endswith('\n...'):
            text = text[:-4]
        out += ['-p', f'{name}:={text.removesuffix("...").strip()}']
    for src, dst in spec.remappings:
        out += ['-r', f'{src}:={dst}']
    return out
