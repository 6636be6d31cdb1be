"""RT-2-style policy: contract, strict parsing, constrained decoding, training, size."""

import re
import statistics
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_ros.actions.tokenizers import MalformedActionText, text_to_bins
from vla_ros.policies.contract import InvalidObservationError, Observation
from vla_ros.policies.registry import make_policy
from vla_ros.policies.rt2.grammar import ActionGrammar
from vla_ros.policies.rt2.modeling import GrammarLogitsProcessor
from vla_ros.policies.rt2.policy import Rt2Policy
from vla_ros.runtime.engine import EngineConfig, InferenceEngine

ACTION_TEXT = re.compile(r'[0-9]{1,3}( [0-9]{1,3}){6}')




@pytest.fixture(scope='module')
def policy():
    return make_policy('rt2')


@pytest.fixture(scope='module')
def grammar(policy):
    return policy.grammar


def example(policy, stamp=2.5, instruction='pick up the red cube', seed=0):
    return Observation.make_example(policy.spec, instruction=instruction, stamp=stamp, seed=seed)


def test_chunk_shape_dtype_bounds_and_latency(policy):
    assert policy.spec.chunk_shape == (1, 7) and policy.spec.control_period == 0.1
    space = policy.spec.action_space
    obs = example(policy)
    policy.predict_chunk(obs)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        chunk = policy.predict_chunk(obs)
        times.append(time.perf_counter() - start)
    assert chunk.shape == (1, 7) and chunk.dtype == np.float32
    assert np.all(chunk >= space.low.astype(np.float32))
    assert np.all(chunk <= space.high.astype(np.float32))
    assert statistics.median(times) < 1.0
    # The chunk is exactly the detokenized bins of the text the model wrote.
    bins = text_to_bins(policy.generate_action_text(obs), 7)
    np.testing.assert_array_equal(chunk[0], policy.action_tokenizer.detokenize(bins)
                                  .astype(np.float32))


def test_deterministic_and_save_load_identical(policy, tmp_path):
    obs = example(policy)
    a = policy.predict_chunk(obs)
    np.testing.assert_array_equal(a, policy.predict_chunk(obs))
    np.testing.assert_array_equal(a, make_policy('rt2').predict_chunk(obs))
    policy.save_pretrained(tmp_path)
    loaded = make_policy('rt2', model_path=str(tmp_path))
    np.testing.assert_array_equal(a, loaded.predict_chunk(obs))
    # Untrained outputs can coincide, so compare the raw logits as well.
    ids = torch.tensor([policy.prompt_ids(obs.instruction)])
    pixels = policy.images_tensor(obs).flatten(0, 1)
    with torch.no_grad():
        ref = policy.model(input_ids=ids, pixel_values=pixels,
                           token_type_ids=torch.zeros_like(ids)).logits
        got = loaded.model(input_ids=ids, pixel_values=pixels,
                           token_type_ids=torch.zeros_like(ids)).logits
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


@pytest.mark.parametrize('text, problem', [
    ('', 'empty'),
    ('move left please', '7 bin indices'),
    ('1 2 3', 'expected 7 bin indices, got 3'),
    ('1 2 3 4 5 6 7 8', 'expected 7 bin indices, got 8'),
    ('1 2 3 4 5 6 x7', 'not non-negative integers'),
    ('1 2 3 4 5 6 -7', 'not non-negative integers'),
    ('1 2 3 4 5 6 256', r'outside \[0, 255\]'),
])
def test_malformed_output_raises_clearly(policy, monkeypatch, text, problem):
    monkeypatch.setattr(policy, 'generate_action_text', lambda obs: text)
    with pytest.raises(MalformedActionText, match=problem) as info:
        policy.predict_chunk(example(policy))
    assert "policy 'rt2' produced unusable action text" in str(info.value)


def test_runtime_holds_on_malformed_output(policy, monkeypatch):
    monkeypatch.setattr(policy, 'generate_action_text', lambda obs: '12 34 oops')
    engine = InferenceEngine(EngineConfig())
    engine.finish_policy_load('rt2', policy)
    engine.set_instruction('pick up the red cube')
    engine.set_image('front', np.zeros((224, 224, 3), dtype=np.uint8), 10.0)
    engine.run_inference(lambda: 10.0)
    command = engine.command_at(10.0)
    assert command.hold and np.all(command.ee_twist == 0)
    assert 'unusable action text' in engine.status(10.0).message


def test_generated_text_is_only_digits_and_spaces(policy):
    for seed, instruction in enumerate(['open the drawer', 'x']):
        ids = policy.generate_ids(example(policy, instruction=instruction, seed=seed))
        assert policy.grammar.accepts(ids + [policy.tokenizer.eos_token_id]), ids
        assert ACTION_TEXT.fullmatch(policy.tokenizer.decode(ids, skip_special_tokens=True))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_grammar_holds_against_adversarial_logits(grammar, seed):
    """Even when every invalid token scores highest, decoding stays on the grammar."""
    rng = np.random.default_rng(seed)
    vocab = 32_000
    processor = GrammarLogitsProcessor(grammar, prompt_length=3)
    valid_ids = [grammar.separator_id, grammar.eos_id, *grammar.digit_ids]
    sequence = torch.tensor([[1, 5, 9]])
    for _ in range(grammar.max_length):
        scores = torch.from_numpy(rng.normal(size=(1, vocab))).float()
        scores[0, valid_ids] -= 100.0
        token = int(processor(sequence, scores).argmax())
        sequence = torch.cat([sequence, torch.tensor([[token]])], dim=1)
        if token == grammar.eos_id:
            break
    answer = sequence[0, 3:].tolist()
    assert grammar.accepts(answer)
    digits = {tok: str(d) for d, tok in enumerate(grammar.digit_ids)}
    text = ''.join(' ' if t == grammar.separator_id else digits.get(t, '') for t in answer[:-1])
    assert ACTION_TEXT.fullmatch(text.strip())
    assert text_to_bins(text, 7).max() <= 255


