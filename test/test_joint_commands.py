"""Joint-space commands without ROS: name matching, modes, holds, and the engine (fake clock).

The contract is docs/joint_space.md: a checkpoint's action names are matched to the
robot's joint_names by name, never by position; placeholders are refused; holds are the
measured positions (position interface) or zeros (velocity).
"""

import numpy as np
import pytest

from vla_ros.actions.safety import SafetyLimits
from vla_ros.actions.spaces import ActionDimension, ActionSpace
from vla_ros.policies.contract import Policy, PolicySpec
from vla_ros.runtime.commands import ActionToJointCommand, make_converter, shape_command
from vla_ros.runtime.engine import EngineConfig, EngineState, InferenceEngine
from vla_ros.runtime.joint_commands import (
    JointActionMap,
    JointConfig,
    JointMappingError,
    joint_config_from_params,
    placeholder_names,
)
from vla_ros.runtime.lockstep import LockstepInference

JOINTS = tuple(f'joint{i}' for i in range(1, 8))
ACTIONS = JOINTS + ('gripper',)
FRAME = np.zeros((48, 64, 3), dtype=np.uint8)


def position_config(**changes):
    values = dict(interface='joint_position', joint_names=JOINTS, action_mode='absolute',
                  gripper_action='gripper', gripper_closed=0.0, gripper_open=0.04)
    values.update(changes)
    return JointConfig(**values)


def space(names):
    return ActionSpace('test_joints', tuple(ActionDimension(n, -10.0, 10.0) for n in names))


class FakeClock:
    def __init__(self, t=50.0):
        self.t = t

    def __call__(self):
        return self.t


class RowPolicy(Policy):
    """One fixed action row per call (chunk length 1), named ``names``."""

    def __init__(self, names, row, known=True):
        self.row = np.asarray(row, np.float32)
        self.action_names_known = known
        self._spec = PolicySpec(name='rows', action_space=space(names), chunk_length=1,
                                image_size=(64, 48), uses_proprio=True)

    @property
    def spec(self):
        return self._spec

    def predict_chunk(self, observation):
        return self.row[None]


# ------------------------------------------------------------------ the mapping
def test_actions_are_matched_by_name_in_any_order():
    names = ('gripper',) + tuple(reversed(JOINTS))
    mapping = JointActionMap(names, position_config())
    row = np.r_[0.02, np.arange(7, 0, -1) * 0.1]  # gripper, joint7..joint1
    target = mapping(row)
    assert target.names == JOINTS
    np.testing.assert_allclose(target.positions, np.arange(1, 8) * 0.1)
    assert target.velocities is None
    assert target.gripper == pytest.approx(0.5)  # 0.02 between closed 0 and open 0.04
    assert not target.terminate and not target.hold_reason


def test_gripper_is_mapped_linearly_and_clipped_even_when_closed_is_larger():
    mapping = JointActionMap(ACTIONS, position_config(gripper_closed=1.0, gripper_open=-1.0))
    assert mapping(np.r_[np.zeros(7), 1.0]).gripper == 0.0
    assert mapping(np.r_[np.zeros(7), 0.0]).gripper == pytest.approx(0.5)
    assert mapping(np.r_[np.zeros(7), -5.0]).gripper == 1.0


def test_mismatch_names_both_sides_missing_and_unknown():
    names = ('shoulder', 'joint2', 'joint3', 'joint4', 'joint5', 'joint6', 'joint7', 'gripper')
    with pytest.raises(JointMappingError) as info:
        JointActionMap(names, position_config())
    text = str(info.value)
    assert "checkpoint actions ['shoulder', 'joint2'" in text
    assert "robot joints ['joint1', 'joint2'" in text
    assert "missing ['joint1']" in text and "unknown ['shoulder']" in text
    assert 'action_names' in text


