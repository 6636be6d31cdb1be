"""Launch validation of the driver's joint configuration (before any node starts)."""

import pytest

from vla_ros import bringup
from vla_ros import parameters as schema

# command_interface and joint_names under /**: both nodes read them (docs/joint_space.md);
# the launch refuses nodes that disagree.
GOOD = ('/**:\n  ros__parameters:\n'
        '    command_interface: joint_position\n    joint_names: [joint1, joint2]\n'
        '/**/vla_driver:\n  ros__parameters:\n'
        '    joint_position_min: [-1.0, -1.0]\n    joint_position_max: [1.0, 1.0]\n'
        '    joint_max_velocity: [0.5, 0.5]\n')


def _nodes(tmp_path, content):
    path = tmp_path / 'robot.yaml'
    path.write_text(content)
    return bringup.nodes('sim_arm', {'params_file': str(path)})


def test_a_complete_joint_configuration_launches(tmp_path):
    specs = _nodes(tmp_path, GOOD)
    assert [s.name for s in specs] == ['vla_driver', 'vla_inference']


@pytest.mark.parametrize('replace, message', [
    (('[-1.0, -1.0]', '[-1.0]'), 'joint_position_min has 1 values but joint_names has 2'),
    (('    joint_max_velocity: [0.5, 0.5]\n', ''), 'needs joint_max_velocity'),
    (('[0.5, 0.5]', '[0.5, 0.0]'), 'joint_max_velocity must be > 0'),
    (('joint_position_max: [1.0, 1.0]', 'joint_position_max: [1.0, -2.0]'),
     'below joint_position_max'),
    (('joint_max_velocity: [0.5, 0.5]',
      'joint_max_velocity: [0.5, 0.5]\n    joint_max_step: 0.01'),
     'joint_max_step: 0.01 is not a non-empty list'),
])
def test_joint_configuration_mismatches_stop_the_launch(tmp_path, replace, message):
    with pytest.raises(bringup.LaunchError, match=message):
        _nodes(tmp_path, GOOD.replace(*replace))


def test_a_scalar_for_a_joint_list_is_named():
    # Robot files are not type-checked like params_file: the rule names the value.
    from vla_ros.drivers.joint_rules import joint_limits_from_parameters

    values = dict(joint_names=['a', 'b'], joint_position_min=[-1.0, -1.0],
                  joint_position_max=[1.0, 1.0], joint_max_velocity=[0.5, 0.5],
                  joint_max_step=0.01)
    with pytest.raises(ValueError, match=r'joint_max_step must be a list, e.g. \[0.01\]'):
        joint_limits_from_parameters(values)


@pytest.mark.parametrize('robot, backend', [('ros2_control_arm', 'ros2_control'),
                                            ('servo_arm', 'moveit_servo')])
def test_the_controller_example_robots_pass_launch_validation(robot, backend):
    # test/test_controller_backends_graph.py also starts ros2_control_arm's driver.
    specs = bringup.nodes('vla', {'robot': robot, 'sim': 'false', 'backend': backend})
    assert specs[0].name == 'vla_driver' and specs[0].parameters['backend'] == backend


def test_ee_twist_ignores_the_joint_parameters(tmp_path):
    content = GOOD.replace('joint_position\n', 'ee_twist\n').replace('[-1.0, -1.0]', '[-1.0]')
    assert _nodes(tmp_path, content)


def test_schema_choices_are_the_driver_interfaces():
    from vla_ros.drivers.joint_rules import COMMAND_INTERFACES

    assert schema.spec(schema.DRIVER, 'command_interface').allowed() == COMMAND_INTERFACES
    with pytest.raises(schema.ParameterValueError, match='not one of'):
        schema.convert(schema.spec(schema.DRIVER, 'command_interface'), 'joint_torque')
