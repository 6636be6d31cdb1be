import numpy as np
import pytest

from vla_ros.runtime.proprio import ProprioLayout

ARM = tuple(f'joint{i}' for i in range(1, 8))


def test_selects_arm_joints_in_order_and_normalizes_the_gripper():
    layout = ProprioLayout(ARM, ('finger_left', 'finger_right'), 0.04)
    names = ['finger_right', *reversed(ARM), 'finger_left']
    positions = [0.03, 7, 6, 5, 4, 3, 2, 1, 0.01]
    np.testing.assert_allclose(layout.vector(names, positions), [1, 2, 3, 4, 5, 6, 7, 0.5])


def test_errors_name_the_problem():
    layout = ProprioLayout(ARM, ('finger_left', 'finger_right'))
    with pytest.raises(ValueError, match='lacks joints'):
        layout.vector(list(ARM), list(range(7)))
    with pytest.raises(ValueError, match='names but'):
        layout.vector(list(ARM), [0.0])
    with pytest.raises(ValueError, match='NaN'):
        layout.vector([*ARM, 'finger_left', 'finger_right'], [np.nan] * 9)


def test_the_sim_rollout_and_the_driver_agree():
    # The driver publishes the sim's joints; the layout must give the rollout's vector.
    from vla_ros.evaluation.rollout import make_sim, proprio_vector

    sim = make_sim((32, 32))
    try:
        sim.reset(3)
        sim.step_ee_twist(np.array([0.02, 0, -0.02, 0, 0, 0]), 0.3, None, 0.5)
        layout = ProprioLayout(ARM, ('finger_left', 'finger_right'), 0.04)
        got = layout.vector(sim.joint_names, sim.joint_positions())
        np.testing.assert_allclose(got, proprio_vector(sim), atol=1e-6)
    finally:
        sim.close()
