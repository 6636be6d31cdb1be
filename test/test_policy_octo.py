"""Octo-style policy: contract, block-wise mask, history, diffusion samplers, head swap."""

import math
import time

import numpy as np
import pytest
import torch

from vla_ros.actions.normalization import ActionStatistics, DatasetStatistics, StatisticsEntry
from vla_ros.actions.spaces import load_action_space
from vla_ros.datasets.episodes import Episode, EpisodeDataset
from vla_ros.policies.contract import InvalidObservationError, Observation, PolicyLoadError
from vla_ros.policies.octo import OctoConfig
from vla_ros.policies.octo.diffusion import DiffusionActionHead, cosine_alpha_bars
from vla_ros.policies.octo.modeling import OBS, READOUT, TASK, block_attention_mask
from vla_ros.policies.octo.policy import OctoPolicy
from vla_ros.policies.registry import make_policy, policy_info
from vla_ros.policies.torch_policy import bounds_statistics


def obs(policy, stamp=0.0, instruction='pick up the red cube', seed=0):
    return Observation.make_example(policy.spec, instruction=instruction, stamp=stamp, seed=seed)


def fixed_batch(policy, n=4, seed=0):
    """Raw samples in the EpisodeDataset schema, collated; the first has a padded row."""
    rng = np.random.default_rng(seed)
    space = policy.spec.action_space
    size = policy.config.image_size
    samples = [{
        'images': {c: rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                   for c in policy.spec.camera_names},
        'instruction': f'put object {i} in the bowl',
        'actions': rng.uniform(space.low, space.high, (policy.spec.chunk_length, space.dim)),
        'valid': np.arange(policy.spec.chunk_length) < (policy.spec.chunk_length - (i == 0)),
        'proprio': None,
    } for i in range(n)]
    return policy.collate(samples)


def fit(policy, batch, params, steps=30, lr=3e-3):
    """Adam on a fixed batch; the diffusion steps and noise are fixed too (same generator)."""
    draw = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    with torch.no_grad():
        initial = policy.training_loss(batch, draw()).item()
    optimizer = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        loss = policy.training_loss(batch, draw())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return initial, policy.training_loss(batch, draw()).item()


# --- contract ---------------------------------------------------------------------------


def test_registry_shape_dtype_bounds_and_latency():
    assert policy_info('octo').family == 'octo'
    policy = make_policy('octo')
    assert isinstance(policy, OctoPolicy) and policy.spec.chunk_shape == (4, 7)
    space = policy.spec.action_space
    times = []
    for i in range(5):
        t0 = time.perf_counter()
        chunk = policy.predict_chunk(obs(policy, stamp=1.0 + 0.1 * i, seed=i))
        times.append(time.perf_counter() - t0)
        assert chunk.shape == (4, 7) and chunk.dtype == np.float32
        assert np.all(chunk >= space.low - 1e-7) and np.all(chunk <= space.high + 1e-7)
    assert np.median(times) < 1.0


def test_deterministic_per_seed_and_stamp():
    a, b, c = OctoPolicy.load(seed=3), OctoPolicy.load(seed=3), OctoPolicy.load(seed=4)
    o = obs(a, stamp=5.0)
    first = a.predict_chunk(o)
    np.testing.assert_array_equal(first, a.predict_chunk(o))  # same stamp: same window
    np.testing.assert_array_equal(first, b.predict_chunk(o))
    assert not np.array_equal(first, c.predict_chunk(o))
    a.reset()
    b.reset()
    # Same frame, new stamp: new noise draw (and a filled history), so another chunk.
    assert not np.array_equal(first, b.predict_chunk(obs(a, stamp=5.1)))


def test_save_load_gives_identical_outputs(tmp_path):
    policy = OctoPolicy.load(seed=1, sampler='ddim', ddim_steps=4)
    policy.save_pretrained(tmp_path / 'ckpt')
    loaded = make_policy('octo', model_path=str(tmp_path / 'ckpt'), seed=1)
    assert loaded.config == policy.config
    for stamp in (0.0, 0.1, 0.2):  # also walks the history window
        o = obs(policy, stamp, seed=int(stamp * 10))
        np.testing.assert_array_equal(policy.predict_chunk(o), loaded.predict_chunk(o))


def test_training_loss_falls_on_a_fixed_batch():
    policy = OctoPolicy.load()
    batch = fixed_batch(policy)
    initial, final = fit(policy, batch, policy.model.parameters())
    assert final < 0.5 * initial, (initial, final)


