"""One source of truth for the launch files and ``vla-ros launch``.

Composition, typed and validated values, params_file last, the DDS profile, shell-safe
--print, --help.
"""

import ast
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import types

import pytest
import yaml

from vla_ros import bringup, dds
from vla_ros import parameters as schema

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_configuration_has_a_launch_file_that_uses_bringup():
    assert bringup.GENERIC in bringup.CONFIGURATIONS
    for name in bringup.CONFIGURATIONS:
        path = ROOT / 'launch' / f'{name}.launch.py'
        tree = ast.parse(path.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and getattr(n.func, 'id', '') == 'generate_for']
        assert [c.args[0].value for c in calls] == [name], path
        assert any(isinstance(n, ast.FunctionDef) and n.name == 'generate_launch_description'
                   for n in tree.body)
    assert {p.name.removesuffix('.launch.py') for p in (ROOT / 'launch').glob('*.launch.py')} \
        == set(bringup.CONFIGURATIONS)


def test_launch_description_module_uses_launch_ros_api():
    source = (ROOT / 'vla_ros' / 'launch_description.py').read_text()
    for api in ('DeclareLaunchArgument', 'OpaqueFunction', 'LaunchConfiguration',
                'launch_ros.actions import Node', 'description=', 'SetEnvironmentVariable',
                'bringup.launch_parameters(spec)', 'bringup.nodes(configuration, given)'):
        assert api in source


