"""Map an instruction to the nearest one a policy was trained on (pretrained sentence space).

A policy trained from scratch on a closed set of instructions knows only their words: a
paraphrase with a verb it never saw ('grab the red block') reaches its language side as
noise. A pretrained sentence encoder does know that 'grab' is close to 'pick up'. This
front end embeds the incoming instruction and every instruction of the training set with
the offline all-MiniLM-L6-v2 encoder (:mod:`vla_ros.policies.text`) and hands the policy
the most similar training instruction: retrieval, not generation, so the policy only ever
sees instructions it was trained on. What it cannot do is follow an instruction outside
that set: it then picks the closest, which may be a different task. Opt in with the
policy parameter ``instruction_set`` (see :func:`wrap_policy`).

The matching is pure (numpy on embeddings); the encoder is loaded on first use.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from vla_ros.policies.contract import Observation, Policy, PolicyLoadError, PolicySpec

__all__ = ['INSTRUCTIONS_FILE', 'InstructionMatch', 'InstructionRetriever',
           'InstructionRetrievalPolicy', 'load_instruction_set', 'write_instruction_set',
           'wrap_policy']

INSTRUCTIONS_FILE = 'instructions.json'   # in a checkpoint directory: its training set
CHECKPOINT = 'checkpoint'                 # instruction_set value: the file next to the weights


def _normalise(text: str) -> str:
    return ' '.join(str(text).lower().split())


@dataclasses.dataclass(frozen=True)
class InstructionMatch:
    """What an instruction was mapped to, and the cosine similarity of the two."""

    given: str
    instruction: str
    similarity: float

    @property
    def exact(self) -> bool:
        """The given instruction is itself in the set (up to case and spacing)."""
        return _normalise(self.given) == _normalise(self.instruction)


class InstructionRetriever:
    """Nearest neighbour of an instruction among ``known`` by cosine similarity.

    ``encode`` maps a list of strings to L2-normalised embeddings (N, D); the default is
    the shared offline MiniLM encoder.
    """

    def __init__(self, known: Sequence[str],
                 encode: Callable[[list[str]], np.ndarray] | None = None) -> None:
        known = [str(k) for k in known]
        if not known or any(not _normalise(k) for k in known):
            raise ValueError('the instruction set must hold at least one non-empty string')
        if encode is None:
            from vla_ros.policies.text import shared_encoder

            encode = shared_encoder().encode
        self.known = tuple(known)
        self._by_text = {_normalise(k): k for k in known}
        self._encode = encode
        self._embeddings = np.asarray(encode(list(known)), dtype=np.float32)
        if self._embeddings.shape[0] != len(known):
            raise ValueError('the encoder returned a different number of embeddings')

    def resolve(self, instruction: str) -> InstructionMatch:
        """The known instruction closest to ``instruction`` (itself, when it is known)."""
        key = _normalise(instruction)
        if key in self._by_text:
            return InstructionMatch(instruction, self._by_text[key], 1.0)
        if not key:
            raise ValueError('empty instruction')
        query = np.asarray(self._encode([instruction]), dtype=np.float32)[0]
        scores = self._embeddings @ query
        best = int(np.argmax(scores))
        return InstructionMatch(instruction, self.known[best], float(scores[best]))


def load_instruction_set(path: str | Path) -> list[str]:
    """A JSON list of instruction strings; PolicyLoadError saying what is wrong."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise PolicyLoadError(f'instruction set {str(path)!r} does not exist') from None
    except (OSError, ValueError) as exc:
        raise PolicyLoadError(f'instruction set {str(path)!r} is not readable JSON: '
                              f'{exc}') from exc
    if not isinstance(value, list) or not value \
            or not all(isinstance(v, str) and v.strip() for v in value):
        raise PolicyLoadError(f'instruction set {str(path)!r} must be a non-empty JSON '
                              f'list of non-empty strings')
    return value


