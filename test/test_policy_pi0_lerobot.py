"""LeRobot π₀ / π₀.₅ checkpoints (policies ``pi0`` and ``pi05``) on tiny fixtures.

The fixtures are written in LeRobot's layout (file names, pipeline step names, tensor
names) with tiny sizes; expectations are derived by hand from the flow-matching sampler
(t from 1 to 0, dt = -1/N, x <- x + dt * v), from the statistics files read directly, and
from LeRobot's attention/position rules.
"""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vla_ros.policies.contract import InvalidObservationError, Observation, PolicyLoadError
from vla_ros.policies.lerobot_pi.fixtures import write_checkpoint, write_tokenizer
from vla_ros.policies.lerobot_pi.processors import discretize_state, pi05_prompt, siglip_pixels
from vla_ros.policies.registry import make_policy

KINDS = ('pi0', 'pi05')
OUT_W = 'model.action_out_proj.weight'
OUT_B = 'model.action_out_proj.bias'


@pytest.fixture(scope='module')
def tok(tmp_path_factory):
    return str(write_tokenizer(tmp_path_factory.mktemp('tok')))


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    cache = {}

    def get(kind, **options):
        key = (kind, json.dumps(options, sort_keys=True, default=str))
        if key not in cache:
            cache[key] = write_checkpoint(tmp_path_factory.mktemp(kind), kind, **options)
        return cache[key]

    return get


def observation(policy, stamp=1.0, seed=3):
    obs = Observation.make_example(policy.spec, 'pick up the red cube', stamp=stamp, seed=seed)
    obs.proprio = np.array([0.5, -0.2, 0.1, 0.9, -1.1, 0.3, 0.7, -0.4],
                           dtype=np.float32)[:policy.state_dim]
    return obs


def noise_like(policy, seed=0):
    d = policy.dims
    return torch.randn((1, d.chunk_size, d.max_action_dim),
                       generator=torch.Generator().manual_seed(seed))


def zero_velocity(bias):
    """Edit: action_out_proj outputs exactly ``bias`` whatever the expert computes."""
    def edit(state):
        state[OUT_W] = torch.zeros_like(state[OUT_W])
        state[OUT_B] = torch.as_tensor(bias, dtype=torch.float32)
        return state
    return edit


def stats_of(path, pipeline):
    """The normalizer statistics file of a pipeline, read directly with safetensors."""
    (name,) = [p.name for p in path.glob(f'{pipeline}_step_*normalizer_processor.safetensors')]
    return load_file(str(path / name))


# ------------------------------------------------------------------------------ format
@pytest.mark.parametrize('kind', KINDS)
def test_fixture_has_lerobots_files_steps_and_tensor_names(ckpt, kind):
    path = ckpt(kind)
    files = {p.name for p in path.iterdir()}
    pre_step = 6 if kind == 'pi0' else 3
    assert {'config.json', 'model.safetensors', 'policy_preprocessor.json',
            'policy_postprocessor.json',
            f'policy_preprocessor_step_{pre_step}_normalizer_processor.safetensors',
            'policy_postprocessor_step_0_unnormalizer_processor.safetensors'} == files
    pre = json.loads((path / 'policy_preprocessor.json').read_text())
    assert pre['name'] == 'policy_preprocessor'
    names = [s['registry_name'] for s in pre['steps']]
    assert 'normalizer_processor' in names and 'tokenizer_processor' in names
    assert ('pi0_new_line_processor' if kind == 'pi0'
            else 'pi05_prepare_state_tokenizer_processor_step') in names
    keys = set(load_file(str(path / 'model.safetensors')))
    time_mlp = 'time_mlp_in' if kind == 'pi05' else 'action_time_mlp_in'
    for key in ('model.paligemma_with_expert.paligemma.model.vision_tower.vision_model.'
                'embeddings.patch_embedding.weight',
                'model.paligemma_with_expert.paligemma.model.multi_modal_projector.linear.weight',
                'model.paligemma_with_expert.paligemma.model.language_model.layers.1.mlp.'
                'gate_proj.weight',
                'model.paligemma_with_expert.paligemma.lm_head.weight',
                'model.paligemma_with_expert.gemma_expert.model.layers.0.self_attn.q_proj.weight',
                OUT_W, f'model.{time_mlp}.weight'):
        assert key in keys, key
    adaptive = ('model.paligemma_with_expert.gemma_expert.model.layers.0.input_layernorm.'
                'dense.weight')
    assert (adaptive in keys) == (kind == 'pi05')
    assert ('model.state_proj.weight' in keys) == (kind == 'pi0')