class _Fake:
    """Records how it was built (stands in for a launch / launch_ros class)."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


@pytest.fixture
def fake_launch(monkeypatch):
    """Minimal stand-ins for launch / launch_ros (not installable here) to run our code."""
    given = {}

    class LaunchConfiguration(_Fake):
        def perform(self, context):
            return context.values[self.args[0]]

    modules = {
        'launch': types.SimpleNamespace(LaunchDescription=lambda items: list(items)),
        'launch.actions': types.SimpleNamespace(
            DeclareLaunchArgument=_Fake, OpaqueFunction=_Fake,
            SetEnvironmentVariable=_Fake),
        'launch.substitutions': types.SimpleNamespace(LaunchConfiguration=LaunchConfiguration),
        'launch_ros': types.SimpleNamespace(),
        'launch_ros.actions': types.SimpleNamespace(Node=_Fake),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, 'vla_ros.launch_description', raising=False)
    import vla_ros.launch_description as module

    def run(configuration, arguments, environment=None):
        items = module.generate_for(configuration)
        declared = {d.args[0]: d.kwargs['default_value'] for d in items[:-1]}
        given.clear()
        given.update(declared, **arguments)
        context = types.SimpleNamespace(values=given, environment=environment or {})
        return items, items[-1].kwargs['function'](context)
    return run


def test_ros2_launch_path_declares_arguments_and_starts_the_bringup_nodes(fake_launch,
                                                                        tmp_path):
    params = tmp_path / 'mine.yaml'
    params.write_text('/**/vla_driver:\n  ros__parameters:\n    camera_rate_hz: 15.0\n')
    items, actions = fake_launch('openvla_arm', {'params_file': str(params)})
    names = [d.args[0] for d in items[:-1]]
    assert names == [a.name for a in bringup.arguments('openvla_arm')]
    env, driver, inference = actions
    assert env.args == (dds.PROFILE_VARIABLE, dds.default_profile())
    assert driver.kwargs['executable'] == 'driver_node'
    assert driver.kwargs['parameters'][-1] == str(params.resolve())  # applied last
    assert driver.kwargs['parameters'][-2]['max_linear_velocity'] == 0.5  # sim profile
    assert 'camera_rate_hz' not in driver.kwargs['parameters'][-2]  # left to the user's file
    assert inference.kwargs['parameters'][-2]['policy'] == 'openvla'
    # the user's profile stands
    _, actions = fake_launch('sim_arm', {}, environment={dds.PROFILE_VARIABLE: '/mine.xml'})
    assert [a.kwargs['executable'] for a in actions] == ['driver_node', 'inference_node']
    # bad values stop the launch before any node is described
    with pytest.raises(bringup.LaunchError, match='control_rate_hz'):
        fake_launch('sim_arm', {'control_rate_hz': 'abc'})


# ------------------------------------------------------------------ composition
def test_named_configurations_are_shortcuts_of_the_generic_one():
    for name, config in bringup.CONFIGURATIONS.items():
        shortcut = bringup.nodes(name, {})
        generic = bringup.nodes(bringup.GENERIC, {'robot': config.robot,
                                                  'policy': config.policy})
        assert shortcut == generic, name
    # a shortcut's policy can be replaced, and its family's file comes with it
    _, inference = bringup.nodes('openvla_arm', {'policy': 'octo', 'sim': 'false'})
    assert inference.param_files[-1].endswith('octo.yaml')
    assert inference.parameters == {'policy': 'octo'}


def test_robot_and_policy_files():
    driver, inference = bringup.nodes(bringup.GENERIC, {'robot': 'mobile_manipulator',
                                                        'policy': 'rt1', 'sim': 'false'})
    assert driver.param_files == (str(ROOT / 'config/robots/mobile_manipulator.yaml'),)
    assert inference.param_files == (str(ROOT / 'config/robots/mobile_manipulator.yaml'),
                                     str(ROOT / 'config/policies/rt1.yaml'))
    assert set(bringup.robots()) == {'arm', 'arm_joint', 'mobile_manipulator',
                                     'ros2_control_arm', 'servo_arm'}
    with pytest.raises(ValueError, match="robot:='mobile' is not one of"):
        bringup.nodes(bringup.GENERIC, {'robot': 'mobile'})
    for spec in (driver, inference):
        for path in spec.param_files:
            data = yaml.safe_load(pathlib.Path(path).read_text())
            assert all('ros__parameters' in v for v in data.values()), path


def test_worked_example_a_new_policy_family_needs_only_its_parameter_file(
        tmp_path, monkeypatch, ros_env, python_exe):
    """Adding a family: register it, write config/policies/NAME.yaml; nothing else."""
    from vla_ros.policies.registry import register_policy, unregister_policy

    config = tmp_path / 'config'
    shutil.copytree(ROOT / 'config', config)
    (config / 'policies' / 'tiny_mlp.yaml').write_text(
        '/**/vla_inference:\n  ros__parameters:\n    inference_rate_hz: 2.0\n'
        '    execute_steps: 2\n')
    monkeypatch.setattr(bringup, 'config_dir', lambda *parts: config.joinpath(*parts))
    register_policy('tiny_mlp', 'tiny_mlp_policy:TinyMlpPolicy', 'test family')
    try:
        driver, inference = bringup.nodes('vla', {'policy': 'tiny_mlp'})
        assert inference.parameters['policy'] == 'tiny_mlp'
        assert inference.param_files[-1] == str(config / 'policies' / 'tiny_mlp.yaml')
        assert 'tiny_mlp' in [a for a in bringup.arguments('vla') if a.name == 'policy'][0] \
            .description
        # a shortcut's family file is used whichever configuration the user starts from
        assert bringup.nodes('pi0_arm', {'policy': 'tiny_mlp'})[1] == inference
    finally:
        unregister_policy('tiny_mlp')
    with pytest.raises(bringup.LaunchError, match="'tiny_mlp' is not one of"):
        bringup.nodes('vla', {'policy': 'tiny_mlp'})  # unregistered: refused at once
    # a registered family without a file runs on the schema defaults
    register_policy('tiny_mlp', 'tiny_mlp_policy:TinyMlpPolicy', 'test family')
    try:
        (config / 'policies' / 'tiny_mlp.yaml').unlink()
        _, inference = bringup.nodes('vla', {'policy': 'tiny_mlp'})
        assert inference.param_files == (str(config / 'robots' / 'arm.yaml'),)
    finally:
        unregister_policy('tiny_mlp')


# ------------------------------------------------------------------ values
def test_sim_mode_defaults_to_the_shipped_checkpoint_with_instruction_retrieval():
    from vla_ros.models import model_path

    driver, inference = bringup.nodes('openvla_arm', {})
    assert inference.parameters['model_path'] == model_path('openvla')
    assert json.loads(inference.parameters['policy_params']) == {'instruction_set': 'checkpoint'}
    assert driver.parameters['image_width'] == 64 and driver.parameters['camera_rate_hz'] == 30
    assert inference.parameters['inference_rate_hz'] == 10.0
    assert inference.parameters['gripper_mode'] == 'binary'  # measured on openvla_sim
    _, inference = bringup.nodes('openvla_arm', {'inference_rate_hz': '5',
                                                 'gripper_mode': 'continuous'})
    assert inference.parameters['inference_rate_hz'] == 5.0  # a given argument wins
    assert inference.parameters['gripper_mode'] == 'continuous'
    assert type(inference.parameters['inference_rate_hz']) is float
    _, inference = bringup.nodes('openvla_arm', {'cameras': '[front]'})
    assert inference.parameters['cameras'] == ['front']
    # a user's checkpoint gets neither
    _, inference = bringup.nodes('openvla_arm', {'model_path': model_path('openvla')})
    assert 'policy_params' not in inference.parameters
    assert 'gripper_mode' not in inference.parameters


def test_hardware_and_overrides(tmp_path):
    driver, inference = bringup.nodes(
        'rt1_mobile', {'sim': 'false', 'backend': 'dry_run', 'enable_actuation': 'false',
                       'control_rate_hz': '20', 'namespace': 'robot1',
                       'model_path': str(tmp_path)})
    assert driver.parameters == {'backend': 'dry_run', 'enable_actuation': False}
    assert inference.parameters == {'policy': 'rt1', 'control_rate_hz': 20.0,
                                    'model_path': str(tmp_path.resolve())}
    args = bringup.ros_args(inference, 'robot1')
    assert args[:4] == ['--ros-args', '-r', '__node:=vla_inference', '-r']
    assert '__ns:=/robot1' in args and 'control_rate_hz:=20.0' in args
    assert any(a.endswith('mobile_manipulator.yaml') for a in args)


def test_task_episode_arguments(tmp_path):
    driver, _ = bringup.nodes('openvla_arm', {'task': 'pick_up', 'task_seed': '5009',
                                              'task_split': 'train'})
    assert (driver.parameters['task'], driver.parameters['task_seed'],
            driver.parameters['task_split']) == ('pick_up', 5009, 'train')
    driver, _ = bringup.nodes('sim_arm', {'task': 'reach'})
    assert 'task_seed' not in driver.parameters  # the schema default (1000) applies


@pytest.mark.parametrize('given, message', [
    ({'polcy': 'x'}, 'unknown launch argument'),
    ({'sim': 'maybe'}, 'is not one of'),
    ({'inference_rate_hz': 'fast'}, "inference_rate_hz:='fast' is not a number"),
    ({'control_rate_hz': 'abc'}, "control_rate_hz:='abc' is not a number"),
    ({'control_rate_hz': '1000'}, r'control_rate_hz: 1000.0 is outside \[1.0, 200.0\]'),
    ({'policy': 'nosuch'},
     "policy: 'nosuch' is not one of 'octo', 'openvla', 'openvla_sim', 'pi0', 'pi05', "
     "'pi0_style', 'rt1', 'rt2', 'scripted', 'smolvla'"),
    ({'model_path': '/no/such/checkpoint'}, "model_path:='/no/such/checkpoint' does not exist"),
    ({'chunk_strategy': 'greedy'}, 'chunk_strategy'),
    ({'policy_params': '[1, 2]'}, 'policy_params must be a mapping'),
    ({'policy_params': '{a: [}'}, 'policy_params is not valid YAML/JSON'),
    ({'enable_actuation': 'yes'}, 'is not one of'),
    ({'task': 'reach', 'sim': 'false'}, 'task:=... needs sim:=true'),
    ({'task': 'fly'}, "task: 'fly' is not one of"),
    ({'task_seed': '-1'}, 'task_seed: -1 is outside'),
    ({'params_file': '/no/such.yaml'}, "params_file:='/no/such.yaml' does not exist"),
])
def test_bad_arguments_are_rejected_before_anything_starts(given, message):
    with pytest.raises(ValueError, match=message):
        bringup.nodes('sim_arm', given)
    with pytest.raises(ValueError, match='available'):
        bringup.nodes('no_such_config', {})


def test_every_problem_is_reported_at_once():
    with pytest.raises(bringup.LaunchError) as info:
        bringup.nodes('sim_arm', {'control_rate_hz': 'abc', 'policy': 'nosuch',
                                  'model_path': '/nope'})
    assert str(info.value).count('\n  - ') == 3


@pytest.mark.parametrize('content, message', [
    ('/**/vla_driver:\n  ros__parameters:\n    max_linear_velocity: 1\n',
     'written as an integer but the parameter is a double'),
    ('/**/vla_driver:\n  ros__parameters:\n    max_linear_velocty: 0.1\n',
     "unknown parameter 'max_linear_velocty' \\(did you mean max_linear_velocity"),
    ('/**:\n  ros__parameters:\n    control_rate_hz: abc\n', "'abc' is not a number"),
    ('vla_inference:\n  ros__parameters:\n    chunk_strategy: greedy\n', 'not one of'),
    ('/**/vla_driver:\n  ros__parameters:\n    max_linear_velocity: 9.0\n', 'outside'),
    ('just: text\n', 'no "<node>: ros__parameters:" section'),
    ('a: [\n', 'not readable YAML'),
])
def test_params_file_is_checked_against_the_schema(tmp_path, content, message):
    path = tmp_path / 'mine.yaml'
    path.write_text(content)
    with pytest.raises(bringup.LaunchError, match=message):
        bringup.nodes('sim_arm', {'params_file': str(path)})


def test_params_file_sections_for_other_nodes_and_plugins_are_left_alone(tmp_path):
    path = tmp_path / 'mine.yaml'
    path.write_text('/**/camera_driver:\n  ros__parameters:\n    fps: 30\n'
                    '/**/vla_driver:\n  ros__parameters:\n    my_arm:\n      ip: 10.0.0.2\n'
                    '    use_sim_time: false\n'
                    '/**:\n  ros__parameters:\n    max_linear_acceleration: 1.0\n')
    assert bringup.check_params_file(str(path)) == []


# ------------------------------------------------------------------ params_file last
def _value_in_node(args: list[str], node_name: str, parameter: str, default):
    """What rcl gives a node started with ``args`` for ``parameter`` (no graph needed)."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(args=['node', *args], context=context,
               domain_id=int(os.environ['ROS_DOMAIN_ID']))
    try:
        node = rclpy.create_node(node_name, context=context)
        value = node.declare_parameter(parameter, default).value
        node.destroy_node()
        return value
    finally:
        rclpy.try_shutdown(context=context)


