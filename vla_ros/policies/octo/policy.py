"""Octo-style policy: history window, diffusion chunks, head swap and fine-tuning groups.

Runtime behaviour:

- History: the policy keeps the last ``history_window - 1`` frames (images and proprio)
  by observation stamp. A newer stamp shifts the window, the same stamp re-queries the
  same window (so asking twice gives the same chunk), an older stamp starts over (a new
  episode or a replayed bag). Missing history is padded and masked, as Octo does at an
  episode start; :meth:`reset` clears it.
- Sampling: the diffusion noise comes from a generator seeded by (seed, stamp), so the
  output is a pure function of the weights, the seed and the observation window.
- Normalized chunks are clipped to [-1, 1], unnormalized with the q01/q99 statistics and
  finally clipped to the action-space bounds.

Fine-tuning for a new robot (Octo's protocol): :meth:`replace_action_head` puts a fresh
head for a new action space on the pretrained backbone, and :meth:`finetune_param_groups`
gives optimizer groups with a frozen or slow backbone and a faster head.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vla_ros.actions.normalization import (
    DatasetStatistics,
    Normalizer,
    StatisticsEntry,
)
from vla_ros.actions.spaces import load_action_space
from vla_ros.policies.contract import (
    Observation,
    PolicyLoadError,
    PolicySpec,
)
from vla_ros.policies.octo.configuration import FULL, SIM, TINY, OctoConfig
from vla_ros.policies.octo.diffusion import generator_for
from vla_ros.policies.octo.modeling import OctoModel, build_action_head
from vla_ros.policies.torch_policy import TorchPolicy, bounds_statistics

# Octo feeds images scaled to [-1, 1]: (x / 255 - 0.5) / 0.5.
IMAGE_MEAN = IMAGE_STD = (0.5, 0.5, 0.5)


@dataclass
class _Frame:
    """One observation as model inputs: images (cameras, 3, H, W), proprio (P,) or None."""

    stamp: float
    images: torch.Tensor
    proprio: torch.Tensor | None


class OctoPolicy(TorchPolicy):
    """Octo-style transformer policy with a diffusion action head (see the module doc)."""

    family = 'octo'
    config_class = OctoConfig
    presets = {'tiny': TINY, 'sim': SIM, 'full': FULL}
    action_head = 'diffusion (MLP-ResNet, DDPM/DDIM)'
    action_type = 'continuous'

    def __init__(self, *args, **kwargs):
        """Build as :class:`TorchPolicy` does, then set up history and proprio statistics."""
        super().__init__(*args, **kwargs)
        self._frames: list[_Frame] = []
        self._lock = threading.Lock()
        self._proprio_stats = self._proprio_statistics()

    # ------------------------------------------------------------ construction
    @classmethod
    def build_model(cls, config: OctoConfig) -> OctoModel:
        """Backbone + diffusion head for ``config`` (random initialisation)."""
        return OctoModel(config, load_action_space(config.action_space).dim)

    def make_spec(self, config: OctoConfig) -> PolicySpec:
        """Square images scaled to [-1, 1], Octo's 4-step chunks by default."""
        return PolicySpec(name=self.family, action_space=self.action_space,
                          chunk_length=config.chunk_length, camera_names=config.camera_names,
                          image_size=(config.image_size, config.image_size),
                          image_mean=IMAGE_MEAN, image_std=IMAGE_STD,
                          uses_proprio=config.uses_proprio,
                          control_period=config.control_period)

    def _statistics_changed(self) -> None:
        """Proprio statistics follow the installed dataset statistics."""
        self._proprio_stats = self._proprio_statistics()

    def _proprio_statistics(self):
        """Mean/std tensors of proprio (Octo normalizes proprio to zero mean, unit std)."""
        entry = self.statistics.select(self.unnorm_key or None)
        if entry.proprio is None or not self.config.uses_proprio:
            return None
        if entry.proprio.dim != self.config.proprio_dim:
            raise PolicyLoadError(f'octo: proprio statistics have {entry.proprio.dim} '
                                  f'dimensions, the config says {self.config.proprio_dim}')
        s = entry.proprio
        mean, std = (torch.tensor(a, dtype=torch.float32, device=self.device)
                     for a in (s.mean, s.std))
        return mean, std, torch.tensor(s.mask, device=self.device)

    # ------------------------------------------------------------ inputs

    def _text(self, instructions: list[str]) -> torch.Tensor:
        from vla_ros.policies.text import shared_encoder

        embedded = shared_encoder().encode(list(instructions))
        return torch.from_numpy(embedded).to(self.device, self.dtype)

    def _proprio(self, proprio: Any) -> torch.Tensor:
        """Raw proprio (..., P) -> normalized tensor in the model's dtype."""
        p = torch.as_tensor(np.asarray(proprio, dtype=np.float32), device=self.device)
        if self._proprio_stats is not None:
            mean, std, mask = self._proprio_stats
            p = torch.where(mask, (p - mean) / (std + 1e-8), p)
        return p.to(self.dtype)

    def _prepare_images(self, stack: np.ndarray) -> torch.Tensor:
        """uint8 (..., H, W, 3) -> float (..., 3, H, W), normalized like images_tensor."""
        x = torch.from_numpy(np.ascontiguousarray(stack)).to(self.device).float() / 255.0
        mean = torch.tensor(IMAGE_MEAN, device=self.device)
        std = torch.tensor(IMAGE_STD, device=self.device)
        return ((x - mean) / std).movedim(-1, -3).to(self.dtype)

    # ------------------------------------------------------------ history
    @property
    def history_window(self) -> int:
        """Frames per prediction (the configuration's ``history_window``)."""
        return self.config.history_window

    def reset(self) -> None:
        """Forget the frame history (a new episode or instruction)."""
        with self._lock:
            self._frames = []

    def _push(self, frame: _Frame) -> list[_Frame]:
        """Add a frame by stamp (see the module docstring) and return the window's frames."""
        with self._lock:
            frames = self._frames
            if frames and frame.stamp == frames[-1].stamp:
                frames = frames[:-1] + [frame]
            elif frames and frame.stamp > frames[-1].stamp:
                frames = frames + [frame]
            else:
                frames = [frame]
            self._frames = frames[-self.config.history_window:]
            return list(self._frames)

    def _window(self, frames: list[_Frame]):
        """Stack frames oldest-first into (1, window, ...) tensors, padding at the start."""
        pad = self.config.history_window - len(frames)
        images = [torch.zeros_like(frames[0].images)] * pad + [f.images for f in frames]
        valid = torch.tensor([[False] * pad + [True] * len(frames)], device=self.device)
        proprio = None
        if self.config.uses_proprio:
            rows = [torch.zeros_like(frames[0].proprio)] * pad + [f.proprio for f in frames]
            proprio = torch.stack(rows).unsqueeze(0)
        return torch.stack(images).unsqueeze(0), valid, proprio

    # ------------------------------------------------------------ prediction
    def _condition(self, observation: Observation) -> torch.Tensor:
        """Add the frame to the history, run the backbone once: mean readout (1, width)."""
        proprio = self._proprio(observation.proprio) if self.config.uses_proprio else None
        frame = _Frame(float(observation.stamp), self.images_tensor(observation)[0], proprio)
        images, valid, proprio = self._window(self._push(frame))
        return self.model.condition(images, self._text([observation.instruction]), valid,
                                    proprio)

    def readout_embedding(self, observation: Observation) -> np.ndarray:
        """The head's conditioning vector for ``observation`` (Octo's transformer output).

        Updates the history exactly as :meth:`predict_chunk` does; for probing what the
        backbone sees (history, proprio, instruction) independently of the sampler.
        """
        self.validate_observation(observation)
        with torch.inference_mode():
            return self._condition(observation)[0].float().cpu().numpy()

    def predict_normalized(self, observation: Observation) -> np.ndarray:
        """Backbone once over the history window, then the diffusion sampler in the head."""
        chunk = self.model.action_head.sample(self._condition(observation),
                                              generator_for(self.seed, observation.stamp),
                                              self.config.sampler, self.config.ddim_steps)
        return chunk[0].detach().float().cpu().numpy()

    def predict_chunk(self, observation: Observation) -> np.ndarray:
        """The base prediction, clipped to the action-space bounds (masked dims included)."""
        chunk = super().predict_chunk(observation)
        return self.check_chunk(self.action_space.clip(chunk).astype(np.float32))

    # ------------------------------------------------------------ training
    def training_loss(self, batch: dict, generator: torch.Generator | None = None):
        """DDPM epsilon MSE on normalized chunks; rows with ``valid`` False are ignored.

        ``batch`` follows the shared convention (images, instructions, actions, valid,
        proprio); optional ``history_images`` (B, window - 1, cameras, 3, H, W) with
        ``history_valid`` (B, window - 1) and ``history_proprio`` give earlier frames,
        otherwise the history is padded (the episode-start case). ``generator`` fixes the
        diffusion steps and noise (tests, evaluation); by default torch's global RNG.
        """
        cfg = self.config
        images = torch.as_tensor(batch['images'])
        b = self._check_batch(batch, images)
        images = images.to(self.device, self.dtype)
        proprio = None
        if cfg.uses_proprio:
            proprio = self._proprio(batch['proprio']).unsqueeze(1)
        history = cfg.history_window - 1
        if batch.get('history_images') is not None:
            past = torch.as_tensor(batch['history_images']).to(self.device, self.dtype)
            past_valid = torch.as_tensor(batch['history_valid'], device=self.device).bool()
            if past.shape != (b, history, *images.shape[1:]) or past_valid.shape != (b, history):
                raise ValueError(f'octo: history_images must be {(b, history, *images.shape[1:])}'
                                 f' with history_valid {(b, history)}, got {tuple(past.shape)} '
                                 f'and {tuple(past_valid.shape)}')
            past_proprio = None
            if cfg.uses_proprio:
                if batch.get('history_proprio') is None:
                    raise ValueError('octo: this model uses proprio; history_images need '
                                     'history_proprio (B, window - 1, P)')
                past_proprio = self._proprio(batch['history_proprio'])
            # Padded steps are zeros in model space, exactly as _window pads at run time.
            keep = past_valid.to(past.dtype)
            past = past * keep.view(b, history, *([1] * (past.ndim - 2)))
            if past_proprio is not None:
                past_proprio = past_proprio * keep[..., None].to(past_proprio.dtype)
        else:
            past = images.new_zeros((b, history, *images.shape[1:]))
            past_valid = torch.zeros(b, history, dtype=torch.bool, device=self.device)
            past_proprio = (proprio.new_zeros((b, history, cfg.proprio_dim))
                            if cfg.uses_proprio else None)
        window = torch.cat([past, images.unsqueeze(1)], dim=1)
        valid_steps = torch.cat([past_valid, past_valid.new_ones(b, 1)], dim=1)
        if cfg.uses_proprio:
            proprio = torch.cat([past_proprio, proprio], dim=1)
        cond = self.model.condition(window, self._text(batch['instructions']), valid_steps,
                                    proprio)
        actions = torch.as_tensor(batch['actions']).to(self.device, self.dtype)
        valid = torch.as_tensor(batch['valid'], device=self.device).bool()
        return self.model.action_head.loss(cond, actions, valid, generator)

    def _check_batch(self, batch: dict, images: torch.Tensor) -> int:
        cfg, spec = self.config, self.spec
        w, h = spec.image_size
        expected = (len(spec.camera_names), 3, h, w)
        if images.ndim != 5 or tuple(images.shape[1:]) != expected:
            raise ValueError(f'octo: batch images must be (B, {", ".join(map(str, expected))}), '
                             f'got {tuple(images.shape)}')
        b = images.shape[0]
        if len(batch.get('instructions', ())) != b:
            raise ValueError(f'octo: batch needs {b} instructions')
        shape = (b, *spec.chunk_shape)
        if tuple(torch.as_tensor(batch['actions']).shape) != shape:
            raise ValueError(f'octo: batch actions must be {shape}, got '
                             f'{tuple(torch.as_tensor(batch["actions"]).shape)}')
        if tuple(torch.as_tensor(batch['valid']).shape) != shape[:2]:
            raise ValueError(f'octo: batch valid must be {shape[:2]}')
        if cfg.uses_proprio and (batch.get('proprio') is None or tuple(
                torch.as_tensor(batch['proprio']).shape) != (b, cfg.proprio_dim)):
            raise ValueError(f'octo: this model uses proprio; batch proprio must be '
                             f'{(b, cfg.proprio_dim)}')
        return b

    def collate(self, samples: list[dict]) -> dict:
        """Training samples (EpisodeDataset schema, raw actions) -> a batch.

        A sample may carry ``history``: earlier frames of its episode, oldest first, each
        ``{'images': {camera: HxWx3}, 'proprio': ...}`` (``EpisodeDataset.samples`` with
        ``history``). Missing frames are padded with zeros and masked, as at inference.
        """
        if not samples:
            raise ValueError('octo: cannot collate an empty list of samples')
        cams, history = self.spec.camera_names, self.config.history_window - 1
        stack = np.stack([np.stack([s['images'][c] for c in cams]) for s in samples])
        batch = {
            'images': self._prepare_images(stack),
            'instructions': [s['instruction'] for s in samples],
            'actions': torch.as_tensor(self.normalizer.normalize(
                np.stack([s['actions'] for s in samples])), dtype=torch.float32),
            'valid': torch.as_tensor(np.stack([s['valid'] for s in samples]), dtype=torch.bool),
            'proprio': (None if not self.config.uses_proprio else
                        np.stack([s['proprio'] for s in samples]).astype(np.float32)),
        }
        if history and any(s.get('history') for s in samples):
            zeros = np.zeros_like(stack[0])
            past, valid, past_proprio = [], [], []
            for s in samples:
                frames = list(s.get('history') or ())[-history:]
                pad = history - len(frames)
                past.append([zeros] * pad + [np.stack([f['images'][c] for c in cams])
                                             for f in frames])
                valid.append([False] * pad + [True] * len(frames))
                if self.config.uses_proprio:
                    blank = np.zeros(self.config.proprio_dim, dtype=np.float32)
                    past_proprio.append([blank] * pad + [f['proprio'] for f in frames])
            batch['history_images'] = self._prepare_images(np.array(past))
            batch['history_valid'] = torch.tensor(valid)
            if self.config.uses_proprio:
                batch['history_proprio'] = np.array(past_proprio, dtype=np.float32)
        return batch

    # ------------------------------------------------------------ new robots
    def replace_action_head(self, action_space: str, chunk_length: int | None = None,
                            statistics: DatasetStatistics | None = None,
                            unnorm_key: str | None = None):
        """Put a freshly initialised head for ``action_space`` on the current backbone.

        ``action_space`` is a shipped name or a YAML path. The backbone and tokenizers are
        kept; the configuration, spec and normalizer switch to the new space and
        ``chunk_length`` (default: unchanged). Without ``statistics`` the new space's
        bounds are used, as for an untrained policy; ``unnorm_key`` selects an entry when
        the statistics hold several datasets. Returns the new head module.
        """
        if not isinstance(action_space, str):
            raise ValueError('octo: action_space must be a shipped name or a YAML path, got '
                             f'{type(action_space).__name__}')
        space = load_action_space(action_space)
        chunk = self.config.chunk_length if chunk_length is None else chunk_length
        config = dataclasses.replace(self.config, action_space=action_space, chunk_length=chunk)
        if statistics is None:
            statistics = DatasetStatistics({'default': StatisticsEntry(
                action=bounds_statistics(space))})
        entry = statistics.select(unnorm_key)
        if entry.action.dim != space.dim:
            raise ValueError(f'octo: statistics have {entry.action.dim} action dimensions, '
                             f'{space.name!r} has {space.dim}')
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + 1)  # reproducible, yet unlike the original head
            head = build_action_head(config, space.dim)
        self.model.action_head = head.to(self.device, self.dtype)
        self.config, self.action_space, self.statistics = config, space, statistics
        self.unnorm_key = unnorm_key
        self.normalizer = Normalizer(entry.action)
        self._proprio_stats = self._proprio_statistics()
        self._spec = self.make_spec(config)
        self.reset()
        return head

    def finetune_param_groups(self, backbone_lr: float, head_lr: float,
                              freeze_backbone: bool = False) -> list[dict]:
        """Optimizer parameter groups: backbone + tokenizers (slow or frozen), head (fast).

        With ``freeze_backbone`` the backbone's ``requires_grad`` is switched off and only
        the head group is returned; otherwise every parameter is made trainable again.
        """
        for name, lr in (('backbone_lr', backbone_lr), ('head_lr', head_lr)):
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) \
                    or not math.isfinite(lr) or lr < 0:
                raise ValueError(f'octo: {name} must be a finite number >= 0, got {lr!r}')
        backbone = list(self.model.backbone.parameters())
        head = list(self.model.action_head.parameters())
        for p in backbone:
            p.requires_grad_(not freeze_backbone)
        for p in head:
            p.requires_grad_(True)
        groups = [{'params': head, 'lr': float(head_lr), 'name': 'head'}]
        if not freeze_backbone:
            groups.insert(0, {'params': backbone, 'lr': float(backbone_lr), 'name': 'backbone'})
        return groups


load = OctoPolicy.load
