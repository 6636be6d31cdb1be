"""The one description of what a launch starts: a robot and a policy, composed.

Both ``launch/*.launch.py`` (for ``ros2 launch`` on a full ROS 2 install) and
``vla-ros launch`` (for pip-only machines) read the node list, parameter files and
argument-derived parameters from here, so the two paths cannot drift apart.

A launch is ``robot`` x ``policy``: the driver and inference nodes with
``config/robots/<robot>.yaml`` and, if it exists, ``config/policies/<policy>.yaml``. The
generic configuration ``vla`` takes both as arguments; the named ones (``sim_arm``,
``openvla_arm``, ...) are shortcuts that only change their defaults. A new policy family
therefore needs no entry here: ``vla-ros launch vla policy:=NAME`` works once it is
registered, and its ``config/policies/NAME.yaml`` (optional) holds its rates and
chunk strategy.

Launch values are strings; they are converted to each parameter's declared type and
validated (:mod:`vla_ros.parameters`) before any node starts. Parameter sources, each
overriding the previous: the schema defaults, the robot file, the policy file, the
launch-derived values (arguments, the sim profile of the shipped checkpoints), and last
the user's ``params_file``, so a limit the user wrote there always wins.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vla_ros import parameters as schema
from vla_ros.paths import config_dir
from vla_ros.policies.instruction_retrieval import INSTRUCTIONS_FILE

GENERIC = 'vla'


@dataclass(frozen=True)
class LaunchArgument:
    """A launch argument: ``name:=value`` on the command line.

    ``parameter``/``node``: the node parameter it sets (typed and described by the
    schema); an empty value leaves that parameter to the files and the schema default.
    """

    name: str
    default: str
    description: str
    choices: tuple[str, ...] = ()
    parameter: str = ''
    node: str = ''


@dataclass(frozen=True)
class NodeSpec:
    """One node to start: executable, name, parameter files, overrides, remappings.

    Parameters apply in this order: ``param_files``, ``parameters``, ``final_param_files``
    (the user's ``params_file``, so its values win). ``replaced``: launch-derived values
    left out because the user's file sets them (name -> the value it replaced).
    """

    executable: str
    module: str
    name: str
    param_files: tuple[str, ...]
    parameters: dict = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    final_param_files: tuple[str, ...] = ()
    replaced: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Configuration:
    """A launch configuration: the default robot and policy (both can be overridden)."""

    description: str
    robot: str
    policy: str


CONFIGURATIONS = {
    GENERIC: Configuration(
        'any robot with any registered policy: robot:=NAME policy:=NAME',
        robot='arm', policy='scripted'),
    'sim_arm': Configuration(
        '7-DoF arm in MuJoCo driven by the scripted test policy (no model needed)',
        robot='arm', policy='scripted'),
    'openvla_arm': Configuration(
        '7-DoF arm with an OpenVLA-family policy (256-bin action tokens)',
        robot='arm', policy='openvla'),
    'octo_arm': Configuration(
        '7-DoF arm with an Octo-style diffusion policy (action chunks)',
        robot='arm', policy='octo'),
    'pi0_arm': Configuration(
        '7-DoF arm with a pi0-style flow-matching policy (50-step chunks)',
        robot='arm', policy='pi0_style'),
    'rt2_arm': Configuration(
        '7-DoF arm with an RT-2-style VLM that writes actions as text',
        robot='arm', policy='rt2'),
    'rt1_mobile': Configuration(
        'Mobile manipulator (arm on a planar base) with an RT-1 policy, 11-D actions',
        robot='mobile_manipulator', policy='rt1'),
}


def robots() -> tuple[str, ...]:
    """Robot names: the files in ``config/robots``."""
    return tuple(sorted(p.stem for p in config_dir('robots').glob('*.yaml')))


def policy_file(policy: str) -> Path | None:
    """``config/policies/<policy>.yaml`` if the family ships one (its rates, strategy)."""
    path = config_dir('policies', f'{policy}.yaml')
    return path if path.is_file() else None


def _parameter_argument(name: str, node: str, default: str = '', note: str = '',
                        parameter: str = '') -> LaunchArgument:
    spec = schema.spec(node, parameter or name)
    text = f'{spec.description} [{spec.summary()}]'
    if spec.allowed():
        text += f'; one of: {", ".join(repr(c) for c in spec.allowed())}'
    return LaunchArgument(name, default, text + note, parameter=spec.name, node=node)


def _base_arguments() -> tuple[LaunchArgument, ...]:
    inf, drv = schema.INFERENCE, schema.DRIVER
    sim_only = ' (sim only)'
    return (
        LaunchArgument('namespace', '', 'namespace of all nodes (one robot per namespace)'),
        LaunchArgument('robot', '', 'robot description config/robots/<robot>.yaml: driver '
                       'limits, cameras, proprioception', robots()),
        _parameter_argument('policy', inf),
        LaunchArgument('sim', 'true', 'true: MuJoCo simulated robot (without model_path: '
                       "the policy's shipped sim checkpoint, if any); false: the hardware "
                       'backend named by the backend argument', ('true', 'false')),
        LaunchArgument('backend', 'dry_run', 'driver backend when sim:=false (dry_run or a '
                       'registered hardware backend)'),
        _parameter_argument('model_path', inf, note='; must exist'),
        _parameter_argument('unnorm_key', inf),
        _parameter_argument('policy_params', inf),
        _parameter_argument('device', inf),
        _parameter_argument('dtype', inf),
        _parameter_argument('chunk_strategy', inf),
        _parameter_argument('gripper_mode', inf),
        _parameter_argument('control_rate_hz', inf),
        _parameter_argument('inference_rate_hz', inf),
        _parameter_argument('cameras', inf),
        LaunchArgument('enable_actuation', '', 'driver actuation interlock (empty: on for '
                       'simulation, off for hardware)', ('', 'true', 'false'),
                       parameter='enable_actuation', node=drv),
        LaunchArgument('params_file', '', 'your ROS parameter file, applied LAST to both '
                       'nodes: its values win over every other source'),
        _parameter_argument('task', drv, note=sim_only, parameter='task'),
        _parameter_argument('task_seed', drv, note=sim_only, parameter='task_seed'),
        _parameter_argument('task_split', drv, note=sim_only, parameter='task_split'),
        _parameter_argument('publish_task_instruction', drv,
                            note=' (with task:=...; the demo, which times its own '
                                 'instructions, turns it off)'),
    )


def _get(configuration: str) -> Configuration:
    try:
        return CONFIGURATIONS[configuration]
    except KeyError:
        raise ValueError(f'unknown configuration {configuration!r}; available: '
                         f'{", ".join(sorted(CONFIGURATIONS))}') from None


def arguments(configuration: str) -> tuple[LaunchArgument, ...]:
    """The launch arguments of ``configuration`` (shortcuts differ in robot/policy defaults)."""
    config = _get(configuration)
    defaults = {'robot': config.robot, 'policy': config.policy}
    return tuple(LaunchArgument(a.name, defaults.get(a.name, a.default), a.description,
                                a.choices, a.parameter, a.node)
                 for a in _base_arguments())


def resolve_arguments(configuration: str, given: dict[str, str]) -> dict[str, str]:
    """Fill defaults and check names and fixed choices of ``name:=value`` arguments."""
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
# acceleration ramp. This profile applies only in sim mode with a shipped checkpoint; the
# schema defaults (vla_ros.parameters.SAFETY_DEFAULTS) are more cautious, and a
# params_file overrides it.
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
# Per family: the shipped openvla_sim decodes its gripper token to fully open / closed
# and flips it for a tick or two while holding (170 reversals in 20 pick-ups); the binary
# filter's 0.5 s dwell removes them and lifts 18/20 objects first instead of 14/20
# (docs/results.md, "finishing the task"). Measured on that checkpoint only, so not in
# config/policies/openvla.yaml, which also serves released OpenVLA checkpoints.
SHIPPED_SIM_POLICY = {'openvla': {'gripper_mode': 'binary'}}


class LaunchError(ValueError):
    """Launch arguments that must not start any node; the message lists every problem."""


def _typed_arguments(args: dict[str, str], known: dict[str, LaunchArgument]):
    """Convert every parameter-backed argument that is set; collect all the problems."""
    typed = {schema.INFERENCE: {}, schema.DRIVER: {}}
    problems = []
    for name, value in args.items():
        argument = known[name]
        if not argument.parameter or value == '':
            continue
        try:
            typed[argument.node][argument.parameter] = schema.convert(
                schema.spec(argument.node, argument.parameter), value)
        except ValueError as exc:
            problems.append(str(exc))
    if 'policy_params' in typed[schema.INFERENCE]:
        from vla_ros.inference_config import parse_policy_params

        try:
            parse_policy_params(typed[schema.INFERENCE]['policy_params'])
        except ValueError as exc:
            problems.append(str(exc))
    model_path = typed[schema.INFERENCE].get('model_path')
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.exists():
            problems.append(f'model_path:={model_path!r} does not exist')
        else:
            typed[schema.INFERENCE]['model_path'] = str(path.resolve())
    return typed, problems


def _sections(doc, path=()):
    """(node path, flat parameters) of every ``ros__parameters`` mapping in a file."""
    if not isinstance(doc, dict):
        return
    for key, value in doc.items():
        if key == 'ros__parameters':
            yield '/'.join(path), dict(_flatten(value)) if isinstance(value, dict) else value
        else:
            yield from _sections(value, path + (str(key).strip('/'),))


def _flatten(mapping, prefix=''):
    for key, value in mapping.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            yield from _flatten(value, name + '.')
        else:
            yield name, value


def check_params_file(path: str) -> list[str]:
    """Problems of a user's parameter file for our nodes (empty: it is fine).

    Values for our nodes must have the declared type (an integer for a double makes the
    node refuse to start, so it is reported here) and names must exist, since a node
    ignores a misspelt one: a typo in a safety limit would silently not apply.
    Names with a dot (a plugin's namespace) are left to their owner.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        return [f'params_file:={path!r} does not exist']
    try:
        doc = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        return [f'params_file {path}: not readable YAML: {exc}']
    sections = list(_sections(doc))
    if not sections:
        return [f'params_file {path}: no "<node>: ros__parameters:" section']
    problems = []
    nodes = {name: node for node, name in schema.NODE_NAMES.items()}
    for where, values in sections:
        if not isinstance(values, dict):
            problems.append(f'params_file {path}: {where}/ros__parameters is not a mapping')
            continue
        last = where.split('/')[-1] if where else '**'
        if last in nodes:
            targets = [nodes[last]]
        elif last == '**' or '*' in last:
            targets = list(schema.NODE_NAMES)
        else:
            continue  # some other node's section
        for name, value in values.items():
            if name == 'use_sim_time' or '.' in name:
                continue
            specs = [schema.node_parameters(t)[name] for t in targets
                     if name in schema.node_parameters(t)]
            if not specs:
                known = set().union(*(schema.node_parameters(t) for t in targets))
                problems.append(f'params_file {path}: {where}: unknown parameter {name!r}'
                                f'{schema.did_you_mean(name, known)}')
            for spec in specs:
                try:
                    schema.check(spec, value, strict_doubles=True)
                except ValueError as exc:
                    problems.append(f'params_file {path}: {where}: {exc}')
    return problems


def nodes(configuration: str, given: dict[str, str]) -> list[NodeSpec]:
    """The nodes of ``configuration`` with typed, validated parameters (LaunchError)."""
    config = _get(configuration)
    known = {a.name: a for a in arguments(configuration)}
    args = resolve_arguments(configuration, given)
    args['policy'] = args['policy'] or config.policy
    typed, problems = _typed_arguments(args, known)
    sim = args['sim'] == 'true'
    if args['task'] and not sim:
        problems.append('task:=... needs sim:=true (it lays out the simulated scene)')
    final = ()
    if args['params_file']:
        problems += check_params_file(args['params_file'])
        final = (str(Path(args['params_file']).expanduser().resolve()),)
    if problems:
        raise LaunchError('invalid launch arguments:\n  - ' + '\n  - '.join(problems))

    policy = typed[schema.INFERENCE]['policy']
    namespace = '/' + args['namespace'].strip('/') if args['namespace'].strip('/') else ''
    driver_params = {'backend': 'mujoco' if sim else args['backend']}
    driver_params.update(typed[schema.DRIVER])
    inference_params = dict(typed[schema.INFERENCE])
    user_checkpoint = any('model_path' in _file_values(path, f'{namespace}/vla_inference')
                          for path in final)
    if sim and not args['model_path'] and not user_checkpoint:
        # Sim mode defaults to the checkpoint this project trained in the same simulator.
        checkpoint = shipped_checkpoint(policy)
        if checkpoint:
            inference_params['model_path'] = checkpoint
            for name, value in {**SHIPPED_SIM_INFERENCE, **SHIPPED_SIM_RATES,
                                **SHIPPED_SIM_POLICY.get(policy, {})}.items():
                inference_params.setdefault(name, value)  # a given argument wins
            driver_params.update(SHIPPED_SIM_DRIVER)
            if (Path(checkpoint) / INSTRUCTIONS_FILE).is_file() and \
                    'policy_params' not in inference_params:
                # Paraphrases the policy never saw reach it as its nearest training
                # instruction (vla_ros.policies.instruction_retrieval).
                inference_params['policy_params'] = json.dumps({'instruction_set': 'checkpoint'})
    robot_file = str(config_dir('robots', f'{args["robot"]}.yaml'))
    joint_problem = _joint_configuration_problem(
        driver_params, (robot_file,) + final, f'{namespace}/{schema.NODE_NAMES[schema.DRIVER]}')
    if joint_problem:
        raise LaunchError('invalid launch arguments:\n  - ' + joint_problem)
    family_file = policy_file(policy)
    _check_joint_configuration(
        _effective_values(schema.INFERENCE, (robot_file,) + ((str(family_file),)
                                                            if family_file else ()),
                          inference_params, final, namespace),
        _effective_values(schema.DRIVER, (robot_file,), driver_params, final, namespace),
        f'{namespace}/{schema.NODE_NAMES[schema.INFERENCE]}')
    specs = []
    for node, module, files, params in (
            (schema.DRIVER, 'driver_node', (robot_file,), driver_params),
            (schema.INFERENCE, 'inference_node',
             (robot_file,) + ((str(family_file),) if family_file else ()), inference_params)):
        name = schema.NODE_NAMES[node]
        kept, replaced = _leave_to_params_file(params, final, f'{namespace}/{name}')
        specs.append(NodeSpec(module, f'vla_ros.nodes.{module}', name, files, kept,
                              final_param_files=final, replaced=replaced))
    return specs


def _effective_values(node: str, files, parameters: dict, final_files, namespace: str):
    """What ``node`` will read: schema defaults, its files, launch values, the user's file."""
    fully_qualified = f'{namespace}/{schema.NODE_NAMES[node]}'
    values = {name: spec.default for name, spec in schema.node_parameters(node).items()}
    for path in files:
        values.update(_file_values(path, fully_qualified))
    values.update(parameters)
    for path in final_files:
        values.update(_file_values(path, fully_qualified))
    return values


def _check_joint_configuration(inference: dict, driver: dict, fully_qualified: str):
    """Refuse joint-space settings that do not fit together before any node starts.

    The inference node's effective values must form a valid joint configuration when its
    ``command_interface`` is a joint one (docs/joint_space.md), and the driver must take
    the same interface and joints: otherwise every command would be refused or unheard.
    """
    from vla_ros.runtime.joint_commands import joint_config_from_params

    try:
        config = joint_config_from_params(inference)
    except ValueError as exc:
        raise LaunchError(f'invalid joint-space configuration for {fully_qualified}: '
                          f'{exc}') from None
    interfaces = (inference.get('command_interface'), driver.get('command_interface'))
    if interfaces[0] != interfaces[1]:
        raise LaunchError(f'command_interface differs: vla_inference {interfaces[0]!r}, '
                          f'vla_driver {interfaces[1]!r} (set it once under /**)')
    if config is not None:
        driver_joints = tuple(j for j in driver.get('joint_names') or () if j)
        if driver_joints != config.joint_names:
            raise LaunchError(f'joint_names differ: vla_inference {list(config.joint_names)}, '
                              f'vla_driver {list(driver_joints)} (set them once under /**)')


def _joint_configuration_problem(driver_params: dict, files, fully_qualified: str) -> str:
    """Why the driver's joint configuration would fail at configure ('' if it would not).

    With a joint ``command_interface`` the joint limits must be set and have one value per
    joint; checked here, from the robot file, the launch arguments and the user's file in
    the order the node reads them, so a mismatch stops the launch before any node starts.
    """
    from vla_ros.drivers.joint_rules import joint_limits_from_parameters

    merged = {name: spec.default for name, spec in schema.DRIVER_PARAMETERS.items()}
    merged.update(_file_values(files[0], fully_qualified) if Path(files[0]).is_file() else {})
    merged.update(driver_params)
    for path in files[1:]:
        merged.update(_file_values(path, fully_qualified))
    interface = merged.get('command_interface') or 'ee_twist'
    if interface == 'ee_twist':
        return ''
    try:
        joint_limits_from_parameters(merged)
    except (TypeError, ValueError) as exc:
        return f'command_interface {interface!r}: {exc}'
    return ''


def _section_matches(section: str, fully_qualified: str) -> bool:
    """Whether a parameter-file section (``/**/name``, ``/ns/*``, ``name``) is for a node.

    As rcl reads them: ``**`` spans any number of namespace tokens, ``*`` one token, a key
    without a leading slash is relative to the root.
    """
    import re

    tokens = [t for t in section.split('/') if t] or ['**']
    pattern = ''.join('(/[^/]+)*' if t == '**' else '/[^/]+' if t == '*'
                      else '/' + re.escape(t).replace(r'\*', '[^/]*') for t in tokens)
    return re.fullmatch(pattern, fully_qualified) is not None


def _file_values(path: str, fully_qualified: str) -> dict:
    """The values a parameter file gives the node ``fully_qualified`` (last one wins)."""
    out = {}
    for section, values in _sections(yaml.safe_load(Path(path).read_text())):
        if isinstance(values, dict) and _section_matches(section, fully_qualified):
            out.update(values)
    return out


def _leave_to_params_file(parameters: dict, final_files, fully_qualified: str):
    """Drop launch-derived values the user's file sets: (kept, replaced).

    rcl resolves parameter files by node key in the order the keys first appeared, not in
    argument order, so a later file whose key came first (e.g. ``/**/vla_driver`` after an
    override keyed ``/**``, as ``-p`` and launch_ros write them) would lose. Leaving the
    value out makes the user's file the only source of it, under either launcher.
    """
    user = {}
    for path in final_files:
        user.update(_file_values(path, fully_qualified))
    kept = {k: v for k, v in parameters.items() if k not in user}
    replaced = {k: v for k, v in parameters.items() if k in user and user[k] != v}
    return kept, replaced


def overridden_by_params_file(specs: list[NodeSpec]) -> list[str]:
    """Launch-derived values the user's params_file replaced (said at start)."""
    notes = []
    for spec in specs:
        for name, value in spec.replaced.items():
            notes.append(f'{spec.name}: params_file sets {name} (launch value {value!r} '
                         'not used)')
    return notes


def launch_parameters(spec: NodeSpec) -> list:
    """``parameters=`` of a launch_ros Node, in the order of :func:`ros_args`."""
    typed = {name: list(v) if isinstance(v, tuple) else v for name, v in spec.parameters.items()}
    return [*spec.param_files, typed, *spec.final_param_files]


def _ros_value(value) -> str:
    """A typed value as rcl reads ``-p name:=value`` (YAML, doubles keep their point)."""
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    if text.endswith('\n...'):
        text = text[:-4]
    return text.removesuffix('...').strip()


def ros_args(spec: NodeSpec, namespace: str = '') -> list[str]:
    """``--ros-args`` for starting ``spec`` as a plain process (what launch_ros does)."""
    out = ['--ros-args', '-r', f'__node:={spec.name}']
    if namespace:
        out += ['-r', f'__ns:=/{namespace.strip("/")}']
    for path in spec.param_files:
        out += ['--params-file', path]
    for name, value in spec.parameters.items():
        out += ['-p', f'{name}:={_ros_value(value)}']
    for path in spec.final_param_files:
        out += ['--params-file', path]
    for src, dst in spec.remappings:
        out += ['-r', f'{src}:={dst}']
    return out


def help_text() -> str:
    """Configurations and arguments, described (``vla-ros launch --help``)."""
    lines = ['configurations (a robot and a policy; the named ones are shortcuts of '
             f'{GENERIC!r}):']
    for name, config in CONFIGURATIONS.items():
        lines.append(f'  {name:12s} robot:={config.robot} policy:={config.policy}')
        lines.append(f'  {"":12s} {config.description}')
    lines.append('')
    lines.append("arguments (name:=value; defaults are those of 'vla'; an argument left "
                 'empty leaves its parameter to the robot and policy files, then to the '
                 'default shown):')
    lines += describe_arguments(GENERIC)
    return '\n'.join(lines)


def describe_arguments(configuration: str, width: int = 92) -> list[str]:
    """One entry per argument of ``configuration``: name, default, wrapped description."""
    import textwrap

    lines = []
    for a in arguments(configuration):
        default = f' (default {a.default!r})' if a.default else ''
        lines.append(f'  {a.name}{default}')
        lines += textwrap.wrap(a.description, width, break_on_hyphens=False,
                               initial_indent=' ' * 6, subsequent_indent=' ' * 6)
    return lines