def test_missing_gripper_action_and_ignored_actions():
    with pytest.raises(JointMappingError, match=r"missing \['grip \(gripper_action\)'\]"):
        JointActionMap(ACTIONS, position_config(gripper_action='grip',
                                                ignored_actions=('gripper',)))
    # An extra action is accepted only when listed in ignored_actions.
    names = ACTIONS + ('base_yaw',)
    with pytest.raises(JointMappingError, match=r"unknown \['base_yaw'\]"):
        JointActionMap(names, position_config())
    target = JointActionMap(names, position_config(ignored_actions=('base_yaw',)))(
        np.r_[np.zeros(7), 0.04, 9.0])
    assert target.gripper == 1.0 and np.all(target.positions == 0)


def test_placeholder_names_are_refused_with_the_fix():
    assert placeholder_names([f'action_{i}' for i in range(8)])
    assert not placeholder_names(['action_0', 'joint1'])
    with pytest.raises(JointMappingError, match='policy_params action_names') as info:
        JointActionMap([f'action_{i}' for i in range(8)], position_config())
    assert 'does not name its 8 action dimensions' in str(info.value)
    # A checkpoint that says its names are unknown is refused even if they look like joints.
    with pytest.raises(JointMappingError, match='does not name'):
        JointActionMap(ACTIONS, position_config(), names_known=False)


def test_terminate_action_is_the_done_signal():
    mapping = JointActionMap(ACTIONS + ('terminate',), position_config())
    assert mapping(np.r_[np.zeros(8), 1.0]).terminate
    assert not mapping(np.r_[np.zeros(8), 0.2]).terminate


def test_delta_adds_measured_positions_or_holds_with_the_reason():
    mapping = JointActionMap(ACTIONS, position_config(action_mode='delta'))
    row = np.r_[np.full(7, 0.1), 0.0]
    measured = {j: float(i) for i, j in enumerate(JOINTS)}
    np.testing.assert_allclose(mapping(row, measured).positions, np.arange(7) + 0.1)
    partial = {k: v for k, v in measured.items() if k != 'joint4'}
    held = mapping(row, partial)
    assert held.positions is None and "['joint4']" in held.hold_reason
    assert 'delta' in mapping(row, None).hold_reason


def test_velocity_mode_fills_velocities_only():
    config = position_config(interface='joint_velocity', action_mode='velocity')
    target = JointActionMap(ACTIONS, config)(np.r_[np.full(7, -0.3), 0.04])
    assert target.positions is None
    np.testing.assert_allclose(target.velocities, -0.3)


def test_malformed_rows_are_errors():
    mapping = JointActionMap(ACTIONS, position_config())
    with pytest.raises(ValueError, match='shape'):
        mapping(np.zeros(7))
    with pytest.raises(ValueError, match='NaN'):
        mapping(np.r_[np.zeros(7), np.nan])


@pytest.mark.parametrize('changes, message', [
    (dict(interface='ee_twist'), 'not a joint interface'),
    (dict(action_mode='velocity'), "does not go with command_interface 'joint_position'"),
    (dict(interface='joint_velocity', action_mode='absolute'), 'valid: velocity'),
    (dict(joint_names=('',)), 'needs joint_names'),
    (dict(joint_names=('a', 'a')), 'duplicates'),
    (dict(gripper_action='joint3'), 'also in joint_names'),
    (dict(ignored_actions=('joint1',)), 'ignored_actions'),
    (dict(gripper_closed=0.5, gripper_open=0.5), 'undefined'),
])
def test_invalid_joint_configurations_say_why(changes, message):
    with pytest.raises(ValueError, match=message):
        position_config(**changes)


def test_config_from_node_parameters():
    assert joint_config_from_params({'command_interface': 'ee_twist'}) is None
    config = joint_config_from_params({
        'command_interface': 'joint_position', 'joint_names': list(JOINTS),
        'joint_action_mode': 'delta', 'gripper_action': 'gripper',
        'gripper_action_closed': 0.0, 'gripper_action_open': 0.04,
        'ignored_actions': ['']})
    assert config.joint_names == JOINTS and config.action_mode == 'delta'
    assert config.ignored_actions == ()
    with pytest.raises(ValueError, match='command_interface must be one of'):
        joint_config_from_params({'command_interface': 'torque'})


