"""Auxiliary object targets from episode metadata, and the OpenVLA object probe."""

import math

import numpy as np
import pytest

from vla_ros.training.auxiliary import (
    OBJECTS,
    batch_object_targets,
    named_object_pixels,
    object_targets,
    target_indices,
)

META = {'task': 'pick_up', 'target': 'red_cube',
        'placements': {'red_cube': [0.5, 0.3, math.pi / 8], 'blue_cylinder': [0.7, -0.3, 1.0],
                       'green_cube': [0.3, 0.0, 0.0], 'yellow_sphere': [0.6, 0.15, 2.0]}}


def test_targets_scale_positions_and_give_cube_yaw_only():
    targets, valid = object_targets(META, proprio=np.r_[np.zeros(7), 1.0])
    assert OBJECTS == ('red_cube', 'blue_cylinder', 'green_cube', 'yellow_sphere')
    np.testing.assert_allclose(targets[0], [0.0, 1.0, 0.0, 1.0], atol=1e-6)  # 4 x pi/8
    np.testing.assert_allclose(targets[1, :2], [1.0, -1.0])
    np.testing.assert_allclose(targets[2], [-1.0, 0.0, 1.0, 0.0])
    assert valid[0].all() and valid[2].all()
    assert valid[1].tolist() == [True, True, False, False]  # a cylinder has no yaw to see
    assert valid[3].tolist() == [True, True, False, False]


def test_a_moved_target_and_missing_layouts_are_invalid():
    _, closed = object_targets(META, proprio=np.r_[np.zeros(7), 0.2])
    assert not closed[0].any() and closed[2].all()  # held target: unknown; others still
    _, pushed = object_targets({**META, 'task': 'push'}, proprio=np.r_[np.zeros(7), 1.0])
    assert not pushed[0].any()
    _, reach = object_targets({**META, 'task': 'reach'}, proprio=np.r_[np.zeros(7), 0.0])
    assert reach[0].all()
    _, none = object_targets({}, None)
    assert not none.any()
    assert batch_object_targets([{'metadata': {}}, {}]) is None
    targets, valid = batch_object_targets([{'metadata': META, 'proprio': np.ones(8)}] * 3)
    assert targets.shape == valid.shape == (3, 4, 4)


def test_object_probe_needs_keypoints():
    from vla_ros.policies.openvla.configuration_openvla import TINY
    from vla_ros.policies.openvla_sim.configuration import OpenVlaSimConfig as OpenVlaConfig

    with pytest.raises(ValueError, match='keypoint_tokens'):
        OpenVlaConfig(**{**TINY, 'object_probe_weight': 1.0})


def test_object_probe_loss_is_added_and_trains_the_probe():
    torch = pytest.importorskip('torch')
    from vla_ros.policies.registry import make_policy

    policy = make_policy('openvla_sim', keypoint_tokens=True, object_probe_weight=1.0, seed=0)
    plain = make_policy('openvla_sim', keypoint_tokens=True, seed=0)
    rng = np.random.default_rng(0)
    targets, valid = batch_object_targets(
        [{'metadata': META, 'proprio': np.ones(8)}, {'metadata': {**META, 'task': 'reach'}}])
    batch = {'images': torch.from_numpy(rng.random((2, 1, 3, 64, 64), dtype=np.float32)),
             'instructions': ['pick up the red cube', 'reach the red cube'],
             'actions': torch.zeros(2, 1, 7), 'valid': torch.ones(2, 1, dtype=torch.bool),
             'proprio': None, 'object_targets': torch.as_tensor(targets),
             'object_valid': torch.as_tensor(valid)}
    with_probe = policy.training_loss(batch)
    with_probe.backward()
    assert policy.model.object_probe.fc1.weight.grad.abs().sum() > 0
    # The probe reads the keypoints, so its loss also trains the vision backbone.
    assert policy.model.keypoint_readout.fc1.weight.grad is not None
    # The action part of the loss is the same model computation: only the probe term differs.
    without = plain.training_loss({**batch, 'object_targets': None})
    assert with_probe.item() > without.item() - 1e-4
    # Inference neither needs nor uses the probe.
    from vla_ros.policies.contract import Observation

    obs = Observation.make_example(policy.spec, instruction='reach the red cube')
    assert policy.predict_chunk(obs).shape == (1, 7)


