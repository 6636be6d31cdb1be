"""Released OpenVLA checkpoints (openvla/openvla-7b layout), loaded natively.

The fixture is built by ``openvla_reference`` from the released format's own names and
shapes (not by the project's mapping), and the reference there runs the released
``predict_action`` semantics on the stored tensors; the native policy must predict the
same tokens and actions. The writer's round trip, the hand-checked tensor mappings,
prompts, resizing, refusals and strict loading are checked separately.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip('torch')

import openvla_reference as ref  # noqa: E402

from vla_ros.actions.normalization import UnnormKeyError  # noqa: E402
from vla_ros.images import letterbox, prepare_image, reference_resize  # noqa: E402
from vla_ros.policies.contract import Observation, PolicyLoadError  # noqa: E402
from vla_ros.policies.openvla.configuration_openvla import (  # noqa: E402
    OPENVLA_7B_PARAMETERS,
    TINY,
)
from vla_ros.policies.openvla.policy import OpenVlaPolicy  # noqa: E402
from vla_ros.policies.openvla.released_format import parse_released_config  # noqa: E402
from vla_ros.policies.openvla.released_loader import build_on_meta, plan_for  # noqa: E402
from vla_ros.policies.openvla.safetensors_io import read_header  # noqa: E402
from vla_ros.policies.openvla.weight_mapping import (  # noqa: E402
    TensorMapping,
    released_shapes,
)
from vla_ros.policies.tokenizer import tokenizer_dir  # noqa: E402
from vla_ros.runtime.engine import _default_preprocess  # noqa: E402

INSTRUCTION = 'Put the Carrot on the plate'


def camera_frame(seed=0, shape=(480, 640)):
    """A 640x480 frame with structure at several scales (smooth shapes plus noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]] / max(shape)
    base = np.stack([np.sin(9 * x + 3 * y), np.cos(7 * y - 2 * x), np.sin(21 * x * y)], -1)
    noise = rng.normal(0, 0.15, (*shape, 3))
    return np.clip((base + noise + 1) * 127.5, 0, 255).astype(np.uint8)


@pytest.fixture(scope='module')
def released_dir(tmp_path_factory):
    """A released-layout directory in float32 (exact comparisons) and its tensors."""
    path = tmp_path_factory.mktemp('released') / 'openvla-fixture'
    tensors = ref.write_released_directory(path, tokenizer_dir(), dtype=torch.float32)
    return path, tensors


@pytest.fixture(scope='module')
def native(released_dir):
    return OpenVlaPolicy.from_pretrained(released_dir[0], unnorm_key='bridge_orig')


def observation(policy, frame):
    spec = policy.spec
    image = prepare_image(frame, spec.image_size, method=spec.image_resize)
    return Observation(images={'front': image}, instruction=INSTRUCTION)


# ------------------------------------------------------------------ against the reference
def test_native_load_predicts_the_reference_tokens_and_actions(released_dir, native):
    path, tensors = released_dir
    config = json.loads((path / 'config.json').read_text())
    for seed in range(3):
        frame = camera_frame(seed)
        obs = observation(native, frame)
        ids = torch.tensor([native.prompts.encode(INSTRUCTION)])
        tokens, action = ref.reference_predict_action(tensors, config, ids, frame, 'bridge_orig',
                                                      native.prompts.space_id)
        np.testing.assert_array_equal(native.predict_action_tokens(obs), tokens)
        unclipped = native.normalizer.unnormalize(native.predict_normalized(obs)[0])
        np.testing.assert_array_equal(unclipped, action)
        np.testing.assert_allclose(native.predict_chunk(obs)[0],
                                   native.action_space.clip(action), rtol=1e-6)
    # The released code files beside the weights (stand-ins that raise) were never imported.
    assert not any('prismatic' in name for name in sys.modules)