def test_converter_choice_and_twist_robot_hint():
    assert isinstance(make_converter(space(ACTIONS), position_config()), ActionToJointCommand)
    with pytest.raises(ValueError, match='joint-space robot configuration'):
        make_converter(space(ACTIONS), None)


# ------------------------------------------------------------------ the engine
def joint_engine(config, policy=None):
    engine = InferenceEngine(EngineConfig(chunk_strategy='receding_horizon',
                                          strategy_params={'execute_steps': 1},
                                          chunk_timing='arrival'), joints=config)
    refused = engine.finish_policy_load('rows', policy) if policy is not None else ''
    return engine, refused


def feed(engine, clock, measured=None):
    engine.set_image('front', FRAME, clock())
    engine.set_proprio(np.zeros(8))
    if measured is not None:
        engine.set_joint_positions(list(measured), list(measured.values()))


def test_engine_publishes_joint_targets_and_holds_at_measured_positions():
    clock = FakeClock()
    row = np.r_[np.linspace(0.1, 0.7, 7), 0.04]
    engine, refused = joint_engine(position_config(), RowPolicy(ACTIONS, row))
    assert refused == ''
    measured = {j: -float(i) for i, j in enumerate(JOINTS)}
    feed(engine, clock, measured)
    held = engine.command_at(clock())  # no instruction yet: hold at the measured joints
    assert held.hold and held.joint_names == JOINTS
    np.testing.assert_allclose(held.joint_positions, list(measured.values()))
    engine.set_instruction('pick up the cube')
    engine.run_inference(clock)
    command = engine.command_at(clock())
    assert not command.hold and command.joint_names == JOINTS
    np.testing.assert_allclose(command.joint_positions, row[:7], rtol=1e-6)
    assert command.gripper == pytest.approx(1.0)
    assert np.all(command.ee_twist == 0)
    out = shape_command(command, SafetyLimits(), None)
    assert out.joint_names == JOINTS and out.joint_velocities is None
    np.testing.assert_allclose(out.joint_positions, row[:7], rtol=1e-6)


def test_position_hold_without_measured_joints_publishes_no_joint_command():
    engine, _ = joint_engine(position_config())
    held = engine.command_at(1.0)
    assert held.hold and not held.has_joints and held.reason


def test_velocity_hold_is_zero_velocities():
    config = position_config(interface='joint_velocity', action_mode='velocity')
    engine, _ = joint_engine(config)
    held = engine.command_at(1.0)
    assert held.hold and held.joint_names == JOINTS
    np.testing.assert_array_equal(held.joint_velocities, np.zeros(7))
    assert held.joint_positions is None


def test_a_mismatched_policy_is_refused_like_a_failed_load():
    clock = FakeClock()
    names = ('shoulder',) + ACTIONS[1:]
    engine, refused = joint_engine(position_config(), RowPolicy(names, np.zeros(8)))
    assert "missing ['joint1']" in refused and "unknown ['shoulder']" in refused
    assert engine.policy is None
    status = engine.status(clock())
    assert status.state == EngineState.ERROR
    assert "failed to load policy 'rows'" in status.message and 'shoulder' in status.message
    # A placeholder-named policy (as LeRobot checkpoints without names load) likewise.
    _, refused = joint_engine(position_config(), RowPolicy(ACTIONS, np.zeros(8), known=False))
    assert 'action_names' in refused


def test_twist_robot_refuses_a_joint_space_policy_with_the_hint():
    engine = InferenceEngine(EngineConfig())
    refused = engine.finish_policy_load('rows', RowPolicy(ACTIONS, np.zeros(8)))
    assert 'lacks end-effector dimensions' in refused and 'joint_position' in refused
    assert engine.policy is None