def write_instruction_set(directory: str | Path, instructions) -> Path:
    """Write the distinct ``instructions`` (sorted) as ``directory/instructions.json``."""
    distinct = sorted({str(i) for i in instructions if str(i).strip()})
    if not distinct:
        raise ValueError('no instructions to write')
    path = Path(directory) / INSTRUCTIONS_FILE
    path.write_text(json.dumps(distinct, indent=1) + '\n')
    return path


class InstructionRetrievalPolicy(Policy):
    """``policy`` behind an instruction retriever: it sees only instructions it knows."""

    def __init__(self, policy: Policy, retriever: InstructionRetriever) -> None:
        self.policy = policy
        self.retriever = retriever
        self.last_match: InstructionMatch | None = None

    @property
    def spec(self) -> PolicySpec:
        """The wrapped policy's spec."""
        return self.policy.spec

    def reset(self) -> None:
        """Reset the wrapped policy."""
        self.policy.reset()

    def predict_chunk(self, observation: Observation) -> np.ndarray:
        """The wrapped policy's chunk for the observation with its instruction mapped."""
        match = self.retriever.resolve(observation.instruction)
        self.last_match = match
        if not match.exact:
            observation = dataclasses.replace(observation, instruction=match.instruction)
        return self.policy.predict_chunk(observation)

    def validate_observation(self, observation) -> None:
        """As the wrapped policy."""
        self.policy.validate_observation(observation)

    def check_chunk(self, actions) -> np.ndarray:
        """As the wrapped policy."""
        return self.policy.check_chunk(actions)

    def close(self) -> None:
        """Close the wrapped policy."""
        self.policy.close()

    # The contract's optional members are the wrapped policy's (declared on Policy, so
    # they must be forwarded explicitly: __getattr__ never sees them).
    @property
    def needs_images(self) -> bool:
        """As the wrapped policy."""
        return self.policy.needs_images

    @property
    def model(self):
        """The wrapped policy's network."""
        return self.policy.model

    @property
    def history_window(self) -> int:
        """As the wrapped policy."""
        return self.policy.history_window

    @property
    def action_head(self) -> str:
        """As the wrapped policy."""
        return self.policy.action_head

    @property
    def action_type(self) -> str:
        """As the wrapped policy."""
        return self.policy.action_type

    def attach_simulator(self, sim, instance) -> None:
        """As the wrapped policy."""
        self.policy.attach_simulator(sim, instance)

    def set_statistics(self, statistics, unnorm_key: str) -> None:
        """As the wrapped policy."""
        self.policy.set_statistics(statistics, unnorm_key)

    def collate(self, samples: list[dict]) -> dict:
        """As the wrapped policy."""
        return self.policy.collate(samples)

    def __getattr__(self, name):
        # Anything else (a family's own attributes: statistics, config, ...) is the policy's.
        if name == 'policy':
            raise AttributeError(name)
        return getattr(self.policy, name)


def wrap_policy(policy: Policy, instruction_set: str | Sequence[str] | None,
                model_path: str | None = None,
                encode: Callable[[list[str]], np.ndarray] | None = None) -> Policy:
    """``policy`` itself, or wrapped by retrieval over ``instruction_set``.

    ``instruction_set``: None or '' (no retrieval), 'checkpoint' (the ``instructions.json``
    that training wrote next to the weights in ``model_path``), a path to such a JSON
    list, or the list itself.
    """
    if instruction_set is None or instruction_set == '':
        return policy
    if isinstance(instruction_set, str):
        if instruction_set == CHECKPOINT:
            if not model_path:
                raise PolicyLoadError("instruction_set 'checkpoint' needs a model_path")
            base = Path(model_path)
            instruction_set = str((base if base.is_dir() else base.parent) / INSTRUCTIONS_FILE)
        known = load_instruction_set(instruction_set)
    else:
        known = list(instruction_set)
    return InstructionRetrievalPolicy(policy, InstructionRetriever(known, encode))
