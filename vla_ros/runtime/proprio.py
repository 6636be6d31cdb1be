"""Proprioception from sensor_msgs/JointState, in the layout a policy was trained with.

Policies trained in simulation see the arm joint positions followed by the gripper
opening (0 closed .. 1 open). A robot's joint_states lists joints by name, in any order,
possibly with base and finger joints; this selects and converts them (pure, no rclpy).
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ProprioLayout:
    """Which joints, in which order; fingers averaged into a normalized opening."""

    arm_joints: tuple[str, ...] = ()
    gripper_joints: tuple[str, ...] = ()
    gripper_open_position: float = 0.04

    def __post_init__(self):
        if self.gripper_joints and not self.gripper_open_position > 0:
            raise ValueError('gripper_open_position must be positive')

    def vector(self, names, positions) -> np.ndarray:
        """The proprio vector; ValueError naming what is missing or not finite."""
        positions = np.asarray(positions, dtype=np.float64)
        if not self.arm_joints and not self.gripper_joints:
            return positions  # no layout configured: positions as published
        if len(names) != len(positions):
            raise ValueError(f'{len(names)} joint names but {len(positions)} positions')
        index = {name: i for i, name in enumerate(names)}
        missing = [j for j in self.arm_joints + self.gripper_joints if j not in index]
        if missing:
            raise ValueError(f'joint_states lacks joints {missing}')
        arm = positions[[index[j] for j in self.arm_joints]]
        parts = [arm]
        if self.gripper_joints:
            fingers = positions[[index[j] for j in self.gripper_joints]]
            parts.append([np.clip(fingers.mean() / self.gripper_open_position, 0.0, 1.0)])
        out = np.concatenate(parts)
        if not np.all(np.isfinite(out)):
            raise ValueError('joint positions contain NaN or Inf')
        return out