# ------------------------------------------------------------------- flow matching
@pytest.mark.parametrize('kind', KINDS)
def test_constant_velocity_gives_noise_minus_bias_unnormalized(ckpt, tok, kind):
    # v = b at every step; t goes 1 -> 0 in N steps of dt = -1/N: x_0 = noise - b.
    bias = np.linspace(-0.6, 0.8, 8).astype(np.float32)
    path = ckpt(kind, edit_state=zero_velocity(bias), num_inference_steps=5)
    policy = make_policy(kind, model_path=str(path), tokenizer_path=tok)
    noise = noise_like(policy)
    chunk = policy.predict_with_noise(observation(policy), noise)
    normalized = (noise[0].numpy() - bias)[:, :7]  # the first action_dim of max_action_dim
    stats = stats_of(path, 'policy_postprocessor')
    if kind == 'pi0':  # MEAN_STD inverse: x * std + mean
        expected = normalized * stats['action.std'].numpy() + stats['action.mean'].numpy()
    else:  # QUANTILES inverse: (x + 1) (q99 - q01) / 2 + q01
        q01, q99 = stats['action.q01'].numpy(), stats['action.q99'].numpy()
        expected = (normalized + 1) * (q99 - q01) / 2 + q01
    np.testing.assert_allclose(chunk, expected, rtol=0, atol=2e-6)


@pytest.mark.parametrize('kind', KINDS)
def test_relative_actions_add_the_raw_state_except_excluded_joints(ckpt, tok, kind):
    bias = np.full(8, 0.25, dtype=np.float32)
    names = ['j1', 'j2', 'j3', 'j4', 'j5', 'j6', 'gripper']
    common = dict(edit_state=zero_velocity(bias), action_names=names, state_dim=7)
    absolute = make_policy(kind, model_path=str(ckpt(kind, **common)), tokenizer_path=tok)
    relative = make_policy(kind, model_path=str(ckpt(kind, relative=True, **common)),
                           tokenizer_path=tok)
    assert relative.spec.action_space.names == tuple(names)
    obs = observation(relative)
    noise = noise_like(relative)
    delta = relative.predict_with_noise(obs, noise) - absolute.predict_with_noise(obs, noise)
    state = np.asarray(obs.proprio)
    expected = np.array([*state[:6], 0.0], dtype=np.float32)  # the gripper stays absolute
    np.testing.assert_allclose(delta, np.broadcast_to(expected, delta.shape), atol=2e-6)


@pytest.mark.parametrize('kind', KINDS)
def test_same_noise_same_chunk_and_seeded_noise_per_stamp(ckpt, tok, kind):
    path = str(ckpt(kind))
    a = make_policy(kind, model_path=path, tokenizer_path=tok)
    b = make_policy(kind, model_path=path, tokenizer_path=tok)
    obs = observation(a)
    noise = noise_like(a, seed=4)
    np.testing.assert_array_equal(a.predict_with_noise(obs, noise),
                                  b.predict_with_noise(obs, noise))
    np.testing.assert_array_equal(a.predict_chunk(obs), b.predict_chunk(obs))
    assert not np.array_equal(a.predict_chunk(obs), a.predict_chunk(observation(a, stamp=2.0)))
    assert not np.array_equal(a.predict_with_noise(obs, noise),
                              a.predict_with_noise(obs, noise_like(a, seed=5)))


@pytest.mark.parametrize('kind', KINDS)
def test_absent_camera_is_invisible_like_a_checkpoint_without_it(ckpt, tok, kind):
    # The missing camera is appended after the given one, masked as keys; positions count
    # only valid tokens: the result must equal the same weights with one camera.
    two = make_policy(kind, model_path=str(ckpt(kind)), tokenizer_path=tok,
                      missing_cameras=['left_wrist_0_rgb'])
    one = make_policy(kind, model_path=str(ckpt(kind, cameras=['base_0_rgb'])),
                      tokenizer_path=tok)
    assert two.spec.camera_names == one.spec.camera_names == ('base_0_rgb',)
    obs = observation(one)
    noise = noise_like(one)
    np.testing.assert_allclose(two.predict_with_noise(obs, noise),
                               one.predict_with_noise(obs, noise), rtol=0, atol=1e-5)


