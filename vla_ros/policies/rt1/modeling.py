"""RT-1 network: FiLM-EfficientNet tokens, TokenLearner, a frame-causal Transformer, heads.

Shapes: a frame is ``(cameras, 3, H, W)``; :meth:`Rt1Model.encode_frames` turns N frames
into ``(N, tokens_per_frame, token_dim)`` (8 tokens per camera), and
:meth:`Rt1Model.decode` turns a history ``(B, F, tokens_per_frame, token_dim)`` into
logits ``(B, action_dim, num_bins)``. Encoding and decoding are separate so that the
policy encodes each camera frame once and keeps its tokens for the next 5 steps, as RT-1
does.

The Transformer follows RT-1's layer: pre-LayerNorm self-attention whose heads may be
wider than ``width / num_heads`` (RT-1: 8 heads of 128 on 512-d tokens) and a
feed-forward that is a single dense layer, with learned position embeddings. Attention
is causal over frames: a token sees every token of its own frame and of earlier frames.
The action logits come from the mean of the newest frame's output tokens, one 256-way
linear head per action dimension; bins a discrete dimension cannot take (terminate has
2 categories) are masked out of its head. (RT-1's code instead appends 11 action-token
positions per frame and reads them through one shared 256-way output layer; with one
head per dimension the sequence stays at 48 image tokens.)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from vla_ros.policies.rt1.configuration import Rt1Config
from vla_ros.policies.rt1.film_efficientnet import FiLM, FilmEfficientNet


class TokenLearner(nn.Module):
    """Compress N spatial tokens into K learned soft selections (Ryoo et al. 2021).

    An MLP on the layer-normalised tokens scores every position for each of the K output
    tokens; a softmax over positions turns the scores into weights that average the input
    tokens.
    """

    def __init__(self, dim: int, num_tokens: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                   nn.Linear(hidden, num_tokens))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, num_tokens, C)."""
        weights = self.score(self.norm(tokens)).softmax(dim=1)  # (B, N, K), sums to 1 over N
        return weights.transpose(1, 2) @ tokens


