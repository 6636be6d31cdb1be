"""Tests of the MuJoCo arm scene and the numpy kinematics (run with MUJOCO_GL=egl)."""

import os

os.environ.setdefault('MUJOCO_GL', 'egl')

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vla_ros.sim import kinematics as kin  # noqa: E402
from vla_ros.sim.scene import ArmSim  # noqa: E402


@pytest.fixture(scope='module')
def sim():
    s = ArmSim(seed=0, image_size=(96, 64))
    yield s
    s.close()


def run(s, twist, gripper=1.0, seconds=1.0, dt=0.05, base=None):
    for _ in range(int(round(seconds / dt))):
        s.step_ee_twist(twist, gripper, base, dt=dt)


def test_scene_loads(sim):
    assert sim.joint_names[:7] == ArmSim.ARM_JOINTS
    assert len(sim.joint_positions()) == len(sim.joint_names) == 9
    np.testing.assert_allclose(sim.joint_positions()[:7], ArmSim.HOME, atol=0.02)
    assert sim.base_pose() is None
    pos, quat = sim.ee_pose()
    # Home: hand pointing down about 0.2 m above the table, in front of the base.
    assert 0.35 < pos[0] < 0.55 and abs(pos[1]) < 1e-3 and 0.15 < pos[2] < 0.3
    np.testing.assert_allclose(np.abs(quat), [1, 0, 0, 0], atol=1e-2)
    assert set(sim.object_poses()) == set(ArmSim.OBJECTS)


def test_reset_is_deterministic(sim):
    def poses(seed):
        sim.reset(seed=seed)
        return np.concatenate([np.r_[p, q] for p, q in sim.object_poses().values()])

    a, b, c = poses(7), poses(7), poses(8)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.01
    assert sim.time == 0.0
    xy = np.array([p[:2] for p, _ in sim.object_poses().values()])
    gaps = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(xy))
    assert gaps.min() > 0.08
    # Objects rest on the table (arm-base frame z = 0 is the table top).
    assert all(0.0 < p[2] < 0.05 for p, _ in sim.object_poses().values())


def test_ee_velocity_tracking(sim):
    sim.reset(seed=1)
    p0, _ = sim.ee_pose()
    run(sim, [0.05, 0, 0, 0, 0, 0])
    p1, q1 = sim.ee_pose()
    d = p1 - p0
    assert 0.03 < d[0] < 0.06 and abs(d[1]) < 0.005 and abs(d[2]) < 0.005
    run(sim, [0, 0, -0.05, 0, 0, 0])
    d = sim.ee_pose()[0] - p1
    assert -0.06 < d[2] < -0.03 and abs(d[1]) < 0.005
    assert sim.time == pytest.approx(2.0)
    # Zero twist holds the pose.
    p2, _ = sim.ee_pose()
    run(sim, np.zeros(6), seconds=0.5)
    assert np.linalg.norm(sim.ee_pose()[0] - p2) < 0.01


def test_a_long_hold_does_not_drift(sim):
    # Off the home posture, where the elbow's null-space pull used to act: it moved a held
    # hand by 3 cm in 16 s (the damped solve's null space is not exact), and grasped
    # objects slipped out during long holds.
    sim.reset(seed=5)
    run(sim, [0.1, 0.08, -0.05, 0, 0, 0], seconds=1.0, dt=0.1)
    run(sim, np.zeros(6), seconds=1.0, dt=0.1)  # the servo settles on its target
    held, _ = sim.ee_pose()
    run(sim, np.zeros(6), gripper=0.0, seconds=16.0, dt=0.1)
    assert np.linalg.norm(sim.ee_pose()[0] - held) < 1e-3


def test_gripper_open_close(sim):
    sim.reset(seed=2)
    assert sim.gripper_opening() > 0.9
    run(sim, np.zeros(6), gripper=0.0, seconds=0.5)
    assert sim.gripper_opening() < 0.1
    run(sim, np.zeros(6), gripper=1.0, seconds=0.5)
    assert sim.gripper_opening() > 0.9


