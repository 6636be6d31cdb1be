"""pi0-style policy: contract, determinism, checkpoints, training, size, joint attention."""

import statistics
import time

import numpy as np
import pytest
import torch

from vla_ros.policies.contract import InvalidObservationError, Observation
from vla_ros.policies.pi0.modeling import (
    ACTION_BLOCK,
    PREFIX_BLOCK,
    STATE_BLOCK,
    block_causal_mask,
    time_embedding,
)
from vla_ros.policies.pi0.policy import Pi0Policy
from vla_ros.policies.registry import make_policy


@pytest.fixture(scope='module')
def policy():
    return make_policy('pi0_style')


def example(policy, stamp=3.25, instruction='pick up the red cube', seed=0):
    return Observation.make_example(policy.spec, instruction=instruction, stamp=stamp, seed=seed)


def test_chunk_shape_dtype_bounds_and_latency(policy):
    space = policy.spec.action_space
    assert policy.spec.chunk_shape == (50, 7) and space.name == 'arm7'
    assert policy.spec.control_period == pytest.approx(0.1)
    obs = example(policy)
    policy.predict_chunk(obs)  # warm-up
    times = []
    for _ in range(3):
        start = time.perf_counter()
        chunk = policy.predict_chunk(obs)
        times.append(time.perf_counter() - start)
    assert chunk.shape == (50, 7) and chunk.dtype == np.float32
    assert np.all(chunk >= space.low.astype(np.float32))
    assert np.all(chunk <= space.high.astype(np.float32))
    assert statistics.median(times) < 1.0


def test_deterministic_per_seed_and_stamp(policy):
    obs = example(policy)
    a = policy.predict_chunk(obs)
    np.testing.assert_array_equal(a, policy.predict_chunk(obs))
    np.testing.assert_array_equal(a, make_policy('pi0_style').predict_chunk(obs))
    # The stamp seeds the initial noise, the seed the weights and the noise.
    assert not np.array_equal(a, policy.predict_chunk(example(policy, stamp=3.35)))
    assert not np.array_equal(a, make_policy('pi0_style', seed=1).predict_chunk(obs))


def test_save_pretrained_round_trip(policy, tmp_path):
    policy.save_pretrained(tmp_path)
    loaded = make_policy('pi0_style', model_path=str(tmp_path))
    obs = example(policy)
    np.testing.assert_array_equal(policy.predict_chunk(obs), loaded.predict_chunk(obs))
    assert loaded.config == policy.config


def test_checkpoints_saved_as_family_pi0_before_the_rename_still_load(policy, tmp_path):
    import json

    from vla_ros.policies.torch_policy import load_any

    policy.save_pretrained(tmp_path)
    config = json.loads((tmp_path / 'config.json').read_text())
    (tmp_path / 'config.json').write_text(json.dumps({**config, 'family': 'pi0'}))
    obs = example(policy)
    for loaded in (make_policy('pi0_style', model_path=str(tmp_path)), load_any(tmp_path)):
        np.testing.assert_array_equal(policy.predict_chunk(obs), loaded.predict_chunk(obs))


def test_block_causal_mask_pattern():
    blocks = torch.tensor([[PREFIX_BLOCK] * 3 + [STATE_BLOCK] + [ACTION_BLOCK] * 2])
    valid = torch.tensor([[True, True, False, True, True, True]])
    m = block_causal_mask(blocks, valid)[0]
    # Prefix: bidirectional among valid prefix tokens, never the suffix.
    assert m[0, :2].all() and m[1, :2].all() and not m[:3, 3:].any()
    assert not m[0, 2] and not m[3, 2] and not m[5, 2]  # padding hidden from all but itself
    assert m[2, 2]  # ... which reads only itself, so its row stays finite
    # State sees the prefix and itself, not the actions; actions see everything valid.
    assert m[3, :2].all() and m[3, 3] and not m[3, 4:].any()
    assert m[4:, [0, 1, 3, 4, 5]].all()


def test_cached_prefix_equals_joint_pass():
    """Inference's cached prefix keys/values give exactly the joint training pass."""
    p = Pi0Policy.load(proprio_dim=3)
    model = p.model
    images = torch.randn(2, 1, 3, 224, 224)
    token_ids, token_valid = p.tokenize(['go', 'pick up the red cube please'])
    assert not token_valid[0].all()  # the shorter prompt is padded
    prefix, prefix_valid = model.embed_prefix(images, token_ids, token_valid)
    suffix = model.embed_suffix(torch.randn(2, 50, 7), torch.tensor([0.2, 0.7]),
                                torch.randn(2, 3))
    with torch.no_grad():
        joint = model.joint_velocity(prefix, prefix_valid, suffix)
        cache = model.prefix_cache(prefix, prefix_valid)
        cached = model.velocity_from_cache(cache, suffix, model.suffix_mask(cache))
    assert joint.shape == (2, 50, 7)
    torch.testing.assert_close(cached, joint, rtol=1e-4, atol=1e-5)
    # The instruction conditions the actions through the shared attention.
    other_ids, other_valid = p.tokenize(['push the blue cube', 'open the drawer now'])
    prefix2, valid2 = model.embed_prefix(images, other_ids, other_valid)
    with torch.no_grad():
        assert not torch.allclose(model.joint_velocity(prefix2, valid2, suffix), joint)


