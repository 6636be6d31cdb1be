"""Joint commands of the built-in backends: MuJoCo (ArmSim) and the dry run (no ROS)."""

import numpy as np
import pytest

from vla_ros.drivers.dry_run import DryRunBackend
from vla_ros.drivers.joint_rules import command_joint_order

DT = 0.02


@pytest.fixture(scope='module')
def mujoco_backend():
    from vla_ros.drivers.mujoco_backend import MujocoBackend

    backend = MujocoBackend(cameras=('front',), seed=0)
    yield backend
    backend.stop()


def test_both_backends_list_the_joint_interfaces():
    from vla_ros.drivers.mujoco_backend import MujocoBackend

    for cls in (MujocoBackend, DryRunBackend):
        assert cls.joint_interfaces == ('joint_position', 'joint_velocity')
        assert cls.publishes_joint_states


def test_command_joint_order_refuses_unknown_duplicate_or_no_joints():
    arm = ('a', 'b', 'c')
    assert command_joint_order(['c', 'a', ''], arm, 'x') == ('c', 'a')
    for bad in (['a', 'z'], ['a', 'a'], [''], []):
        with pytest.raises(ValueError, match='distinct joints'):
            command_joint_order(bad, arm, 'x')


def test_mujoco_position_targets_move_the_arm_and_switching_modes_is_seamless(
        mujoco_backend):
    backend = mujoco_backend
    backend.reset()
    sim = backend.sim
    names = sim.ARM_JOINTS
    arm = [list(sim.joint_names).index(n) for n in names]
    start = backend.read_state().joint_positions[arm]
    target = start.copy()
    target[0] += 0.3
    target[3] += 0.2
    for _ in range(50):  # 1 s
        backend.send_joint_command(target, None, 1.0, DT)
    q = backend.read_state().joint_positions[arm]
    np.testing.assert_allclose(q, target, atol=0.02)
    np.testing.assert_allclose(sim.arm_target, target)  # kept for the next command
    # A zero twist next holds where the joint command left the arm (no jump: only the
    # twist mode's null-space pull toward home moves the targets, by a few mrad a tick).
    backend.send_command(np.zeros(6), 1.0, None, DT)
    np.testing.assert_allclose(sim.arm_target, target, atol=5e-3)
    np.testing.assert_allclose(backend.read_state().joint_positions[arm], target, atol=0.02)


def test_mujoco_targets_are_clipped_to_the_joint_ranges(mujoco_backend):
    backend = mujoco_backend
    backend.reset()
    lower, upper = backend.sim.arm_limits
    target = backend.sim.arm_target
    target[5] = upper[5] + 1.0
    for _ in range(100):
        backend.send_joint_command(target, None, 1.0, DT)
    assert backend.sim.arm_target[5] <= upper[5]
    with pytest.raises(ValueError, match='finite'):
        backend.send_joint_command(np.full(7, np.nan), None, 1.0, DT)


def test_mujoco_velocities_integrate_and_subsets_hold_the_other_joints(mujoco_backend):
    backend = mujoco_backend
    backend.reset()
    backend.set_command_joints(['joint4', 'joint1'])
    try:
        before = backend.sim.arm_target
        for _ in range(25):  # 0.5 s at 0.2 rad/s on joint1, -0.1 on joint4
            backend.send_joint_command(None, np.array([-0.1, 0.2]), 1.0, DT)
        after = backend.sim.arm_target
        assert after[0] - before[0] == pytest.approx(0.1, abs=1e-6)
        assert after[3] - before[3] == pytest.approx(-0.05, abs=1e-6)
        np.testing.assert_array_equal(np.delete(after, [0, 3]), np.delete(before, [0, 3]))
        with pytest.raises(ValueError, match='distinct joints'):
            backend.set_command_joints(['joint1', 'finger_left'])
    finally:
        backend.set_command_joints(backend.sim.ARM_JOINTS)


def test_dry_run_follows_position_and_velocity_commands_with_consistent_fk():
    backend = DryRunBackend(log=lambda _: None)
    home = backend.read_state()
    target = home.joint_positions.copy()
    target[1] += 0.2
    backend.send_joint_command(target, None, 0.0, DT)
    state = backend.read_state()
    np.testing.assert_allclose(state.joint_positions, target)
    assert not np.allclose(state.ee_position, home.ee_position)  # FK of the new joints
    assert state.gripper < 1.0  # the gripper moves toward its target
    backend.set_command_joints(['joint2'])
    backend.send_joint_command(None, np.array([-1.0]), 0.0, 0.1)
    np.testing.assert_allclose(backend.read_state().joint_positions[1], target[1] - 0.1)
    np.testing.assert_allclose(backend.read_state().joint_velocities[1], -1.0)


def test_no_arrays_interlock_off_keeps_the_arm_where_it_was(mujoco_backend):
    # The driver sends (None, None) while its interlock is off: command nothing.
    dry = DryRunBackend(log=lambda _: None)
    before = dry.read_state().joint_positions.copy()
    dry.send_joint_command(None, None, 1.0, DT)
    np.testing.assert_array_equal(dry.read_state().joint_positions, before)
    backend = mujoco_backend
    backend.reset()
    target = backend.sim.arm_target
    for _ in range(10):
        backend.send_joint_command(None, None, 1.0, DT)
    np.testing.assert_array_equal(backend.sim.arm_target, target)