# --------------------------------------------------------------------- processors
@pytest.mark.parametrize('kind', KINDS)
def test_normalizers_match_the_statistics_files_and_round_trip(ckpt, tok, kind):
    path = ckpt(kind)
    policy = make_policy(kind, model_path=str(path), tokenizer_path=tok)
    pre = stats_of(path, 'policy_preprocessor')
    raw = torch.tensor([[0.5, -0.2, 0.1, 0.9, -1.1, 0.3]])
    if kind == 'pi0':
        expected = (raw - pre['observation.state.mean']) / (pre['observation.state.std'] + 1e-8)
    else:
        q01, q99 = pre['observation.state.q01'], pre['observation.state.q99']
        expected = 2 * (raw - q01) / (q99 - q01) - 1
    torch.testing.assert_close(policy.state_normalizer.normalize(raw), expected)
    action = torch.randn(3, 7, generator=torch.Generator().manual_seed(1))
    back = policy.action_normalizer.normalize(policy.action_normalizer.unnormalize(action))
    torch.testing.assert_close(back, action, rtol=0, atol=1e-5)
    # The action space's bounds are the dataset's min/max from the statistics file.
    post = stats_of(path, 'policy_postprocessor')
    np.testing.assert_allclose(policy.spec.action_space.low, post['action.min'].numpy())
    np.testing.assert_allclose(policy.spec.action_space.high, post['action.max'].numpy())


def test_pi05_prompt_carries_the_256_bin_state():
    state = np.array([-1.0, -0.99, 0.0, 0.999, 1.0, -1.5], dtype=np.float32)
    # Bins are [-1 + 2k/256, ...): -1 -> 0, -0.99 -> 1, 0 -> 128, 0.999 -> 255, 1 -> 255
    # (past the last edge), below -1 -> -1.
    np.testing.assert_array_equal(discretize_state(state), [0, 1, 128, 255, 255, -1])
    # Stripped first, then underscores and newlines become spaces.
    assert pi05_prompt(' stack_the blocks\n', state) == \
        'Task: stack the blocks, State: 0 1 128 255 255 -1;\nAction: '
    assert pi05_prompt('a\nb', None) == 'Task: a b;\nAction: '


def test_pi0_prompt_ends_in_one_newline_and_starts_with_bos(ckpt, tok):
    policy = make_policy('pi0', model_path=str(ckpt('pi0')), tokenizer_path=tok)
    x = policy.model_inputs(observation(policy))
    assert x['prompt'] == 'pick up the red cube\n'
    ids, mask = x['token_ids'][0], x['token_masks'][0]
    assert ids.shape == (48,) and ids[0] == policy.tokenizer.bos_token_id
    n = int(mask.sum())
    assert mask[:n].all() and not mask[n:].any() and (ids[n:] == 0).all()  # right padding


def test_images_are_resized_with_centred_padding_to_minus_one_one():
    white = np.full((48, 64, 3), 255, dtype=np.uint8)
    x = siglip_pixels(white, 28)[0]
    # 64x48 -> ratio 64/28: 28 wide, int(48 / (64/28)) = 21 high; 7 rows of padding, 3 on top.
    assert x.shape == (3, 28, 28)
    assert (x[:, :3] == -1).all() and (x[:, 24:] == -1).all()
    torch.testing.assert_close(x[:, 3:24], torch.ones(3, 21, 28))


# ------------------------------------------------------------------------- loading
def _broken(tmp_path, kind, edit):
    return write_checkpoint(tmp_path / 'broken', kind, edit_state=edit)


@pytest.mark.parametrize('kind', KINDS)
def test_strict_loading_names_missing_unexpected_and_misshaped_tensors(tmp_path, tok, kind):
    gone = 'model.paligemma_with_expert.gemma_expert.model.layers.1.mlp.up_proj.weight'
    extra = 'model.some_new_head.weight'
    bent = 'model.action_in_proj.weight'

    def edit(state):
        del state[gone]
        state[extra] = torch.zeros(2)
        state[bent] = torch.zeros(3, 3)
        return state

    path = _broken(tmp_path, kind, edit)
    with pytest.raises(PolicyLoadError) as err:
        make_policy(kind, model_path=str(path), tokenizer_path=tok)
    message = str(err.value)
    assert f'missing 1: {gone}' in message
    assert f'unexpected 1: {extra}' in message
    assert f'{bent} (3, 3)' in message and 'mis-shaped 1' in message


