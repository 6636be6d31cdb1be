"""SmolVLA: LeRobot checkpoints load strictly and predict what the flow equations say.

The checkpoint is written by test/smolvla_checkpoint.py with LeRobot's file names, JSON
step names and tensor names listed independently of vla_ros's network.
"""

import json
import math

import numpy as np
import pytest
import smolvla_checkpoint as fixture
import torch
from safetensors.torch import load_file, save_file

from vla_ros.policies.contract import Observation, PolicyLoadError
from vla_ros.policies.registry import make_policy
from vla_ros.policies.smolvla import modeling
from vla_ros.policies.smolvla.policy import resize_with_pad


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """(vlm dir, action space yaml, tmp root) shared by the module."""
    root = tmp_path_factory.mktemp('smolvla')
    return fixture.write_vlm_dir(root / 'SmolVLM2-tiny'), fixture.write_action_space(
        root / 'joints.yaml'), root


def load(files, path, **kwargs):
    vlm, space, _ = files
    kwargs.setdefault('vlm_path', str(vlm))
    kwargs.setdefault('action_space', str(space))
    return make_policy('smolvla', model_path=str(path), **kwargs)


@pytest.fixture(scope='module')
def checkpoint(files):
    return fixture.write_checkpoint(files[2] / 'checkpoint')


@pytest.fixture(scope='module')
def policy(files, checkpoint):
    return load(files, checkpoint)


def observation(policy, stamp=1.0, instruction='pick up the cube'):
    obs = Observation.make_example(policy.spec, instruction, stamp=stamp, seed=4)
    obs.proprio = np.linspace(-2, 3, fixture.STATE_DIM).astype(np.float32)
    return obs


def test_spec_follows_the_checkpoint(policy):
    spec = policy.spec
    assert spec.camera_names == ('front',)
    assert spec.image_size == (fixture.IMAGE[2], fixture.IMAGE[1])  # (W, H) of (3, 24, 32)
    assert spec.chunk_length == fixture.CHUNK and spec.uses_proprio
    assert spec.action_space.dim == fixture.ACTION_DIM


def test_every_parameter_comes_from_the_file(policy, checkpoint):
    file = load_file(str(checkpoint / 'model.safetensors'))
    state = policy.model.state_dict()
    assert set(state) == set(file)
    for name, value in file.items():
        assert torch.equal(state[name], value), name


def test_zero_output_projection_gives_the_closed_form_flow(files, tmp_path):
    """With v = b at every step, Euler from t=1 to t=0 gives x0 = noise - b (dt = -1/N)."""
    weights = fixture.make_weights()
    bias = torch.linspace(-0.6, 0.9, fixture.MAX_ACTION)
    weights['model.action_out_proj.weight'] = torch.zeros(fixture.MAX_ACTION, fixture.EXPERT)
    weights['model.action_out_proj.bias'] = bias
    policy = load(files, fixture.write_checkpoint(tmp_path / 'ck', weights))
    noise = torch.randn(1, fixture.CHUNK, fixture.MAX_ACTION,
                        generator=torch.Generator().manual_seed(3))
    chunk = policy.predict_chunk(observation(policy), noise=noise)
    stats = fixture.STATS['action']
    model_space = (noise[0, :, :fixture.ACTION_DIM] - bias[:fixture.ACTION_DIM]).numpy()
    expected = model_space * stats['std'] + stats['mean']  # MEAN_STD inverse
    np.testing.assert_allclose(chunk, expected, rtol=1e-5, atol=1e-5)


def test_same_noise_same_chunk_and_the_stamp_sets_the_noise(policy):
    obs = observation(policy)
    first = policy.predict_chunk(obs)
    np.testing.assert_array_equal(first, policy.predict_chunk(obs))
    noise = policy.initial_noise(obs.stamp)
    np.testing.assert_array_equal(first, policy.predict_chunk(obs, noise=noise))
    assert not np.array_equal(first, policy.predict_chunk(observation(policy, stamp=2.0)))