def test_grammar_rules():
    g = ActionGrammar(separator_id=10, digit_ids=list(range(10)), eos_id=11, num_values=2)
    assert g.allowed([]) == [10]
    assert set(g.allowed([10])) == set(range(10))
    assert g.allowed([10, 0]) == [10]  # '0' is complete: no leading zeros
    assert set(g.allowed([10, 2, 5])) == {0, 1, 2, 3, 4, 5, 10}  # at most 255
    assert g.allowed([10, 1, 2, 8]) == [10]  # three digits at most
    assert g.allowed([10, 7, 10, 3]) == list(range(10)) + [11]  # 2nd number: EOS may follow
    assert g.accepts([10, 2, 5, 5, 10, 0, 11])
    assert not g.accepts([10, 2, 5, 6, 10, 0, 11])
    assert not g.accepts([10, 1, 10, 2, 10, 3, 11])  # three numbers
    assert not g.accepts([10, 1, 11])  # one number
    assert g.allowed([10, 1, 11]) == [11] and g.allowed([99]) == [11]


def test_targets_use_the_tokenizer_and_the_grammar(policy):
    action = np.array([0.01, -0.05, 0.05, 0.0, 0.1, -0.2, 1.0])
    ids = policy.target_ids(action)
    assert policy.grammar.accepts(ids)
    text = policy.tokenizer.decode(ids, skip_special_tokens=True)
    np.testing.assert_array_equal(text_to_bins(text, 7), policy.action_tokenizer.tokenize(action))


def test_prompt_is_bidirectional_and_answer_causal(policy):
    obs = example(policy)
    prompt = policy.prompt_ids(obs.instruction)
    answer = policy.target_ids(np.zeros(7))
    ids = torch.tensor([prompt + answer])
    types = torch.tensor([[0] * len(prompt) + [1] * len(answer)])
    pixels = policy.images_tensor(obs).flatten(0, 1)

    def logits(i):
        with torch.no_grad():
            return policy.model(input_ids=i, pixel_values=pixels, token_type_ids=types).logits

    ref = logits(ids)
    later_answer = ids.clone()
    later_answer[0, -2] = policy.grammar.digit_ids[7]
    out = logits(later_answer)
    torch.testing.assert_close(out[0, :-2], ref[0, :-2])  # causal answer
    later_prompt = ids.clone()
    later_prompt[0, len(prompt) - 1] = policy.tokenizer.convert_tokens_to_ids('.')
    n_image = policy.config.num_image_tokens
    assert not torch.allclose(logits(later_prompt)[0, n_image], ref[0, n_image])  # prefix LM


def test_training_loss_falls_on_answer_tokens_only():
    torch.manual_seed(0)
    p = Rt2Policy.load()
    batch = {
        'images': torch.rand(3, 1, 3, 224, 224) * 2 - 1,
        'instructions': ['pick up the red cube', 'push the green cube left', 'ignored'],
        'actions': torch.rand(3, 1, 7) * 2 - 1,
        'valid': torch.tensor([[True], [True], [False]]),  # row 2 is padding past an end
        'proprio': None,
    }
    p.model.train()
    optimizer = torch.optim.Adam(p.model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = p.training_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0], losses
    # The loss is the answer's cross-entropy alone: the prompt tokens do not count.
    from vla_ros.policies.rt2.modeling import IGNORE_INDEX, training_sequences

    prompt, target = p.prompt_ids('go'), p.target_ids(np.zeros(7))
    *_, labels = training_sequences([prompt], [target], p.pad_id)
    assert labels[0, len(prompt):].tolist() == target
    assert (labels[0, :len(prompt)] == IGNORE_INDEX).all()


def test_bad_input_is_rejected(policy):
    obs = example(policy)
    obs.images['front'] = obs.images['front'].astype(np.float32)
    with pytest.raises(InvalidObservationError, match='uint8'):
        policy.predict_chunk(obs)
    bad = {'images': torch.zeros(1, 1, 3, 224, 224), 'instructions': ['x'],
           'actions': torch.zeros(1, 1, 7), 'valid': torch.zeros(1, 1, dtype=torch.bool)}
    with pytest.raises(ValueError, match='no row'):
        policy.training_loss(bad)
    with pytest.raises(ValueError, match='num_bins'):
        make_policy('rt2', num_bins=1)


def test_full_size_parameter_count():
    count = Rt2Policy.count_parameters('full')
    # PaliGemma-3B layout (2.92 B) with the embedding table resized 257,152 -> 32,000 rows.
    expected = 2.923e9 - (257_152 - 32_000) * 2048
    assert abs(count - expected) / expected < 0.02, count
