"""Configuration of the RT-2-style policy (pure: no torch).

RT-2's own VLMs (PaLI-X 55B, PaLM-E 12B) are not open, so the 'full' preset is defined as
the PaliGemma-3B layout (SigLIP So400m/14 at 224 px + Gemma-2B) with its text embeddings
resized to the project's 32k tokenizer: about 2.46 B parameters instead of PaliGemma's
2.92 B, the difference being the 257,152 -> 32,000 embedding rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vla_ros.policies.paligemma_sizes import SIGLIP_SO400M_14, SIGLIP_TINY

PROMPT_TEMPLATE = 'What action should the robot take to {instruction}?'


@dataclass
class Rt2Config:
    """Hyper-parameters of an RT-2-style VLM; validated on construction.

    One action per inference (RT-2 predicts a single step), ``num_bins`` uniform bins
    per dimension over the action-space bounds (RT-1 binning), written as decimal text.
    ``control_period`` is 0.1 s, the simulator's step, because an ``arm7`` action is a
    per-step delta and must mean what it meant in the demonstrations.
    """

    action_space: str = 'arm7'
    control_period: float = 0.1
    camera_names: tuple = ('front',)
    num_bins: int = 256
    prompt_template: str = PROMPT_TEMPLATE
    image_size: int = 224
    # SigLIP vision tower.
    patch_size: int = 14
    vision_width: int = 1152
    vision_depth: int = 27
    vision_mlp_dim: int = 4304
    vision_heads: int = 16
    # Gemma text decoder; vocab_size must equal the tokenizer's length.
    vocab_size: int = 32_000
    text_width: int = 2048
    text_depth: int = 18
    text_mlp_dim: int = 16_384
    text_heads: int = 8
    num_kv_heads: int = 1
    head_dim: int = 256

    def __post_init__(self) -> None:
        cams = (self.camera_names,) if isinstance(self.camera_names, str) else self.camera_names
        self.camera_names = tuple(cams)
        if not self.camera_names or not all(isinstance(c, str) and c for c in self.camera_names):
            raise ValueError(f'rt2: camera_names must be non-empty strings, got {cams!r}')
        positive = ('num_bins', 'image_size', 'patch_size', 'vision_width', 'vision_depth',
                    'vision_mlp_dim', 'vision_heads', 'vocab_size', 'text_width', 'text_depth',
                    'text_mlp_dim', 'text_heads', 'num_kv_heads', 'head_dim')
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'rt2: {name} must be a positive integer, got {value!r}')
        if self.num_bins < 2:
            raise ValueError(f'rt2: num_bins must be >= 2, got {self.num_bins}')
        period = self.control_period
        if not (isinstance(period, (int, float)) and math.isfinite(period) and period > 0):
            raise ValueError(f'rt2: control_period must be a positive number, got {period!r}')
        if not isinstance(self.prompt_template, str) or '{instruction}' not in \
                self.prompt_template:
            raise ValueError('rt2: prompt_template must contain "{instruction}"')
        if self.image_size % self.patch_size:
            raise ValueError(f'rt2: image_size {self.image_size} is not a multiple of '
                             f'patch_size {self.patch_size}')
        if self.vision_width % self.vision_heads or self.text_heads % self.num_kv_heads:
            raise ValueError('rt2: vision_width % vision_heads and text_heads % num_kv_heads '
                             'must be 0')

    @property
    def num_image_tokens(self) -> int:
        """Prompt positions per camera image."""
        return (self.image_size // self.patch_size) ** 2


TINY = dict(
    **SIGLIP_TINY, text_width=64, text_depth=2, text_mlp_dim=128, text_heads=4,
    num_kv_heads=1, head_dim=16,
)
FULL = dict(
    **SIGLIP_SO400M_14, text_width=2048, text_depth=18, text_mlp_dim=16_384, text_heads=8,
    num_kv_heads=1, head_dim=256,
)
PRESETS = {'tiny': TINY, 'full': FULL}