class SelfAttention(nn.Module):
    """Multi-head self-attention with a free head size (RT-1: 8 x 128 on 512-d tokens)."""

    def __init__(self, width: int, num_heads: int, head_dim: int, dropout: float):
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads, self.head_dim, self.dropout = num_heads, head_dim, dropout
        self.qkv = nn.Linear(width, 3 * inner)
        self.out = nn.Linear(inner, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, width) with a boolean (T, T) mask of allowed attention -> (B, T, width)."""
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, self.head_dim).permute(
            2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, -1))


class DecoderLayer(nn.Module):
    """RT-1's Transformer layer: x + attn(LN(x)), then x + dropout(dense(LN(x)))."""

    def __init__(self, width: int, num_heads: int, head_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = SelfAttention(width, num_heads, head_dim, dropout)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.feed_forward = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Apply the layer to (B, T, width)."""
        x = x + self.attn(self.norm1(x), mask)
        return x + self.drop(self.feed_forward(self.norm2(x)))


def frame_causal_mask(frames: int, tokens_per_frame: int) -> torch.Tensor:
    """Boolean (T, T) mask, True where query token i may attend key token j.

    A token attends to its own frame and to earlier frames, never to later ones.
    """
    frame = torch.arange(frames * tokens_per_frame) // tokens_per_frame
    return frame[None, :] <= frame[:, None]


def valid_token_mask(config: Rt1Config, space) -> torch.Tensor:
    """Boolean (action_dim, num_bins): which tokens each dimension's head may output."""
    mask = torch.ones(space.dim, config.num_bins, dtype=torch.bool)
    for i, dim in enumerate(space.dimensions):
        if dim.kind == 'discrete':
            if dim.num_categories > config.num_bins:
                raise ValueError(f'rt1: dimension {dim.name!r} has {dim.num_categories} '
                                 f'categories, more than num_bins={config.num_bins}')
            mask[i, dim.num_categories:] = False
    return mask


class Rt1Model(nn.Module):
    """The whole RT-1 network (the frozen sentence encoder is outside it)."""

    def __init__(self, config: Rt1Config, space, context_dim: int):
        super().__init__()
        self.config = config
        self.backbone = FilmEfficientNet(config.width_multiplier, config.depth_multiplier,
                                         context_dim, config.drop_connect_rate)
        self.project = nn.Conv2d(self.backbone.out_channels, config.token_dim, 1, bias=False)
        nn.init.kaiming_normal_(self.project.weight, mode='fan_in', nonlinearity='linear')
        self.project_film = FiLM(config.token_dim, context_dim)
        self.token_learner = TokenLearner(config.token_dim, config.num_tokens,
                                          config.token_learner_hidden, config.dropout)
        self.embed = nn.Linear(config.token_dim, config.width)
        self.position = nn.Parameter(torch.randn(config.sequence_length, config.width) * 0.02)
        self.layers = nn.ModuleList(
            DecoderLayer(config.width, config.num_heads, config.head_dim, config.dropout)
            for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(config.width, eps=1e-6)
        self.heads = nn.ModuleList(nn.Linear(config.width, config.num_bins)
                                   for _ in range(space.dim))
        # Derived from the config and action space: not saved with the weights.
        self.register_buffer('attention_mask', frame_causal_mask(
            config.history_length, config.tokens_per_frame), persistent=False)
        self.register_buffer('valid_tokens', valid_token_mask(config, space), persistent=False)

    def image_features(self, images: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """(N, 3, H, W), (N, context_dim) -> (N, token_dim, H/32, W/32) FiLMed features."""
        features = self.project(self.backbone(images, context))
        return features if context is None else self.project_film(features, context)

    def encode_frames(self, images: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """(N, cameras, 3, H, W) frames, (N, context_dim) -> (N, tokens_per_frame, token_dim)."""
        n, cams = images.shape[:2]
        features = self.image_features(images.flatten(0, 1),
                                       context.repeat_interleave(cams, dim=0))
        tokens = self.token_learner(features.flatten(2).transpose(1, 2))  # (N*cams, K, C)
        return tokens.reshape(n, cams * tokens.shape[1], tokens.shape[2])

    def decode(self, history: torch.Tensor) -> torch.Tensor:
        """(B, history_length, tokens_per_frame, token_dim) -> (B, action_dim, num_bins)."""
        b, frames, per_frame, _ = history.shape
        expected = (self.config.history_length, self.config.tokens_per_frame)
        if (frames, per_frame) != expected:
            raise ValueError(f'rt1: history must hold {expected[0]} frames of {expected[1]} '
                             f'tokens, got {frames} x {per_frame}')
        x = self.embed(history.flatten(1, 2)) + self.position
        for layer in self.layers:
            x = layer(x, self.attention_mask)
        newest = self.norm(x[:, -per_frame:]).mean(dim=1)
        logits = torch.stack([head(newest) for head in self.heads], dim=1)
        return logits.masked_fill(~self.valid_tokens, torch.finfo(logits.dtype).min)

    def forward(self, frames: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """(B, F, cameras, 3, H, W) oldest first, (B, context_dim) -> logits.

        Histories shorter than ``history_length`` are padded by repeating their first
        frame, as the policy does at the start of an episode; the padding reuses that
        frame's tokens instead of encoding it again.
        """
        b, f = frames.shape[:2]
        if f > self.config.history_length:
            raise ValueError(f'rt1: at most {self.config.history_length} frames, got {f}')
        tokens = self.encode_frames(frames.flatten(0, 1), context.repeat_interleave(f, dim=0))
        tokens = tokens.view(b, f, *tokens.shape[1:])
        pad = self.config.history_length - f
        if pad:
            tokens = torch.cat([tokens[:, :1].expand(-1, pad, -1, -1), tokens], dim=1)
        return self.decode(tokens)
