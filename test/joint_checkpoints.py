"""Tiny LeRobot checkpoints (π₀, π₀.₅, SmolVLA) that act on the simulated arm's joints.

Written by the project's writers (vla_ros.policies.lerobot_pi.fixtures,
test/smolvla_checkpoint.py) with random weights, the action names of the sim arm
(joint1..joint7 + gripper) and dataset statistics around its home pose within its MJCF
joint limits, so their chunks are plausible joint targets for config/robots/arm_joint.yaml.
State: the 7 joint positions and the 0..1 gripper opening (the robot's proprio layout).
"""

from pathlib import Path

import numpy as np

JOINTS = tuple(f'joint{i}' for i in range(1, 8))
ACTION_NAMES = JOINTS + ('gripper',)
# vla_ros/sim/assets/arm_table.xml: joint ranges [rad] and the home pose of the sim arm.
LOW = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
HIGH = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
HOME = np.array([0.0, -0.1, 0.0, -2.5, 0.0, 2.4, 0.0])
FINGER_OPEN = 0.04  # the gripper action: finger travel [m], 0 closed


def _stats(mean, std, low, high, spread):
    mean, std = np.asarray(mean, float), np.asarray(std, float)
    return {'mean': mean, 'std': std, 'min': np.asarray(low, float),
            'max': np.asarray(high, float),
            'q01': np.maximum(mean - spread, low), 'q99': np.minimum(mean + spread, high)}


def sim_arm_stats() -> dict:
    """LeRobot statistics of a dataset recorded on the sim arm near its home pose."""
    state = _stats(np.r_[HOME, 0.5], np.r_[np.full(7, 0.3), 0.3], np.r_[LOW, 0.0],
                   np.r_[HIGH, 1.0], np.r_[np.full(7, 0.4), 0.5])
    action = _stats(np.r_[HOME, FINGER_OPEN / 2], np.r_[np.full(7, 0.1), 0.01],
                    np.r_[LOW, 0.0], np.r_[HIGH, FINGER_OPEN],
                    np.r_[np.full(7, 0.25), FINGER_OPEN / 2])
    return {'observation.state': state, 'action': action}


def write_pi(path: Path, kind: str = 'pi0', named: bool = True) -> Path:
    """A tiny π₀ / π₀.₅ checkpoint with cameras front + wrist (its names, if ``named``)."""
    from vla_ros.policies.lerobot_pi.fixtures import write_checkpoint

    return write_checkpoint(path, kind, state_dim=8, action_dim=8, cameras=('front', 'wrist'),
                            image_hw=(48, 64), chunk_size=8, max_state_dim=8,
                            max_action_dim=8, num_inference_steps=2, stats=sim_arm_stats(),
                            action_names=ACTION_NAMES if named else None)


def write_smolvla(path: Path) -> Path:
    """A tiny SmolVLA checkpoint (camera front); LeRobot does not store action names."""
    import smolvla_checkpoint as fixture

    config = fixture.lerobot_config(
        input_features={'observation.state': {'type': 'STATE', 'shape': [8]},
                        'observation.images.front': {'type': 'VISUAL',
                                                     'shape': list(fixture.IMAGE)}},
        output_features={'action': {'type': 'ACTION', 'shape': [8]}}, num_steps=2)
    return fixture.write_checkpoint(path, config=config, stats=sim_arm_stats())


def write_all(root: Path, tokenizer: bool = True) -> dict:
    """Every checkpoint and the local tokenizer / VLM directories under ``root``.

    Returns {name: (policy, model_path, policy_params)} as the node takes them.
    """
    import smolvla_checkpoint as fixture

    from vla_ros.policies.lerobot_pi.fixtures import write_tokenizer

    root = Path(root)
    tok = write_tokenizer(root / 'tokenizer')
    vlm = fixture.write_vlm_dir(root / 'smolvlm')
    return {
        'pi0': ('pi0', write_pi(root / 'pi0'), {'tokenizer_path': str(tok)}),
        'pi05': ('pi05', write_pi(root / 'pi05', 'pi05'), {'tokenizer_path': str(tok)}),
        'smolvla': ('smolvla', write_smolvla(root / 'smolvla'),
                    {'vlm_path': str(vlm), 'action_names': list(ACTION_NAMES)}),
    }