@pytest.mark.parametrize('driver_key, inference_key, namespace', [
    ('/**/vla_driver', '/**/vla_inference', ''),   # the keys of the shipped files
    ('/**', '/**', ''),
    ('vla_driver', '/vla_inference', ''),
    ('/robot1/vla_driver', '/**/vla_inference', 'robot1'),
])
def test_params_file_is_applied_last(tmp_path, driver_key, inference_key, namespace):
    """Issue 18 item 6: a user's max_linear_velocity: 0.1 became 0.5 in sim mode."""
    path = tmp_path / 'mine.yaml'
    text = (f'{driver_key}:\n  ros__parameters:\n    max_linear_velocity: 0.1\n'
            '    camera_rate_hz: 15.0\n')
    if inference_key == driver_key:
        text += '    inference_rate_hz: 4.0\n'
    else:
        text += (f'{inference_key}:\n  ros__parameters:\n    max_linear_velocity: 0.1\n'
                 '    inference_rate_hz: 4.0\n')
    path.write_text(text)
    driver, inference = bringup.nodes('openvla_arm', {
        'params_file': str(path), 'inference_rate_hz': '8', 'namespace': namespace})
    ns = ['-r', f'__ns:=/{namespace}'] if namespace else []

    def value(spec, name, default):
        # What rcl gives the node: the sim profile (0.5 m/s, 30 Hz camera) and the
        # inference_rate_hz:=8 argument lose to the user's file.
        return _value_in_node(bringup.ros_args(spec, namespace) + ns, spec.name, name,
                              default)

    assert value(driver, 'max_linear_velocity', 0.25) == 0.1
    assert value(driver, 'camera_rate_hz', 10.0) == 15.0
    assert value(driver, 'max_linear_acceleration', 2.0) == 20.0  # the profile otherwise
    assert value(inference, 'max_linear_velocity', 0.25) == 0.1
    assert value(inference, 'inference_rate_hz', 5.0) == 4.0
    assert value(inference, 'execute_steps', 4) == 1  # openvla.yaml still applies
    assert bringup.launch_parameters(driver)[-1] == str(path.resolve())
    assert 'max_linear_velocity' not in bringup.launch_parameters(driver)[-2]
    notes = bringup.overridden_by_params_file([driver, inference])
    assert 'vla_driver: params_file sets max_linear_velocity (launch value 0.5 not used)' \
        in notes
    assert 'vla_inference: params_file sets inference_rate_hz (launch value 8.0 not used)' \
        in notes


