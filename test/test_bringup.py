"""One source of truth for the launch files and ``vla-ros launch``."""

import ast
import json
import pathlib
import subprocess
import sys

import pytest
import yaml

from vla_ros import bringup

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_configuration_has_a_launch_file_that_uses_bringup():
    for name in bringup.CONFIGURATIONS:
        path = ROOT / 'launch' / f'{name}.launch.py'
        tree = ast.parse(path.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and getattr(n.func, 'id', '') == 'generate_for']
        assert [c.args[0].value for c in calls] == [name], path
        assert any(isinstance(n, ast.FunctionDef) and n.name == 'generate_launch_description'
                   for n in tree.body)


def test_launch_description_module_uses_launch_ros_api():
    source = (ROOT / 'vla_ros' / 'launch_description.py').read_text()
    for api in ('DeclareLaunchArgument', 'OpaqueFunction', 'LaunchConfiguration',
                'launch_ros.actions import Node', 'description='):
        assert api in source


def test_nodes_and_parameter_files():
    specs = bringup.nodes('openvla_arm', {'model_path': '/models/x', 'policy': 'openvla'})
    assert [s.executable for s in specs] == ['driver_node', 'inference_node']
    driver, inference = specs
    assert driver.parameters == {'backend': 'mujoco'}
    assert inference.parameters == {'model_path': '/models/x', 'policy': 'openvla'}
    for spec in specs:
        for path in spec.param_files:
            data = yaml.safe_load(pathlib.Path(path).read_text())
            assert all('ros__parameters' in v for v in data.values()), path
    policy_file = yaml.safe_load(pathlib.Path(inference.param_files[-1]).read_text())
    assert policy_file['/**/vla_inference']['ros__parameters']['policy'] == 'openvla'


def test_sim_mode_defaults_to_the_shipped_checkpoint_with_instruction_retrieval():
    from vla_ros.models import model_path

    driver, inference = bringup.nodes('openvla_arm', {})
    assert inference.parameters['model_path'] == model_path('openvla')
    assert json.loads(inference.parameters['policy_params']) == {'instruction_set': 'checkpoint'}
    assert driver.parameters['image_width'] == 64 and driver.parameters['camera_rate_hz'] == 30
    assert inference.parameters['inference_rate_hz'] == 10.0
    _, inference = bringup.nodes('openvla_arm', {'inference_rate_hz': '5'})
    assert inference.parameters['inference_rate_hz'] == 5  # a given argument wins
    # a user's checkpoint gets neither
    _, inference = bringup.nodes('openvla_arm', {'model_path': '/models/x'})
    assert 'policy_params' not in inference.parameters


def test_hardware_and_overrides():
    driver, inference = bringup.nodes(
        'rt1_mobile', {'sim': 'false', 'backend': 'dry_run', 'enable_actuation': 'false',
                       'control_rate_hz': '20', 'namespace': 'robot1'})
    assert driver.parameters == {'backend': 'dry_run', 'enable_actuation': False}
    assert inference.parameters == {'control_rate_hz': 20}
    args = bringup.ros_args(inference, 'robot1')
    assert args[:4] == ['--ros-args', '-r', '__node:=vla_inference', '-r']
    assert '__ns:=/robot1' in args and 'control_rate_hz:=20' in args
    assert any(a.endswith('mobile_manipulator.yaml') for a in args)


@pytest.mark.parametrize('given, message', [
    ({'polcy': 'x'}, 'unknown launch argument'),
    ({'sim': 'maybe'}, 'is not one of'),
])
def test_bad_arguments_are_rejected(given, message):
    with pytest.raises(ValueError, match=message):
        bringup.nodes('sim_arm', given)
    with pytest.raises(ValueError, match='available'):
        bringup.nodes('no_such_config', {})


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


def test_cli_policies_json(ros_env, python_exe):
    out = subprocess.run([python_exe, '-m', 'vla_ros.cli', 'policies', '--json'],
                         capture_output=True, text=True, env=ros_env, check=True).stdout
    assert 'scripted' in {row['name'] for row in json.loads(out)}
    assert sys.executable


def test_task_episode_instruction_is_published_by_the_driver_unless_declined():
    driver, _ = bringup.nodes('sim_arm', {'task': 'reach', 'task_seed': '7'})
    assert driver.parameters['task'] == 'reach' and driver.parameters['task_seed'] == 7
    assert driver.parameters['publish_task_instruction'] is True
    driver, _ = bringup.nodes('sim_arm', {'task': 'reach',
                                          'publish_task_instruction': 'false'})
    assert driver.parameters['publish_task_instruction'] is False
    driver, _ = bringup.nodes('sim_arm', {})
    assert 'publish_task_instruction' not in driver.parameters  # no task, nothing to say