def test_target_indices_name_the_instructed_object():
    samples = [{'metadata': META}, {'metadata': {**META, 'target': 'yellow_sphere'}},
               {'metadata': {**META, 'target': 'purple_cone'}}, {}]
    assert target_indices(samples).tolist() == [0, 3, -1, -1]


def test_target_probe_needs_the_readout_and_fitting_heads():
    from vla_ros.policies.openvla.configuration_openvla import TINY
    from vla_ros.policies.openvla_sim.configuration import OpenVlaSimConfig as OpenVlaConfig

    with pytest.raises(ValueError, match='needs target_readout'):
        OpenVlaConfig(**{**TINY, 'target_probe_weight': 1.0})
    with pytest.raises(ValueError, match='must divide'):
        OpenVlaConfig(**{**TINY, 'target_readout': True, 'target_readout_heads': 7})
    with pytest.raises(ValueError, match='finite number >= 0'):
        OpenVlaConfig(**{**TINY, 'target_readout': True, 'target_probe_weight': -1.0})


def _loss_added_by(policy, batch, key):
    """(loss, loss without ``batch[key]``); backpropagates the first; it must be larger."""
    with_term = policy.training_loss(batch)
    without = policy.training_loss({**batch, key: None})
    with_term.backward()
    assert with_term.item() > without.item()
    return with_term, without


def test_pixel_probe_needs_the_pixel_readout_and_trains_it():
    torch = pytest.importorskip('torch')
    from vla_ros.policies.openvla.configuration_openvla import TINY
    from vla_ros.policies.openvla_sim.configuration import OpenVlaSimConfig as OpenVlaConfig
    from vla_ros.policies.registry import make_policy

    with pytest.raises(ValueError, match='needs pixel_target_readout'):
        OpenVlaConfig(**{**TINY, 'pixel_probe_weight': 1.0})
    with pytest.raises(ValueError, match='positive integer'):
        OpenVlaConfig(**{**TINY, 'pixel_target_readout': True, 'pixel_readout_heads': 0})
    policy = make_policy('openvla_sim', pixel_target_readout=True, pixel_probe_weight=1.0, seed=0)
    batch = _named_target_batch(torch)
    with_probe, without = _loss_added_by(policy, batch, 'target_index')
    assert policy.model.pixel_probe.fc1.weight.grad.abs().sum() > 0
    assert policy.model.pixel_readout.stem[0].weight.grad.abs().sum() > 0
    assert policy.model.pixel_readout.query.weight.grad.abs().sum() > 0


# Pure colours of the scene's materials as the 64 px front camera renders them.
COLOURS = {'red_cube': (255, 45, 40), 'blue_cylinder': (37, 106, 255),
           'green_cube': (55, 246, 73), 'yellow_sphere': (255, 250, 40)}


def test_named_object_pixels_land_on_the_named_object_in_the_rendered_frame():
    os = pytest.importorskip('os')
    os.environ.setdefault('MUJOCO_GL', 'egl')
    from vla_ros.evaluation.rollout import proprio_vector
    from vla_ros.sim.scene import ArmSim
    from vla_ros.sim.tasks import get_task

    sim = ArmSim(image_size=(64, 64), cameras=('front', 'wrist'))
    try:
        seen = {'front': 0, 'wrist': 0}
        for seed in range(3, 9):
            task = ('reach', 'pick_up')[seed % 2]
            instance = get_task(task).sample(seed)
            instance.reset(sim)
            # The wrist camera's pose comes from the proprioception: move the arm first.
            sim.set_arm_configuration(sim.HOME + 0.02 * (seed - 4), 1.0)
            sample = {'metadata': {'task': task, 'target': instance.target,
                                   'placements': instance.placements},
                      'proprio': proprio_vector(sim)}
            for camera in ('front', 'wrist'):
                points, valid = named_object_pixels([sample], (64, 64), camera)
                if not valid[0]:
                    continue  # out of the wrist camera's view
                seen[camera] += 1
                row, col = (int(round((v + 1) / 2 * 63)) for v in points[0])
                colour = sim.render(camera)[row, col].astype(int)
                assert np.abs(colour - COLOURS[instance.target]).max() < 40, (
                    seed, camera, instance.target, colour)
        assert seen['front'] == 6 and seen['wrist'] >= 3, seen
    finally:
        sim.close()
    # A held pick-up target (gripper closed) and samples without a layout are unknown.
    held = {'metadata': {**META, 'task': 'pick_up'}, 'proprio': np.r_[np.zeros(7), 0.2]}
    assert named_object_pixels([held], (64, 64), 'front')[1].tolist() == [False]
    assert named_object_pixels([{}], (64, 64), 'front') is None


