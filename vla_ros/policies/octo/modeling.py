"""Octo-style backbone: observation/task tokenizers and the block-wise masked transformer.

Token sequence (one row per sample)::

    [task x L] [t=0: cam patches..., proprio?, readouts x R] [t=1: ...] ...

Attention follows Octo's block rules (query -> allowed keys):

- task tokens -> task tokens;
- observation tokens of step t -> task tokens and observation tokens of steps <= t, never
  readouts, so readouts can be added or replaced without changing what observations see;
- readout tokens of step t -> task tokens, observation tokens of steps <= t and readout
  tokens of steps <= t (themselves included; Octo's causal rule for its own group).

Keys of padded timesteps (history not yet filled at an episode start) are masked out;
task tokens are never masked, so no query is left without keys.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the usual alias

from vla_ros.policies.octo.configuration import TEXT_EMBEDDING_DIM, OctoConfig
from vla_ros.policies.octo.diffusion import DiffusionActionHead

TASK, OBS, READOUT = 0, 1, 2


def _embedding(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * 0.02)


class StdConv2d(nn.Conv2d):
    """Convolution with weight standardisation (zero mean, unit variance per filter)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise the weights, then convolve."""
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        return F.conv2d(x, (w - mean) / torch.sqrt(var + 1e-5), self.bias, self.stride,
                        self.padding, self.dilation, self.groups)


class SmallStem(nn.Module):
    """Octo's SmallStem: stride-2 StdConv/GroupNorm/ReLU layers, then a patchifying conv."""

    def __init__(self, features: tuple[int, ...], out_features: int, patch_size: int):
        super().__init__()
        layers, channels = [], 3
        for c in features:
            layers += [StdConv2d(channels, c, 3, stride=2, padding=1),
                       nn.GroupNorm(math.gcd(32, c), c), nn.ReLU()]
            channels = c
        self.convs = nn.Sequential(*layers)
        rest = patch_size // 2 ** len(features)
        self.patchify = nn.Conv2d(channels, out_features, rest, stride=rest)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, patches, out_features)."""
        return self.patchify(self.convs(images)).flatten(2).transpose(1, 2)


class ImageTokenizer(nn.Module):
    """One camera: SmallStem patches projected to the token width."""

    def __init__(self, config: OctoConfig):
        super().__init__()
        self.stem = SmallStem(config.stem_features, config.stem_out_features, config.patch_size)
        self.projection = nn.Linear(config.stem_out_features, config.width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, patches, width)."""
        return self.projection(self.stem(images))


