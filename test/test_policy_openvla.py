"""OpenVLA family: prompt, constrained decoding, checkpoints, remote-code gating, training."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from vla_ros.actions.normalization import (  # noqa: E402
    ActionStatistics,
    DatasetStatistics,
    StatisticsEntry,
    UnnormKeyError,
)
from vla_ros.actions.tokenizers import OpenVlaActionTokenizer  # noqa: E402
from vla_ros.policies.contract import (  # noqa: E402
    InvalidObservationError,
    Observation,
    PolicyLoadError,
)
from vla_ros.policies.openvla.configuration_openvla import (  # noqa: E402
    OPENVLA_7B_PARAMETERS,
    TINY,
    OpenVlaConfig,
)
from vla_ros.policies.openvla.decoding import (  # noqa: E402
    ActionTokenLogitsProcessor,
    greedy_action_tokens,
)
from vla_ros.policies.openvla.policy import OpenVlaPolicy  # noqa: E402
from vla_ros.policies.openvla.processing_openvla import (  # noqa: E402
    IGNORE_INDEX,
    PromptEncoder,
    build_prompt,
)
from vla_ros.policies.registry import make_policy, policy_info  # noqa: E402
from vla_ros.policies.tokenizer import load_text_tokenizer  # noqa: E402
from vla_ros.policies.torch_policy import load_any  # noqa: E402

LORA_TARGETS = ('q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj')




@pytest.fixture(scope='module')
def policy():
    return make_policy('openvla')


@pytest.fixture(scope='module')
def obs(policy):
    return Observation.make_example(policy.spec, instruction='Pick up the RED cube', stamp=2.0)


def two_datasets(dim=7):
    """'bridge' with q01/q99 narrower than arm7's bounds and a raw gripper; 'other'."""
    def entry(scale):
        q01 = np.array([-0.02, -0.01, -0.03, -0.1, -0.05, -0.2, 0.0]) * scale
        q99 = np.array([0.03, 0.01, 0.02, 0.1, 0.15, 0.2, 1.0]) * scale
        return StatisticsEntry(action=ActionStatistics(
            mean=(q01 + q99) / 2, std=np.ones(dim), min=q01, max=q99, q01=q01, q99=q99,
            mask=np.array([True] * 6 + [False])))
    return DatasetStatistics({'bridge': entry(1.0), 'other': entry(0.5)})


# ------------------------------------------------------------------------ contract basics
def test_registered_and_tiny_chunk_shape_dtype_bounds(policy, obs):
    assert policy_info('openvla').family == 'openvla'
    assert policy_info('openvla').target == 'vla_ros.policies.openvla.policy:load'
    assert isinstance(policy, OpenVlaPolicy)
    assert 1_000_000 <= policy.num_parameters() <= 5_000_000
    assert policy.spec.image_size == (64, 64) and policy.num_action_tokens == 7
    chunk = policy.predict_chunk(obs)
    space = policy.spec.action_space
    assert chunk.shape == (1, 7) and chunk.dtype == np.float32
    assert np.all(chunk >= space.low) and np.all(chunk <= space.high)


def test_prompt_is_openvla_exact_with_space_token_from_the_tokenizer(policy):
    tokenizer = load_text_tokenizer()
    prompt = 'In: What action should the robot take to pick up the red cube?\nOut:'
    assert build_prompt('Pick up the RED cube') == prompt
    space = tokenizer.convert_tokens_to_ids('\u2581')
    assert policy.prompts.space_id == space == 28705  # not Llama-2's 29871
    ids = policy.prompts.encode('Pick up the RED cube')
    assert ids == tokenizer(prompt).input_ids + [space]
    assert ids[0] == tokenizer.bos_token_id


def test_space_token_not_appended_twice():
    class EndsWithSpace:
        bos_token_id, eos_token_id, pad_token_id, unk_token_id = 1, 2, None, 0

        def convert_tokens_to_ids(self, piece):
            return 7

        def __call__(self, text, add_special_tokens=True):
            return type('Enc', (), {'input_ids': [1, 5, 6, 7]})()

    assert PromptEncoder(EndsWithSpace()).encode('x') == [1, 5, 6, 7]


def test_deterministic_for_a_seed(policy, obs):
    first = policy.predict_chunk(obs)
    np.testing.assert_array_equal(first, policy.predict_chunk(obs))
    twin = make_policy('openvla', seed=0)
    np.testing.assert_array_equal(twin.predict_chunk(obs), first)
    other = make_policy('openvla', seed=1)
    w0 = policy.model.projector.fc1.weight
    assert not torch.equal(w0, other.model.projector.fc1.weight)


