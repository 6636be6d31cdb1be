"""Instruction retrieval: paraphrases reach a policy as its nearest training instruction."""

import json

import numpy as np
import pytest

from vla_ros.policies.contract import Observation, PolicyLoadError
from vla_ros.policies.instruction_retrieval import (
    InstructionRetrievalPolicy,
    InstructionRetriever,
    load_instruction_set,
    wrap_policy,
    write_instruction_set,
)
from vla_ros.policies.registry import make_policy
from vla_ros.policies.scripted import ScriptedPolicy

KNOWN = ['pick up the red cube', 'reach the blue cylinder']
WORDS = ['pick', 'up', 'grab', 'red', 'cube', 'block', 'reach', 'blue', 'cylinder', 'go']


def bag_of_words(texts):
    """A stand-in encoder: normalised word counts over a tiny vocabulary."""
    out = np.array([[t.lower().split().count(w) for w in WORDS] for t in texts], np.float32)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


class Recorder(ScriptedPolicy):
    """The scripted policy, remembering the instructions it was given."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def predict_chunk(self, observation):
        self.seen.append(observation.instruction)
        return super().predict_chunk(observation)


def test_known_instructions_pass_unchanged_and_paraphrases_map_to_the_nearest():
    retriever = InstructionRetriever(KNOWN, encode=bag_of_words)
    exact = retriever.resolve('  Pick up the RED cube ')
    assert exact.exact and exact.instruction == KNOWN[0] and exact.similarity == 1.0
    match = retriever.resolve('grab the red cube')
    assert not match.exact and match.instruction == KNOWN[0]
    assert 0.0 < match.similarity < 1.0
    assert retriever.resolve('go to the blue cylinder').instruction == KNOWN[1]
    with pytest.raises(ValueError, match='empty'):
        retriever.resolve('   ')
    with pytest.raises(ValueError, match='non-empty'):
        InstructionRetriever([], encode=bag_of_words)


def test_wrapped_policy_sees_only_known_instructions():
    inner = Recorder()
    policy = InstructionRetrievalPolicy(inner, InstructionRetriever(KNOWN, bag_of_words))
    assert policy.spec == inner.spec
    chunk = policy.predict_chunk(Observation.make_example(policy.spec, 'grab the red cube'))
    assert chunk.shape == inner.spec.chunk_shape
    policy.predict_chunk(Observation.make_example(policy.spec, 'reach the blue cylinder'))
    assert inner.seen == ['pick up the red cube', 'reach the blue cylinder']
    assert policy.last_match.exact
    # Anything beyond the Policy contract is the wrapped policy's.
    assert policy.seen is inner.seen


def test_wrapper_forwards_the_contracts_optional_members():
    from vla_ros.sim.expert import ScriptedExpert

    class Attached(ScriptedExpert):
        def attach_simulator(self, sim, instance):
            self.attached = (sim, instance)

    expert = Attached()
    policy = InstructionRetrievalPolicy(expert, InstructionRetriever(KNOWN, bag_of_words))
    # Declared on Policy, so these would silently be the defaults without forwarding.
    assert policy.needs_images is False and expert.needs_images is False
    policy.attach_simulator('sim', 'instance')
    assert expert.attached == ('sim', 'instance')
    assert policy.retriever is not None and expert.retriever is None
    assert policy.model is None
    with pytest.raises(NotImplementedError, match='not trainable'):
        policy.collate([])


def test_instruction_set_files_and_their_errors(tmp_path):
    path = write_instruction_set(tmp_path, ['b', 'a', 'b', ' '])
    assert json.loads(path.read_text()) == ['a', 'b'] == load_instruction_set(path)
    with pytest.raises(PolicyLoadError, match='does not exist'):
        load_instruction_set(tmp_path / 'missing.json')
    (tmp_path / 'bad.json').write_text('{not json')
    with pytest.raises(PolicyLoadError, match='not readable JSON'):
        load_instruction_set(tmp_path / 'bad.json')
    (tmp_path / 'empty.json').write_text('[]')
    with pytest.raises(PolicyLoadError, match='non-empty JSON list'):
        load_instruction_set(tmp_path / 'empty.json')
    # 'checkpoint' means the file next to the weights, which must then exist
    (tmp_path / 'weights').mkdir()
    with pytest.raises(PolicyLoadError, match='does not exist'):
        wrap_policy(ScriptedPolicy(), 'checkpoint', str(tmp_path / 'weights'), bag_of_words)
    with pytest.raises(PolicyLoadError, match='needs a model_path'):
        wrap_policy(ScriptedPolicy(), 'checkpoint', None, bag_of_words)
    plain = ScriptedPolicy()
    assert wrap_policy(plain, None) is plain and wrap_policy(plain, '') is plain
    wrapped = wrap_policy(plain, 'checkpoint', str(tmp_path), bag_of_words)
    assert wrapped.retriever.known == ('a', 'b')


def test_make_policy_takes_instruction_set_for_any_policy():
    """With the real offline MiniLM encoder and the shipped OpenVLA's training set."""
    from vla_ros.models import model_path

    known = load_instruction_set(f'{model_path("openvla")}/instructions.json')
    policy = make_policy('scripted', instruction_set=known)
    try:
        assert isinstance(policy, InstructionRetrievalPolicy)
        match = policy.retriever.resolve('lift the yellow ball')  # unseen verb and noun
        assert match.instruction == 'grasp the yellow sphere and raise it', match
    finally:
        policy.close()
