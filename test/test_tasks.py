"""Tests of the sim tasks: sampling, instructions, layouts and the privileged checks."""

import math
import os

os.environ.setdefault('MUJOCO_GL', 'egl')

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vla_ros.sim import tasks as T  # noqa: E402
from vla_ros.sim.scene import ArmSim  # noqa: E402


@pytest.fixture(scope='module')
def sim():
    s = ArmSim(seed=0, image_size=32, cameras=('front',))
    yield s
    s.close()


def put(sim, name, pos):
    """Teleport an object (arm-base frame = world shifted up by the table height)."""
    a = sim.model.jnt_qposadr[sim.model.joint(name).id]
    sim.data.qpos[a:a + 3] = np.asarray(pos) + [0, 0, 0.4]
    sim.data.qvel[:] = 0
    mujoco.mj_forward(sim.model, sim.data)


@pytest.mark.parametrize('name', T.task_names())
def test_sampling_is_deterministic_and_seeded(name):
    task = T.get_task(name)
    a, b = task.sample(5, 'train'), task.sample(5, 'train')
    assert a.info() == b.info()
    infos = [task.sample(s, 'train').info() for s in range(8)]
    assert len({str(i['placements']) for i in infos}) == 8
    # The test split has its own layouts for the same seed.
    assert task.sample(5, 'test').placements != a.placements


@pytest.mark.parametrize('name', T.task_names())
def test_train_and_test_instructions_differ(name):
    task = T.get_task(name)
    train, test = set(task.instructions('train')), set(task.instructions('test'))
    assert train and test and not train & test
    for seed in range(30):
        inst = task.sample(seed, 'test')
        assert inst.instruction in test and inst.template in task.test_templates
        obj = T.SCENE_OBJECTS[inst.target]
        # Grounding: colour and a shape noun of the target are both named.
        assert obj.colour in inst.instruction
        assert any(n in inst.instruction for n in (obj.shape,) + obj.synonyms)
        assert task.sample(seed, 'train').instruction in train
    if name == 'push':
        assert 'push the blue cylinder to the left' in train
        assert 'slide the blue cylinder leftwards' in test
    if name == 'pick_up':
        assert {'pick up the red cube'} <= train
        assert {'grab the red block', 'lift the red cube'} <= test


def test_layouts_keep_objects_apart_and_push_paths_clear():
    for name in T.task_names():
        for seed in range(40):
            inst = T.get_task(name).sample(seed, 'test')
            xy = np.array([p[:2] for p in inst.placements.values()])
            gaps = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(xy))
            assert gaps.min() >= 0.1 - 1e-9
            if name == 'push':
                d = inst.direction_vector
                start = np.array(inst.placements[inst.target][:2])
                for other in inst.distractors:
                    p = np.array(inst.placements[other][:2]) - start
                    along = p @ d
                    across = abs(p[0] * d[1] - p[1] * d[0])
                    assert across >= 0.09 - 1e-9 or not -0.1 <= along <= 0.17


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        T.get_task('fly')
    with pytest.raises(ValueError):
        T.get_task('reach').sample(-1)
    with pytest.raises(ValueError):
        T.get_task('reach').sample(0, 'validation')
    with pytest.raises(ValueError):
        T.ReachTask(objects=('purple_cone',))


def test_surface_distance_is_exact(sim):
    sim.reset(seed=0, placements={'red_cube': (0.5, 0.0, 0.0), 'blue_cylinder': (0.5, 0.2, 0),
                                  'yellow_sphere': (0.6, -0.2, 0.0)})
    cube, _ = sim.object_poses()['red_cube']
    assert T.surface_distance(sim, cube + [0, 0, 0.025 + 0.02], 'red_cube') \
        == pytest.approx(0.02, abs=1e-3)
    assert T.surface_distance(sim, cube, 'red_cube') == 0.0
    cyl, _ = sim.object_poses()['blue_cylinder']
    assert T.surface_distance(sim, cyl + [0.045, 0, 0], 'blue_cylinder') \
        == pytest.approx(0.02, abs=1e-3)
    ball, _ = sim.object_poses()['yellow_sphere']
    assert T.surface_distance(sim, ball + [0.03, 0.04, 0], 'yellow_sphere') \
        == pytest.approx(0.025, abs=1e-3)