# ------------------------------------------------------------------------ decoding
def _reference_tokens(model, ids, pixels, n, first, stop):
    """No cache, full logits, everything outside the action ids at -inf."""
    seq = ids
    for _ in range(n):
        logits = model(input_ids=seq, pixel_values=pixels).logits[:, -1]
        masked = torch.full_like(logits, float('-inf'))
        masked[:, first:stop] = logits[:, first:stop]
        seq = torch.cat([seq, masked.argmax(-1, keepdim=True)], dim=1)
    return seq[:, ids.shape[1]:]


@pytest.mark.parametrize('instruction', ['pick up the red cube', 'open the drawer slowly'])
def test_constrained_decoder_equals_generate_with_action_mask(policy, instruction):
    obs = Observation.make_example(policy.spec, instruction=instruction, seed=3)
    ids, pixels = policy.model_inputs(obs)
    first, stop = policy.config.action_token_range
    assert (first, stop) == (31744, 32000)
    with torch.inference_mode():
        mine = greedy_action_tokens(policy.model, ids, pixels, 7, (first, stop))
        generated = policy.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels,
            max_new_tokens=7, do_sample=False,
            logits_processor=[ActionTokenLogitsProcessor(first, stop)])
        reference = _reference_tokens(policy.model, ids, pixels, 7, first, stop)
    assert mine.shape == (1, 7)
    assert torch.equal(mine, generated[:, ids.shape[1]:])
    assert torch.equal(mine, reference)
    np.testing.assert_array_equal(policy.predict_action_tokens(obs), mine[0].numpy())


def test_unnormalizes_with_q01_q99_and_mask_and_requires_unnorm_key(obs):
    stats = two_datasets()
    with pytest.raises(UnnormKeyError, match='mandatory'):
        make_policy('openvla', statistics=stats)
    policy = make_policy('openvla', statistics=stats, unnorm_key='bridge')
    tokens = policy.predict_action_tokens(obs)
    x = OpenVlaActionTokenizer(vocab_size=32000).decode(tokens)
    s = stats['bridge'].action
    expected = np.where(s.mask, 0.5 * (x + 1) * (s.q99 - s.q01) + s.q01, x)
    expected = np.clip(expected, policy.spec.action_space.low, policy.spec.action_space.high)
    np.testing.assert_allclose(policy.predict_chunk(obs)[0], expected, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------ checkpoints
def test_save_pretrained_from_pretrained_identical(tmp_path, obs):
    stats = two_datasets()
    policy = make_policy('openvla', statistics=stats, unnorm_key='other', seed=5)
    before = policy.predict_chunk(obs)
    policy.save_pretrained(tmp_path)
    for name in ('config.json', 'model.safetensors', 'dataset_statistics.json',
                 'tokenizer.json'):
        assert (tmp_path / name).is_file(), name
    assert not list(tmp_path.glob('*.bin'))
    config = json.loads((tmp_path / 'config.json').read_text())
    assert config['family'] == 'openvla' and config['model_type'] == 'vla_ros_openvla'
    assert config['text_config']['vocab_size'] == 32064
    loaded = make_policy('openvla', model_path=str(tmp_path), unnorm_key='other')
    np.testing.assert_array_equal(loaded.predict_chunk(obs), before)
    np.testing.assert_array_equal(load_any(tmp_path, unnorm_key='other').predict_chunk(obs),
                                  before)
    with pytest.raises(UnnormKeyError, match='bridge'):
        make_policy('openvla', model_path=str(tmp_path))


def test_bad_checkpoints_and_inputs_rejected(tmp_path, policy, obs):
    with pytest.raises(PolicyLoadError, match='not an existing directory'):
        make_policy('openvla', model_path=str(tmp_path / 'missing'))
    (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'llama'}))
    with pytest.raises(PolicyLoadError, match='not an openvla checkpoint'):
        make_policy('openvla', model_path=str(tmp_path))
    (tmp_path / 'config.json').write_text(json.dumps({'model_type': 'vla_ros_openvla'}))
    (tmp_path / 'pytorch_model.bin').write_bytes(b'pickle')
    with pytest.raises(PolicyLoadError, match='pickle'):
        make_policy('openvla', model_path=str(tmp_path))
    with pytest.raises(ValueError, match='unknown option'):
        make_policy('openvla', chunk_lenght=2)
    with pytest.raises(ValueError, match='unknown size'):
        make_policy('openvla', size='huge')
    with pytest.raises(ValueError, match='same number of patches'):
        OpenVlaConfig(**{**TINY, 'siglip_config': {**TINY['siglip_config'], 'patch_size': 16}})
    small = Observation.make_example((32, 32), instruction='go')
    with pytest.raises(InvalidObservationError, match='shape'):
        policy.predict_chunk(small)
    with pytest.raises(InvalidObservationError, match='empty'):
        policy.predict_chunk(Observation(images=obs.images, instruction='  '))
    with pytest.raises(ValueError, match='actions must be'):
        policy.training_loss({'images': torch.zeros(1, 1, 3, 64, 64), 'instructions': ['go'],
                              'actions': torch.zeros(1, 1, 6)})