def test_delta_mode_tick_without_joint_states_holds_with_the_reason():
    clock = FakeClock()
    engine, _ = joint_engine(position_config(action_mode='delta'),
                             RowPolicy(ACTIONS, np.r_[np.full(7, 0.1), 0.0]))
    feed(engine, clock)
    engine.set_instruction('go')
    engine.run_inference(clock)
    held = engine.command_at(clock())
    assert held.hold and 'measured positions' in held.reason
    measured = {j: 1.0 for j in JOINTS}
    engine.set_joint_positions(list(measured), list(measured.values()))
    clock.t += 0.1
    feed(engine, clock)
    engine.run_inference(clock)
    command = engine.command_at(clock())
    assert not command.hold
    np.testing.assert_allclose(command.joint_positions, 1.1)


def test_lockstep_runs_a_joint_engine():
    clock = FakeClock()
    row = np.r_[np.full(7, 0.2), 0.0]
    engine, _ = joint_engine(position_config(), RowPolicy(ACTIONS, row))
    engine.set_instruction('go')
    lockstep = LockstepInference(engine)
    commands = []
    for _ in range(3):
        feed(engine, clock, {j: 0.0 for j in JOINTS})
        commands.append(lockstep.tick(clock()))
        clock.t += 0.1
    assert lockstep.chunks_buffered >= 1
    moving = [c for c in commands if not c.hold]
    assert moving and all(np.allclose(c.joint_positions, 0.2) for c in moving)
    assert all(c.gripper == 0.0 for c in moving)


# ------------------------------------------------------------------ launch validation
def test_launch_refuses_joint_settings_that_do_not_fit_together(tmp_path):
    from vla_ros import bringup

    driver, inference = bringup.nodes(bringup.GENERIC, {'robot': 'arm_joint',
                                                        'policy': 'pi0'})
    assert inference.param_files[-1].endswith('config/policies/pi0.yaml')
    bad = tmp_path / 'mine.yaml'
    bad.write_text('/**/vla_inference:\n  ros__parameters:\n    joint_action_mode: velocity\n')
    with pytest.raises(bringup.LaunchError, match="joint_action_mode 'velocity' does not go "
                                                  "with command_interface 'joint_position'"):
        bringup.nodes(bringup.GENERIC, {'robot': 'arm_joint', 'params_file': str(bad)})
    bad.write_text('/**:\n  ros__parameters:\n    command_interface: joint_velocity\n')
    with pytest.raises(bringup.LaunchError, match='valid: velocity'):
        bringup.nodes(bringup.GENERIC, {'robot': 'arm_joint', 'params_file': str(bad)})
    # A twist robot with joint_position but no joint_names.
    bad.write_text('/**/vla_inference:\n  ros__parameters:\n'
                   '    command_interface: joint_position\n')
    with pytest.raises(bringup.LaunchError, match='needs joint_names'):
        bringup.nodes(bringup.GENERIC, {'robot': 'arm', 'params_file': str(bad)})
    # The two nodes must agree: the driver would refuse or never hear the commands.
    bad.write_text('/**/vla_inference:\n  ros__parameters:\n'
                   '    command_interface: joint_position\n    joint_names: [a, b]\n')
    with pytest.raises(bringup.LaunchError, match="command_interface differs: vla_inference "
                                                  "'joint_position', vla_driver 'ee_twist'"):
        bringup.nodes(bringup.GENERIC, {'robot': 'arm', 'params_file': str(bad)})
    bad.write_text('/**/vla_inference:\n  ros__parameters:\n    joint_names: [joint1]\n')
    with pytest.raises(bringup.LaunchError, match=r"joint_names differ: vla_inference "
                                                  r"\['joint1'\], vla_driver \['joint1', "):
        bringup.nodes(bringup.GENERIC, {'robot': 'arm_joint', 'params_file': str(bad)})