def test_lerobot_key_aliases_load_the_same_weights(tmp_path, ckpt, tok):
    # Keys without "model." and pi0's old time_mlp_* names are LeRobot's accepted spellings;
    # SigLIP keys without "vision_model." are newer transformers' names for the same tensors.
    def rename(state):
        out = {}
        for k, v in state.items():
            k = k[len('model.'):].replace('vision_tower.vision_model.', 'vision_tower.')
            out[k.replace('action_time_mlp', 'time_mlp')] = v
        return out

    renamed = _broken(tmp_path, 'pi0', rename)
    a = make_policy('pi0', model_path=str(renamed), tokenizer_path=tok)
    b = make_policy('pi0', model_path=str(ckpt('pi0')), tokenizer_path=tok)
    obs = observation(a)
    # Same values; only the file offsets (memory alignment) differ, hence 1e-6 not 0.
    np.testing.assert_allclose(a.predict_with_noise(obs, noise_like(a)),
                               b.predict_with_noise(obs, noise_like(b)), rtol=0, atol=1e-6)


def test_missing_tokenizer_is_a_clear_error(ckpt, monkeypatch, tmp_path):
    for var in ('HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE'):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('HF_HOME', str(tmp_path / 'empty_hf_home'))
    with pytest.raises(PolicyLoadError, match='tokenizer_path'):
        make_policy('pi0', model_path=str(ckpt('pi0')))


def test_tokenizer_is_found_in_a_local_hf_cache(ckpt, tok, monkeypatch, tmp_path):
    import shutil

    snapshot = tmp_path / 'hub' / 'models--google--paligemma-3b-pt-224' / 'snapshots' / 'abc'
    shutil.copytree(tok, snapshot)
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hub'))
    policy = make_policy('pi0', model_path=str(ckpt('pi0')))
    assert len(policy.tokenizer) == len(make_policy('pi0', model_path=str(ckpt('pi0')),
                                                    tokenizer_path=tok).tokenizer)


def test_wrong_type_too_small_vocabulary_and_empty_path_are_errors(ckpt, tok, tmp_path):
    with pytest.raises(PolicyLoadError, match="expected 'pi05'"):
        make_policy('pi05', model_path=str(ckpt('pi0')), tokenizer_path=tok)
    small = write_checkpoint(tmp_path / 'small', 'pi0', vocab_size=100)
    with pytest.raises(PolicyLoadError, match='100 embeddings'):
        make_policy('pi0', model_path=str(small), tokenizer_path=tok)
    with pytest.raises(PolicyLoadError, match='model_path is required'):
        make_policy('pi0')
    with pytest.raises(ValueError, match='unnorm_key does not apply'):
        make_policy('pi0', model_path=str(ckpt('pi0')), unnorm_key='bridge')
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['size'\]"):
        make_policy('pi05', model_path=str(ckpt('pi05')), size='tiny')


def test_wrong_state_length_is_rejected(ckpt, tok):
    policy = make_policy('pi0', model_path=str(ckpt('pi0')), tokenizer_path=tok)
    obs = observation(policy)
    obs.proprio = np.zeros(5, dtype=np.float32)
    with pytest.raises(InvalidObservationError, match='6 values'):
        policy.predict_chunk(obs)


def test_bfloat16_keeps_lerobots_fp32_parts_and_stays_close(ckpt, tok):
    path = str(ckpt('pi05'))
    f32 = make_policy('pi05', model_path=path, tokenizer_path=tok)
    bf16 = make_policy('pi05', model_path=path, tokenizer_path=tok, dtype='bfloat16')
    dtypes = {n: p.dtype for n, p in bf16.model.named_parameters()}
    core = 'paligemma_with_expert.paligemma.model.'
    assert dtypes[core + 'language_model.layers.0.mlp.up_proj.weight'] == torch.bfloat16
    assert dtypes[core + 'language_model.layers.0.input_layernorm.weight'] == torch.float32
    assert dtypes[core + 'vision_tower.vision_model.post_layernorm.weight'] == torch.float32
    assert dtypes['action_out_proj.weight'] == torch.float32
    obs = observation(f32)
    noise = noise_like(f32)
    np.testing.assert_allclose(bf16.predict_with_noise(obs, noise),
                               f32.predict_with_noise(obs, noise), atol=0.1)