# ------------------------------------------------------------------------ remote code
REMOTE_CONFIG_PY = '''
from transformers import LlamaConfig


class TinyRemoteVlaConfig(LlamaConfig):
    model_type = 'tiny_remote_vla'
'''

REMOTE_MODELING_PY = '''
import os
from pathlib import Path

import numpy as np
from transformers import LlamaForCausalLM

from .configuration_tiny import TinyRemoteVlaConfig

# Proof of execution: the test checks that a refused load never imports this file.
if os.environ.get('TINY_REMOTE_VLA_MARKER'):
    Path(os.environ['TINY_REMOTE_VLA_MARKER']).write_text('imported')


class TinyRemoteVla(LlamaForCausalLM):
    config_class = TinyRemoteVlaConfig

    def forward(self, input_ids=None, pixel_values=None, **kwargs):
        return super().forward(input_ids=input_ids, **kwargs)


class TinyRemoteVlaWithPredictAction(TinyRemoteVla):
    def predict_action(self, input_ids=None, unnorm_key=None, pixel_values=None, **kwargs):
        stats = self.config.norm_stats
        if unnorm_key is None:
            assert len(stats) == 1, 'unnorm_key required'
            unnorm_key = next(iter(stats))
        s = stats[unnorm_key]['action']
        level = float(pixel_values.float().mean())
        return np.array(s['q01']) + level * (np.array(s['q99']) - np.array(s['q01']))
'''

REMOTE_PROCESSING_PY = '''
import numpy as np
import torch
from transformers import LlamaTokenizer


class TinyRemoteVlaProcessor:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def register_for_auto_class(cls, auto_class='AutoProcessor'):
        pass

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        return cls(LlamaTokenizer.from_pretrained(path, local_files_only=True))

    def __call__(self, text, images):
        enc = self.tokenizer(text, return_tensors='pt')
        pixels = torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0)
        return {'input_ids': enc.input_ids, 'attention_mask': enc.attention_mask,
                'pixel_values': pixels.permute(2, 0, 1)[None]}
'''


