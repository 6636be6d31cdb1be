"""RT-1 policy family: contract, checkpoints, training, FiLM, TokenLearner, history, bins."""

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from vla_ros.actions.normalization import (  # noqa: E402
    ActionStatistics,
    DatasetStatistics,
    StatisticsEntry,
)
from vla_ros.actions.spaces import load_action_space  # noqa: E402
from vla_ros.actions.tokenizers import Rt1ActionTokenizer  # noqa: E402
from vla_ros.policies.contract import InvalidObservationError, Observation  # noqa: E402
from vla_ros.policies.registry import make_policy, policy_info  # noqa: E402
from vla_ros.policies.rt1.configuration import FULL, Rt1Config  # noqa: E402
from vla_ros.policies.rt1.modeling import Rt1Model, TokenLearner  # noqa: E402
from vla_ros.policies.rt1.policy import Rt1Policy  # noqa: E402

SPACE = load_action_space('mobile_manipulator')




@pytest.fixture(scope='module')
def policy():
    return make_policy('rt1')


def observation(spec, stamp=0.0, seed=0, instruction='pick up the red cube'):
    return Observation.make_example(spec, instruction=instruction, stamp=stamp, seed=seed)


def episode(spec, steps=3, seed=0):
    return [observation(spec, stamp=0.3 * i, seed=seed + i) for i in range(steps)]


def run(policy, observations):
    policy.reset()
    return np.concatenate([policy.predict_chunk(o) for o in observations])


def test_registered_spec_shape_dtype_bounds(policy):
    info = policy_info('rt1')
    assert info.family == 'rt1' and 'TokenLearner' in info.description
    spec = policy.spec
    assert spec.chunk_shape == (1, 11) and spec.image_size == (96, 96)
    assert spec.control_period == pytest.approx(1 / 3)
    assert spec.action_space.names == SPACE.names
    for obs in episode(spec, steps=3):
        chunk = policy.predict_chunk(obs)
        assert chunk.shape == (1, 11) and chunk.dtype == np.float32
        assert np.all(chunk >= SPACE.low - 1e-6) and np.all(chunk <= SPACE.high + 1e-6)


def test_deterministic_for_a_seed(policy):
    obs = episode(policy.spec, steps=3)
    first = run(policy, obs)
    np.testing.assert_array_equal(first, run(policy, obs))
    other = Rt1Policy.load(seed=0)
    np.testing.assert_array_equal(first, run(other, obs))
    different = Rt1Policy.load(seed=1)
    assert not np.array_equal(policy.predict_logits(obs[0]), different.predict_logits(obs[0]))


def test_save_load_identical_outputs(policy, tmp_path):
    obs = episode(policy.spec, steps=3, seed=5)
    policy.save_pretrained(tmp_path / 'ckpt')
    loaded = make_policy('rt1', model_path=str(tmp_path / 'ckpt'))
    assert isinstance(loaded, Rt1Policy) and loaded.config == policy.config
    np.testing.assert_array_equal(run(policy, obs), run(loaded, obs))
    policy.reset()
    loaded.reset()
    np.testing.assert_array_equal(policy.predict_logits(obs[0]), loaded.predict_logits(obs[0]))


def test_decoded_actions_lie_on_rt1_bins(policy):
    tokenizer = Rt1ActionTokenizer(SPACE, 256)
    policy.reset()
    for obs in episode(policy.spec, steps=4, seed=11):
        tokens = policy.predict_tokens(obs)
        chunk = policy.predict_chunk(obs)[0]  # same stamp: same history, same tokens
        np.testing.assert_allclose(chunk, tokenizer.detokenize(tokens), atol=1e-7)
        # every continuous value is low + k / 255 * (high - low) for its token k
        continuous = np.array([d.kind != 'discrete' for d in SPACE.dimensions])
        position = (chunk - SPACE.low) / (SPACE.high - SPACE.low) * 255
        np.testing.assert_allclose(position[continuous], tokens[continuous], atol=1e-4)
        assert chunk[SPACE.index('terminate')] in (0.0, 1.0)
        assert chunk[SPACE.index('terminate')] == tokens[SPACE.index('terminate')]


def test_output_ignores_statistics(policy):
    """RT-1 bins over the bounds: the statistics only undo the training normalization."""
    stats = ActionStatistics(mean=np.zeros(11), std=np.ones(11), min=SPACE.low / 2,
                             max=SPACE.high / 2, q01=SPACE.low / 4, q99=SPACE.high / 4)
    other = Rt1Policy.load(statistics=DatasetStatistics({'data': StatisticsEntry(stats)}))
    obs = episode(policy.spec, steps=2, seed=3)
    np.testing.assert_array_equal(run(policy, obs), run(other, obs))


def test_history_reset_and_dependence(policy):
    spec = policy.spec
    a, b = observation(spec, 0.0, seed=1), observation(spec, 0.33, seed=2)
    policy.reset()
    assert policy.history_size == 0
    policy.predict_logits(a)
    with_history = policy.predict_logits(b)
    assert policy.history_size == 2
    policy.reset()
    assert policy.history_size == 0
    alone = policy.predict_logits(b)  # history is b repeated
    assert np.abs(with_history - alone).max() > 1e-5
    # the newest frame matters too, and the history holds at most 6 frames
    assert np.abs(policy.predict_logits(observation(spec, 0.66, seed=3)) - alone).max() > 1e-5
    for i in range(8):
        policy.predict_logits(observation(spec, 1.0 + i, seed=i))
    assert policy.history_size == 6
    # same stamp replaces the newest frame; a new instruction or older stamp starts over
    policy.predict_logits(observation(spec, 8.0, seed=99))
    assert policy.history_size == 6
    policy.predict_logits(observation(spec, 9.0, instruction='open the drawer'))
    assert policy.history_size == 1
    policy.predict_logits(observation(spec, 10.0, instruction='open the drawer'))
    policy.predict_logits(observation(spec, 2.0, instruction='open the drawer'))
    assert policy.history_size == 1