def test_a_checkpoint_in_the_params_file_turns_off_the_shipped_sim_profile(tmp_path):
    path = tmp_path / 'mine.yaml'
    path.write_text(f'/**/vla_inference:\n  ros__parameters:\n    model_path: {tmp_path}\n')
    driver, inference = bringup.nodes('openvla_arm', {'params_file': str(path)})
    assert driver.parameters == {'backend': 'mujoco'}
    assert inference.parameters == {'policy': 'openvla'}


def test_params_file_for_another_namespace_leaves_the_launch_values(tmp_path):
    path = tmp_path / 'mine.yaml'
    path.write_text('/robot2/vla_driver:\n  ros__parameters:\n    max_linear_velocity: 0.1\n')
    driver, _ = bringup.nodes('openvla_arm', {'params_file': str(path), 'namespace': 'robot1'})
    assert driver.parameters['max_linear_velocity'] == 0.5 and not driver.replaced
    # without a file, the sim profile reaches the node
    driver, _ = bringup.nodes('openvla_arm', {})
    assert _value_in_node(bringup.ros_args(driver), 'vla_driver',
                          'max_linear_velocity', 0.25) == 0.5


# ------------------------------------------------------------------ DDS profile
def test_dds_profile_is_set_only_when_the_user_has_none():
    profile = dds.default_profile()
    assert pathlib.Path(profile).is_file()
    assert profile.endswith('fastdds_large_images_rt.xml' if dds.realtime_permitted()
                            else 'fastdds_large_images.xml')
    assert dds.profile_to_set({}) == profile
    assert dds.profile_to_set({'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'}) == profile
    assert dds.profile_to_set({dds.PROFILE_VARIABLE: '/mine.xml'}) == ''
    assert dds.profile_to_set({dds.PROFILE_VARIABLE: ''}) == ''  # explicit opt-out
    for network in ('SUBNET', 'SYSTEM_DEFAULT'):  # the profile would confine UDP to loopback
        assert dds.profile_to_set({'ROS_AUTOMATIC_DISCOVERY_RANGE': network}) == ''
    env = {}
    assert dds.apply_default_profile(env) == profile and env[dds.PROFILE_VARIABLE] == profile