def test_pixel_keypoint_loss_pulls_the_first_head_onto_the_named_object():
    torch = pytest.importorskip('torch')
    from vla_ros.policies.openvla.configuration_openvla import TINY
    from vla_ros.policies.openvla_sim.configuration import OpenVlaSimConfig as OpenVlaConfig
    from vla_ros.policies.registry import make_policy

    with pytest.raises(ValueError, match='pixel_keypoint_weight > 0 needs'):
        OpenVlaConfig(**{**TINY, 'pixel_keypoint_weight': 1.0})
    policy = make_policy('openvla_sim', pixel_target_readout=True, pixel_keypoint_weight=1.0,
                         seed=0)
    batch = _named_target_batch(torch)
    batch['target_pixel'] = torch.tensor([[[0.5, -0.5]], [[0.0, 0.0]]])  # (B, cameras, 2)
    batch['target_pixel_valid'] = torch.tensor([[True], [False]])
    with_keypoint, without = _loss_added_by(policy, batch, 'target_pixel')
    assert policy.model.pixel_readout.query.weight.grad.abs().sum() > 0
    # The term is the Huber distance of head 0's (row, col) to the valid target, in pixels.
    with torch.no_grad():
        ids = torch.tensor([policy.prompts.encode(batch['instructions'][0])])
        features = {}
        policy.model.embed_inputs(ids, batch['images'][:1], features_out=features)
        error = (features['pixels'][0][0, :2] - batch['target_pixel'][0, 0]) * 31.5
        expected = torch.where(error.abs() < 1, 0.5 * error ** 2, error.abs() - 0.5).sum()
    assert with_keypoint.item() - without.item() == pytest.approx(expected.item(), rel=1e-4)


def _named_target_batch(torch):
    """Two samples naming the red and the green cube, with layout targets and indices."""
    samples = [{'metadata': META, 'proprio': np.ones(8)},
               {'metadata': {**META, 'task': 'reach', 'target': 'green_cube'}}]
    targets, valid = batch_object_targets(samples)
    rng = np.random.default_rng(0)
    return {'images': torch.from_numpy(rng.random((2, 1, 3, 64, 64), dtype=np.float32)),
            'instructions': ['pick up the red cube', 'reach the green cube'],
            'actions': torch.zeros(2, 1, 7), 'valid': torch.ones(2, 1, dtype=torch.bool),
            'proprio': None, 'object_targets': torch.as_tensor(targets),
            'object_valid': torch.as_tensor(valid),
            'target_index': torch.as_tensor(target_indices(samples))}


