"""LeRobot checkpoints (π₀, π₀.₅, SmolVLA) meet a joint-space robot, without ROS.

Tiny checkpoints named like the sim arm (test/joint_checkpoints.py) load, their chunks
go through the engine's chunk buffer and become joint targets by name; checkpoints
without names or with other names are refused with reasons that say what to set.
"""

import numpy as np
import pytest
import smolvla_checkpoint as fixture
from joint_checkpoints import ACTION_NAMES, HIGH, JOINTS, LOW, write_all, write_pi

from vla_ros.policies.contract import PolicyLoadError
from vla_ros.policies.registry import make_policy
from vla_ros.runtime.engine import EngineConfig, EngineState, InferenceEngine
from vla_ros.runtime.joint_commands import JointConfig

ARM_JOINT = JointConfig('joint_position', JOINTS, 'absolute', 'gripper', 0.0, 0.04)


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp('joint_ckpts'))


def load(entry, **changes):
    name, path, params = entry
    return make_policy(name, model_path=str(path), **{**params, **changes})


def drive(policy, ticks=3):
    engine = InferenceEngine(EngineConfig(chunk_timing='arrival'), joints=ARM_JOINT)
    assert engine.finish_policy_load(policy.spec.name, policy) == ''
    t = 10.0
    for camera in policy.spec.camera_names:
        engine.set_image(camera, np.full((96, 128, 3), 90, np.uint8), t)
    engine.set_proprio(np.r_[(LOW + HIGH) / 2, 0.5])
    engine.set_instruction('pick up the red cube')
    assert engine.run_inference(lambda: t) is not None, engine.status(t).message
    commands = [engine.command_at(t + 0.1 * i) for i in range(ticks)]
    return engine, commands


@pytest.mark.parametrize('family', ['pi0', 'pi05', 'smolvla'])
def test_checkpoint_actions_become_joint_targets_by_name(checkpoints, family):
    policy = load(checkpoints[family])
    assert policy.spec.action_space.names == ACTION_NAMES
    assert policy.action_names_known
    engine, commands = drive(policy)
    for command in commands:
        assert not command.hold, command.reason
        assert command.joint_names == JOINTS
        assert command.joint_positions.shape == (7,)
        assert np.all(np.isfinite(command.joint_positions))
        assert 0.0 <= command.gripper <= 1.0
    assert engine.status(10.0).state == EngineState.RUNNING


def test_smolvla_action_names_take_their_bounds_from_the_checkpoint(checkpoints):
    space = load(checkpoints['smolvla']).spec.action_space
    np.testing.assert_allclose(space.low[:7], LOW, atol=1e-6)
    np.testing.assert_allclose(space.high, np.r_[HIGH, 0.04], atol=1e-6)


def test_smolvla_action_names_need_a_checkpoint_of_that_width(checkpoints):
    name, path, params = checkpoints['smolvla']
    params = {k: v for k, v in params.items() if k != 'action_names'}
    space = fixture.write_action_space(path.parent / 'eight.yaml', dim=8)
    policy = make_policy(name, model_path=str(path), action_space=str(space), **params)
    assert policy.action_names_known  # a chosen action space names them
    with pytest.raises(PolicyLoadError, match='needs model_path'):
        make_policy('smolvla', action_names=list(JOINTS))  # a preset has no statistics
    with pytest.raises((PolicyLoadError, ValueError), match='3 action_names for 8'):
        make_policy(name, model_path=str(path), action_names=['a', 'b', 'c'], **params)


def test_an_unnamed_pi_checkpoint_is_refused_with_the_fix(checkpoints, tmp_path):
    tokenizer = checkpoints['pi0'][2]
    path = write_pi(tmp_path / 'unnamed', named=False)
    policy = load(('pi0', path, tokenizer))
    assert not policy.action_names_known
    assert policy.spec.action_space.names[0] == 'action_0'
    engine = InferenceEngine(EngineConfig(), joints=ARM_JOINT)
    refused = engine.finish_policy_load('pi0', policy)
    assert 'policy_params action_names' in refused
    assert 'failed to load' in engine.status(0.0).message
    # Naming them in policy_params is the fix.
    named = load(('pi0', path, tokenizer), action_names=list(ACTION_NAMES))
    assert InferenceEngine(EngineConfig(), joints=ARM_JOINT).finish_policy_load(
        'pi0', named) == ''


def test_other_joint_names_are_refused_naming_both_sides(checkpoints):
    policy = load(checkpoints['pi05'])
    other = JointConfig('joint_position', ('shoulder',) + JOINTS[1:], 'absolute', 'gripper',
                        0.0, 0.04)
    refused = InferenceEngine(EngineConfig(), joints=other).finish_policy_load('pi05', policy)
    assert "missing ['shoulder']" in refused and "unknown ['joint1']" in refused