def test_prefill_logits_match_the_reference(released_dir, native):
    path, tensors = released_dir
    config = json.loads((path / 'config.json').read_text())
    frame = camera_frame(7)
    ids = torch.tensor([native.prompts.encode(INSTRUCTION)])
    expected = ref.reference_logits(tensors, ids, ref.reference_pixel_values(frame),
                                    config['text_config'])
    _, pixels = native.model_inputs(observation(native, frame))
    with torch.no_grad():
        logits = native.model(input_ids=ids, pixel_values=pixels).logits
    assert logits.shape == expected.shape
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_unnorm_key_selects_the_dataset_and_is_required_with_several(released_dir, native):
    path, _ = released_dir
    other = OpenVlaPolicy.from_pretrained(path, unnorm_key='fractal20220817_data')
    obs = observation(native, camera_frame(1))
    a = native.normalizer.unnormalize(native.predict_normalized(obs)[0])
    b = other.normalizer.unnormalize(other.predict_normalized(obs)[0])
    np.testing.assert_allclose(b[:6], 2 * a[:6])  # statistics twice as wide, same bins
    assert a[6] == b[6]  # the gripper is not unnormalized (mask False)
    with pytest.raises(UnnormKeyError, match='bridge_orig'):
        OpenVlaPolicy.from_pretrained(path)


def test_bfloat16_loads_without_a_float32_copy(released_dir):
    policy = OpenVlaPolicy.from_pretrained(released_dir[0], unnorm_key='bridge_orig',
                                           dtype='bfloat16')
    dtypes = {p.dtype for p in policy.model.parameters()}
    assert dtypes == {torch.bfloat16}
    rotary = policy.model.language_model.model.rotary_emb
    assert rotary.inv_freq.dtype == torch.float32  # as transformers keeps it
    tokens = policy.predict_action_tokens(observation(policy, camera_frame(0)))
    first, stop = policy.config.action_token_range
    assert ((tokens >= first) & (tokens < stop)).all()


def test_spec_of_a_released_checkpoint(native):
    spec = native.spec
    assert spec.image_size == (ref.IMAGE, ref.IMAGE)
    assert spec.image_resize == 'resize-naive'
    assert spec.camera_names == ('front',) and spec.chunk_length == 1
    assert native.config.text_vocab_size == 32000
    assert native.config.text_config.rms_norm_eps == 1e-6  # transformers 4.40's default
    assert native.config.siglip_config.hidden_act == 'gelu'  # timm: exact GELU


# ------------------------------------------------------------------ hand-checked mappings
def test_fused_qkv_rows_split_into_query_key_value():
    d = 4
    fused = torch.arange(3 * d * 2, dtype=torch.float32).reshape(3 * d, 2)
    mapping = TensorMapping(('qkv',), ('q', 'k', 'v'), 'qkv')
    q, k, v = mapping.to_native([fused])
    assert q[:, 0].tolist() == [0, 2, 4, 6]     # rows 0..3: timm's reshape (3, heads, hd)
    assert k[:, 0].tolist() == [8, 10, 12, 14]  # rows 4..7
    assert v[:, 0].tolist() == [16, 18, 20, 22]
    assert torch.equal(mapping.to_released([q, k, v])[0], fused)


def test_dino_position_table_gets_a_zero_cls_row_and_cls_folds_back():
    table = torch.arange(1, 4 * 3 + 1, dtype=torch.float32).reshape(1, 4, 3)  # 4 patches
    cls = torch.full((1, 1, 3), 0.5)
    mapping = TensorMapping(('cls', 'pos'), ('cls', 'positions'), 'cls_position')
    native_cls, positions = mapping.to_native([cls, table])
    assert positions.shape == (1, 5, 3)
    assert positions[0, 0].tolist() == [0, 0, 0]         # the CLS token gets no position
    assert torch.equal(positions[0, 1:], table[0])       # patch p keeps row p
    assert torch.equal(native_cls, cls)
    # A native table with a CLS row (trained here) is written as CLS + row 0.
    positions[0, 0] = torch.tensor([1.0, 2.0, 3.0])
    out_cls, out_table = mapping.to_released([native_cls, positions])
    assert out_cls[0, 0].tolist() == [1.5, 2.5, 3.5]
    assert torch.equal(out_table, table)