class Block(nn.Module):
    """Pre-norm transformer encoder block (attention + GELU MLP), as Octo's ViT blocks."""

    def __init__(self, width: int, heads: int, mlp_dim: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``mask`` (B, 1, S, S) bool: True where a query may attend to a key."""
        b, s, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, s, 3, self.heads, w // self.heads).unbind(2)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                           v.transpose(1, 2), attn_mask=mask)
        x = x + self.proj(y.transpose(1, 2).reshape(b, s, w))
        return x + self.mlp(self.norm2(x))


def block_attention_mask(task_tokens: int, obs_tokens: int, readout_tokens: int,
                         timestep_valid: torch.Tensor) -> torch.Tensor:
    """Octo's block-wise mask (B, 1, S, S), True = may attend; see the module docstring.

    ``timestep_valid`` (B, window) is False for padded history steps, whose observation
    and readout tokens are then hidden from every query.
    """
    batch, window = timestep_valid.shape
    device = timestep_valid.device
    per_step = obs_tokens + readout_tokens
    kind_step = [OBS] * obs_tokens + [READOUT] * readout_tokens
    kind = torch.tensor([TASK] * task_tokens + kind_step * window, device=device)
    step = torch.cat([torch.full((task_tokens,), -1, device=device),
                      torch.arange(window, device=device).repeat_interleave(per_step)])
    q_kind, k_kind = kind[:, None], kind[None, :]
    earlier = step[None, :] <= step[:, None]
    sees_obs = (q_kind != TASK) & (k_kind == OBS)
    sees_readout = (q_kind == READOUT) & (k_kind == READOUT)
    allowed = (k_kind == TASK) | (earlier & (sees_obs | sees_readout))
    key_valid = torch.cat([torch.ones(batch, task_tokens, dtype=torch.bool, device=device),
                           timestep_valid.bool().repeat_interleave(per_step, dim=1)], dim=1)
    return (allowed[None] & key_valid[:, None, :]).unsqueeze(1)


class OctoBackbone(nn.Module):
    """Tokenizers + position embeddings + readouts + masked transformer (no action head)."""

    def __init__(self, config: OctoConfig):
        super().__init__()
        self.config = config
        w, window = config.width, config.history_window
        self.cameras = nn.ModuleList(ImageTokenizer(config) for _ in config.camera_names)
        self.camera_positions = nn.ParameterList(
            _embedding(1, window, config.tokens_per_camera, w) for _ in config.camera_names)
        self.language = nn.Linear(TEXT_EMBEDDING_DIM, config.language_tokens * w)
        self.task_positions = _embedding(1, config.language_tokens, w)
        if config.uses_proprio:
            self.proprio = nn.Linear(config.proprio_dim, w)
            self.proprio_positions = _embedding(1, window, 1, w)
        self.readouts = _embedding(1, window, config.readout_tokens, w)
        self.blocks = nn.ModuleList(Block(w, config.num_heads, config.mlp_dim)
                                    for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(w)

    @property
    def obs_tokens_per_step(self) -> int:
        """Observation tokens per timestep (all cameras, plus proprio if used)."""
        return (len(self.cameras) * self.config.tokens_per_camera
                + int(self.config.uses_proprio))

    def forward(self, images: torch.Tensor, text: torch.Tensor,
                timestep_valid: torch.Tensor, proprio: torch.Tensor | None = None):
        """Readout embeddings (B, window, R, width); arguments as :meth:`encode`."""
        x = self.encode(images, text, timestep_valid, proprio)[:, self.config.language_tokens:]
        x = x.reshape(x.shape[0], self.config.history_window, -1, self.config.width)
        return x[:, :, self.obs_tokens_per_step:]

    def encode(self, images: torch.Tensor, text: torch.Tensor,
               timestep_valid: torch.Tensor, proprio: torch.Tensor | None = None):
        """Every output token (B, S, width) in the order of the module docstring.

        ``images`` (B, window, cameras, 3, H, W), ``text`` (B, 384) sentence embeddings,
        ``timestep_valid`` (B, window) bool, ``proprio`` (B, window, P) if used.
        """
        cfg = self.config
        b, window = images.shape[:2]
        if window != cfg.history_window:
            raise ValueError(f'expected a history window of {cfg.history_window}, got {window}')
        steps = []
        cameras = zip(self.cameras, self.camera_positions, strict=True)
        for i, (tokenizer, positions) in enumerate(cameras):
            tokens = tokenizer(images[:, :, i].flatten(0, 1))
            steps.append(tokens.view(b, window, -1, cfg.width) + positions)
        if cfg.uses_proprio:
            if proprio is None:
                raise ValueError('this model uses proprio, but none was given')
            steps.append(self.proprio(proprio).unsqueeze(2) + self.proprio_positions)
        steps.append(self.readouts.expand(b, -1, -1, -1))
        task = self.language(text).view(b, cfg.language_tokens, cfg.width) + self.task_positions
        x = torch.cat([task, torch.cat(steps, dim=2).flatten(1, 2)], dim=1)
        mask = block_attention_mask(cfg.language_tokens, self.obs_tokens_per_step,
                                    cfg.readout_tokens, timestep_valid.to(x.device))
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


def build_action_head(config: OctoConfig, action_dim: int) -> DiffusionActionHead:
    """A freshly initialised diffusion head for ``action_dim`` and the config's chunk."""
    return DiffusionActionHead(config.width, action_dim, config.chunk_length, config.time_dim,
                               config.head_hidden_dim, config.head_blocks,
                               config.diffusion_steps, config.max_action,
                               config.prediction)


class OctoModel(nn.Module):
    """Backbone + diffusion head; the head is conditioned on the mean readout embedding."""

    def __init__(self, config: OctoConfig, action_dim: int):
        super().__init__()
        self.backbone = OctoBackbone(config)
        self.action_head = build_action_head(config, action_dim)

    def condition(self, images, text, timestep_valid, proprio=None) -> torch.Tensor:
        """Mean readout embedding of the newest timestep (B, width)."""
        return self.backbone(images, text, timestep_valid, proprio)[:, -1].mean(dim=1)
