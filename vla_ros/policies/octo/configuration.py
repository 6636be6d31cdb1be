"""Configuration of the Octo-style policy (a dataclass that validates itself) and presets.

Architecture in one paragraph (Octo, Octo Model Team et al. 2024): every camera image is
cut into 16x16-pixel patch tokens by a small strided-conv stem ("SmallStem16"), the
instruction becomes task tokens, an optional proprio vector becomes one token, and a
transformer runs over ``[task, (obs, readout) x history_window]`` under a block-wise
mask. The mean readout embedding of the newest timestep conditions a diffusion action
head that denoises a whole chunk of actions.

Diffusion (the action head):

- ``diffusion_steps`` (default 20, as Octo) is the length of the cosine beta schedule
  (Nichol & Dhariwal 2021, s = 0.008) the head is trained on: epsilon-prediction MSE on
  normalized action chunks at a uniformly drawn step.
- ``sampler='ddpm'`` runs the full ancestral DDPM chain of ``diffusion_steps`` denoiser
  calls, clipping the running sample to ``[-max_action, max_action]`` after every step
  (Octo's ``max_action`` = 5).
- ``sampler='ddim'`` runs deterministic DDIM (eta = 0) on ``ddim_steps`` evenly spaced
  steps of the same schedule (fewer denoiser calls, same trained weights).
- Either way the final chunk is clipped to [-1, 1] in normalized space, as Octo clips
  its normalized actions before unnormalizing.

Language: Octo encodes the instruction with a frozen T5-base encoder (16 tokens); T5
weights do not ship offline, so this family uses the shared frozen all-MiniLM-L6-v2
sentence embedding (384-d, :mod:`vla_ros.policies.text`) projected to
``language_tokens`` task tokens. The encoder is not part of the model, its checkpoint or
its parameter count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SAMPLERS = ('ddpm', 'ddim')
PREDICTIONS = ('epsilon', 'sample')
TEXT_EMBEDDING_DIM = 384  # all-MiniLM-L6-v2


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'octo config: {name} must be a positive integer, got {value!r}')
    return value


@dataclass
class OctoConfig:
    """Sizes and options of an Octo-style policy; invalid values fail here, at load.

    Image tokens: ``len(stem_features)`` stride-2 3x3 weight-standardised convs (GroupNorm,
    ReLU), then a ``patch_size / 2**len(stem_features)`` conv to ``stem_out_features``
    channels, flattened and projected to ``width``; ``(image_size / patch_size)**2`` tokens
    per camera and timestep, each camera with its own stem. See the module docstring for
    the diffusion options.
    """

    action_space: str = 'arm7'
    chunk_length: int = 4            # Octo's action horizon
    camera_names: tuple = ('front',)
    image_size: int = 64             # square images, pixels (Octo's primary camera: 256)
    control_period: float = 0.1
    uses_proprio: bool = False
    proprio_dim: int = 7
    history_window: int = 2          # frames seen per prediction (Octo: 2)
    # Observation tokenizers.
    patch_size: int = 16
    stem_features: tuple = (16, 32, 64, 64)
    stem_out_features: int = 64
    language_tokens: int = 1
    # Transformer backbone.
    width: int = 64
    num_layers: int = 2
    num_heads: int = 4
    mlp_dim: int = 256
    readout_tokens: int = 1          # readout tokens per timestep (Octo: 1 for the action)
    # Diffusion action head.
    head_hidden_dim: int = 64
    head_blocks: int = 2
    time_dim: int = 16
    diffusion_steps: int = 20
    sampler: str = 'ddpm'
    ddim_steps: int = 5
    max_action: float = 5.0
    prediction: str = 'epsilon'      # 'epsilon' (Octo) or 'sample' (regress the clean chunk)

    def __post_init__(self) -> None:
        for name in ('chunk_length', 'image_size', 'proprio_dim', 'history_window',
                     'patch_size', 'stem_out_features', 'language_tokens', 'width',
                     'num_layers', 'num_heads', 'mlp_dim', 'readout_tokens',
                     'head_hidden_dim', 'head_blocks', 'time_dim', 'diffusion_steps',
                     'ddim_steps'):
            _positive_int(name, getattr(self, name))
        if not isinstance(self.action_space, str) or not self.action_space:
            raise ValueError('octo config: action_space must be a shipped name or a YAML path, '
                             f'got {self.action_space!r}')
        cams = (self.camera_names,) if isinstance(self.camera_names, str) else self.camera_names
        self.camera_names = tuple(cams)
        if not self.camera_names or not all(isinstance(c, str) and c for c in cams):
            raise ValueError(f'octo config: camera_names must be non-empty strings, got {cams!r}')
        self.stem_features = tuple(self.stem_features)
        for c in self.stem_features:
            _positive_int('stem_features entries', c)
        if not self.stem_features:
            raise ValueError('octo config: stem_features needs at least one conv')
        stride = 2 ** len(self.stem_features)
        if self.patch_size % stride:
            raise ValueError(f'octo config: patch_size {self.patch_size} must be a multiple of '
                             f'2**len(stem_features) = {stride}')
        if self.image_size % self.patch_size:
            raise ValueError(f'octo config: image_size {self.image_size} must be a multiple of '
                             f'patch_size {self.patch_size}')
        if self.width % self.num_heads:
            raise ValueError(f'octo config: width {self.width} must be divisible by '
                             f'num_heads {self.num_heads}')
        if self.time_dim % 2:
            raise ValueError(f'octo config: time_dim must be even, got {self.time_dim}')
        if self.sampler not in SAMPLERS:
            raise ValueError(f'octo config: sampler must be one of {SAMPLERS}, '
                             f'got {self.sampler!r}')
        if self.ddim_steps > self.diffusion_steps:
            raise ValueError(f'octo config: ddim_steps ({self.ddim_steps}) cannot exceed '
                             f'diffusion_steps ({self.diffusion_steps})')
        if self.prediction not in PREDICTIONS:
            raise ValueError(f'octo config: prediction must be one of {PREDICTIONS}, '
                             f'got {self.prediction!r}')
        self.max_action = float(self.max_action)
        if not (math.isfinite(self.max_action) and self.max_action >= 1.0):
            raise ValueError(f'octo config: max_action must be finite and >= 1, '
                             f'got {self.max_action}')
        self.control_period = float(self.control_period)
        if not (math.isfinite(self.control_period) and self.control_period > 0):
            raise ValueError(f'octo config: control_period must be > 0, '
                             f'got {self.control_period}')
        self.uses_proprio = bool(self.uses_proprio)

    @property
    def tokens_per_camera(self) -> int:
        """Patch tokens per camera image."""
        return (self.image_size // self.patch_size) ** 2


# The CPU-friendly size used by tests and the demo (the dataclass defaults, spelled out).
TINY = {
    'image_size': 64,
    'stem_features': (16, 32, 64, 64),
    'stem_out_features': 64,
    'language_tokens': 1,
    'width': 64,
    'num_layers': 2,
    'num_heads': 4,
    'mlp_dim': 256,
    'head_hidden_dim': 64,
    'head_blocks': 2,
    'time_dim': 16,
}

# Octo-Base: ViT-B-sized transformer (12 layers, 768 wide, 12 heads, MLP 3072), SmallStem16
# with Octo's conv widths (32, 96, 192, 384) -> 512 features, 256x256 primary camera,
# readout tokens -> diffusion head (MLP-ResNet, 3 blocks of width 256, 32-d time features).
# OctoPolicy.count_parameters('full') counts the model only: 89.9 M (transformer 85.1 M,
# stem + projection 1.45 M, language projection 1.18 M, embeddings 0.40 M, head 1.80 M)
# against Octo-Base's 93 M; the frozen sentence encoder is not part of it, as Octo's T5
# is not part of its 93 M. Octo-Base also has a 128x128 wrist camera: add one with
# camera_names=('front', 'wrist') (its stem and embeddings add ~1.8 M at 256x256).
FULL = {
    'image_size': 256,
    'stem_features': (32, 96, 192, 384),
    'stem_out_features': 512,
    'language_tokens': 4,
    'width': 768,
    'num_layers': 12,
    'num_heads': 12,
    'mlp_dim': 3072,
    'head_hidden_dim': 256,
    'head_blocks': 3,
    'time_dim': 32,
}

# The shipped simulation policy: front + wrist cameras at 64 px cut into 16x16 patches
# (16 tokens each), proprio token (7 joints + gripper), one frame, 4-step chunks; the
# head regresses clean chunks (a 2,000-step training run leaves epsilon estimates too
# coarse for the near-singular last step of the 20-step cosine schedule).
SIM = {
    'image_size': 64,
    'camera_names': ('front', 'wrist'),
    'patch_size': 16,
    'stem_features': (32, 32, 64, 64),
    'stem_out_features': 64,
    'uses_proprio': True,
    'proprio_dim': 8,
    'history_window': 1,
    'language_tokens': 2,
    'width': 96,
    'num_layers': 3,
    'num_heads': 4,
    'mlp_dim': 256,
    'head_hidden_dim': 128,
    'head_blocks': 3,
    'time_dim': 16,
    'prediction': 'sample',
}