def test_state_and_action_normalization_follow_the_statistics_file(policy, checkpoint):
    stats = load_file(str(checkpoint / 'policy_preprocessor_step_5_normalizer_processor'
                                       '.safetensors'))
    raw = torch.linspace(-2, 3, fixture.STATE_DIM)[None]
    expected = (raw - stats['observation.state.mean']) / (stats['observation.state.std'] + 1e-8)
    state = policy.model_state(raw.numpy())
    torch.testing.assert_close(state[:, :fixture.STATE_DIM], expected, rtol=0, atol=1e-6)
    assert state.shape == (1, fixture.MAX_STATE) and not state[:, fixture.STATE_DIM:].any()
    actions = np.random.default_rng(0).normal(size=(5, fixture.ACTION_DIM))
    round_trip = policy.normalizer.unnormalize(policy.normalizer.normalize(actions))
    np.testing.assert_allclose(round_trip, actions, rtol=1e-5, atol=1e-6)


def test_quantile_normalization_from_the_json_norm_map(files, tmp_path):
    norm_map = {'VISUAL': 'IDENTITY', 'STATE': 'QUANTILES', 'ACTION': 'QUANTILES'}
    policy = load(files, fixture.write_checkpoint(tmp_path / 'ck', norm_map=norm_map))
    s = fixture.STATS['observation.state']
    raw = np.linspace(-2, 3, fixture.STATE_DIM)
    expected = 2 * (raw - s['q01']) / (s['q99'] - s['q01']) - 1
    got = policy.model_state(raw[None])[0, :fixture.STATE_DIM].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    a = fixture.STATS['action']
    np.testing.assert_allclose(policy.normalizer.unnormalize(np.zeros((1, 7)))[0],
                               (a['q01'] + a['q99']) / 2, rtol=1e-6, atol=1e-7)


def test_language_is_task_plus_newline_padded_as_the_json_says(policy, files):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(files[0]))
    ids, valid = policy.tokenize(['stack the blocks'])
    expected = tokenizer('stack the blocks\n')['input_ids']
    assert ids.shape == valid.shape == (1, 20)  # padding "max_length", max_length 20
    assert ids[0, :len(expected)].tolist() == expected
    assert valid[0].tolist() == [True] * len(expected) + [False] * (20 - len(expected))
    assert policy.tokenize(['stack the blocks\n'])[0].tolist() == ids.tolist()


def test_resize_with_pad_keeps_aspect_and_pads_left_and_top():
    image = torch.arange(2 * 4, dtype=torch.float32).view(1, 1, 2, 4)
    out = resize_with_pad(image, width=8, height=8)
    assert out.shape == (1, 1, 8, 8)
    assert not out[0, 0, :4].any()  # 4 rows of padding on top, none on the left
    expected = torch.nn.functional.interpolate(image, size=(4, 8), mode='bilinear',
                                               align_corners=False)
    torch.testing.assert_close(out[0, 0, 4:], expected[0, 0])


def test_a_channels_last_camera_frame_gives_the_contiguous_frames_embedding(policy):
    # A camera frame (H, W, C) permuted to (C, H, W) is a channels-last view; LeRobot's
    # processors hand over contiguous (C, H, W) tensors. The model must see the same
    # memory layout, or the vision tower's convolution rounds differently.
    frame = torch.rand(1, 1, 24, 32, 3, generator=torch.Generator().manual_seed(0))
    view = frame.permute(0, 1, 4, 2, 3)
    assert not view.is_contiguous()
    pixels = policy.model_images(view)[0][0]
    assert pixels.is_contiguous()
    reference = policy.model_images(view.contiguous())[0][0]
    embed = policy.model.model.vlm_with_expert.embed_image
    with torch.no_grad():
        assert torch.equal(embed(pixels), embed(reference))


def test_images_are_scaled_to_minus_one_one(policy):
    images = torch.zeros(1, 1, 3, 24, 32)
    pixels, valid = policy.model_images(images)
    assert pixels[0].shape == (1, 3, 32, 32) and valid[0].tolist() == [True]
    assert pixels[0].min() == -1 and pixels[0].max() == -1  # black and padding both -1
    white = policy.model_images(torch.ones(1, 1, 3, 24, 32))[0][0]
    assert (white[:, :, 8:] == 1).all() and (white[:, :, :8] == -1).all()