def _instance(name, **fields):
    inst = T.get_task(name).sample(3, 'test')
    for key, value in fields.items():
        setattr(inst, key, value)
    return inst


def test_reach_success_needs_the_named_object(sim):
    inst = _instance('reach', target='red_cube')
    inst.reset(sim)
    assert not inst.success(sim)
    ee = sim.ee_pose()[0]
    put(sim, 'red_cube', ee - [0, 0, 0.025 + 0.015])
    out = inst.evaluate(sim)
    assert out.success and not out.wrong_object and out.metrics['distance'] < 0.02
    # Same pose but the green cube under the hand: not a success, and the wrong object.
    inst.reset(sim)
    put(sim, 'green_cube', ee - [0, 0, 0.02 + 0.015])
    out = inst.evaluate(sim)
    assert not out.success and out.wrong_object


def test_push_success_checks_direction_lateral_lift_and_distractors(sim):
    inst = _instance('push', target='blue_cylinder', direction='left')
    inst.reset(sim)
    start = inst.initial_positions['blue_cylinder']
    d = np.r_[inst.direction_vector, 0.0]
    side = np.array([d[1], -d[0], 0.0])
    cases = [(0.1 * d, True), (-0.1 * d, False), (0.05 * d, False),
             (0.1 * d + 0.06 * side, False), (0.1 * d + [0, 0, 0.05], False)]
    for offset, expected in cases:
        put(sim, 'blue_cylinder', start + offset)
        assert inst.success(sim) is expected, offset
    put(sim, 'blue_cylinder', start + 0.1 * d)
    other = inst.distractors[0]
    put(sim, other, inst.initial_positions[other] + [0.05, 0, 0])
    out = inst.evaluate(sim)
    assert not out.success and out.wrong_object and out.metrics['disturbed'] == [other]


def test_pick_up_needs_the_object_held_between_the_fingers(sim):
    inst = _instance('pick_up', target='yellow_sphere')
    inst.reset(sim)
    start = inst.initial_positions['yellow_sphere']
    put(sim, 'yellow_sphere', start + [0, 0, 0.08])  # floating, not held
    out = inst.evaluate(sim)
    assert not out.success and out.metrics['rise'] > 0.05 and not out.metrics['held']
    inst.reset(sim)
    other = inst.distractors[-1]
    put(sim, other, inst.initial_positions[other] + [0, 0, 0.08])
    assert inst.evaluate(sim).wrong_object


def test_evaluate_before_reset_raises(sim):
    with pytest.raises(RuntimeError):
        T.get_task('reach').sample(0).evaluate(sim)


def test_scene_rejects_bad_placements(sim):
    with pytest.raises(ValueError):
        sim.reset(placements={'red_cube': (2.0, 0.0, 0.0)})
    with pytest.raises(ValueError):
        sim.reset(placements={'purple_cone': (0.5, 0.0, 0.0)})
    with pytest.raises(ValueError):
        sim.reset(placements={'red_cube': (0.5, math.nan, 0.0)})
    sim.reset(seed=1, placements={'red_cube': (0.5, 0.1, 0.3)})
    pos, _ = sim.object_poses()['red_cube']
    np.testing.assert_allclose(pos[:2], [0.5, 0.1], atol=2e-3)


def test_task_info_is_reportable():
    for name in T.task_names():
        info = T.get_task(name).info()
        assert info['name'] == name and info['max_steps'] > 0 and info['success']
        assert T.get_task(name).sample(0).info()['instruction']
