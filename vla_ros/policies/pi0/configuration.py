"""Configuration of the pi0-style flow-matching policy (pure: no torch).

Sizes follow pi0 (Black et al., 2024; openpi ``pi0.py``/``gemma.py``): a PaliGemma-3B
prefix (SigLIP So400m/14 at 224 px + Gemma-2B, MQA with one 256-wide KV head) and an
action expert with Gemma-300M's layout (width 1024, MLP 4096, same depth and KV shape as
the VLM so that its layers can attend to the VLM's keys and values).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vla_ros.policies.paligemma_sizes import SIGLIP_SO400M_14, SIGLIP_TINY

# Gemma-2B / PaliGemma embedding rows. The full preset keeps the whole table so its layout
# (and parameter count) is PaliGemma's; the offline 32k tokenizer uses the first rows.
PALIGEMMA_VOCAB = 257_152


@dataclass
class Pi0Config:
    """All hyper-parameters of a pi0-style model; validated on construction.

    ``control_period`` is 0.1 s (the simulator's step) although pi0 runs 50 Hz on ALOHA:
    actions here are per-step deltas of the ``arm7`` space, so the period must match the
    rate the demonstrations were recorded at. ``proprio_dim > 0`` adds pi0's state token
    (the runtime must then be given proprioception, e.g. ``use_joint_states:=true``).
    """

    action_space: str = 'arm7'
    chunk_length: int = 50
    control_period: float = 0.1
    camera_names: tuple = ('front',)
    proprio_dim: int = 0
    num_inference_steps: int = 10
    max_token_length: int = 48
    image_size: int = 224
    # SigLIP vision tower.
    patch_size: int = 14
    vision_width: int = 1152
    vision_depth: int = 27
    vision_mlp_dim: int = 4304
    vision_heads: int = 16
    # Gemma language model of the prefix.
    vocab_size: int = PALIGEMMA_VOCAB
    vlm_width: int = 2048
    vlm_depth: int = 18
    vlm_mlp_dim: int = 16_384
    vlm_heads: int = 8
    num_kv_heads: int = 1
    head_dim: int = 256
    # Action expert: same depth, KV heads and head_dim as the VLM (joint attention).
    expert_width: int = 1024
    expert_mlp_dim: int = 4096
    expert_heads: int = 8
    rope_theta: float = 10_000.0
    # Sinusoidal time embedding periods (openpi's posemb_sincos for the flow time).
    time_min_period: float = 4e-3
    time_max_period: float = 4.0

    def __post_init__(self) -> None:
        cams = (self.camera_names,) if isinstance(self.camera_names, str) else self.camera_names
        self.camera_names = tuple(cams)
        if not self.camera_names or not all(isinstance(c, str) and c for c in self.camera_names):
            raise ValueError(f'pi0: camera_names must be non-empty strings, got {cams!r}')
        positive = ('chunk_length', 'num_inference_steps', 'max_token_length', 'image_size',
                    'patch_size', 'vision_width', 'vision_depth', 'vision_mlp_dim',
                    'vision_heads', 'vocab_size', 'vlm_width', 'vlm_depth', 'vlm_mlp_dim',
                    'vlm_heads', 'num_kv_heads', 'head_dim', 'expert_width', 'expert_mlp_dim',
                    'expert_heads')
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'pi0: {name} must be a positive integer, got {value!r}')
        if isinstance(self.proprio_dim, bool) or not isinstance(self.proprio_dim, int) \
                or self.proprio_dim < 0:
            raise ValueError(f'pi0: proprio_dim must be an integer >= 0, got {self.proprio_dim!r}')
        for name in ('control_period', 'rope_theta', 'time_min_period', 'time_max_period'):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f'pi0: {name} must be a positive number, got {value!r}')
        if self.time_min_period >= self.time_max_period:
            raise ValueError('pi0: time_min_period must be < time_max_period')
        if self.image_size % self.patch_size:
            raise ValueError(f'pi0: image_size {self.image_size} is not a multiple of '
                             f'patch_size {self.patch_size}')
        if self.vision_width % self.vision_heads:
            raise ValueError('pi0: vision_width must be divisible by vision_heads')
        for who in ('vlm', 'expert'):
            if getattr(self, f'{who}_heads') % self.num_kv_heads:
                raise ValueError(f'pi0: {who}_heads must be a multiple of num_kv_heads')
        if self.head_dim % 2 or self.expert_width % 2:
            raise ValueError('pi0: head_dim and expert_width must be even (rotary and '
                             'sinusoidal embeddings pair up features)')

    @property
    def num_image_tokens(self) -> int:
        """Prefix tokens per camera image."""
        return (self.image_size // self.patch_size) ** 2


TINY = dict(
    **SIGLIP_TINY, vocab_size=32_000, vlm_width=64, vlm_depth=2, vlm_mlp_dim=128, vlm_heads=4,
    num_kv_heads=1, head_dim=16, expert_width=32, expert_mlp_dim=64, expert_heads=4,
    max_token_length=24,
)
# The defaults are the published size; 'full' states it explicitly for readers.
FULL = dict(
    **SIGLIP_SO400M_14, vocab_size=PALIGEMMA_VOCAB, vlm_width=2048, vlm_depth=18,
    vlm_mlp_dim=16_384, vlm_heads=8,
    num_kv_heads=1, head_dim=256, expert_width=1024, expert_mlp_dim=4096, expert_heads=8,
)
PRESETS = {'tiny': TINY, 'full': FULL}
