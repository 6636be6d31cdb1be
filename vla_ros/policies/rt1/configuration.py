"""Configuration of the RT-1 policy (a dataclass that validates itself) and its presets.

RT-1 (Brohan et al. 2022) in one paragraph: each camera frame goes through an
ImageNet-style EfficientNet-B3 whose MBConv blocks are each followed by a FiLM layer
conditioned on the instruction embedding; a 1x1 conv maps the last feature map to 512
channels (9x9x512 at 300x300) and a TokenLearner compresses its 81 positions into 8
tokens. The tokens of the last 6 frames (48 tokens) run through a decoder-only
Transformer (8 layers, 8 heads) that is causal over frames, and every action dimension
is a 256-way classification over uniform bins of the action-space bounds.

RT-1 embedded instructions with the Universal Sentence Encoder (512-d); it does not ship
offline, so this family uses the shared all-MiniLM-L6-v2 embedding (384-d, see
:mod:`vla_ros.policies.text`). The encoder is frozen and is not part of the model, its
checkpoint or its parameter count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Every stride-2 stage halves the feature map (floor); there are five of them.
DOWNSAMPLING = 32


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'rt1 config: {name} must be a positive integer, got {value!r}')
    return value


def _fraction(name: str, value, upper: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not (0.0 <= value < upper):
        raise ValueError(f'rt1 config: {name} must be a number in [0, {upper}), got {value!r}')
    return float(value)


@dataclass
class Rt1Config:
    """Sizes and options of an RT-1 policy; invalid values fail here, at load.

    ``width_multiplier``/``depth_multiplier`` scale EfficientNet-B0's channel widths and
    block repeats (B3: 1.2 and 1.4). ``token_dim`` is the channel count of the 1x1 conv
    after the backbone (RT-1: 512); ``width`` is the Transformer's model dimension and
    ``head_dim`` the size of each attention head (RT-1: 512 and 128).
    """

    action_space: str = 'mobile_manipulator'
    camera_names: tuple = ('front',)
    image_size: int = 96               # square images, pixels (RT-1: 300)
    control_period: float = 1.0 / 3.0  # RT-1 runs closed loop at 3 Hz
    num_bins: int = 256
    history_length: int = 6            # frames seen per prediction
    # FiLM-EfficientNet image encoder.
    width_multiplier: float = 0.25
    depth_multiplier: float = 0.5
    drop_connect_rate: float = 0.0     # stochastic depth of the MBConv residuals (B3: 0.2)
    token_dim: int = 64
    # TokenLearner.
    num_tokens: int = 8
    token_learner_hidden: int = 32     # bottleneck of its MLP (RT-1: 64)
    # Decoder-only Transformer.
    width: int = 64
    num_layers: int = 2
    num_heads: int = 4
    head_dim: int = 16
    dropout: float = 0.1

    def __post_init__(self) -> None:
        for name in ('image_size', 'num_bins', 'history_length', 'token_dim', 'num_tokens',
                     'token_learner_hidden', 'width', 'num_layers', 'num_heads', 'head_dim'):
            _positive_int(name, getattr(self, name))
        if not isinstance(self.action_space, str) or not self.action_space:
            raise ValueError('rt1 config: action_space must be a shipped name or a YAML path, '
                             f'got {self.action_space!r}')
        cams = (self.camera_names,) if isinstance(self.camera_names, str) else self.camera_names
        try:
            self.camera_names = tuple(cams)
        except TypeError:
            raise ValueError(f'rt1 config: camera_names must be strings, got {cams!r}') from None
        if not self.camera_names or not all(isinstance(c, str) and c for c in self.camera_names):
            raise ValueError(f'rt1 config: camera_names must be non-empty strings, got {cams!r}')
        if self.num_bins < 2:
            raise ValueError(f'rt1 config: num_bins must be >= 2, got {self.num_bins}')
        if self.image_size < DOWNSAMPLING:
            raise ValueError(f'rt1 config: image_size must be >= {DOWNSAMPLING} (the encoder '
                             f'downsamples by {DOWNSAMPLING}), got {self.image_size}')
        for name in ('width_multiplier', 'depth_multiplier'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not (math.isfinite(value) and 0 < value <= 8):
                raise ValueError(f'rt1 config: {name} must be in (0, 8], got {value!r}')
            setattr(self, name, float(value))
        self.drop_connect_rate = _fraction('drop_connect_rate', self.drop_connect_rate)
        self.dropout = _fraction('dropout', self.dropout)
        self.control_period = float(self.control_period)
        if not (math.isfinite(self.control_period) and self.control_period > 0):
            raise ValueError(f'rt1 config: control_period must be > 0, '
                             f'got {self.control_period}')

    @property
    def feature_map_size(self) -> int:
        """Side of the encoder's square feature map (9 at 300 px, 3 at 96 px)."""
        return self.image_size // DOWNSAMPLING

    @property
    def tokens_per_frame(self) -> int:
        """Transformer tokens contributed by one timestep (all cameras)."""
        return self.num_tokens * len(self.camera_names)

    @property
    def sequence_length(self) -> int:
        """Transformer sequence length: tokens of the whole history."""
        return self.history_length * self.tokens_per_frame


# CPU-friendly size for tests and the demo (the dataclass defaults, spelled out): a narrow,
# shallow EfficientNet at 96x96 (3x3 feature map) and two Transformer layers.
TINY = {
    'image_size': 96,
    'width_multiplier': 0.25,
    'depth_multiplier': 0.5,
    'drop_connect_rate': 0.0,
    'token_dim': 64,
    'token_learner_hidden': 32,
    'width': 64,
    'num_layers': 2,
    'num_heads': 4,
    'head_dim': 16,
}

# The published RT-1: EfficientNet-B3 (width 1.2, depth 1.4, stochastic depth 0.2) at
# 300x300 -> 9x9x512, TokenLearner to 8 tokens (MLP bottleneck 64), Transformer with
# 8 layers, 8 heads of size 128 on 512-d tokens, dropout 0.1. ~35 M parameters.
FULL = {
    'image_size': 300,
    'width_multiplier': 1.2,
    'depth_multiplier': 1.4,
    'drop_connect_rate': 0.2,
    'token_dim': 512,
    'token_learner_hidden': 64,
    'width': 512,
    'num_layers': 8,
    'num_heads': 8,
    'head_dim': 128,
}

PRESETS = {'tiny': TINY, 'full': FULL}