# ------------------------------------------------- layer numerics vs transformers
def _tiny_model(kind='pi0'):
    from vla_ros.policies.lerobot_pi.fixtures import TINY_EXPERT, TINY_PALIGEMMA, TINY_VISION
    from vla_ros.policies.lerobot_pi.modeling import GemmaDims, PiDims, PiModel, VisionDims

    torch.manual_seed(0)
    model = PiModel(PiDims(pi05=kind == 'pi05', vision=VisionDims(**TINY_VISION),
                           paligemma=GemmaDims(**TINY_PALIGEMMA),
                           expert=GemmaDims(**TINY_EXPERT), vocab_size=300, image_size=28,
                           chunk_size=4, max_state_dim=8, max_action_dim=8,
                           projection_dim=TINY_PALIGEMMA['width']))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('norm.weight'):
                p.normal_(0.0, 0.1)
    return model.eval()


def test_siglip_tower_matches_transformers_siglip():
    from transformers import SiglipVisionConfig, SiglipVisionModel

    ours = _tiny_model().paligemma_with_expert.paligemma.model.vision_tower.vision_model
    ref = SiglipVisionModel(SiglipVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        image_size=28, patch_size=14, vision_use_head=False)).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    pixels = torch.rand(2, 3, 28, 28) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(ours(pixels), ref(pixel_values=pixels).last_hidden_state,
                                   rtol=1e-5, atol=1e-5)


def test_gemma_stack_matches_transformers_gemma_under_a_causal_mask():
    from transformers import GemmaConfig, GemmaModel

    from vla_ros.policies.lerobot_pi.modeling import additive

    ours = _tiny_model().paligemma_with_expert.paligemma.model.language_model
    ref = GemmaModel(GemmaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                                 vocab_size=300, hidden_act='gelu_pytorch_tanh')).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    ids = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(2))
    n = ids.shape[1]
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))[None].expand(2, n, n)
    with torch.no_grad():
        out, _ = ours(ours.embed(ids), torch.arange(n)[None].expand(2, n), additive(causal))
        torch.testing.assert_close(out, ref(input_ids=ids).last_hidden_state,
                                   rtol=1e-5, atol=1e-5)


def test_adaptive_rmsnorm_applies_scale_shift_and_returns_the_gate():
    from vla_ros.policies.lerobot_pi.modeling import RmsNorm

    norm = RmsNorm(4, 1e-6, cond_dim=2)
    with torch.no_grad():
        norm.dense.weight.zero_()
        norm.dense.bias.copy_(torch.tensor([0.5] * 4 + [0.1] * 4 + [2.0] * 4))
    x = torch.tensor([[[1.0, -1.0, 2.0, 0.0]]])
    out, gate = norm(x, torch.zeros(1, 2))
    rms = torch.sqrt(torch.tensor(6.0 / 4) + 1e-6)
    torch.testing.assert_close(out, x / rms * 1.5 + 0.1)
    torch.testing.assert_close(gate, torch.full((1, 1, 4), 2.0))