def test_siglip_table_squeezes_and_pooling_query_key_value_concatenate():
    table = torch.arange(12, dtype=torch.float32).reshape(1, 4, 3)
    squeezed, = TensorMapping(('p',), ('w',), 'squeeze').to_native([table])
    assert squeezed.shape == (4, 3) and torch.equal(squeezed, table[0])
    q, kv = torch.zeros(3, 2), torch.ones(6, 2)
    fused, = TensorMapping(('q', 'kv'), ('in_proj',), 'q_kv').to_native([q, kv])
    assert fused[:3].eq(0).all() and fused[3:].eq(1).all()


def test_patterned_checkpoint_tensors_land_where_they_must(released_dir, native):
    _, tensors = released_dir
    state = native.model.state_dict()
    dino, sig = 'vision_backbone.featurizer.', 'vision_backbone.fused_featurizer.'
    d = ref.DINO['width']
    qkv = tensors[dino + 'blocks.1.attn.qkv.weight']
    attn = dino + 'encoder.layer.1.attention.'
    assert torch.equal(state[attn + 'q_proj.weight'], qkv[:d])
    assert torch.equal(state[attn + 'k_proj.weight'], qkv[d:2 * d])
    assert torch.equal(state[attn + 'v_proj.weight'], qkv[2 * d:])
    assert torch.equal(state[dino + 'encoder.layer.2.layer_scale2.lambda1'],
                       tensors[dino + 'blocks.2.ls2.scale_factor'])
    positions = state[dino + 'embeddings.position_embeddings']
    assert positions[0, 0].abs().sum() == 0
    assert torch.equal(positions[0, 1:], tensors[dino + 'pos_embed'][0])
    assert torch.equal(state[sig + 'embeddings.position_embedding.weight'],
                       tensors[sig + 'pos_embed'][0])
    assert torch.equal(state[sig + 'head.attention.in_proj_weight'],
                       torch.cat([tensors[sig + 'attn_pool.q.weight'],
                                  tensors[sig + 'attn_pool.kv.weight']]))
    assert torch.equal(state['language_model.lm_head.weight'],
                       tensors['language_model.lm_head.weight'])