def write_remote_checkpoint(path: Path, with_predict_action: bool) -> tuple[Path, object]:
    """A tiny Llama whose config.json auto_map points at model code in the directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2,
                                         vocab_size=32064)).eval()
    model.save_pretrained(path)
    load_text_tokenizer().save_pretrained(path)
    cls = 'TinyRemoteVlaWithPredictAction' if with_predict_action else 'TinyRemoteVla'
    config = json.loads((path / 'config.json').read_text())
    config.update(
        model_type='tiny_remote_vla', architectures=[cls], pad_to_multiple_of=64,
        auto_map={'AutoConfig': 'configuration_tiny.TinyRemoteVlaConfig',
                  'AutoModelForVision2Seq': f'modeling_tiny.{cls}'},
        norm_stats=two_datasets().to_dict())
    (path / 'config.json').write_text(json.dumps(config))
    (path / 'configuration_tiny.py').write_text(REMOTE_CONFIG_PY)
    (path / 'modeling_tiny.py').write_text(REMOTE_MODELING_PY)
    (path / 'processing_tiny.py').write_text(REMOTE_PROCESSING_PY)
    (path / 'processor_config.json').write_text(json.dumps(
        {'auto_map': {'AutoProcessor': 'processing_tiny.TinyRemoteVlaProcessor'}}))
    return path, model


def test_remote_code_refused_by_default_then_allowed(tmp_path, monkeypatch):
    marker = tmp_path / 'imported.marker'
    monkeypatch.setenv('TINY_REMOTE_VLA_MARKER', str(marker))
    path, _ = write_remote_checkpoint(tmp_path / 'ckpt', with_predict_action=True)
    with pytest.raises(PolicyLoadError) as refused:
        make_policy('openvla', model_path=str(path), unnorm_key='bridge')
    message = str(refused.value)
    assert 'allow_remote_code=True' in message and '"allow_remote_code": true' in message
    assert 'modeling_tiny.py' in message
    assert not marker.exists()  # the custom code never ran

    with pytest.raises(UnnormKeyError, match='mandatory'):
        make_policy('openvla', model_path=str(path), allow_remote_code=True)
    assert marker.exists()  # allowed: the checkpoint's own code was imported
    policy = make_policy('openvla', model_path=str(path), unnorm_key='bridge',
                         allow_remote_code=True)
    assert policy.uses_predict_action
    obs = Observation.make_example(policy.spec, instruction='Wipe the table', seed=4)
    chunk = policy.predict_chunk(obs)
    s = two_datasets()['bridge'].action
    level = np.float32(obs.images['front']).mean() / 255.0
    expected = np.clip(s.q01 + level * (s.q99 - s.q01), policy.spec.action_space.low,
                       policy.spec.action_space.high)
    assert chunk.shape == (1, 7) and chunk.dtype == np.float32
    np.testing.assert_allclose(chunk[0], expected, rtol=1e-5, atol=1e-7)


def test_remote_code_without_predict_action_uses_constrained_generate(tmp_path):
    path, model = write_remote_checkpoint(tmp_path, with_predict_action=False)
    policy = make_policy('openvla', model_path=str(path), unnorm_key='other',
                         allow_remote_code=True)
    assert not policy.uses_predict_action
    obs = Observation.make_example(policy.spec, instruction='Open the drawer')
    chunk = policy.predict_chunk(obs)
    # Independent reference: the same weights, prompt + space token, masked greedy, no cache.
    tokenizer = load_text_tokenizer()
    ids = torch.tensor([tokenizer(build_prompt('Open the drawer')).input_ids + [28705]])
    with torch.inference_mode():
        for _ in range(7):
            logits = model(input_ids=ids).logits[0, -1]
            ids = torch.cat([ids, (31744 + logits[31744:32000].argmax()).view(1, 1)], dim=1)
    x = OpenVlaActionTokenizer(vocab_size=32000).decode(ids[0, -7:].numpy())
    s = two_datasets()['other'].action
    expected = np.where(s.mask, 0.5 * (x + 1) * (s.q99 - s.q01) + s.q01, x)
    expected = np.clip(expected, policy.spec.action_space.low, policy.spec.action_space.high)
    np.testing.assert_allclose(chunk[0], expected, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------ training
def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return {
        'images': torch.from_numpy(rng.random((2, 1, 3, 64, 64), dtype=np.float32)),
        'instructions': ['pick up the red cube', 'put the sponge in the sink please'],
        'actions': torch.from_numpy(rng.uniform(-1, 1, (2, 2, 7)).astype(np.float32)),
        'valid': torch.ones(2, 2, dtype=torch.bool),
        'proprio': None,
    }


def test_training_labels_are_the_action_tokens_only(policy):
    batch = _batch()
    targets = OpenVlaActionTokenizer().encode(batch['actions'][:, :1].numpy()).reshape(2, 7)
    text = policy.prompts.training_batch(batch['instructions'], targets)
    for row, instruction in enumerate(batch['instructions']):
        prompt = policy.prompts.encode(instruction)
        labels = text['labels'][row]
        np.testing.assert_array_equal(labels[len(prompt):len(prompt) + 7], targets[row])
        assert np.all(labels[:len(prompt)] == IGNORE_INDEX)
        assert np.all(labels[len(prompt) + 7:] == IGNORE_INDEX)
        assert text['attention_mask'][row].sum() == len(prompt) + 7
    # The model's supervised-positions-only loss equals the usual shifted cross-entropy.
    ids, mask, labels = (torch.from_numpy(text[k]) for k in ('input_ids', 'attention_mask',
                                                             'labels'))
    pixels = batch['images'][:, 0]
    with torch.no_grad():
        fast = policy.model(input_ids=ids, attention_mask=mask, labels=labels,
                            pixel_values=pixels).loss
        logits = policy.model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    patches = torch.full((2, policy.config.num_patches), IGNORE_INDEX)
    full_labels = torch.cat([labels[:, :1], patches, labels[:, 1:]], dim=1)
    reference = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), full_labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX)
    assert torch.allclose(fast, reference, rtol=1e-5)


def _fit(policy, batch, steps=30):
    """Adam steps on one fixed batch; the loss after each."""
    policy.model.train()
    optimizer = torch.optim.Adam(policy.model.parameters(), lr=2e-3)
    losses = []
    for _ in range(steps):
        loss = policy.training_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_training_loss_falls_on_a_fixed_batch():
    losses = _fit(make_policy('openvla', seed=0), _batch())
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


def test_lora_target_modules_exist_and_peft_wraps(policy, obs):
    from peft import LoraConfig, get_peft_model

    suffixes = {name.rsplit('.', 1)[-1] for name, module in policy.model.named_modules()
                if isinstance(module, torch.nn.Linear)}
    assert set(LORA_TARGETS) <= suffixes
    fresh = make_policy('openvla', seed=2)
    fresh.model = get_peft_model(fresh.model, LoraConfig(r=4, target_modules=list(LORA_TARGETS)))
    loss = fresh.training_loss(_batch())
    loss.backward()
    grads = [n for n, p in fresh.model.named_parameters() if p.grad is not None]
    assert grads and all('lora_' in n for n in grads)
    assert fresh.predict_chunk(obs).shape == (1, 7)


# ------------------------------------------------------------------------ proprio (OFT)
def _proprio_statistics():
    """Action bounds plus proprio statistics of 8 dims with known q01/q99."""
    q01, q99 = np.full(8, -2.0), np.full(8, 2.0)
    proprio = ActionStatistics(mean=np.zeros(8), std=np.ones(8), min=q01, max=q99, q01=q01,
                               q99=q99, mask=np.ones(8, bool))
    base = two_datasets().select('bridge')
    return DatasetStatistics({'sim': StatisticsEntry(action=base.action, proprio=proprio)})


def test_proprio_token_conditions_the_action_and_survives_save_load(tmp_path):
    policy = make_policy('openvla', use_proprio=True, proprio_dim=8,
                         statistics=_proprio_statistics(), seed=3)
    assert policy.spec.uses_proprio and policy.config.num_inserted_tokens == \
        policy.config.num_patches + 1
    obs = dataclasses.replace(
        Observation.make_example(policy.spec, instruction='reach the red cube'),
        proprio=np.linspace(-1, 1, 8).astype(np.float32))
    # The projector sees the normalized state: q01/q99 = -2/2 map to -1/1, beyond is clipped.
    np.testing.assert_allclose(policy.proprio_tensor([[1.0] * 8, [9.0] * 8]).numpy(),
                               [[0.5] * 8, [1.0] * 8])
    ids, pixels = policy.model_inputs(obs)
    with torch.no_grad():
        embeds = [policy.model.embed_inputs(ids, pixels, policy.proprio_tensor([[v] * 8]))
                  for v in (-2.0, 2.0)]
    token = policy.config.num_patches + 1  # BOS, patches, then the proprio token
    assert not torch.allclose(embeds[0][:, token], embeds[1][:, token])
    assert torch.equal(embeds[0][:, :token], embeds[1][:, :token])
    before = policy.predict_chunk(obs)
    policy.save_pretrained(tmp_path)
    loaded = make_policy('openvla', model_path=str(tmp_path))
    assert loaded.spec.uses_proprio
    np.testing.assert_array_equal(loaded.predict_chunk(obs), before)
    with pytest.raises(InvalidObservationError, match='proprio'):
        loaded.predict_chunk(dataclasses.replace(obs, proprio=np.zeros(5, np.float32)))
    with pytest.raises(InvalidObservationError):
        loaded.predict_chunk(dataclasses.replace(obs, proprio=None))
    with pytest.raises(ValueError, match='proprio'):
        loaded.model.embed_inputs(ids, pixels)


def test_proprio_training_loss_falls_and_needs_proprio():
    policy = make_policy('openvla', use_proprio=True, proprio_dim=8, seed=0)
    losses = _fit(policy, dict(_batch(), proprio=torch.linspace(-1, 1, 16).reshape(2, 8)))
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
    assert policy.model.proprio_projector.fc1.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='proprio'):
        policy.training_loss(_batch())
    with pytest.raises(ValueError, match='proprio_dim'):
        OpenVlaConfig(**{**TINY, 'use_proprio': True, 'proprio_dim': 0})


# ------------------------------------------------------------------------ full size
def test_full_preset_parameter_count_matches_openvla_7b():
    count = OpenVlaPolicy.count_parameters('full')
    assert abs(count - OPENVLA_7B_PARAMETERS) / OPENVLA_7B_PARAMETERS < 0.01, count