def test_episode_start_padding_matches_repeated_frame(policy):
    """One frame padded to 6 equals six copies of it fed through the model at once."""
    obs = observation(policy.spec, seed=4)
    policy.reset()
    logits = policy.predict_logits(obs)
    images = policy.images_tensor(obs)[:, None].expand(-1, 6, -1, -1, -1, -1)
    with torch.no_grad():
        direct = policy.model(images, policy.embed_instructions([obs.instruction]))
        padded = policy.model(images[:, :1], policy.embed_instructions([obs.instruction]))
    np.testing.assert_allclose(logits, direct[0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(padded[0].numpy(), direct[0].numpy(), rtol=1e-5, atol=1e-5)


def test_film_is_identity_at_init(policy):
    torch.manual_seed(0)
    model = Rt1Policy.build_model(policy.config).eval()
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        plain = model.image_features(images, None)
        for _ in range(3):
            context = torch.randn(2, 384) * 5
            torch.testing.assert_close(model.image_features(images, context), plain)
        # a trained FiLM layer does condition the features
        torch.nn.init.normal_(model.backbone.films[0].to_gamma.weight)
        assert not torch.allclose(model.image_features(images, torch.randn(2, 384)), plain)
    assert len(model.backbone.films) == len(model.backbone.blocks)


def test_token_learner_full_geometry():
    config = Rt1Config(**FULL)
    assert config.feature_map_size == 9 and config.sequence_length == 48
    with torch.device('meta'):
        model = Rt1Model(config, SPACE, 384).eval()
        features = model.image_features(torch.empty(2, 3, 300, 300), torch.empty(2, 384))
        assert tuple(features.shape) == (2, 512, 9, 9)
        tokens = model.token_learner(features.flatten(2).transpose(1, 2))
        assert tuple(tokens.shape) == (2, 8, 512)
        assert tuple(model.decode(torch.empty(2, 6, 8, 512)).shape) == (2, 11, 256)
    # on real numbers: each output token is a convex combination of the 81 inputs
    learner = TokenLearner(16, 8, 8)
    x = torch.randn(3, 81, 16)
    out = learner(x)
    assert out.shape == (3, 8, 16)
    assert torch.all(out <= x.max(dim=1, keepdim=True).values + 1e-5)
    assert torch.all(out >= x.min(dim=1, keepdim=True).values - 1e-5)


def test_full_parameter_count():
    count = Rt1Policy.count_parameters('full')
    assert abs(count - 35e6) / 35e6 < 0.2, count


def _batch(policy, samples=4, seed=0):
    rng = np.random.default_rng(seed)
    spec = policy.spec
    images = torch.cat([policy.images_tensor(observation(spec, seed=seed + i))
                        for i in range(samples)])
    raw = rng.uniform(SPACE.low, SPACE.high, size=(samples, 1, 11))
    raw[..., SPACE.index('terminate')] = rng.integers(0, 2, size=(samples, 1))
    return {
        'images': images,
        'instructions': ['pick up the red cube', 'open the drawer'] * (samples // 2),
        'actions': torch.tensor(policy.normalizer.normalize(raw), dtype=torch.float32),
        'valid': torch.ones(samples, 1, dtype=torch.bool),
        'proprio': None,
    }


def test_training_loss_falls():
    policy = Rt1Policy.load(seed=3)
    batch = _batch(policy)
    model = policy.model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = policy.training_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


def test_training_loss_masks_invalid_rows(policy):
    policy.model.eval()
    batch = _batch(policy, samples=4, seed=7)
    with torch.no_grad():
        valid_only = policy.training_loss({k: (v[:2] if k != 'proprio' else v)
                                           for k, v in batch.items()})
        batch['valid'][2:] = False
        batch['actions'][2:] = 0.9  # targets that would change the loss if counted
        masked = policy.training_loss(batch)
    torch.testing.assert_close(masked, valid_only, rtol=1e-5, atol=1e-5)
    assert valid_only.item() > 0


def test_bad_input_is_rejected(policy):
    spec = policy.spec
    with pytest.raises(InvalidObservationError):
        policy.predict_chunk(Observation.make_example((64, 64)))
    with pytest.raises(InvalidObservationError, match='empty'):
        policy.predict_chunk(observation(spec, instruction='  '))
    with pytest.raises(ValueError, match='image_size'):
        make_policy('rt1', image_size=16)
    with pytest.raises(ValueError, match='history_length'):
        Rt1Config(history_length=0)
    batch = _batch(policy, samples=2)
    with pytest.raises(ValueError, match='actions'):
        policy.training_loss({**batch, 'actions': batch['actions'][..., :7]})
    with pytest.raises(ValueError, match='instructions'):
        policy.training_loss({**batch, 'instructions': ['one']})