def test_time_embedding_and_rotary_positions_by_hand():
    emb = modeling.sinusoidal_time(torch.tensor([0.5]), 4, 4e-3, 4.0)
    expected = [math.sin(0.5 * 2 * math.pi / 4e-3), math.sin(0.5 * 2 * math.pi / 4.0),
                math.cos(0.5 * 2 * math.pi / 4e-3), math.cos(0.5 * 2 * math.pi / 4.0)]
    np.testing.assert_allclose(emb[0].numpy(), expected, rtol=1e-12)
    x = torch.tensor([[[[1.0, 0.0]]]])  # (B, L, H, D=2): one frequency, base**0 = 1
    rotated = modeling.rotate(x, torch.tensor([[2]]))
    np.testing.assert_allclose(rotated[0, 0, 0].numpy(), [math.cos(2), math.sin(2)], atol=1e-6)


def test_attention_blocks():
    # prefix [img, img, lang, lang(pad), state] then 2 action tokens
    valid = torch.tensor([[1, 1, 1, 0, 1, 1, 1]], dtype=torch.bool)
    starts = torch.tensor([[0, 0, 0, 0, 1, 1, 1]])
    mask = modeling.attention_2d(valid, starts)[0].int().tolist()
    assert mask[0] == [1, 1, 1, 0, 0, 0, 0]  # images see images + language, not the state
    assert mask[4] == [1, 1, 1, 0, 1, 0, 0]  # the state sees the prefix
    assert mask[5] == [1, 1, 1, 0, 1, 1, 0]  # actions are causal
    assert mask[3] == [0] * 7  # padding sees nothing


def test_prefix_does_not_see_the_state_and_actions_are_causal(policy):
    flow = policy.model.model
    obs = observation(policy)
    pixels, valid = policy.model_images(policy.images_tensor(obs))
    ids, ids_valid = policy.tokenize([obs.instruction])
    with torch.no_grad():
        state_a = policy.model_state(obs.proprio[None])
        cache_a, prefix_valid = flow.encode_prefix(pixels, valid, ids, ids_valid, state_a)
        cache_b, _ = flow.encode_prefix(pixels, valid, ids, ids_valid, state_a + 1)
        # valid image and language tokens (padding rows see nothing and are never seen)
        seen = prefix_valid[0].clone()
        seen[-1] = False
        for (ka, va), (kb, vb) in zip(cache_a, cache_b, strict=True):
            torch.testing.assert_close(ka[:, seen], kb[:, seen], rtol=0, atol=0)
            torch.testing.assert_close(va[:, seen], vb[:, seen], rtol=0, atol=0)
            assert not torch.equal(ka[:, -1], kb[:, -1])
        x = torch.randn(1, fixture.CHUNK, fixture.MAX_ACTION)
        time = torch.tensor([0.7])
        v1 = flow.velocity(cache_a, prefix_valid, x, time)
        x2 = x.clone()
        x2[:, -1] += 1.0
        v2 = flow.velocity(cache_a, prefix_valid, x2, time)
    torch.testing.assert_close(v1[:, :-1], v2[:, :-1], rtol=0, atol=0)
    assert not torch.equal(v1[:, -1], v2[:, -1])


def test_bfloat16_parameters_on_request(files, checkpoint):
    policy = load(files, checkpoint, dtype='bfloat16')
    assert {p.dtype for p in policy.model.parameters()} == {torch.bfloat16}
    chunk = policy.predict_chunk(observation(policy))
    assert chunk.dtype == np.float32 and np.isfinite(chunk).all()


def _dtypes_by_part(policy):
    parts = {}
    for name, param in policy.model.named_parameters():
        if '.text_model.' in name:
            part = 'text'
        elif '.vlm.' in name:
            part = 'vlm'  # vision tower, connector, lm_head
        elif '.lm_expert.' in name:
            cross_kv = name.split('.layers.')[-1].split('.')[0] in ('1', '3') and \
                ('k_proj' in name or 'v_proj' in name)  # odd layers read the VLM's k/v
            part = 'cross_kv' if cross_kv else 'expert'
        else:
            part = 'projections'
        parts.setdefault(part, set()).add(param.dtype)
    return parts