def test_mapping_at_full_size_matches_the_released_openvla_7b():
    """The real openvla-7b config: every tensor mapped, real shapes, 7,541,237,184 values."""
    config = ref.released_config_json()
    del config['vla_ros_vision_towers']
    config.update(image_sizes=[224, 224], text_config={
        'model_type': 'llama', 'pad_token_id': 32000, 'torch_dtype': 'bfloat16',
        'vocab_size': 32064})
    model = build_on_meta(parse_released_config(config).config)
    plan = plan_for(model)
    shapes = released_shapes(plan, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    f, s = 'vision_backbone.featurizer.', 'vision_backbone.fused_featurizer.'
    assert shapes[f + 'pos_embed'] == (1, 256, 1024)
    assert shapes[f + 'cls_token'] == (1, 1, 1024) and shapes[f + 'reg_token'] == (1, 4, 1024)
    assert shapes[f + 'blocks.23.attn.qkv.weight'] == (3072, 1024)
    assert shapes[f + 'blocks.0.ls1.scale_factor'] == (1024,)
    assert shapes[s + 'pos_embed'] == (1, 256, 1152)
    assert shapes[s + 'blocks.26.mlp.fc1.weight'] == (4304, 1152)
    assert shapes[s + 'attn_pool.kv.weight'] == (2304, 1152)
    assert shapes['projector.fc1.weight'] == (8704, 2176)
    assert shapes['projector.fc2.weight'] == (4096, 8704)
    assert shapes['language_model.model.embed_tokens.weight'] == (32064, 4096)
    assert shapes['language_model.lm_head.weight'] == (32064, 4096)
    assert len(shapes) == 343 + 342 + 6 + 291  # DINOv2, SigLIP, projector, Llama-2
    assert sum(int(np.prod(v)) for v in shapes.values()) == OPENVLA_7B_PARAMETERS


# ------------------------------------------------------------------ prompt and tokenizer
def test_prompt_ids_come_from_the_checkpoint_tokenizer(native):
    tokenizer = native.tokenizer
    prompt = f'In: What action should the robot take to {INSTRUCTION.lower()}?\nOut:'
    ids = native.prompts.encode(INSTRUCTION)
    space = tokenizer.convert_tokens_to_ids('\u2581')
    assert ids == tokenizer(prompt).input_ids + [space]
    assert ids[0] == tokenizer.bos_token_id == 1
    assert tokenizer.convert_ids_to_tokens(ids[-4:]) == ['<0x0A>', 'Out', ':', '\u2581']


def test_loading_without_a_tokenizer_is_refused(released_dir, tmp_path):
    path = _copy(released_dir[0], tmp_path, skip=('tokenizer.json', 'tokenizer_config.json'))
    with pytest.raises(PolicyLoadError, match='no tokenizer'):
        OpenVlaPolicy.from_pretrained(path, unnorm_key='bridge_orig')


# ------------------------------------------------------------------ writer round trip
def test_writer_round_trip_gives_identical_actions(tmp_path):
    config = {**TINY, 'siglip_config': {**TINY['siglip_config'], 'hidden_act': 'gelu'}}
    policy = OpenVlaPolicy(config=config, seed=5)
    policy.save_released(tmp_path / 'out', dtype='float32', max_shard_bytes=2_000_000)
    files = {p.name for p in (tmp_path / 'out').iterdir()}
    shards = sorted(f for f in files if f.startswith('model-'))
    assert 'model.safetensors.index.json' in files and len(shards) > 1  # 4.2 MB in 2 MB shards
    assert shards[0] == f'model-00001-of-{len(shards):05d}.safetensors'
    meta = json.loads((tmp_path / 'out' / 'config.json').read_text())
    assert meta['model_type'] == 'openvla' and meta['vision_backbone_id'] == \
        'dinosiglip-vit-so-224px' and 'norm_stats' in meta and 'auto_map' in meta
    names = set()
    for shard in (tmp_path / 'out').glob('model-*.safetensors'):
        names |= set(read_header(shard))
    assert 'vision_backbone.featurizer.blocks.0.attn.qkv.weight' in names
    assert 'vision_backbone.fused_featurizer.attn_pool.kv.weight' in names
    loaded = OpenVlaPolicy.from_pretrained(tmp_path / 'out')
    assert loaded.tokenizer.convert_tokens_to_ids('<PAD>') == 32000
    for seed in range(3):
        obs = Observation.make_example(policy.spec, instruction='stack the blocks')
        obs = Observation(images={'front': camera_frame(seed, (64, 64))},
                          instruction=obs.instruction)
        np.testing.assert_array_equal(policy.predict_action_tokens(obs),
                                      loaded.predict_action_tokens(obs))
        np.testing.assert_array_equal(policy.predict_chunk(obs), loaded.predict_chunk(obs))


def test_writer_refuses_what_the_released_layout_cannot_express(tmp_path):
    from vla_ros.policies.openvla_sim.configuration import SIM
    from vla_ros.policies.openvla_sim.policy import OpenVlaSimPolicy

    policy = OpenVlaSimPolicy(config=dict(SIM))
    with pytest.raises(ValueError, match="use_proprio.*'model_type vla_ros_openvla_sim'"):
        policy.save_released(tmp_path / 'sim')
    tanh = OpenVlaPolicy(config=dict(TINY))  # SigLIP's tanh-approximated GELU
    with pytest.raises(ValueError, match='hidden_act'):
        tanh.save_released(tmp_path / 'tanh')


# ------------------------------------------------------------------ refusals and strictness
def _copy(src: Path, dst: Path, skip=()) -> Path:
    out = dst / 'copy'
    out.mkdir()
    for file in src.iterdir():
        if file.name not in skip:
            (out / file.name).write_bytes(file.read_bytes())
    return out


@pytest.mark.parametrize('field, value, message', [
    ('vision_backbone_id', 'siglip-vit-so400m', "vision_backbone_id = 'siglip-vit-so400m'"),
    ('llm_backbone_id', 'mistral-v0.1-7b-pure', "llm_backbone_id = 'mistral-v0.1-7b-pure'"),
    ('arch_specifier', 'no-align+gelu-mlp', "arch_specifier = 'no-align+gelu-mlp'"),
    ('image_resize_strategy', 'resize-warp', "image_resize_strategy = 'resize-warp'"),
    ('use_fused_vision_backbone', False, 'use_fused_vision_backbone = False'),
    ('timm_override_act_layers', ['quick_gelu', None], 'timm_override_act_layers'),
    ('text_config', {'model_type': 'llama', 'vocab_size': 32064, 'rope_scaling':
                     {'type': 'linear', 'factor': 2.0}}, 'text_config.rope_scaling'),
    ('text_config', {'model_type': 'mistral', 'vocab_size': 32064}, 'text_config.model_type'),
])
def test_unsupported_fields_are_refused_by_name(released_dir, tmp_path, field, value, message):
    path = _copy(released_dir[0], tmp_path)
    config = json.loads((path / 'config.json').read_text())
    config[field] = value
    (path / 'config.json').write_text(json.dumps(config))
    with pytest.raises(PolicyLoadError, match='not supported') as info:
        OpenVlaPolicy.from_pretrained(path, unnorm_key='bridge_orig')
    assert message in str(info.value)


def test_missing_statistics_are_refused(released_dir, tmp_path):
    path = _copy(released_dir[0], tmp_path, skip=('dataset_statistics.json',))
    config = json.loads((path / 'config.json').read_text())
    del config['norm_stats']
    (path / 'config.json').write_text(json.dumps(config))
    with pytest.raises(PolicyLoadError, match='cannot be unnormalized'):
        OpenVlaPolicy.from_pretrained(path, unnorm_key='bridge_orig')


def _rewrite_shard(path: Path, change):
    from safetensors.torch import load_file, save_file

    index = json.loads((path / 'model.safetensors.index.json').read_text())
    shard = path / 'model-00001-of-00003.safetensors'
    tensors = load_file(str(shard))
    change(tensors)
    save_file(tensors, str(shard))
    index['weight_map'] = {k: v for k, v in index['weight_map'].items()
                           if v != shard.name or k in tensors}
    index['weight_map'].update({k: shard.name for k in tensors})
    (path / 'model.safetensors.index.json').write_text(json.dumps(index))


def test_missing_unexpected_and_misshaped_tensors_are_listed(released_dir, tmp_path):
    path = _copy(released_dir[0], tmp_path)
    index = json.loads((path / 'model.safetensors.index.json').read_text())
    first = sorted(k for k, v in index['weight_map'].items() if v.startswith('model-00001'))
    gone, bent = first[0], first[1]

    def change(tensors):
        del tensors[gone]
        tensors[bent] = torch.zeros(3, 3)
        tensors['vision_backbone.featurizer.mask_token'] = torch.zeros(1, 4)

    _rewrite_shard(path, change)
    with pytest.raises(PolicyLoadError) as info:
        OpenVlaPolicy.from_pretrained(path, unnorm_key='bridge_orig')
    text = str(info.value)
    assert f'1 missing: [{gone!r}]' in text
    assert "1 unexpected: ['vision_backbone.featurizer.mask_token']" in text
    assert f'1 mis-shaped: [\'{bent} [3, 3] (expected' in text


def test_truncated_shard_and_index_errors_name_the_file(released_dir, tmp_path):
    path = _copy(released_dir[0], tmp_path)
    shard = path / 'model-00002-of-00003.safetensors'
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(PolicyLoadError, match='model-00002-of-00003.safetensors.*truncated'):
        OpenVlaPolicy.from_pretrained(path, unnorm_key='bridge_orig')
    shard.unlink()
    with pytest.raises(PolicyLoadError, match='names shard.*model-00002-of-00003'):
        OpenVlaPolicy.from_pretrained(path, unnorm_key='bridge_orig')


def test_remote_code_runs_only_when_allowed(released_dir):
    # Allowed: the directory's own code is imported (here a stand-in that raises).
    with pytest.raises(PolicyLoadError, match='custom code failed to load.*must not be imported'):
        OpenVlaPolicy.from_pretrained(released_dir[0], unnorm_key='bridge_orig',
                                      allow_remote_code=True)


def test_without_auto_map_it_loads_the_same(released_dir, tmp_path, native):
    path = _copy(released_dir[0], tmp_path)
    config = json.loads((path / 'config.json').read_text())
    del config['auto_map']
    (path / 'config.json').write_text(json.dumps(config))
    policy = OpenVlaPolicy.from_pretrained(path, unnorm_key='bridge_orig')
    obs = observation(native, camera_frame(2))
    np.testing.assert_array_equal(policy.predict_action_tokens(obs),
                                  native.predict_action_tokens(obs))


# ------------------------------------------------------------------ image resizing
def test_reference_resize_is_pillow_bicubic_and_states_opencvs_residual():
    from PIL import Image

    frame = camera_frame(3)
    ours = prepare_image(frame, (224, 224), method='resize-naive')
    pil = np.asarray(Image.fromarray(frame).resize((224, 224), Image.BICUBIC))
    assert np.array_equal(ours, pil)  # residual difference from PIL: none
    opencv = prepare_image(frame, (224, 224)).astype(float)
    residual = np.abs(opencv - pil).mean() / pil.mean()
    # The default (OpenCV INTER_AREA) path, which other policies keep, is about 1 % away
    # (mean absolute difference / mean intensity, 0.98 % on this frame) from PIL's
    # antialiased bicubic: why released checkpoints resize with PIL.
    assert 0.005 < residual < 0.03


def test_letterbox_pads_symmetrically_with_siglips_mean_grey():
    image = np.full((2, 6, 3), 200, dtype=np.uint8)
    boxed = letterbox(image)
    assert boxed.shape == (6, 6, 3)
    assert (boxed[:2] == 127).all() and (boxed[4:] == 127).all() and (boxed[2:4] == 200).all()
    odd = letterbox(np.zeros((3, 6, 3), dtype=np.uint8))
    assert odd.shape == (5, 6, 3)  # int(3 / 2) each side: one short of square, as Prismatic


def test_resize_crop_keeps_the_centre_and_letterbox_keeps_everything():
    frame = np.zeros((50, 100, 3), dtype=np.uint8)
    frame[:, 25:75] = 255  # the centre half is white
    crop = reference_resize(frame, 50, 'resize-crop')
    assert crop.shape == (50, 50, 3) and (crop[:, 2:-2] == 255).all()
    boxed = reference_resize(frame, 50, 'letterbox')
    assert boxed.shape == (50, 50, 3)
    assert (boxed[:10] == 127).all() and (boxed[15:35, 2:10] == 0).all()
    assert (boxed[15:35, 15:35] == 255).all()


def test_the_engine_resizes_the_way_the_policy_declares():
    frame = camera_frame(4)
    assert np.array_equal(_default_preprocess(frame, (224, 224), 'letterbox'),
                          reference_resize(frame, 224, 'letterbox'))
    assert np.array_equal(_default_preprocess(frame, (224, 224)),
                          prepare_image(frame, (224, 224)))
    with pytest.raises(ValueError, match='square'):
        prepare_image(frame, (224, 112), method='resize-naive')


# ------------------------------------------------------------------ through the runtime
def test_the_engine_runs_a_released_checkpoint_from_a_full_camera_frame(released_dir, native):
    """What the inference node does: make_policy from parameters, predict on a raw frame."""
    from vla_ros.policies.registry import make_policy
    from vla_ros.runtime.engine import Frame, predict_chunk

    policy = make_policy('openvla', model_path=str(released_dir[0]), unnorm_key='bridge_orig',
                         device='cpu', dtype='float32')
    frame = camera_frame(5)
    chunk, error = predict_chunk(policy, 'openvla', {'front': Frame(frame, 1.0)}, INSTRUCTION,
                                 None, _default_preprocess)
    assert error == ''
    expected = native.predict_chunk(observation(native, frame))
    np.testing.assert_array_equal(chunk.actions, expected)


def test_launch_arguments_reach_the_inference_node(tmp_path):
    from vla_ros import bringup

    model = tmp_path / 'openvla-7b'
    model.mkdir()
    _, inference = bringup.nodes('openvla_arm', {
        'model_path': str(model), 'unnorm_key': 'bridge_orig', 'device': 'cuda:0',
        'dtype': 'bfloat16'})
    assert {k: inference.parameters[k] for k in ('model_path', 'unnorm_key', 'device', 'dtype')} \
        == {'model_path': str(model), 'unnorm_key': 'bridge_orig', 'device': 'cuda:0',
            'dtype': 'bfloat16'}
    with pytest.raises(ValueError, match='is not one of|one of'):
        bringup.nodes('openvla_arm', {'dtype': 'float8'})


def test_a_preprocessor_config_that_disagrees_is_refused(released_dir, tmp_path):
    path = _copy(released_dir[0], tmp_path)
    from vla_ros.policies.openvla.released_format import released_preprocessor_config

    preprocessor = released_preprocessor_config('resize-naive', ref.IMAGE)
    (path / 'preprocessor_config.json').write_text(json.dumps(preprocessor))
    OpenVlaPolicy.from_pretrained(path, unnorm_key='bridge_orig')  # agrees: loads
    preprocessor['means'] = [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]
    (path / 'preprocessor_config.json').write_text(json.dumps(preprocessor))
    with pytest.raises(PolicyLoadError, match='preprocessor_config.json: means'):
        OpenVlaPolicy.from_pretrained(path, unnorm_key='bridge_orig')


def test_statistics_that_disagree_between_the_two_files_are_refused(released_dir, tmp_path):
    path = _copy(released_dir[0], tmp_path)
    stats = ref.norm_stats()
    stats['bridge_orig']['action']['q99'][0] = 0.5
    (path / 'dataset_statistics.json').write_text(json.dumps(stats))
    with pytest.raises(PolicyLoadError, match="'bridge_orig' differ"):
        OpenVlaPolicy.from_pretrained(path, unnorm_key='bridge_orig')


def test_prompt_ids_equal_the_raw_tokenizer_json_of_a_released_style_tokenizer(tmp_path):
    """Prompt ids equal those of the released tokenizer.json read as written.

    openvla-7b's tokenizer.json (transformers 4.40) normalizes with Prepend + Replace and
    its processor's fast tokenizer used that file as written; transformers 5 rebuilds the
    pipeline (Metaspace). The ids must not change: here for the 32k tokenizer rewritten in
    that style, the checkpoint loader's ids equal the ``tokenizers`` library's on the file.
    """
    from tokenizers import Tokenizer

    from vla_ros.policies.openvla.processing_openvla import PromptEncoder, build_prompt
    from vla_ros.policies.openvla.released_loader import load_checkpoint_tokenizer

    data = json.loads((tokenizer_dir() / 'tokenizer.json').read_text())
    data['normalizer'] = {'type': 'Sequence', 'normalizers': [
        {'type': 'Prepend', 'prepend': '\u2581'},
        {'type': 'Replace', 'pattern': {'String': ' '}, 'content': '\u2581'}]}
    data['pre_tokenizer'] = None
    (tmp_path / 'tokenizer.json').write_text(json.dumps(data))
    (tmp_path / 'tokenizer_config.json').write_text(json.dumps({
        'add_bos_token': True, 'add_eos_token': False, 'bos_token': '<s>', 'eos_token': '</s>',
        'unk_token': '<unk>', 'legacy': False, 'tokenizer_class': 'LlamaTokenizer',
        'model_max_length': 2048, 'padding_side': 'right'}))
    (tmp_path / 'config.json').write_text(json.dumps(ref.released_config_json()))
    raw = Tokenizer.from_file(str(tmp_path / 'tokenizer.json'))
    prompts = PromptEncoder(load_checkpoint_tokenizer(tmp_path))
    for instruction in ('pick up the red cube', 'Put  the 3 cups in the sink',
                        'move the "blue" block\tleft, then stop'):
        expected = raw.encode(build_prompt(instruction)).ids
        assert expected[0] == 1
        assert prompts.encode(instruction) == expected + [prompts.space_id]