def test_loss_is_masked_epsilon_mse():
    head = DiffusionActionHead(cond_dim=8, action_dim=3, chunk_length=4, time_dim=8,
                               hidden_dim=16, num_blocks=1, diffusion_steps=20)
    cond, actions = torch.randn(2, 8), torch.rand(2, 4, 3) * 2 - 1
    valid = torch.tensor([[True, True, False, False], [True, True, True, True]])
    with torch.no_grad():
        loss = head.loss(cond, actions, valid, torch.Generator().manual_seed(5))
        # Redo the same draws by hand: a step per sample, then the noise.
        g = torch.Generator().manual_seed(5)
        t = torch.randint(0, 20, (2,), generator=g)
        noise = torch.randn(actions.shape, generator=g)
        bar = torch.as_tensor(head.alpha_bars[t.numpy()], dtype=torch.float32).view(2, 1, 1)
        noisy = bar.sqrt() * actions + (1 - bar).sqrt() * noise
        error = (head(cond, noisy.flatten(1), t).view_as(actions) - noise) ** 2
    expected = error[valid].mean()
    torch.testing.assert_close(loss, expected)
    assert not torch.isclose(loss, error.mean())   # the padded rows really are left out


def test_full_preset_parameter_count():
    # Octo-Base is 93 M without its frozen T5 encoder; ours excludes the frozen MiniLM.
    count = OctoPolicy.count_parameters('full')
    assert abs(count - 93e6) / 93e6 < 0.2, count
    assert OctoPolicy.count_parameters('tiny') < 1e6


# --- block-wise attention -----------------------------------------------------------------


def test_block_attention_mask_rules():
    task, n_obs, n_read, window = 2, 3, 1, 2
    valid = torch.tensor([[True, True], [False, True]])
    mask = block_attention_mask(task, n_obs, n_read, valid)[:, 0]
    kinds = [TASK] * task + ([OBS] * n_obs + [READOUT] * n_read) * window
    steps = [-1] * task + [t for t in range(window) for _ in range(n_obs + n_read)]
    for q, (qk, qs) in enumerate(zip(kinds, steps, strict=True)):
        for k, (kk, ks) in enumerate(zip(kinds, steps, strict=True)):
            if qk == TASK:
                expected = kk == TASK
            elif qk == OBS:
                expected = kk == TASK or (kk == OBS and ks <= qs)
            else:
                expected = kk == TASK or (kk in (OBS, READOUT) and ks <= qs)
            assert bool(mask[0, q, k]) == expected, (q, k)
            padded = ks == 0  # sample 1's first timestep is padding: hidden as a key
            assert bool(mask[1, q, k]) == (expected and not padded), (q, k)


def test_readouts_never_change_observation_tokens():
    policy = OctoPolicy.load()
    backbone = policy.model.backbone
    images = torch.randn(1, 2, 1, 3, 64, 64)
    text = torch.randn(1, 384)
    valid = torch.tensor([[True, True]])
    with torch.no_grad():
        before = backbone.encode(images, text, valid)
        backbone.readouts.add_(torch.randn_like(backbone.readouts))
        after = backbone.encode(images, text, valid)
    per_step = backbone.obs_tokens_per_step + policy.config.readout_tokens
    is_readout = torch.tensor(
        [False] * policy.config.language_tokens
        + ([False] * backbone.obs_tokens_per_step + [True] * policy.config.readout_tokens) * 2)
    assert is_readout.numel() == before.shape[1] == policy.config.language_tokens + 2 * per_step
    torch.testing.assert_close(after[:, ~is_readout], before[:, ~is_readout])
    assert not torch.allclose(after[:, is_readout], before[:, is_readout])


def test_history_window_padding_reset_and_stamps():
    policy = OctoPolicy.load()
    first, second = obs(policy, 1.0, seed=1), obs(policy, 1.1, seed=2)
    other_past = obs(policy, 1.0, seed=3)

    def embed(*observations):
        policy.reset()
        return [policy.readout_embedding(o) for o in observations][-1]

    alone = embed(second)
    with_past = embed(first, second)
    assert not np.allclose(alone, with_past)                 # the previous frame is seen
    assert not np.allclose(with_past, embed(other_past, second))
    np.testing.assert_array_equal(with_past, embed(first, second))
    np.testing.assert_array_equal(with_past, policy.readout_embedding(second))  # same stamp
    policy.predict_chunk(obs(policy, 1.2, seed=4))
    assert [f.stamp for f in policy._frames] == [1.1, 1.2]   # a window of 2 frames
    # An older stamp (1.1 after 1.2) starts a new history, as at an episode start.
    np.testing.assert_array_equal(alone, policy.readout_embedding(second))
    assert [f.stamp for f in policy._frames] == [1.1]
    policy.reset()
    assert policy._frames == []
    np.testing.assert_array_equal(alone, policy.readout_embedding(second))