def test_pick_cube(sim):
    sim.reset(seed=3)

    def goto(target, grip, steps=60):
        for _ in range(steps):
            v = np.clip(3.0 * (target - sim.ee_pose()[0]), -0.15, 0.15)
            sim.step_ee_twist(np.r_[v, 0, 0, 0], grip, dt=0.05)

    cube = sim.object_poses()['red_cube'][0]
    goto(cube + [0, 0, 0.1], 1.0)
    goto(cube, 1.0)
    run(sim, np.zeros(6), gripper=0.0, seconds=0.75)
    assert 0.2 < sim.gripper_opening() < 0.9  # stopped by the 5 cm cube
    goto(cube + [0, 0, 0.15], 0.0)
    assert sim.object_poses()['red_cube'][0][2] > cube[2] + 0.1


def test_render_both_cameras(sim):
    for cam in ('front', 'wrist'):
        img = sim.render(cam)
        assert img.shape == (64, 96, 3) and img.dtype == np.uint8
        assert img.std() > 5
    assert sim.render('front', size=(32, 24)).shape == (24, 32, 3)


def test_joint_limits_under_long_commands(sim):
    sim.reset(seed=4)
    for twist in ([0.5, 0, 0, 0, 0, 0], [0, 0, 0.5, 0, 0, 0], [0, 0, 0, 0, 0, 2.0],
                  [-0.3, 0.3, -0.5, 1, 1, 0]):
        run(sim, twist, seconds=2.0, dt=0.1)
        q = sim.joint_positions()[:7]
        assert np.all(np.isfinite(q)) and np.all(np.isfinite(sim.ee_pose()[0]))
        assert np.all(q >= kin.panda_like_chain().lower - 0.03)
        assert np.all(q <= kin.panda_like_chain().upper + 0.03)


def test_base_twist_rejected_without_base(sim):
    with pytest.raises(ValueError):
        sim.step_ee_twist(np.zeros(6), 1.0, [0.1, 0, 0], dt=0.05)
    sim.step_ee_twist(np.zeros(6), 1.0, np.zeros(3), dt=0.05)  # zero is fine


def test_mobile_base_moves():
    with ArmSim(mobile=True, seed=0, image_size=32) as s:
        assert s.joint_names[:3] == ('base_x', 'base_y', 'base_yaw')
        assert s.base_pose() == pytest.approx((0, 0, 0), abs=1e-3)
        ee0 = s.ee_pose()[0]
        run(s, np.zeros(6), base=[0.1, 0, 0.2])
        x, y, yaw = s.base_pose()
        assert yaw == pytest.approx(0.2, abs=0.03)
        assert 0.07 < x < 0.11 and 0.0 < y < 0.02  # driving forward while turning left
        # The end effector stays put relative to the base while the base drives.
        np.testing.assert_allclose(s.ee_pose()[0], ee0, atol=0.01)
        assert s.render('wrist').shape == (32, 32, 3)


def test_numpy_chain_matches_mujoco(sim):
    sim.reset(seed=5)
    run(sim, [0.05, -0.05, 0.02, 0.1, 0.0, 0.2], seconds=0.5)
    chain = kin.panda_like_chain()
    q = sim.joint_positions()[:7]
    pos, rot, _, _ = kin.forward(chain, q)
    p, quat = sim.ee_pose()
    np.testing.assert_allclose(pos, p, atol=1e-6)
    np.testing.assert_allclose(kin.rotation_to_quat(rot), quat * np.sign(quat[0]), atol=1e-6)
    np.testing.assert_allclose(kin.quat_to_rotation(quat), rot, atol=1e-6)


def test_dls_respects_limits():
    chain = kin.panda_like_chain()
    q = chain.home.copy()
    q[3] = chain.upper[3] - 0.021  # elbow almost straight
    jac = kin.jacobian(chain, q)
    dq = kin.dls_joint_velocities(jac, np.array([1.0, 0, 0.5, 0, 0, 0]), q, chain.lower,
                                  chain.upper, dt=0.1)
    assert np.all(q + dq * 0.1 <= chain.upper - 0.02 + 1e-9)
    assert np.abs(dq).max() <= 2.0 + 1e-9