def test_target_probe_regresses_the_named_object_through_the_readout():
    torch = pytest.importorskip('torch')
    from vla_ros.policies.registry import make_policy

    policy = make_policy('openvla_sim', target_readout=True, target_probe_weight=1.0, seed=0)
    batch = _named_target_batch(torch)
    targets, valid = batch['object_targets'], batch['object_valid']
    with_probe, without = _loss_added_by(policy, batch, 'target_index')
    assert policy.model.target_probe.fc1.weight.grad.abs().sum() > 0
    assert policy.model.target_readout.query.weight.grad.abs().sum() > 0
    # The probe's error is against the named objects' rows only.
    with torch.no_grad():
        found = {}
        ids = torch.ones(2, 3, dtype=torch.long)
        policy.model.embed_inputs(ids, batch['images'], features_out=found)
        features = found['targets']
        predicted = policy.model.target_probe(features[0])[:, 0]
    named = torch.as_tensor(targets)[[0, 1], [0, 2]]
    mask = torch.as_tensor(valid)[[0, 1], [0, 2]]
    expected = (((predicted - named) ** 2) * mask).sum() / mask.sum()
    got = policy.model._target_probe_loss(policy.model.target_probe, features[0],
                                          batch['object_targets'],
                                          batch['object_valid'], batch['target_index'])
    assert torch.allclose(got, expected)


def test_state_probe_reads_the_llm_state_before_the_first_action_token():
    torch = pytest.importorskip('torch')
    from vla_ros.policies.openvla.modeling_openvla import IGNORE_INDEX
    from vla_ros.policies.registry import make_policy

    policy = make_policy('openvla_sim', state_probe_weight=1.0, seed=0)
    batch = _named_target_batch(torch)
    with_probe, without = _loss_added_by(policy, batch, 'target_index')
    assert policy.model.state_probe.fc1.weight.grad.abs().sum() > 0
    # Its gradient trains the language model itself, which is the point.
    layer = policy.model.language_model.model.layers[0].self_attn.q_proj.weight
    assert layer.grad.abs().sum() > 0
    # The state is the hidden vector at the position predicting the first supervised token.
    embeds = torch.randn(2, 6, policy.config.text_config.hidden_size)
    labels = torch.full((2, 6), IGNORE_INDEX)
    labels[0, 3:] = 5
    labels[1, 4:] = 5
    _, state = policy.model._supervised_loss(embeds, None, None, labels)
    with torch.no_grad():
        hidden = policy.model.language_model.model(inputs_embeds=embeds).last_hidden_state
    assert torch.allclose(state[0], hidden[0, 2], atol=1e-5)
    assert torch.allclose(state[1], hidden[1, 3], atol=1e-5)


def test_simulator_targets_only_for_the_variant_with_the_cameras_of_its_spec():
    torch = pytest.importorskip('torch')
    from vla_ros.policies.registry import make_policy
    from vla_ros.sim.scene import ArmSim
    from vla_ros.training.auxiliary import simulator_targets
    from vla_ros.training.data import collate

    rng = np.random.default_rng(0)

    def sample(cameras):
        return {'images': {c: rng.integers(0, 256, (48, 64, 3), np.uint8) for c in cameras},
                'instruction': 'pick up the red cube', 'actions': np.zeros((1, 7)),
                'valid': np.ones(1, bool), 'proprio': np.r_[ArmSim.HOME, 1.0],
                'metadata': META}

    plain = collate(make_policy('openvla', seed=0), [sample(['front'])] * 2)
    assert not {'object_targets', 'target_pixel'} & set(plain)  # OpenVLA asks for none
    variant = make_policy('openvla_sim', camera_names=['wrist', 'front'], use_proprio=True,
                          pixel_target_readout=True, pixel_keypoint_weight=1.0,
                          pixel_probe_weight=1.0, seed=0)
    batch = collate(variant, [sample(['front', 'wrist'])] * 2)
    assert batch['object_targets'].shape == (2, len(OBJECTS), 4)
    assert batch['target_index'].tolist() == [0, 0]
    # One pixel per camera of the spec, in its order (the wrist camera first here).
    assert batch['target_pixel'].shape == (2, 2, 2)
    front = simulator_targets([sample(['front'])], ('front',), (64, 64))['target_pixel']
    assert torch.equal(batch['target_pixel'][:1, 1], torch.as_tensor(front[:, 0]))
    assert variant.training_loss(batch).isfinite()
    with pytest.raises(ValueError, match="unknown camera 'top'"):
        simulator_targets([sample(['front'])], ('top',), (64, 64))