# --- diffusion ----------------------------------------------------------------------------


def test_cosine_schedule_shape():
    bars = cosine_alpha_bars(20)
    assert bars.shape == (20,) and np.all(np.diff(bars) < 0)
    assert bars[0] > 0.99 and bars[-1] < 0.01


@pytest.mark.parametrize('sampler, calls', [('ddpm', 20), ('ddim', 5)])
def test_samplers_recover_actions_with_an_oracle_denoiser(sampler, calls):
    head = DiffusionActionHead(cond_dim=8, action_dim=3, chunk_length=4, time_dim=8,
                               hidden_dim=16, num_blocks=1, diffusion_steps=20)
    target = torch.linspace(-0.9, 0.9, 12).view(1, 12)
    seen = []

    def oracle(cond, noisy, t):
        # The exact noise of a chunk whose clean value is ``target``.
        seen.append(int(t[0]))
        bar = torch.as_tensor(head.alpha_bars[t.numpy()], dtype=noisy.dtype).view(-1, 1)
        return (noisy - bar.sqrt() * target) / (1 - bar).sqrt()

    head.forward = oracle
    out = head.sample(torch.zeros(1, 8), torch.Generator().manual_seed(0), sampler, 5)
    torch.testing.assert_close(out.view(1, 12), target, atol=1e-4, rtol=0)
    assert len(seen) == calls and seen[0] == 19 and seen[-1] == 0


def test_ddim_option_and_clipping():
    policy = make_policy('octo', sampler='ddim', ddim_steps=3)
    calls = []
    policy.model.action_head.register_forward_hook(lambda *_: calls.append(1))
    chunk = policy.predict_normalized(obs(policy))
    assert len(calls) == 3 and chunk.shape == (4, 7)
    assert np.all(np.abs(chunk) <= 1.0)


# --- head swap and fine-tuning ------------------------------------------------------------


def test_head_swap_then_head_only_finetune(tmp_path):
    policy = OctoPolicy.load()
    backbone_before = {k: v.clone() for k, v in policy.model.backbone.state_dict().items()}
    old_head = policy.model.action_head
    policy.replace_action_head(action_space='mobile_manipulator', chunk_length=6)
    space = load_action_space('mobile_manipulator')
    assert policy.model.action_head is not old_head
    assert policy.spec.chunk_shape == (6, space.dim) == (6, 11)
    chunk = policy.predict_chunk(obs(policy))
    assert chunk.shape == (6, 11)
    assert np.all((chunk >= space.low - 1e-7) & (chunk <= space.high + 1e-7))
    groups = policy.finetune_param_groups(backbone_lr=1e-5, head_lr=3e-3, freeze_backbone=True)
    assert [g['name'] for g in groups] == ['head']
    assert not any(p.requires_grad for p in policy.model.backbone.parameters())
    head_before = [p.clone() for p in groups[0]['params']]
    initial, final = fit(policy, fixed_batch(policy), groups)
    assert final < 0.5 * initial, (initial, final)
    for key, value in policy.model.backbone.state_dict().items():
        torch.testing.assert_close(value, backbone_before[key], atol=0, rtol=0)
    head_after = groups[0]['params']
    assert any(not torch.equal(a, b) for a, b in zip(head_before, head_after, strict=True))
    # The swapped policy is a normal checkpoint.
    policy.save_pretrained(tmp_path / 'swapped')
    loaded = OctoPolicy.from_pretrained(tmp_path / 'swapped')
    policy.reset()
    np.testing.assert_array_equal(policy.predict_chunk(obs(policy, 2.0)),
                                  loaded.predict_chunk(obs(policy, 2.0)))


def test_finetune_param_groups_split_and_validate():
    policy = OctoPolicy.load()
    groups = policy.finetune_param_groups(backbone_lr=1e-5, head_lr=1e-3)
    assert [(g['name'], g['lr']) for g in groups] == [('backbone', 1e-5), ('head', 1e-3)]
    ids = [{id(p) for p in g['params']} for g in groups]
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == {id(p) for p in policy.model.parameters()}
    assert all(p.requires_grad for p in policy.model.parameters())
    with pytest.raises(ValueError, match='head_lr'):
        policy.finetune_param_groups(1e-5, -1.0)
    with pytest.raises(ValueError, match='unknown action space'):
        policy.replace_action_head('no_such_space')