def test_realtime_profile_differs_only_in_reception_thread_priority():
    def words(path):  # the XML without comments, split on white space
        text = pathlib.Path(path).read_text()
        return re.sub(r'<!--.*?-->', '', text, flags=re.S).split()

    plain, rt = words(dds.default_profile(False)), words(dds.default_profile(True))
    extra = [w for w in rt if w not in plain]
    # One block per transport (shared memory and UDP), both SCHED_FIFO (1) at priority 5.
    assert rt.count('<default_reception_threads>') == 2
    assert '<scheduling_policy>1</scheduling_policy>' in extra
    assert '<priority>5</priority>' in extra
    assert [w for w in plain if w not in rt] == []


def test_launcher_gives_nodes_the_profile_unless_the_user_chose_one():
    from vla_ros.launcher import ProcessLauncher

    launcher = ProcessLauncher('sim_arm', {}, env={'PATH': '/usr/bin'})
    assert launcher.env[dds.PROFILE_VARIABLE] == dds.default_profile()
    launcher = ProcessLauncher('sim_arm', {}, env={dds.PROFILE_VARIABLE: '/mine.xml'})
    assert launcher.env[dds.PROFILE_VARIABLE] == '/mine.xml'


def test_node_entry_point_sets_the_profile_before_rclpy_starts(ros_env, python_exe):
    code = ('import os, rclpy\n'
            'from vla_ros.nodes.spin import spin_node\n'
            'seen = []\n'
            'def factory():\n'
            '    seen.append(os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"))\n'
            '    seen.append(rclpy.ok())\n'
            '    raise KeyboardInterrupt\n'
            'spin_node(factory, args=[])\n'
            'print(seen)\n')
    for env_value, expected in ((None, dds.default_profile()), ('/mine.xml', '/mine.xml')):
        env = dict(ros_env)
        env.pop(dds.PROFILE_VARIABLE, None)
        if env_value:
            env[dds.PROFILE_VARIABLE] = env_value
        out = subprocess.run([python_exe, '-c', code], env=env, capture_output=True,
                             text=True, check=True, timeout=60).stdout
        assert out.strip() == repr([expected, True])


