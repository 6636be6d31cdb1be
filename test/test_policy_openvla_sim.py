"""OpenVLA's simulation variant: readouts, legacy checkpoints, presets, the registry story."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from vla_ros.policies.contract import Observation, PolicyLoadError  # noqa: E402
from vla_ros.policies.openvla.configuration_openvla import TINY, OpenVlaConfig  # noqa: E402
from vla_ros.policies.openvla.modeling_openvla import OpenVlaForActionPrediction  # noqa: E402
from vla_ros.policies.openvla.policy import OpenVlaPolicy  # noqa: E402
from vla_ros.policies.openvla_sim.configuration import (  # noqa: E402
    SIM_MODEL_TYPE,
    VARIANT_DEFAULTS,
    OpenVlaSimConfig,
)
from vla_ros.policies.openvla_sim.policy import OpenVlaSimPolicy  # noqa: E402
from vla_ros.policies.registry import make_policy  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / 'vla_ros' / 'models' / 'openvla_sim'


def test_sincos_position_init_is_a_2d_code_and_optional():
    from vla_ros.policies.openvla_sim.modeling import sincos_2d

    code = sincos_2d(4, 8)
    assert code.shape == (16, 8)
    # Patches in the same row share the row channels, in the same column the column ones.
    assert torch.equal(code[1, :4], code[2, :4]) and not torch.equal(code[1, 4:], code[2, 4:])
    assert torch.equal(code[1, 4:], code[5, 4:]) and not torch.equal(code[1, :4], code[5, :4])
    coded = make_policy('openvla_sim', sincos_position_init=True, seed=0).model.vision_backbone
    dino = coded.featurizer.embeddings.position_embeddings[0, 1:]
    assert torch.equal(dino, sincos_2d(8, dino.shape[1]))
    siglip = coded.fused_featurizer.embeddings.position_embedding.weight
    assert torch.equal(siglip, sincos_2d(8, siglip.shape[1]))
    plain = make_policy('openvla_sim', seed=0).model.vision_backbone
    assert not torch.equal(plain.fused_featurizer.embeddings.position_embedding.weight, siglip)
    with pytest.raises(ValueError, match='divisible by 4'):
        sincos_2d(4, 6)


def _one_token_per_camera(tmp_path, out, **options):
    """Check a front + wrist policy with ``options`` inserts one more token per camera.

    Also that ``embed_inputs(features_out={})`` collects one ``out`` per camera, and that
    the predictions and those outputs survive a save/load round trip (through the
    ``openvla`` entry: the checkpoint selects the variant). Returns (policy, outputs, ids,
    pixels).
    """
    policy = make_policy('openvla_sim', camera_names=['front', 'wrist'], **options)
    assert policy.config.num_inserted_tokens == policy.config.num_patches + 2
    obs = Observation.make_example(policy.spec, instruction='reach the red cube')
    ids, pixels = policy.model_inputs(obs)
    features = {}
    with torch.no_grad():
        embeds = policy.model.embed_inputs(ids, pixels, features_out=features)
    found = features[out]
    assert embeds.shape[1] == ids.shape[1] + policy.config.num_inserted_tokens
    assert len(found) == 2
    before = policy.predict_chunk(obs)
    assert before.shape == (1, 7)
    # A loaded checkpoint computes the same outputs (nothing left uninitialised).
    policy.save_pretrained(tmp_path)
    loaded = make_policy('openvla', model_path=str(tmp_path))
    assert type(loaded) is type(policy)
    again = {}
    with torch.no_grad():
        loaded.model.embed_inputs(ids, pixels, features_out=again)
    assert torch.equal(again[out][0], found[0])
    np.testing.assert_array_equal(loaded.predict_chunk(obs), before)
    return policy, found, ids, pixels


def test_keypoint_tokens_are_soft_argmax_coordinates_one_per_camera(tmp_path):
    from vla_ros.policies.openvla_sim.modeling import OpenVlaKeypointReadout

    readout = OpenVlaKeypointReadout(dim=2, grid=4)
    patches = torch.full((1, 16, 2), -30.0)
    patches[0, 4 * 1 + 3, 0] = 30.0  # channel 0 peaks at row 1, column 3
    patches[0, 4 * 3 + 0, 1] = 30.0  # channel 1 at row 3, column 0
    points = readout.keypoints(patches).reshape(2, 2)
    np.testing.assert_allclose(points.numpy(), [[-1 / 3, 1.0], [1.0, -1.0]], atol=1e-4)
    token, _ = readout(patches)
    assert token.shape == (1, 1, 2)
    policy, found, _, _ = _one_token_per_camera(tmp_path, 'keypoints',
                                                keypoint_tokens=True)
    assert found[0].shape == (1, 2 * policy.config.text_config.hidden_size)


def test_target_readout_follows_the_instruction_and_survives_save_load(tmp_path):
    from vla_ros.policies.openvla_sim.modeling import OpenVlaTargetReadout

    readout = OpenVlaTargetReadout(dim=4, grid=4, heads=1)
    with torch.no_grad():
        for layer in (readout.query, readout.key, readout.value):
            layer.weight.copy_(torch.eye(4) * 4.0)
            layer.bias.zero_()
    patches = torch.zeros(1, 16, 4)
    patches[0, 4 * 1 + 3, 0] = 5.0  # feature 0 at row 1, column 3
    patches[0, 4 * 3 + 0, 1] = 5.0  # feature 1 at row 3, column 0
    with torch.no_grad():
        first = readout.features(patches, torch.tensor([[5.0, 0, 0, 0]]))
        second = readout.features(patches, torch.tensor([[0, 5.0, 0, 0]]))
    np.testing.assert_allclose(first[0, -2:].numpy(), [-1 / 3, 1.0], atol=1e-3)
    np.testing.assert_allclose(second[0, -2:].numpy(), [1.0, -1.0], atol=1e-3)

    policy, found, ids, _ = _one_token_per_camera(tmp_path, 'targets',
                                                  target_readout=True)
    assert found[0].shape == (1, policy.config.text_config.hidden_size + 8)
    with torch.no_grad():
        # Teacher-forced action tokens and padding do not change the instruction's query.
        first_action = policy.config.action_token_range[0]
        padded = torch.cat([ids, torch.tensor([[first_action + 3, first_action + 9,
                                                policy.config.text_config.pad_token_id]])], 1)
        table = policy.model.get_input_embeddings()
        assert torch.allclose(policy.model._instruction_embedding(padded, table(padded)),
                              policy.model._instruction_embedding(ids, table(ids)))


def test_pixel_readout_locates_the_named_colour_to_a_pixel_and_survives_save_load(tmp_path):
    from vla_ros.policies.openvla_sim.modeling import OpenVlaPixelTargetReadout

    # Hand-set weights: stem channel 0 = red, 1 = green (identity-ish 1x1 path through the
    # centre taps), keys copy them; the query picks channel 0 or 1 from the instruction.
    readout = OpenVlaPixelTargetReadout(dim=2, channels=2, heads=1, key_dim=2)
    with torch.no_grad():
        for module in readout.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.weight.zero_()
                module.bias.zero_()
        first, second = readout.stem[0], readout.stem[2]
        first.weight[0, 0, 1, 1], first.weight[1, 1, 1, 1] = 2.0, 2.0   # (2 x - 1) * 2
        second.weight[0, 0, 1, 1], second.weight[1, 1, 1, 1] = 1.0, 1.0
        readout.key.weight[:, :, 0, 0] = torch.eye(2) * 20.0
        readout.query.weight.copy_(torch.eye(2))
        readout.log_sharpness.zero_()
        readout.instruction_norm = torch.nn.Identity()
    image = torch.zeros(1, 3, 16, 16)
    image[0, 0, 3, 12] = 1.0           # one red pixel at row 3, column 12
    image[0, 1, 10:12, 1:3] = 1.0      # a green 2 x 2 blob centred at row 10.5, column 1.5
    to_unit = lambda v: -1 + 2 * v / 15  # noqa: E731  (pixel index -> [-1, 1])
    with torch.no_grad():
        red = readout.features(image, torch.tensor([[1.0, 0.0]]))[0]
        green = readout.features(image, torch.tensor([[0.0, 1.0]]))[0]
    np.testing.assert_allclose(red[:2].numpy(), [to_unit(3), to_unit(12)], atol=0.02)
    np.testing.assert_allclose(green[:2].numpy(), [to_unit(10.5), to_unit(1.5)], atol=0.02)
    # The blob is spread over two pixels per axis, the single pixel is not.
    assert green[2:4].min() > 2 * red[2:4].max()
    # Evidence: a query matching nothing in the image scores lower than one that does.
    with torch.no_grad():
        blue = readout.features(image, torch.tensor([[-1.0, -1.0]]))[0]
    assert blue[4] < red[4]

    policy, found, _, _ = _one_token_per_camera(tmp_path, 'pixels',
                                                pixel_target_readout=True,
                                                pixel_probe_weight=1.0)
    assert found[0].shape == (1, 5 * policy.config.pixel_readout_heads)


# ------------------------------------------------------------------ the registry story
def test_the_shipped_checkpoint_selects_the_variant_through_policy_openvla():
    config = json.loads((SHIPPED / 'config.json').read_text())
    # Stage 12 (issue 20) wrote it as the variant; older checkpoints written as the
    # openvla family load the same way (the _legacy tests below).
    assert config['model_type'] == 'vla_ros_openvla_sim'
    assert config['action_space'] == 'arm7_done'  # it can say the task is done
    policy = make_policy('openvla', model_path=str(SHIPPED))
    assert type(policy) is OpenVlaSimPolicy
    assert isinstance(policy.model, OpenVlaForActionPrediction)
    assert policy.spec.name == 'openvla' and policy.family == 'openvla'
    assert policy.config.pixel_target_readout and policy.config.keypoint_tokens
    assert not hasattr(policy.config, 'pixel_orientation_features')  # removed option
    # Its own registry name loads it the same way.
    again = make_policy('openvla_sim', model_path=str(SHIPPED))
    obs = Observation.make_example(policy.spec, instruction='reach the red cube', seed=2)
    obs = Observation(images=obs.images, instruction=obs.instruction,
                      proprio=np.linspace(-1, 1, 8).astype(np.float32))
    np.testing.assert_array_equal(policy.predict_chunk(obs), again.predict_chunk(obs))


def _legacy(tmp_path, policy, **extra) -> Path:
    """``policy`` saved as the openvla family wrote it before the variant moved out."""
    policy.save_pretrained(tmp_path)
    path = tmp_path / 'config.json'
    config = json.loads(path.read_text())
    config = {**VARIANT_DEFAULTS, **config, 'model_type': 'vla_ros_openvla',
              'pixel_orientation_features': False, **extra}
    path.write_text(json.dumps(config))
    return tmp_path


def test_legacy_checkpoints_load_as_what_they_are(tmp_path):
    # Every variant option at its default: plain OpenVLA.
    plain = make_policy('openvla', seed=1)
    loaded = make_policy('openvla', model_path=str(_legacy(tmp_path / 'plain', plain)))
    assert type(loaded) is OpenVlaPolicy
    obs = Observation.make_example(plain.spec, instruction='reach the red cube', seed=1)
    np.testing.assert_array_equal(loaded.predict_chunk(obs), plain.predict_chunk(obs))
    # An option in use: the variant, with the same outputs.
    grown = make_policy('openvla_sim', keypoint_tokens=True, seed=1)
    loaded = make_policy('openvla', model_path=str(_legacy(tmp_path / 'grown', grown)))
    assert type(loaded) is OpenVlaSimPolicy and loaded.config.keypoint_tokens
    np.testing.assert_array_equal(loaded.predict_chunk(obs), grown.predict_chunk(obs))
    # The removed option switched on names a model this code cannot rebuild.
    shutil.rmtree(tmp_path / 'grown')
    _legacy(tmp_path / 'grown', grown, pixel_orientation_features=True)
    with pytest.raises(PolicyLoadError, match='pixel_orientation_features was an experiment'):
        make_policy('openvla', model_path=str(tmp_path / 'grown'))


def test_new_variant_checkpoints_carry_their_own_model_type(tmp_path):
    grown = make_policy('openvla_sim', target_readout=True, seed=0)
    grown.save_pretrained(tmp_path / 'v')
    assert json.loads((tmp_path / 'v' / 'config.json').read_text())['model_type'] \
        == SIM_MODEL_TYPE
    assert type(make_policy('openvla', model_path=str(tmp_path / 'v'))) is OpenVlaSimPolicy
    # The variant does not pass a plain checkpoint off as its own.
    make_policy('openvla', seed=0).save_pretrained(tmp_path / 'p')
    with pytest.raises(PolicyLoadError, match='vla_ros_openvla_sim'):
        make_policy('openvla_sim', model_path=str(tmp_path / 'p'))


def test_openvla_is_openvla_and_the_stage_presets_build_the_variant():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['keypoint_tokens'\]"):
        make_policy('openvla', keypoint_tokens=True)
    assert not hasattr(OpenVlaConfig(**TINY), 'object_probe_weight')
    with pytest.raises(ValueError, match=r"unknown size 'huge'.*sim_pixel"):
        make_policy('openvla', size='huge')
    assert OpenVlaPolicy.presets.keys() == {'tiny', 'medium', 'full'}
    assert {'sim_base', 'sim', 'sim_pixel'} <= OpenVlaSimPolicy.presets.keys()
    staged = make_policy('openvla', size='sim_base', seed=0)  # as scripts/ train stage 1
    assert type(staged) is OpenVlaSimPolicy and staged.config.keypoint_tokens
    assert staged.config.object_probe_weight == 1.0 and not staged.config.target_readout


def test_plain_openvla_refuses_training_targets_it_has_no_loss_for():
    policy = make_policy('openvla', seed=0)
    ids = torch.tensor([[1, 5, 6]])
    pixels = torch.rand(1, 3, 64, 64)
    with pytest.raises(TypeError, match='object_targets'):
        policy.model(input_ids=ids, pixel_values=pixels, labels=ids,
                     object_targets=torch.zeros(1, 4, 4))


def test_variant_config_validation():
    with pytest.raises(ValueError, match='keypoint_tokens'):
        OpenVlaSimConfig(**{**TINY, 'object_probe_weight': 1.0})
    with pytest.raises(ValueError, match='action_label_sigma'):
        OpenVlaSimConfig(**{**TINY, 'action_label_sigma': -1.0})
    plain = OpenVlaConfig(**TINY)
    assert OpenVlaSimConfig(**TINY).num_inserted_tokens == plain.num_inserted_tokens
    grown = OpenVlaSimConfig(**{**TINY, 'keypoint_tokens': True, 'target_readout': True})
    assert grown.num_inserted_tokens == grown.num_patches + 2