def test_load_vlm_weights_runs_the_vlm_and_expert_in_bfloat16_as_lerobot(files, tmp_path):
    # LeRobot builds such a VLM with from_pretrained(torch_dtype='bfloat16'), its expert
    # from the (now bfloat16) text config, and new float32 nn.Linear k/v projections for
    # the cross-attention layers; the state/action projections are float32.
    weights = fixture.make_weights()
    path = fixture.write_checkpoint(tmp_path / 'ck', weights,
                                    fixture.lerobot_config(load_vlm_weights=True))
    policy = load(files, path)
    bf16, fp32 = {torch.bfloat16}, {torch.float32}
    assert _dtypes_by_part(policy) == {'vlm': bf16, 'text': bf16, 'expert': bf16,
                                       'cross_kv': fp32, 'projections': fp32}
    state = policy.model.state_dict()
    for name, value in weights.items():  # rounded once, never through bfloat16 and back
        expected = value if state[name].dtype == torch.float32 else value.bfloat16()
        assert torch.equal(state[name], expected), name
    chunk = policy.predict_chunk(observation(policy))
    assert chunk.dtype == np.float32 and np.isfinite(chunk).all()
    float32 = load(files, fixture.write_checkpoint(tmp_path / 'ck32', weights))
    assert set().union(*_dtypes_by_part(float32).values()) == fp32
    assert not np.array_equal(chunk, float32.predict_chunk(observation(float32)))


def test_text_model_and_expert_take_the_vlm_text_configs_dtype(files, tmp_path):
    # Without load_vlm_weights LeRobot builds the VLM from its config: transformers makes
    # the text model in the dtype text_config declares, and the expert, built from a copy
    # of text_config, too; the rest stays float32.
    from transformers import SmolVLMConfig

    vlm = tmp_path / 'vlm'
    fixture.write_vlm_dir(vlm)
    config = SmolVLMConfig.from_pretrained(str(vlm))
    config.text_config.dtype = 'bfloat16'
    config.save_pretrained(str(vlm))
    policy = load(files, fixture.write_checkpoint(tmp_path / 'ck'), vlm_path=str(vlm))
    bf16, fp32 = {torch.bfloat16}, {torch.float32}
    assert _dtypes_by_part(policy) == {'vlm': fp32, 'text': bf16, 'expert': bf16,
                                       'cross_kv': fp32, 'projections': fp32}
    chunk = policy.predict_chunk(observation(policy))
    assert chunk.dtype == np.float32 and np.isfinite(chunk).all()


def test_residual_sums_take_the_layer_output_dtype():
    # LeRobot adds the residual in place (out += hidden): a bfloat16 layer fed float32
    # hidden states returns bfloat16, summed in float32 and rounded once.
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    gen = torch.Generator().manual_seed(0)
    layer = LlamaDecoderLayer(LlamaConfig(hidden_size=16, intermediate_size=32,
                                          num_attention_heads=2, num_key_value_heads=1,
                                          head_dim=8), 0).to(torch.bfloat16)
    hidden = torch.randn(1, 3, 16, generator=gen)
    attended = torch.randn(1, 3, 16, generator=gen)
    with torch.no_grad():
        out = layer.self_attn.o_proj(attended.bfloat16())
        out += hidden
        expected = layer.mlp(layer.post_attention_layernorm(out))
        expected += out
        got = modeling._finish(layer, hidden, attended)
    assert got.dtype == torch.bfloat16 and torch.equal(got, expected)