def test_prefix_is_computed_once_per_inference(monkeypatch):
    p = make_policy('pi0_style', num_inference_steps=4)
    calls = {'prefix': 0, 'velocity': 0}
    prefix_cache, velocity = p.model.prefix_cache, p.model.velocity_from_cache

    def count(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(p.model, 'prefix_cache', count('prefix', prefix_cache))
    monkeypatch.setattr(p.model, 'velocity_from_cache', count('velocity', velocity))
    p.predict_chunk(example(p))
    assert calls == {'prefix': 1, 'velocity': 4}


def test_flow_matching_conventions(policy, monkeypatch):
    """Loss target a_1 - a_0 at a_t = (1 - t) a_0 + t a_1; Euler runs from t = 0 to 1."""
    model = policy.model
    data, noise = torch.rand(1, 50, 7) * 2 - 1, torch.randn(1, 50, 7)
    seen = {}
    embed_suffix = model.embed_suffix

    def spy(noisy, t, proprio):
        seen['noisy'], seen['t'] = noisy, t
        return embed_suffix(noisy, t, proprio)

    monkeypatch.setattr(model, 'embed_suffix', spy)
    monkeypatch.setattr(model, 'joint_velocity', lambda *a: data - noise)
    ids, valid = policy.tokenize(['x'])
    images = torch.zeros(1, 1, 3, 224, 224)
    loss = model.flow_matching_loss(images, ids, valid, data, noise=noise, t=torch.tensor([0.3]))
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(seen['noisy'], 0.7 * noise + 0.3 * data)
    # A velocity field equal to the data-minus-noise direction carries noise to data.
    monkeypatch.setattr(model, 'velocity_from_cache', lambda *a: data - noise)
    out = model.sample_actions(images, ids, valid, noise, num_steps=10)
    torch.testing.assert_close(out, data, rtol=0, atol=1e-5)
    assert seen['t'].item() == pytest.approx(0.9)  # the last Euler step starts at t = 0.9


def test_time_embedding_is_sinusoidal():
    emb = time_embedding(torch.tensor([0.0, 0.5, 1.0]), 32, 4e-3, 4.0)
    assert emb.shape == (3, 32)
    np.testing.assert_allclose(emb[0, :16], 0.0, atol=1e-7)  # sin(0)
    np.testing.assert_allclose(emb[0, 16:], 1.0, atol=1e-7)  # cos(0)
    np.testing.assert_allclose((emb[1:, :16] ** 2 + emb[1:, 16:] ** 2), 1.0, atol=1e-6)


def test_training_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    p = Pi0Policy.load()
    p.model.train()
    batch = {
        'images': torch.rand(2, 1, 3, 224, 224) * 2 - 1,
        'instructions': ['pick up the red cube', 'push the green cube left'],
        'actions': torch.rand(2, 50, 7) * 2 - 1,
        'valid': torch.ones(2, 50, dtype=torch.bool),
        'proprio': None,
    }
    batch['valid'][1, 40:] = False
    optimizer = torch.optim.Adam(p.model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        torch.manual_seed(1)  # same noise and times every step: a truly fixed batch
        loss = p.training_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0], losses


def test_proprio_state_token():
    p = make_policy('pi0_style', proprio_dim=9)
    assert p.spec.uses_proprio
    obs = example(p)
    obs.proprio = np.zeros(9, dtype=np.float32)
    a = p.predict_chunk(obs)
    obs.proprio = np.full(9, 0.5, dtype=np.float32)
    assert a.shape == (50, 7) and not np.array_equal(a, p.predict_chunk(obs))
    obs.proprio = np.zeros(4, dtype=np.float32)
    with pytest.raises(InvalidObservationError, match='proprio must have 9 values'):
        p.predict_chunk(obs)


def test_bad_input_is_rejected(policy):
    obs = example(policy)
    obs.images['front'] = obs.images['front'][:100]
    with pytest.raises(InvalidObservationError, match='shape'):
        policy.predict_chunk(obs)
    with pytest.raises(InvalidObservationError, match='empty'):
        policy.predict_chunk(example(policy, instruction='  '))
    bad = {'images': torch.zeros(1, 1, 3, 224, 224), 'instructions': ['x'],
           'actions': torch.zeros(1, 10, 7), 'valid': None, 'proprio': None}
    with pytest.raises(ValueError, match=r'actions must be \(B, 50, 7\)'):
        policy.training_loss(bad)
    with pytest.raises(ValueError, match='bad configuration|positive integer'):
        make_policy('pi0_style', chunk_length=0)


def test_full_size_parameter_count():
    count = Pi0Policy.count_parameters('full')
    # PaliGemma-3B (~2.9 B) + a ~300 M action expert, as pi0: ~3.3 B within 10 %.
    assert abs(count - 3.3e9) / 3.3e9 < 0.10, count