# ------------------------------------------------------------------ CLI
def test_cli_launch_print_matches_bringup(ros_env, python_exe):
    out = subprocess.run([python_exe, '-m', 'vla_ros.cli', 'launch', 'sim_arm',
                          'policy:=scripted', '--print'], capture_output=True, text=True,
                         env=ros_env, check=True).stdout.splitlines()
    assert len(out) == 2
    assert 'vla_ros.nodes.driver_node' in out[0] and 'backend:=mujoco' in out[0]
    assert 'vla_ros.nodes.inference_node' in out[1] and 'policy:=scripted' in out[1]
    bad = subprocess.run([python_exe, '-m', 'vla_ros.cli', 'launch', 'sim_arm', 'sim:=x'],
                         capture_output=True, text=True, env=ros_env)
    assert bad.returncode == 2 and 'is not one of' in bad.stderr


def test_cli_launch_rejects_bad_values_before_starting_nodes(ros_env, python_exe):
    bad = subprocess.run([python_exe, '-m', 'vla_ros.cli', 'launch', 'sim_arm',
                          'control_rate_hz:=abc', 'policy:=nosuch', 'model_path:=/nope'],
                         capture_output=True, text=True, env=ros_env, timeout=60)
    assert bad.returncode == 2, bad.stderr
    for text in ("control_rate_hz:='abc' is not a number", "'nosuch' is not one of",
                 "model_path:='/nope' does not exist"):
        assert text in bad.stderr
    assert 'vla_driver' not in bad.stdout + bad.stderr.replace('vla_driver/', '')