def test_image_special_tokens_add_three_tokens_per_image(files, tmp_path):
    path = fixture.write_checkpoint(tmp_path / 'ck', config=fixture.lerobot_config(
        add_image_special_tokens=True))
    policy = load(files, path)
    obs = observation(policy)
    pixels, valid = policy.model_images(policy.images_tensor(obs))
    ids, ids_valid = policy.tokenize([obs.instruction])
    state = policy.model_state(obs.proprio[None])
    embeds, _, _ = policy.model.model.embed_prefix(pixels, valid, ids, ids_valid, state)
    image_tokens = (fixture.PATCHES // fixture.SCALE ** 2)
    assert embeds.shape[1] == 3 + image_tokens + ids.shape[1] + 1
    assert np.isfinite(policy.predict_chunk(obs)).all()


# ---------------------------------------------------------------- loading errors


def test_strict_loading_lists_missing_unexpected_and_misshaped(files, tmp_path):
    weights = fixture.make_weights()
    del weights['model.state_proj.bias']
    weights['model.extra.weight'] = torch.zeros(2)
    weights['model.action_in_proj.weight'] = torch.zeros(3, 3)
    with pytest.raises(PolicyLoadError) as err:
        load(files, fixture.write_checkpoint(tmp_path / 'ck', weights))
    text = str(err.value)
    assert 'missing 1' in text and 'model.state_proj.bias' in text
    assert 'unexpected 1' in text and 'model.extra.weight' in text
    assert 'mis-shaped 1' in text and 'model.action_in_proj.weight' in text


def test_missing_vlm_path_is_a_clear_error(files, checkpoint):
    with pytest.raises(PolicyLoadError, match='vlm_path'):
        load(files, checkpoint, vlm_path='')


def test_action_dimension_must_match_the_configured_space(files, checkpoint, tmp_path):
    space = fixture.write_action_space(tmp_path / 'six.yaml', dim=6)
    with pytest.raises(PolicyLoadError, match='action_space'):
        load(files, checkpoint, action_space=str(space))


def test_missing_statistics_and_unknown_steps_are_refused(files, checkpoint, tmp_path):
    import shutil

    broken = tmp_path / 'ck'
    shutil.copytree(checkpoint, broken)
    post = broken / 'policy_postprocessor_step_0_unnormalizer_processor.safetensors'
    save_file({'action.mean': torch.zeros(fixture.ACTION_DIM)}, str(post))
    with pytest.raises(PolicyLoadError, match=r"lack \['std'\]"):
        load(files, broken)
    shutil.copy(checkpoint / post.name, post)
    data = json.loads((broken / 'policy_preprocessor.json').read_text())
    data['steps'].insert(0, {'registry_name': 'delta_actions_processor', 'config': {}})
    (broken / 'policy_preprocessor.json').write_text(json.dumps(data))
    with pytest.raises(PolicyLoadError, match='delta_actions_processor'):
        load(files, broken)


def test_unknown_config_keys_are_refused(files, tmp_path):
    path = fixture.write_checkpoint(tmp_path / 'ck', config=fixture.lerobot_config(
        new_architecture_switch=True))
    with pytest.raises(PolicyLoadError, match='new_architecture_switch'):
        load(files, path)


def test_saved_checkpoint_has_lerobots_layout_and_reloads(policy, tmp_path, files):
    policy.save_pretrained(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {'config.json', 'model.safetensors', 'policy_preprocessor.json',
            'policy_postprocessor.json',
            'policy_preprocessor_step_5_normalizer_processor.safetensors',
            'policy_postprocessor_step_0_unnormalizer_processor.safetensors'} <= names
    assert json.loads((tmp_path / 'config.json').read_text())['type'] == 'smolvla'
    again = make_policy('smolvla', model_path=str(tmp_path))  # VLM files saved alongside
    obs = observation(policy)
    np.testing.assert_array_equal(policy.predict_chunk(obs), again.predict_chunk(obs))


# ------------------------------------------- the cached path equals one joint pass


def _rope(x, positions):
    """Rotary embedding written from the formula: pairs (i, i + D/2), theta_i = 1e4^(-2i/D)."""
    half = x.shape[-1] // 2
    theta = 10_000.0 ** (-2.0 * torch.arange(half, dtype=torch.float64) / x.shape[-1])
    angle = positions.double()[:, None, None] * theta
    a, b = x[..., :half].double(), x[..., half:].double()
    return torch.cat([a * angle.cos() - b * angle.sin(), b * angle.cos() + a * angle.sin()],
                     -1).float()


def _attention(q, k, v, mask):
    """Attention of q (L, H, D) over k/v (M, Hkv, D) under mask (L, M); masked = float min."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    logits = torch.einsum('lhd,mhd->hlm', q, k) / math.sqrt(q.shape[-1])
    logits = torch.where(mask[None], logits, torch.finfo(torch.float32).min)
    return torch.einsum('hlm,mhd->lhd', logits.softmax(-1), v).reshape(q.shape[0], -1)


def _qkv(layer, hidden):
    x = layer.input_layernorm(hidden)
    d = layer.self_attn.head_dim
    return [p(x).view(x.shape[0], -1, d) for p in (layer.self_attn.q_proj,
                                                   layer.self_attn.k_proj,
                                                   layer.self_attn.v_proj)]


def _out(layer, hidden, attended):
    h = layer.self_attn.o_proj(attended) + hidden
    return layer.mlp(layer.post_attention_layernorm(h)) + h


def joint_velocity(policy, obs, x, time, mode='cross_attn'):
    """LeRobot's training-mode pass: prefix and suffix together, no cache (batch of 1).

    Self-attention on VLM layers i % 2 == 0 (or all in self_attn mode); VLM layer i runs
    expert layer i // stride, none between them (the suffix passes unchanged).
    """
    flow = policy.model.model
    pixels, valid = policy.model_images(policy.images_tensor(obs))
    ids, ids_valid = policy.tokenize([obs.instruction])
    prefix, prefix_valid, starts = flow.embed_prefix(pixels, valid, ids, ids_valid,
                                                     policy.model_state(obs.proprio[None]))
    suffix = flow.embed_suffix(x, time)
    n_prefix, n_suffix = prefix.shape[1], suffix.shape[1]
    valid_all = torch.cat([prefix_valid[0], torch.ones(n_suffix, dtype=torch.bool)])
    blocks = torch.cumsum(torch.cat([starts[0].long(), torch.ones(n_suffix, dtype=torch.long)]),
                          0)
    mask = (blocks[None, :] <= blocks[:, None]) & valid_all[None, :] & valid_all[:, None]
    positions = torch.cumsum(valid_all.long(), 0) - 1
    vlm = flow.vlm_with_expert.vlm.model.text_model.layers
    experts = flow.vlm_with_expert.lm_expert.layers
    stride = len(vlm) // len(experts)
    hp, hs = prefix[0], suffix[0]
    for i in range(len(vlm)):
        expert = experts[i // stride] if i % stride == 0 else None
        qp, kp, vp = _qkv(vlm[i], hp)
        kp = _rope(kp, positions[:n_prefix])
        if expert is not None and (mode == 'self_attn' or i % 2 == 0):
            qs, ks, vs = _qkv(expert, hs)  # self-attention over [prefix; suffix]
            q = _rope(torch.cat([qp, qs]), positions)
            k = torch.cat([kp, _rope(ks, positions[n_prefix:])])
            out = _attention(q, k, torch.cat([vp, vs]), mask)
            hp, hs = _out(vlm[i], hp, out[:n_prefix]), _out(expert, hs, out[n_prefix:])
            continue
        out_p = _attention(_rope(qp, positions[:n_prefix]), kp, vp, mask[:n_prefix, :n_prefix])
        if expert is not None:  # cross-attention to this layer's rotated prefix keys/values
            attn = expert.self_attn
            qs = attn.q_proj(expert.input_layernorm(hs)).view(n_suffix, -1, attn.head_dim)
            ks = attn.k_proj(kp.reshape(n_prefix, -1)).view(n_prefix, -1, attn.head_dim)
            vs = attn.v_proj(vp.reshape(n_prefix, -1)).view(n_prefix, -1, attn.head_dim)
            out_s = _attention(_rope(qs, torch.arange(n_suffix)), ks, vs,
                               mask[n_prefix:, :n_prefix])
            hs = _out(expert, hs, out_s)
        hp = _out(vlm[i], hp, out_p)
    return flow.action_out_proj(flow.vlm_with_expert.lm_expert.norm(hs))[None]


@pytest.mark.parametrize('mode, expert_layers', [
    ('cross_attn', fixture.VLM_LAYERS), ('self_attn', fixture.VLM_LAYERS), ('self_attn', 2)])
def test_cached_sampling_path_equals_the_joint_pass(files, tmp_path, mode, expert_layers):
    config = fixture.lerobot_config(attention_mode=mode, num_expert_layers=expert_layers)
    weights = fixture.make_weights(attention_mode=mode, expert_layers=expert_layers)
    policy = load(files, fixture.write_checkpoint(tmp_path / 'ck', weights, config))
    obs = observation(policy)
    flow = policy.model.model
    x = torch.randn(1, fixture.CHUNK, fixture.MAX_ACTION, generator=torch.Generator()
                    .manual_seed(5))
    time = torch.tensor([0.35])
    with torch.no_grad():
        pixels, valid = policy.model_images(policy.images_tensor(obs))
        ids, ids_valid = policy.tokenize([obs.instruction])
        cache, prefix_valid = flow.encode_prefix(pixels, valid, ids, ids_valid,
                                                 policy.model_state(obs.proprio[None]))
        cached = flow.velocity(cache, prefix_valid, x, time)
        joint = joint_velocity(policy, obs, x, time, mode)
    torch.testing.assert_close(cached, joint, rtol=1e-4, atol=1e-5)


def test_an_expert_layout_lerobot_cannot_run_is_refused(files, tmp_path):
    config = fixture.lerobot_config(num_expert_layers=2)  # expert 1 shaped cross, runs self
    weights = fixture.make_weights(expert_layers=2)
    with pytest.raises(PolicyLoadError, match='shaped for cross-attention'):
        load(files, fixture.write_checkpoint(tmp_path / 'ck', weights, config))


def test_a_tokenizer_artifact_in_the_checkpoint_is_used(files, checkpoint, tmp_path):
    """Newer LeRobot saves the tokenizer under tokenizer/ and declares it; LeRobot uses it."""
    import shutil

    from vla_ros.policies.smolvla.vlm_files import tiny_tokenizer

    path = tmp_path / 'ck'
    shutil.copytree(checkpoint, path)
    own = tiny_tokenizer()
    own.add_tokens(['cube'])  # one token here, four bytes in the VLM directory's tokenizer
    own.save_pretrained(str(path / 'tokenizer'))
    data = json.loads((path / 'policy_preprocessor.json').read_text())
    step = next(s for s in data['steps'] if s['registry_name'] == 'tokenizer_processor')
    step['config']['tokenizer_name'] = 'tokenizer'
    step['artifacts'] = {'tokenizer_name': 'tokenizer'}
    (path / 'policy_preprocessor.json').write_text(json.dumps(data))
    ids, valid = load(files, path).tokenize(['pick up the cube'])
    expected = own('pick up the cube\n')['input_ids']
    assert len(expected) == int(valid.sum()) and ids[0, :len(expected)].tolist() == expected
    step['artifacts'] = {'tokenizer_name': '../elsewhere'}
    (path / 'policy_preprocessor.json').write_text(json.dumps(data))
    with pytest.raises(PolicyLoadError, match='leaves the checkpoint'):
        load(files, path)


def test_sampling_runs_from_t1_to_t0_in_num_steps(policy, monkeypatch):
    flow = policy.model.model
    seen = []
    original = flow.velocity

    def record(cache, prefix_valid, x, time):
        seen.append(float(time[0]))
        return original(cache, prefix_valid, x, time)

    monkeypatch.setattr(flow, 'velocity', record)
    policy.predict_chunk(observation(policy))
    assert seen == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])  # num_steps 5, dt = -0.2


def test_vlm_names_are_transformers_smolvlm_names(policy):
    """The VLM part is named as SmolVLMForConditionalGeneration (LeRobot's ``vlm``)."""
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    with torch.device('meta'):
        vlm = SmolVLMForConditionalGeneration(SmolVLMConfig(**fixture.vlm_config()))
    vlm.model.text_model.layers = vlm.model.text_model.layers[:fixture.VLM_LAYERS]
    reference = {f'model.vlm_with_expert.vlm.{k}': tuple(v.shape)
                 for k, v in vlm.state_dict().items()}
    ours = {k: tuple(v.shape) for k, v in policy.model.state_dict().items()
            if k.startswith('model.vlm_with_expert.vlm.')}
    assert ours == reference


def test_empty_cameras_are_blank_masked_images_after_the_real_ones(files, tmp_path):
    config = fixture.lerobot_config(empty_cameras=1)
    config['input_features']['observation.images.empty_camera_0'] = {  # as LeRobot saves it
        'type': 'VISUAL', 'shape': [3, 480, 640]}
    policy = load(files, fixture.write_checkpoint(tmp_path / 'ck', config=config))
    assert policy.spec.camera_names == ('front',)
    pixels, valid = policy.model_images(policy.images_tensor(observation(policy)))
    assert len(pixels) == 2 and valid[1].tolist() == [False] and (pixels[1] == -1).all()
    assert np.isfinite(policy.predict_chunk(observation(policy))).all()
