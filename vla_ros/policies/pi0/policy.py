"""The pi0-style policy: tokenization, seeded sampling and training around :mod:`.modeling`.

Inference draws the initial noise from a ``torch.Generator`` seeded from ``(seed,
observation stamp)``, so one observation always gives the same chunk and different
frames give different noise. Chunks are 50 steps of the ``arm7`` space at 0.1 s.
"""

import hashlib

import numpy as np

from vla_ros.actions.normalization import Normalizer
from vla_ros.policies.contract import (
    InvalidObservationError,
    Observation,
    PolicyLoadError,
    PolicySpec,
)
from vla_ros.policies.pi0.configuration import PRESETS, Pi0Config
from vla_ros.policies.tokenizer import load_text_tokenizer
from vla_ros.policies.torch_policy import TorchPolicy

# SigLIP's preprocessing: [0, 1] -> [-1, 1].
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


def stamp_seed(seed: int, stamp: float) -> int:
    """A 63-bit generator seed from the policy seed and the observation stamp."""
    digest = hashlib.sha256(f'{int(seed)}:{float(stamp)!r}'.encode()).digest()
    return int.from_bytes(digest[:8], 'little') & (2**63 - 1)


def clean_instruction(text: str) -> str:
    """Collapse whitespace and underscores as openpi does before tokenizing a prompt."""
    return ' '.join(text.replace('_', ' ').split())


