"""Tests of the driver backends (MuJoCo and dry run) and the backend registry."""

import os

os.environ.setdefault('MUJOCO_GL', 'egl')

import logging  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vla_ros.drivers.backend import (  # noqa: E402
    RobotBackend,
    RobotState,
    available_backends,
    make_backend,
    register_backend,
)
from vla_ros.drivers.dry_run import DryRunBackend  # noqa: E402


def check_interface(backend):
    assert isinstance(backend, RobotBackend)
    assert isinstance(backend.name, str) and backend.is_hardware is False
    backend.start()
    state = backend.read_state()
    assert isinstance(state, RobotState)
    assert tuple(state.joint_names) == tuple(backend.joint_names)
    assert len(state.joint_positions) == len(state.joint_velocities) == len(backend.joint_names)
    assert backend.dof <= len(backend.joint_names)
    assert state.ee_position.shape == (3,) and state.ee_orientation.shape == (4,)
    assert abs(np.linalg.norm(state.ee_orientation) - 1) < 1e-6
    assert 0.0 <= state.gripper <= 1.0
    assert (state.base_pose is not None) == backend.supports_base
    backend.send_command(np.zeros(6), 1.0, None, 0.05)
    return state


@pytest.mark.parametrize('mobile', [False, True])
def test_mujoco_backend(mobile):
    backend = make_backend('mujoco', mobile=mobile, image_size=(64, 48), seed=0)
    try:
        s0 = check_interface(backend)
        assert backend.dof == 7 and backend.supports_base == mobile
        assert backend.cameras() == {'front': (64, 48), 'wrist': (64, 48)}
        for cam in backend.cameras():
            img = backend.render(cam)
            assert img.shape == (48, 64, 3) and img.dtype == np.uint8
        for _ in range(10):
            backend.send_command(np.array([0, 0, 0.05, 0, 0, 0]), 0.0,
                                 np.array([0.1, 0, 0]) if mobile else None, 0.05)
        s1 = backend.read_state()
        assert s1.stamp == pytest.approx(s0.stamp + 0.55)
        assert s1.ee_position[2] > s0.ee_position[2] + 0.015
        assert s1.gripper < 0.5
        if mobile:
            assert s1.base_pose[0] > 0.03
        with pytest.raises(ValueError):
            backend.render('nope')
    finally:
        backend.stop()


def test_dry_run_integrates_and_logs():
    lines = []
    now = [0.0]
    backend = DryRunBackend(log=lines.append, log_period=1.0, clock=lambda: now[0])
    s0 = check_interface(backend)
    assert backend.cameras() == {} and backend.dof == 7
    with pytest.raises(NotImplementedError):
        backend.render('front')
    for _ in range(20):
        now[0] += 0.05
        backend.send_command(np.array([0.05, 0, -0.05, 0, 0, 0]), 0.0, None, 0.05)
    s1 = backend.read_state()
    d = s1.ee_position - s0.ee_position
    np.testing.assert_allclose(d, [0.05, 0, -0.05], atol=0.005)
    np.testing.assert_allclose(s1.ee_orientation, s0.ee_orientation, atol=0.01)
    assert s1.gripper == 0.0 and np.abs(s1.joint_velocities).max() > 0
    # Rate-limited: start line + one per simulated second, not one per command.
    assert 2 <= len(lines) <= 4
    backend.stop()
    assert 'stopped after 21 commands' in lines[-1]


def test_dry_run_generic_dof_mobile_and_logger(caplog):
    backend = DryRunBackend(dof=6, log=logging.getLogger('dry'), mobile=True)
    with caplog.at_level(logging.INFO, logger='dry'):
        with backend:
            s0 = check_interface(backend)
            for _ in range(10):
                backend.send_command(np.array([0, 0.02, 0, 0, 0, 0]), 1.0,
                                     np.array([0.1, 0, 0.5]), 0.1)
            s1 = backend.read_state()
    assert 'dry run' in caplog.text
    assert backend.dof == 6 and len(s1.joint_positions) == 6
    assert s1.ee_position[1] - s0.ee_position[1] == pytest.approx(0.02, abs=0.005)
    x, y, yaw = s1.base_pose
    assert yaw == pytest.approx(0.5) and x > 0.09 and y > 0


def test_make_backend_unknown_name():
    with pytest.raises(ValueError) as err:
        make_backend('ur5_magic')
    assert 'dry_run' in str(err.value) and 'mujoco' in str(err.value)
    assert {'dry_run', 'mujoco'} <= set(available_backends())


def test_make_backend_by_path_and_registry():
    backend = make_backend('vla_ros.drivers.dry_run:DryRunBackend', dof=5, log=lambda s: None)
    assert backend.dof == 5
    register_backend('my_dry', lambda **kw: DryRunBackend(log=lambda s: None, **kw))
    assert make_backend('my_dry', dof=6).dof == 6
    register_backend('not_a_backend', lambda: object())
    with pytest.raises(TypeError):
        make_backend('not_a_backend')


def test_abstract_interface_requires_methods():
    class Partial(RobotBackend):
        name = 'partial'

    with pytest.raises(TypeError):
        Partial()
    assert RobotBackend.is_hardware is True  # user backends default to hardware


def test_mujoco_backend_lays_out_a_task_episode_and_judges_it():
    from vla_ros.drivers.mujoco_backend import MujocoBackend
    from vla_ros.sim.expert import ScriptedExpert
    from vla_ros.sim.tasks import get_task

    backend = MujocoBackend(image_size=(32, 32), task='reach', task_seed=1000)
    try:
        status = backend.task_status()
        instance = get_task('reach').sample(1000, 'test')
        assert status['instruction'] == instance.instruction and not status['success']
        from vla_ros.policies.contract import Observation

        expert = ScriptedExpert()
        expert.attach_simulator(backend.sim, backend.task_instance)
        for _ in range(60):
            obs = Observation(images={'front': np.zeros((64, 64, 3), np.uint8)},
                              instruction=status['instruction'],
                              stamp=backend.sim.time)
            action = expert.predict_chunk(obs)[0]
            backend.send_command(action[:6] / 0.1, action[6], None, 0.1)
            if backend.task_status()['success']:
                break
        assert backend.task_status()['success']
    finally:
        backend.stop()


def test_mujoco_base_twist_is_measured_in_the_base_frame():
    backend = make_backend('mujoco', mobile=True, image_size=(32, 32), seed=0)
    try:
        turn = int(round((np.pi / 2) / 0.05))  # a quarter turn at 1 rad/s
        for _ in range(turn):
            backend.send_command(np.zeros(6), 1.0, np.array([0.0, 0.0, 1.0]), 0.05)
        for _ in range(20):
            backend.send_command(np.zeros(6), 1.0, np.array([0.1, 0.0, 0.0]), 0.05)
        state = backend.read_state()
        x, y, yaw = state.base_pose
        assert yaw == pytest.approx(np.pi / 2, abs=0.1)
        assert y > 0.05 and abs(x) < 0.03  # forward is world +y after the quarter turn
        vx, vy, wz = state.base_twist
        assert vx == pytest.approx(0.1, abs=0.03) and abs(vy) < 0.02 and abs(wz) < 0.1
    finally:
        backend.stop()
    fixed = make_backend('mujoco', image_size=(32, 32))
    try:
        assert fixed.read_state().base_twist is None
    finally:
        fixed.stop()