def test_printed_commands_paste_into_a_shell_unchanged(ros_env, python_exe, tmp_path):
    """Issue 18 item 7: `cameras:=[front, wrist]` was printed unquoted."""
    from vla_ros.launcher import ProcessLauncher

    params = tmp_path / "it's mine.yaml"
    params.write_text('/**/vla_driver:\n  ros__parameters:\n    max_linear_velocity: 0.1\n')
    arguments = ['cameras:=[front, wrist]', 'policy_params:={"velocity": [0.01, 0, 0]}',
                 f'params_file:={params}', 'namespace:=robot 1']
    out = subprocess.run([python_exe, '-m', 'vla_ros.cli', 'launch', 'openvla_arm',
                          *arguments, '--print'], capture_output=True, text=True,
                         env=ros_env, check=True).stdout.splitlines()
    expected = ProcessLauncher('openvla_arm', dict(a.split(':=', 1) for a in arguments)) \
        .commands()
    assert len(out) == len(expected) == 2
    for line, command in zip(out, expected, strict=True):
        pasted = subprocess.run(['bash', '-c', 'printf "%s\\0" ' + line], capture_output=True,
                                text=True, check=True).stdout
        assert pasted.split('\0')[:-1] == command
        assert shlex.split(line) == command
    assert '-p' in expected[1] and 'cameras:=[front, wrist]' in expected[1]


def test_cli_launch_help_lists_configurations_and_arguments(ros_env, python_exe):
    out = subprocess.run([python_exe, '-m', 'vla_ros.cli', 'launch', '--help'],
                         capture_output=True, text=True, env=ros_env, check=True).stdout
    for name, config in bringup.CONFIGURATIONS.items():
        assert f'  {name} ' in out and config.description in out
    flat = ' '.join(out.split())
    # The arguments as a fresh interpreter describes them: this test process may hold
    # policies other tests registered (their names would be among the policy choices).
    described = json.loads(subprocess.run(
        [python_exe, '-c', 'import json; from vla_ros import bringup; print(json.dumps('
         '[[a.name, a.description] for a in bringup.arguments(bringup.GENERIC)]))'],
        capture_output=True, text=True, env=ros_env, check=True).stdout)
    assert [name for name, _ in described] == [
        a.name for a in bringup.arguments(bringup.GENERIC)]
    for name, description in described:
        assert f'  {name}' in out
        assert ' '.join(description.split()) in flat, name
    assert 'command publishing rate [Hz] [double, default 10.0, range [1.0, 200.0]' in flat
    shown = subprocess.run([python_exe, '-m', 'vla_ros.cli', 'launch', 'rt1_mobile',
                            '--show-args'], capture_output=True, text=True, env=ros_env,
                           check=True).stdout
    assert "robot (default 'mobile_manipulator')" in shown
    assert "policy (default 'rt1')" in shown


def test_cli_policies_json(ros_env, python_exe):
    out = subprocess.run([python_exe, '-m', 'vla_ros.cli', 'policies', '--json'],
                         capture_output=True, text=True, env=ros_env, check=True).stdout
    assert 'scripted' in {row['name'] for row in json.loads(out)}


def test_task_episode_instruction_is_published_by_the_driver_unless_declined():
    driver, _ = bringup.nodes('sim_arm', {'task': 'reach', 'task_seed': '7'})
    assert driver.parameters['task'] == 'reach' and driver.parameters['task_seed'] == 7
    # Not given: the driver's declared default (publish) applies.
    assert 'publish_task_instruction' not in driver.parameters
    assert schema.spec(schema.DRIVER, 'publish_task_instruction').default is True
    driver, _ = bringup.nodes('sim_arm', {'task': 'reach',
                                          'publish_task_instruction': 'false'})
    assert driver.parameters['publish_task_instruction'] is False
    with pytest.raises(bringup.LaunchError, match='publish_task_instruction'):
        bringup.nodes('sim_arm', {'task': 'reach', 'publish_task_instruction': 'maybe'})