class Pi0Policy(TorchPolicy):
    """pi0-style flow-matching VLA (see :mod:`vla_ros.policies.pi0.modeling`)."""

    family = 'pi0_style'
    legacy_families = ('pi0',)  # checkpoints saved before the rename
    config_class = Pi0Config
    presets = PRESETS

    def __init__(self, *args, **kwargs):
        """Build the model (see :class:`TorchPolicy`), then the tokenizer and proprio stats."""
        super().__init__(*args, **kwargs)
        self.tokenizer = load_text_tokenizer()
        if len(self.tokenizer) > self.config.vocab_size:
            raise PolicyLoadError(f'pi0: the tokenizer has {len(self.tokenizer)} tokens but '
                                  f'the model only {self.config.vocab_size} embeddings')
        entry = self.statistics.select(self.unnorm_key or None)
        self.proprio_normalizer = None
        if self.config.proprio_dim and entry.proprio is not None:
            if entry.proprio.dim != self.config.proprio_dim:
                raise PolicyLoadError(f'pi0: proprio statistics have {entry.proprio.dim} '
                                      f'dimensions, proprio_dim is {self.config.proprio_dim}')
            self.proprio_normalizer = Normalizer(entry.proprio)

    @classmethod
    def build_model(cls, config: Pi0Config):
        """A randomly initialised :class:`Pi0Model` for ``config``."""
        from vla_ros.actions.spaces import load_action_space
        from vla_ros.policies.pi0.modeling import Pi0Model

        return Pi0Model(config, load_action_space(config.action_space).dim)

    def make_spec(self, config: Pi0Config) -> PolicySpec:
        """Chunks of ``chunk_length`` actions per ``control_period``; SigLIP-normalized images."""
        return PolicySpec(
            name=self.family, action_space=self.action_space, chunk_length=config.chunk_length,
            camera_names=config.camera_names, image_size=(config.image_size,) * 2,
            image_mean=SIGLIP_MEAN, image_std=SIGLIP_STD, uses_proprio=config.proprio_dim > 0,
            control_period=config.control_period)

    # ------------------------------------------------------------------ inputs
    def validate_observation(self, observation) -> None:
        """The contract's checks, plus the proprio length the state token expects."""
        super().validate_observation(observation)
        n = self.config.proprio_dim
        if n and np.asarray(observation.proprio).shape != (n,):
            raise InvalidObservationError(
                f'policy {self.family!r}: proprio must have {n} values, got shape '
                f'{np.asarray(observation.proprio).shape}')

    def tokenize(self, instructions):
        """Token ids (B, L) and validity (B, L): BOS, the prompt, a newline, right padding."""
        import torch

        rows = []
        for text in instructions:
            ids = self.tokenizer.encode(clean_instruction(text) + '\n', add_special_tokens=False)
            rows.append(([self.tokenizer.bos_token_id] + ids)[:self.config.max_token_length])
        length = max(len(r) for r in rows)
        token_ids = torch.zeros(len(rows), length, dtype=torch.long)
        valid = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, row in enumerate(rows):
            token_ids[i, :len(row)] = torch.tensor(row)
            valid[i, :len(row)] = True
        return token_ids.to(self.device), valid.to(self.device)

    def proprio_tensor(self, proprio):
        """Proprio (B, P) as a model tensor, normalized with the checkpoint's statistics."""
        import torch

        if not self.config.proprio_dim:
            return None
        if proprio is None:
            raise ValueError(f'pi0: proprio_dim={self.config.proprio_dim} needs proprio')
        values = np.asarray(proprio.detach().cpu() if hasattr(proprio, 'detach') else proprio,
                            dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.config.proprio_dim:
            raise ValueError(f'pi0: proprio must be (B, {self.config.proprio_dim}), got '
                             f'{values.shape}')
        if self.proprio_normalizer is not None:
            values = self.proprio_normalizer.normalize(values)
        return torch.as_tensor(values, device=self.device).to(self.dtype)

    # ------------------------------------------------------------------ inference
    def initial_noise(self, stamp: float):
        """The t = 0 sample ``a_0`` (1, T, A), fixed by ``(seed, stamp)``."""
        import torch

        generator = torch.Generator().manual_seed(stamp_seed(self.seed, stamp))
        shape = (1, self.config.chunk_length, self.action_space.dim)
        return torch.randn(shape, generator=generator).to(self.device, self.dtype)

    def predict_normalized(self, observation: Observation) -> np.ndarray:
        """Euler-integrate the flow for ``num_inference_steps`` steps -> (T, A) normalized."""
        token_ids, token_valid = self.tokenize([observation.instruction])
        proprio = (None if observation.proprio is None
                   else self.proprio_tensor(np.asarray(observation.proprio)[None]))
        actions = self.model.sample_actions(
            self.images_tensor(observation), token_ids, token_valid,
            self.initial_noise(observation.stamp), self.config.num_inference_steps, proprio)
        return actions[0].float().cpu().numpy()

    def predict_chunk(self, observation: Observation) -> np.ndarray:
        """The base's prediction, clipped to the action-space bounds.

        Flow samples are not bounded by construction; an untrained or extrapolating model
        can overshoot the data's range, and the contract promises in-bounds chunks.
        """
        chunk = super().predict_chunk(observation)
        return self.check_chunk(self.action_space.clip(chunk).astype(np.float32))

    # ------------------------------------------------------------------ training
    def training_loss(self, batch: dict):
        """Flow-matching loss on a batch (see the training batch convention).

        ``actions`` must be (B, chunk_length, A) in normalized space; rows with
        ``valid`` False (past an episode's end) do not count. ``proprio`` is raw (it is
        normalized here with the checkpoint's proprio statistics, as at inference).
        """
        import torch

        images = batch['images']
        actions = torch.as_tensor(batch['actions'])
        expected = (self.config.chunk_length, self.action_space.dim)
        if actions.ndim != 3 or tuple(actions.shape[1:]) != expected:
            raise ValueError(f'pi0: actions must be (B, {expected[0]}, {expected[1]}), got '
                             f'{tuple(actions.shape)}')
        cams, size = len(self.config.camera_names), self.config.image_size
        if images.ndim != 5 or tuple(images.shape[1:]) != (cams, 3, size, size):
            raise ValueError(f'pi0: images must be (B, {cams}, 3, {size}, {size}), got '
                             f'{tuple(images.shape)}')
        if len(batch['instructions']) != actions.shape[0]:
            raise ValueError('pi0: one instruction per batch row is required')
        token_ids, token_valid = self.tokenize(batch['instructions'])
        valid = batch.get('valid')
        return self.model.flow_matching_loss(
            images.to(self.device, self.dtype), token_ids, token_valid,
            actions.to(self.device, self.dtype),
            valid=None if valid is None else torch.as_tensor(valid).to(self.device),
            proprio=self.proprio_tensor(batch.get('proprio')))


def load(model_path: str = '', size: str = 'tiny', **kwargs) -> Pi0Policy:
    """Registry entry: a checkpoint directory if ``model_path`` is set, else a preset."""
    return Pi0Policy.load(model_path=model_path, size=size, **kwargs)