@pytest.mark.parametrize('kind', KINDS)
def test_cached_prefix_velocity_equals_one_joint_pass_over_prefix_and_suffix(kind):
    # LeRobot trains with prefix and suffix in one pass through both stacks (each token
    # through its own stack's weights, attention over the concatenation); inference caches
    # the prefix keys/values. Both must give the same velocity.
    from vla_ros.policies.lerobot_pi.modeling import additive, block_mask, rotary

    model = _tiny_model(kind)
    d = model.dims
    images = [torch.rand(1, 3, 28, 28) * 2 - 1]
    ids = torch.randint(4, 300, (1, 6), generator=torch.Generator().manual_seed(1))
    token_masks = torch.tensor([[True] * 4 + [False] * 2])
    state = torch.randn(1, 8)
    x_t = torch.randn(1, d.chunk_size, d.max_action_dim)
    t = torch.tensor([0.7])
    with torch.no_grad():
        cache, prefix_pad = model.run_prefix(images, [torch.ones(1, dtype=torch.bool)], ids,
                                             token_masks)
        cached = model.velocity(state, cache, prefix_pad, x_t, t)
        prefix, pad_p, blocks_p = model.prefix(images, [torch.ones(1, dtype=torch.bool)], ids,
                                               token_masks)
        suffix, pad_s, blocks_s, cond = model.suffix(state, x_t, t)
        pad = torch.cat([pad_p, pad_s], 1)
        mask = additive(block_mask(pad, torch.cat([blocks_p, blocks_s], 1)))
        positions = torch.cumsum(pad, 1) - 1
        stacks = (model.paligemma_with_expert.paligemma.model.language_model,
                  model.paligemma_with_expert.gemma_expert.model)
        cos, sin = rotary(positions, d.paligemma.head_dim, torch.float32)
        hs, n_p = [prefix, suffix], prefix.shape[1]
        for layers in zip(stacks[0].layers, stacks[1].layers, strict=True):
            qkv, gates = [], []
            for layer, h, c in zip(layers, hs, (None, cond), strict=True):
                normed, gate = layer.input_layernorm(h, c)
                gates.append(gate)
                a = layer.self_attn
                qkv.append([p(normed).view(1, h.shape[1], -1, 8).transpose(1, 2)
                            for p in (a.q_proj, a.k_proj, a.v_proj)])
            q, k, v = (torch.cat([x[i] for x in qkv], dim=2) for i in range(3))
            q = q * cos[:, None] + torch.cat([-q[..., 4:], q[..., :4]], -1) * sin[:, None]
            k = k * cos[:, None] + torch.cat([-k[..., 4:], k[..., :4]], -1) * sin[:, None]
            w = torch.softmax(q @ k.transpose(2, 3) * 8 ** -0.5 + mask, dim=-1)
            att = (w @ v).transpose(1, 2).reshape(1, pad.shape[1], -1)
            new = []
            for i, (layer, h, c) in enumerate(zip(layers, hs, (None, cond), strict=True)):
                part = att[:, :n_p] if i == 0 else att[:, n_p:]
                h = h + layer.self_attn.o_proj(part) * (1 if gates[i] is None else gates[i])
                normed, gate = layer.post_attention_layernorm(h, c)
                new.append(h + layer.mlp(normed) * (1 if gate is None else gate))
            hs = new
        out, _ = stacks[1].norm(hs[1], cond)
        joint = model.action_out_proj(out[:, -d.chunk_size:])
    torch.testing.assert_close(cached, joint, rtol=1e-5, atol=1e-5)


def test_a_bf16_file_loads_into_fp32_with_the_stored_values(tmp_path, ckpt, tok):
    path = write_checkpoint(tmp_path / 'bf16', 'pi0', dtype='bfloat16')
    assert json.loads((path / 'config.json').read_text())['dtype'] == 'bfloat16'
    stored = load_file(str(path / 'model.safetensors'))
    policy = make_policy('pi0', model_path=str(path), tokenizer_path=tok, dtype='float32')
    params = dict(policy.model.named_parameters())
    for name in ('action_in_proj.weight', 'paligemma_with_expert.gemma_expert.model.layers.0.'
                 'mlp.up_proj.weight'):
        assert stored['model.' + name].dtype == torch.bfloat16
        assert params[name].dtype == torch.float32
        torch.testing.assert_close(params[name], stored['model.' + name].float(), rtol=0,
                                   atol=0)
    embed = params['paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight']
    torch.testing.assert_close(  # the tied lm_head stands for the embeddings
        embed, stored['model.paligemma_with_expert.paligemma.lm_head.weight'].float())


def test_the_experts_unused_lm_head_is_accepted_only_with_its_shape(tmp_path, tok):
    head = 'model.paligemma_with_expert.gemma_expert.lm_head.weight'

    def with_head(shape):
        def edit(state):
            state[head] = torch.zeros(shape)
            return state
        return edit

    good = write_checkpoint(tmp_path / 'good', 'pi0', edit_state=with_head((300, 16)))
    make_policy('pi0', model_path=str(good), tokenizer_path=tok)
    bad = write_checkpoint(tmp_path / 'bad', 'pi0', edit_state=with_head((300, 15)))
    with pytest.raises(PolicyLoadError, match=rf'mis-shaped 1: {head} \(300, 15\)'):
        make_policy('pi0', model_path=str(bad), tokenizer_path=tok)