# --- inputs ---------------------------------------------------------------------------------


def test_bad_inputs_and_configs_are_rejected():
    policy = OctoPolicy.load()
    small = Observation.make_example((32, 32))
    with pytest.raises(InvalidObservationError, match='shape'):
        policy.predict_chunk(small)
    with pytest.raises(InvalidObservationError, match='empty'):
        policy.predict_chunk(obs(policy, instruction='  '))
    with_proprio = OctoPolicy.load(uses_proprio=True, proprio_dim=7)
    bad = obs(with_proprio)
    bad.proprio = np.zeros(5, dtype=np.float32)
    with pytest.raises(InvalidObservationError, match='7 values'):
        with_proprio.predict_chunk(bad)
    for kwargs, match in [({'image_size': 60}, 'multiple of patch_size'),
                          ({'width': 66}, 'divisible by num_heads'),
                          ({'sampler': 'euler'}, 'sampler'),
                          ({'ddim_steps': 50}, 'cannot exceed'),
                          ({'history_window': 0}, 'positive integer')]:
        with pytest.raises(ValueError, match=match):
            OctoConfig(**kwargs)
    batch = fixed_batch(policy)
    with pytest.raises(ValueError, match='actions must be'):
        policy.training_loss(dict(batch, actions=batch['actions'][:, :2]))


def test_proprio_token_changes_the_embedding():
    policy = OctoPolicy.load(uses_proprio=True, proprio_dim=7)
    assert policy.spec.uses_proprio
    o = obs(policy)
    assert policy.predict_chunk(o).shape == (4, 7)
    base = policy.readout_embedding(o)
    o.proprio = np.full(7, 0.5, dtype=np.float32)
    policy.reset()
    assert not np.allclose(base, policy.readout_embedding(o))


def test_proprio_is_normalized_with_checkpoint_statistics(tmp_path):
    space = load_action_space('arm7')
    mean, std = np.linspace(-1, 1, 7), np.linspace(0.5, 2.0, 7)
    proprio_stats = ActionStatistics(mean=mean, std=std, min=mean - 3, max=mean + 3,
                                     q01=mean - 2, q99=mean + 2)
    stats = DatasetStatistics({'sim': StatisticsEntry(action=bounds_statistics(space),
                                                      proprio=proprio_stats)})
    raw = OctoPolicy.load(uses_proprio=True, seed=2)
    normalizing = OctoPolicy.load(uses_proprio=True, seed=2, statistics=stats)
    o = obs(raw)
    o.proprio = np.linspace(0.0, 3.0, 7).astype(np.float32)
    expected = raw.readout_embedding(Observation(
        o.images, o.instruction, o.stamp, ((o.proprio - mean) / std).astype(np.float32)))
    np.testing.assert_allclose(normalizing.readout_embedding(o), expected, atol=1e-5)
    normalizing.save_pretrained(tmp_path)
    reloaded = OctoPolicy.from_pretrained(tmp_path, seed=2)
    np.testing.assert_allclose(reloaded.readout_embedding(o), expected, atol=1e-5)
    with pytest.raises(PolicyLoadError, match='proprio statistics have 7'):
        OctoPolicy.load(uses_proprio=True, proprio_dim=5, statistics=stats)


def test_collate_matches_runtime_preprocessing_and_history():
    policy = OctoPolicy.load()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    episode = Episode('stack the cups', 'arm7', 0.1, {'front': frames},
                      rng.uniform(-0.01, 0.01, (3, 7)), np.arange(3) * 0.1)
    samples = list(EpisodeDataset([episode]).samples(4, history=1))
    assert [len(s['history']) for s in samples] == [0, 1, 1]
    batch = policy.collate(samples)
    runtime = policy.images_tensor(Observation({'front': frames[2]}, 'stack the cups', 0.2))
    torch.testing.assert_close(batch['images'][2], runtime[0])
    torch.testing.assert_close(batch['history_images'][2, 0], batch['images'][1])
    assert batch['history_valid'].tolist() == [[False], [True], [True]]
    assert batch['valid'].tolist()[1] == [True, True, False, False]
    assert math.isfinite(policy.training_loss(batch).item())
