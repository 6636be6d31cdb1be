"""π₀ / π₀.₅ networks whose parameter names are LeRobot's (``PI0Pytorch`` / ``PI05Pytorch``).

Written for this project from LeRobot 0.6.2's description of the architecture (read, not
copied): a PaliGemma prefix (SigLIP vision tower -> linear projector, Gemma token
embeddings scaled by sqrt(width)) runs once and leaves its keys/values; a Gemma action
expert then attends to them at every flow-matching step. The module tree mirrors
LeRobot's attribute names so that ``state_dict()`` keys (with LeRobot's ``model.`` prefix)
are the checkpoint's tensor names one for one.

Numerics follow the reference's inference path: eager Gemma attention (fp32 softmax,
additive mask of -2.3819763e38), RMSNorm computed in fp32 with ``1 + weight``, rotary
embeddings in fp32 cast to the activation dtype, tanh-approximated GELU, π₀.₅'s adaptive
RMSNorm (``scale, shift, gate`` from the time embedding) with gated residuals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

# The additive mask value LeRobot/openpi use for masked attention logits.
MASK_VALUE = -2.3819763e38
VOCAB_SIZE = 257152


@dataclass(frozen=True)
class GemmaDims:
    """Width/depth of one Gemma stack (LeRobot's ``get_gemma_config`` variants)."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int


@dataclass(frozen=True)
class VisionDims:
    """SigLIP tower size (So400m/14 in every real π₀ / π₀.₅ checkpoint)."""

    width: int = 1152
    depth: int = 27
    mlp_dim: int = 4304
    num_heads: int = 16
    patch_size: int = 14


GEMMA_VARIANTS = {
    'gemma_300m': GemmaDims(1024, 18, 4096, 8, 1, 256),
    'gemma_2b': GemmaDims(2048, 18, 16384, 8, 1, 256),
}


@dataclass(frozen=True)
class PiDims:
    """Everything that fixes tensor shapes and the sampling loop of a π₀ / π₀.₅ model."""

    pi05: bool
    vision: VisionDims
    paligemma: GemmaDims
    expert: GemmaDims
    vocab_size: int
    image_size: int
    chunk_size: int
    max_state_dim: int
    max_action_dim: int
    min_period: float = 4e-3
    max_period: float = 4.0
    projection_dim: int = 2048
    eps: float = 1e-6


# ---------------------------------------------------------------------------- SigLIP
class SiglipEmbeddings(nn.Module):
    """Non-overlapping patches (a strided conv) plus learned absolute positions."""

    def __init__(self, d: VisionDims, image_size: int):
        """Conv patchifier and one position row per patch."""
        super().__init__()
        self.patch_embedding = nn.Conv2d(3, d.width, d.patch_size, stride=d.patch_size)
        self.num_patches = (image_size // d.patch_size) ** 2
        self.position_embedding = nn.Embedding(self.num_patches, d.width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, patches, width)."""
        x = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype))
        return x.flatten(2).transpose(1, 2) + self.position_embedding.weight[None]


class SiglipAttention(nn.Module):
    """Multi-head self-attention with biases, no mask (all patches see all patches)."""

    def __init__(self, d: VisionDims):
        """Four biased projections."""
        super().__init__()
        self.num_heads, self.head_dim = d.num_heads, d.width // d.num_heads
        self.q_proj = nn.Linear(d.width, d.width)
        self.k_proj = nn.Linear(d.width, d.width)
        self.v_proj = nn.Linear(d.width, d.width)
        self.out_proj = nn.Linear(d.width, d.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Self-attention over the patch sequence."""
        b, n, _ = x.shape

        def heads(t):
            return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.head_dim ** -0.5)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class SiglipMlp(nn.Module):
    """fc1 -> tanh-GELU -> fc2."""

    def __init__(self, d: VisionDims):
        """Two biased linears."""
        super().__init__()
        self.fc1 = nn.Linear(d.width, d.mlp_dim)
        self.fc2 = nn.Linear(d.mlp_dim, d.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The feed-forward block."""
        return self.fc2(F.gelu(self.fc1(x), approximate='tanh'))


class SiglipLayer(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, d: VisionDims):
        """LayerNorms (eps 1e-6), attention, MLP."""
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(d.width, eps=1e-6)
        self.self_attn = SiglipAttention(d)
        self.layer_norm2 = nn.LayerNorm(d.width, eps=1e-6)
        self.mlp = SiglipMlp(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Two residual sub-blocks."""
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    """The stack of SigLIP layers."""

    def __init__(self, d: VisionDims):
        """``d.depth`` layers."""
        super().__init__()
        self.layers = nn.ModuleList(SiglipLayer(d) for _ in range(d.depth))


class SiglipTransformer(nn.Module):
    """SigLIP without the pooling head (PaliGemma uses every patch token)."""

    def __init__(self, d: VisionDims, image_size: int):
        """Embeddings, encoder, final LayerNorm."""
        super().__init__()
        self.embeddings = SiglipEmbeddings(d, image_size)
        self.encoder = SiglipEncoder(d)
        self.post_layernorm = nn.LayerNorm(d.width, eps=1e-6)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, patches, width)."""
        x = self.embeddings(pixels)
        for layer in self.encoder.layers:
            x = layer(x)
        return self.post_layernorm(x)


class SiglipVisionTower(nn.Module):
    """Holder giving the ``vision_tower.vision_model.`` prefix of the checkpoints."""

    def __init__(self, d: VisionDims, image_size: int):
        """One SiglipTransformer."""
        super().__init__()
        self.vision_model = SiglipTransformer(d, image_size)


class Projector(nn.Module):
    """PaliGemma's multi-modal projector: one biased linear."""

    def __init__(self, vision_width: int, projection_dim: int):
        """The ``linear`` layer."""
        super().__init__()
        self.linear = nn.Linear(vision_width, projection_dim)


# ----------------------------------------------------------------------------- Gemma
class RmsNorm(nn.Module):
    """Gemma RMSNorm (``x * rsqrt(mean(x²) + eps) * (1 + w)``), or π₀.₅'s adaptive one.

    The adaptive form has no weight: a ``dense`` layer maps the condition to ``scale,
    shift, gate``; the gate multiplies the sub-block's output in the residual.
    """

    def __init__(self, dim: int, eps: float, cond_dim: int | None = None):
        """A ``weight`` (standard) or a ``dense`` layer (adaptive)."""
        super().__init__()
        self.eps = eps
        if cond_dim is None:
            self.weight = nn.Parameter(torch.zeros(dim))
            self.dense = None
        else:
            self.dense = nn.Linear(cond_dim, 3 * dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        """``(normalized x, gate or None)``."""
        variance = torch.mean(torch.square(x.float()), dim=-1, keepdim=True)
        normed = x * torch.rsqrt(variance + self.eps)
        if self.dense is None:
            return (normed * (1.0 + self.weight.float())).type_as(x), None
        if cond is None:
            raise ValueError('an adaptive RMSNorm needs its condition')
        modulation = self.dense(cond.to(self.dense.weight.dtype))
        if x.ndim == 3 and modulation.ndim == 2:
            modulation = modulation[:, None]
        scale, shift, gate = modulation.chunk(3, dim=-1)
        return (normed * (1 + scale.float()) + shift.float()).to(x.dtype), gate.to(x.dtype)


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    """``x + y`` or ``x + y * gate``."""
    return x + y if gate is None else x + y * gate


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """The (-x2, x1) half swap of rotary embeddings."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotary(positions: torch.Tensor, head_dim: int, dtype: torch.dtype, theta: float = 10000.0):
    """``(cos, sin)`` (B, L, head_dim) for integer positions (B, L), computed in fp32."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float()
    inv_freq = 1.0 / (theta ** (exponent / head_dim))
    freqs = positions[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


class GemmaAttention(nn.Module):
    """Grouped-query attention without biases (Gemma: 8 heads, 1 key/value head)."""

    def __init__(self, d: GemmaDims):
        """q/k/v/o projections."""
        super().__init__()
        self.d = d
        self.q_proj = nn.Linear(d.width, d.num_heads * d.head_dim, bias=False)
        self.k_proj = nn.Linear(d.width, d.num_kv_heads * d.head_dim, bias=False)
        self.v_proj = nn.Linear(d.width, d.num_kv_heads * d.head_dim, bias=False)
        self.o_proj = nn.Linear(d.num_heads * d.head_dim, d.width, bias=False)

    def forward(self, x, cos, sin, mask, past=None):
        """Attend to ``past`` (prefix keys/values, already rotated) and ``x`` itself.

        Returns the output and this call's rotated ``(keys, values)``.
        """
        b, n, _ = x.shape
        d = self.d
        q = self.q_proj(x).view(b, n, -1, d.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, -1, d.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, -1, d.head_dim).transpose(1, 2)
        cos, sin = cos[:, None], sin[:, None]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        new_kv = (k, v)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        groups = d.num_heads // d.num_kv_heads
        k = k.repeat_interleave(groups, dim=1) if groups > 1 else k
        v = v.repeat_interleave(groups, dim=1) if groups > 1 else v
        logits = torch.matmul(q, k.transpose(2, 3)) * d.head_dim ** -0.5 + mask
        weights = F.softmax(logits, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(b, n, -1)
        return self.o_proj(out), new_kv


class GemmaMlp(nn.Module):
    """Gated tanh-GELU feed-forward."""

    def __init__(self, d: GemmaDims):
        """gate/up/down projections."""
        super().__init__()
        self.gate_proj = nn.Linear(d.width, d.mlp_dim, bias=False)
        self.up_proj = nn.Linear(d.width, d.mlp_dim, bias=False)
        self.down_proj = nn.Linear(d.mlp_dim, d.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``down(gelu(gate(x)) * up(x))``."""
        return self.down_proj(F.gelu(self.gate_proj(x), approximate='tanh') * self.up_proj(x))


class GemmaLayer(nn.Module):
    """Pre-norm decoder layer; adaptive norms and gated residuals when ``cond_dim`` is set."""

    def __init__(self, d: GemmaDims, eps: float, cond_dim: int | None):
        """Attention, MLP and their two norms."""
        super().__init__()
        self.self_attn = GemmaAttention(d)
        self.mlp = GemmaMlp(d)
        self.input_layernorm = RmsNorm(d.width, eps, cond_dim)
        self.post_attention_layernorm = RmsNorm(d.width, eps, cond_dim)

    def forward(self, x, cos, sin, mask, past=None, cond=None):
        """One layer; returns ``(x, (keys, values))``."""
        h, gate = self.input_layernorm(x, cond)
        h, kv = self.self_attn(h, cos, sin, mask, past)
        x = gated_residual(x, h, gate)
        h, gate = self.post_attention_layernorm(x, cond)
        h = self.mlp(h.to(self.mlp.up_proj.weight.dtype))
        return gated_residual(x, h, gate), kv


class GemmaStack(nn.Module):
    """Gemma decoder layers + final norm (+ the scaled token embedding when ``vocab``)."""

    def __init__(self, d: GemmaDims, eps: float, vocab: int | None, cond_dim: int | None = None):
        """Layers, final norm, optional embedding table."""
        super().__init__()
        self.d = d
        self.embed_tokens = nn.Embedding(vocab, d.width) if vocab else None
        self.layers = nn.ModuleList(GemmaLayer(d, eps, cond_dim) for _ in range(d.depth))
        self.norm = RmsNorm(d.width, eps, cond_dim)

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings times sqrt(width) (rounded to the table's dtype first)."""
        w = self.embed_tokens.weight
        return self.embed_tokens(token_ids) * torch.tensor(self.d.width ** 0.5).to(w.dtype)

    def forward(self, x, positions, mask, past=None, cond=None):
        """Run every layer; returns the final-normed states and each layer's keys/values."""
        x = x.to(self.layers[0].self_attn.q_proj.weight.dtype)
        cos, sin = rotary(positions, self.d.head_dim, x.dtype)
        cache = []
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, cos, sin, mask, None if past is None else past[i], cond)
            cache.append(kv)
        x, _ = self.norm(x, cond)
        return x, cache


class PaliGemmaCore(nn.Module):
    """``paligemma.model``: vision tower, projector, language model."""

    def __init__(self, dims: PiDims):
        """The three parts of PaliGemma."""
        super().__init__()
        self.vision_tower = SiglipVisionTower(dims.vision, dims.image_size)
        self.multi_modal_projector = Projector(dims.vision.width, dims.projection_dim)
        self.language_model = GemmaStack(dims.paligemma, dims.eps, dims.vocab_size)


class PaliGemma(nn.Module):
    """``paligemma``; its ``lm_head`` is tied to the embeddings (handled by the loader)."""

    def __init__(self, dims: PiDims):
        """The core model."""
        super().__init__()
        self.model = PaliGemmaCore(dims)


class Expert(nn.Module):
    """``gemma_expert``: a Gemma stack without embeddings (its LM head is never used)."""

    def __init__(self, dims: PiDims):
        """Adaptive norms for π₀.₅, standard ones for π₀."""
        super().__init__()
        cond = dims.expert.width if dims.pi05 else None
        self.model = GemmaStack(dims.expert, dims.eps, None, cond)


class PaliGemmaWithExpert(nn.Module):
    """``paligemma_with_expert``."""

    def __init__(self, dims: PiDims):
        """Prefix model and action expert."""
        super().__init__()
        self.paligemma = PaliGemma(dims)
        self.gemma_expert = Expert(dims)


# ---------------------------------------------------------------------- π₀ / π₀.₅
def sinusoidal_time(t: torch.Tensor, dim: int, min_period: float, max_period: float):
    """The openpi sine-cosine embedding of flow time t (B,) -> (B, dim), computed in fp64."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    angles = t[:, None] * (1.0 / period * 2 * math.pi)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).to(t.dtype)


def block_mask(pad: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """big_vision's rule: token i sees valid token j when cumsum(blocks)[j] <= [i]."""
    level = torch.cumsum(blocks, dim=1)
    return (level[:, None, :] <= level[:, :, None]) & (pad[:, None, :] & pad[:, :, None])


def additive(mask: torch.Tensor) -> torch.Tensor:
    """Boolean (B, Q, K) -> additive (B, 1, Q, K): 0 where allowed, MASK_VALUE elsewhere."""
    return torch.where(mask[:, None], 0.0, MASK_VALUE)


class PiModel(nn.Module):
    """LeRobot's ``PI0Pytorch`` (``pi05=False``) or ``PI05Pytorch`` (``pi05=True``)."""

    def __init__(self, dims: PiDims):
        """The VLM + expert and the small projections around the expert."""
        super().__init__()
        self.dims = dims
        width = dims.expert.width
        self.paligemma_with_expert = PaliGemmaWithExpert(dims)
        self.action_in_proj = nn.Linear(dims.max_action_dim, width)
        self.action_out_proj = nn.Linear(width, dims.max_action_dim)
        if dims.pi05:
            self.time_mlp_in = nn.Linear(width, width)
            self.time_mlp_out = nn.Linear(width, width)
        else:
            self.state_proj = nn.Linear(dims.max_state_dim, width)
            self.action_time_mlp_in = nn.Linear(2 * width, width)
            self.action_time_mlp_out = nn.Linear(width, width)

    # ------------------------------------------------------------------ prefix
    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> (B, patches, projection_dim), run in the tower's dtype."""
        core = self.paligemma_with_expert.paligemma.model
        tower_dtype = core.multi_modal_projector.linear.weight.dtype
        features = core.vision_tower.vision_model(pixels.to(tower_dtype))
        return core.multi_modal_projector.linear(features).to(pixels.dtype)

    def prefix(self, images, image_masks, token_ids, token_masks):
        """Image tokens then language tokens, all in one bidirectional block."""
        embeddings, pads = [], []
        for pixels, present in zip(images, image_masks, strict=True):
            emb = self.embed_image(pixels)
            embeddings.append(emb)
            pads.append(present[:, None].expand(emb.shape[0], emb.shape[1]))
        lm = self.paligemma_with_expert.paligemma.model.language_model
        text = lm.embed(token_ids)
        dtype = torch.promote_types(embeddings[0].dtype, text.dtype) if embeddings else text.dtype
        embeddings.append(text)
        pads.append(token_masks)
        x = torch.cat([e.to(dtype) for e in embeddings], dim=1)
        pad = torch.cat(pads, dim=1)
        return x, pad, torch.zeros_like(pad, dtype=torch.int64)

    def run_prefix(self, images, image_masks, token_ids, token_masks):
        """The prefix pass: per-layer keys/values and the prefix validity mask."""
        x, pad, blocks = self.prefix(images, image_masks, token_ids, token_masks)
        positions = torch.cumsum(pad, dim=1) - 1
        lm = self.paligemma_with_expert.paligemma.model.language_model
        _, cache = lm(x, positions, additive(block_mask(pad, blocks)))
        return cache, pad

    # ------------------------------------------------------------------ suffix
    def suffix(self, state, x_t, t):
        """Expert inputs for one step: tokens, validity, blocks and the adaRMS condition."""
        d = self.dims
        b = x_t.shape[0]
        time_emb = sinusoidal_time(t, self.action_in_proj.out_features, d.min_period,
                                   d.max_period)
        actions = self.action_in_proj(x_t.to(self.action_in_proj.weight.dtype))
        if d.pi05:
            cond = F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(
                time_emb.to(self.time_mlp_in.weight.dtype)))))
            blocks = [1] + [0] * (d.chunk_size - 1)
            tokens = actions
        else:
            cond = None
            state_emb = self.state_proj(state.to(self.state_proj.weight.dtype))
            time_tokens = time_emb[:, None, :].expand_as(actions)
            fused = torch.cat([actions, time_tokens.to(actions.dtype)], dim=2)
            fused = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(fused)))
            tokens = torch.cat([state_emb[:, None].to(fused.dtype), fused], dim=1)
            blocks = [1, 1] + [0] * (d.chunk_size - 1)
        pad = torch.ones(b, tokens.shape[1], dtype=torch.bool, device=tokens.device)
        blocks = torch.tensor(blocks, device=tokens.device)[None].expand(b, -1)
        return tokens, pad, blocks, cond

    def velocity(self, state, cache, prefix_pad, x_t, t):
        """The expert's velocity v(x_t, t) (B, chunk, max_action_dim) in fp32."""
        tokens, pad, blocks, cond = self.suffix(state, x_t, t)
        b, n = pad.shape
        see_prefix = prefix_pad[:, None, :].expand(b, n, prefix_pad.shape[1])
        mask = torch.cat([see_prefix, block_mask(pad, blocks)], dim=2)
        positions = prefix_pad.sum(dim=-1)[:, None] + torch.cumsum(pad, dim=1) - 1
        expert = self.paligemma_with_expert.gemma_expert.model
        out, _ = expert(tokens, positions, additive(mask), past=cache, cond=cond)
        out = out[:, -self.dims.chunk_size:].to(torch.float32)
        return self.action_out_proj(out.to(self.action_out_proj.weight.dtype)).float()

    @torch.no_grad()
    def sample_actions(self, images, image_masks, token_ids, token_masks, state, noise,
                       num_steps: int) -> torch.Tensor:
        """Euler-integrate dx/dt = v from t = 1 (noise) to t = 0 with dt = -1/num_steps."""
        cache, prefix_pad = self.run_prefix(images, image_masks, token_ids, token_masks)
        dt = -1.0 / num_steps
        x_t = noise
        for step in range(num_steps):
            t = torch.tensor(1.0 + step * dt, dtype=torch.float32,
                             device=noise.device).expand(noise.shape[0])
            x_t = x_t + dt * self.velocity(state, cache, prefix_pad, x_t, t)
        return x_t
