"""The pi0-style network: a PaliGemma-style prefix and a flow-matching action expert.

Prefix: SigLIP image tokens (transformers ``SiglipVisionModel``, random init from its
config) projected to the language width, then the instruction's tokens, run through a
Gemma-style decoder. Suffix: an optional state token and one token per action step, run
through the *action expert*, a second, narrower Gemma-style decoder with its own weights.
At every depth the two stacks attend jointly over one key/value sequence, [VLM keys of
the prefix; expert keys of the suffix], under pi0's block-causal mask: blocks are
``prefix (0) < state (1) < actions (2)`` and a token sees every valid token of its own or
an earlier block. Hence the prefix never sees the suffix, its keys and values do not
depend on the noisy actions, and inference computes them once and reuses them for every
integration step (:meth:`Pi0Model.prefix_cache`).

The prefix has no language-model head and its last layer's outputs feed nothing (pi0
reads actions from the expert only), so that layer's output projection, MLP and the final
norm receive no gradient; they are kept so the layout matches PaliGemma's.

The Gemma layers are written here rather than taken from transformers because the joint
attention interleaves the two stacks layer by layer, which transformers' decoder layers
(one monolithic ``forward`` each) do not allow.

Flow-matching convention (the project's seed): ``a_t = (1 - t) a_0 + t a_1`` with noise
``a_0 ~ N(0, I)`` at ``t = 0`` and data ``a_1`` at ``t = 1``; the network predicts the
velocity ``a_1 - a_0``; sampling integrates from ``t = 0`` to ``t = 1``. pi0's paper and
openpi run time the other way (noise at ``t = 1``, velocity ``noise - data``, integration
from 1 to 0); the two are the same model under ``t -> 1 - t`` and a sign flip of ``v``.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vla_ros.policies.pi0.configuration import Pi0Config

PREFIX_BLOCK, STATE_BLOCK, ACTION_BLOCK = 0, 1, 2


def block_causal_mask(block_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Boolean attention mask (B, L, L): query q may read key k.

    ``k`` is readable when it is valid and its block id is <= that of ``q``; every token
    also reads itself, so padded rows stay finite (their outputs are never used, and a
    fully masked row would make NaNs that leak through later layers' values).
    """
    allowed = (block_ids[:, None, :] <= block_ids[:, :, None]) & valid[:, None, :]
    eye = torch.eye(block_ids.shape[1], dtype=torch.bool, device=block_ids.device)
    return allowed | eye


def time_embedding(t: torch.Tensor, dim: int, min_period: float, max_period: float):
    """Sinusoidal embedding (B, dim) of flow times ``t`` (B,), periods geometric in range."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = t.double()[:, None] * (2 * math.pi / period)[None, :]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1).float()


def apply_rotary(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary position embedding of ``x`` (B, H, L, D) at integer ``positions`` (B, L).

    Half-split ("rotate half") pairing, the convention of Gemma checkpoints.
    """
    half = x.shape[-1] // 2
    inv_freq = theta ** (-torch.arange(half, dtype=torch.float32, device=x.device) / half)
    angle = positions.float()[:, None, :, None] * inv_freq  # (B, 1, L, half)
    cos, sin = torch.cos(angle), torch.sin(angle)
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return out.to(x.dtype)


class RMSNorm(nn.Module):
    """Gemma's RMSNorm: the learned scale is stored as an offset from 1 (zero init)."""

    def __init__(self, width: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize the last dimension in float32, then scale."""
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * (1.0 + self.weight.float())).to(x.dtype)


class GemmaLayer(nn.Module):
    """One pre-norm decoder layer: multi-query attention and a GeGLU MLP.

    Split into :meth:`project` (queries, keys, values) and :meth:`finish` (output
    projection and MLP) so that attention can run over keys from another stack.
    """

    def __init__(self, width: int, mlp_dim: int, num_heads: int, num_kv_heads: int,
                 head_dim: int):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.input_norm = RMSNorm(width)
        self.q_proj = nn.Linear(width, num_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(width, num_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(width, num_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * head_dim, width, bias=False)
        self.mlp_norm = RMSNorm(width)
        self.gate_proj = nn.Linear(width, mlp_dim, bias=False)
        self.up_proj = nn.Linear(width, mlp_dim, bias=False)
        self.down_proj = nn.Linear(mlp_dim, width, bias=False)

    def project(self, x: torch.Tensor, positions: torch.Tensor, theta: float):
        """Queries (B, H, L, D) and rotated keys/values (B, KV, L, D) of hidden ``x``."""
        b, n, _ = x.shape
        h = self.input_norm(x)

        def heads(t, count):
            return t.view(b, n, count, self.head_dim).transpose(1, 2)

        q = apply_rotary(heads(self.q_proj(h), self.num_heads), positions, theta)
        k = apply_rotary(heads(self.k_proj(h), self.num_kv_heads), positions, theta)
        return q, k, heads(self.v_proj(h), self.num_kv_heads)

    def finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Residual output projection of the attention (B, H, L, D), then the MLP."""
        x = x + self.o_proj(attended.transpose(1, 2).flatten(2))
        h = self.mlp_norm(x)
        return x + self.down_proj(F.gelu(self.gate_proj(h), approximate='tanh') * self.up_proj(h))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor):
    """Scaled dot-product attention with shared KV heads and a (B, Lq, Lk) bool mask."""
    repeat = q.shape[1] // k.shape[1]
    if repeat > 1:
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])


class GemmaStack(nn.Module):
    """A stack of :class:`GemmaLayer` and the final norm."""

    def __init__(self, depth: int, width: int, mlp_dim: int, num_heads: int,
                 num_kv_heads: int, head_dim: int):
        super().__init__()
        self.layers = nn.ModuleList(
            GemmaLayer(width, mlp_dim, num_heads, num_kv_heads, head_dim) for _ in range(depth))
        self.final_norm = RMSNorm(width)


@dataclass
class PrefixCache:
    """The prefix's per-layer keys/values (B, KV, P, D), validity (B, P) and length (B,).

    ``next_position`` is where the suffix's rotary positions start.
    """

    keys: list
    values: list
    valid: torch.Tensor
    next_position: torch.Tensor


class Pi0Model(nn.Module):
    """VLM prefix + action expert, trained by flow matching (see the module docstring)."""

    def __init__(self, config: Pi0Config, action_dim: int):
        super().__init__()
        from transformers import SiglipVisionConfig, SiglipVisionModel

        self.config, self.action_dim = config, int(action_dim)
        c = config
        self.vision = SiglipVisionModel(SiglipVisionConfig(
            hidden_size=c.vision_width, intermediate_size=c.vision_mlp_dim,
            num_hidden_layers=c.vision_depth, num_attention_heads=c.vision_heads,
            patch_size=c.patch_size, image_size=c.image_size, vision_use_head=False))
        self.projector = nn.Linear(c.vision_width, c.vlm_width)
        self.embed_tokens = nn.Embedding(c.vocab_size, c.vlm_width)
        nn.init.normal_(self.embed_tokens.weight, std=0.02)
        self.vlm = GemmaStack(c.vlm_depth, c.vlm_width, c.vlm_mlp_dim, c.vlm_heads,
                              c.num_kv_heads, c.head_dim)
        self.expert = GemmaStack(c.vlm_depth, c.expert_width, c.expert_mlp_dim, c.expert_heads,
                                 c.num_kv_heads, c.head_dim)
        w = c.expert_width
        self.state_proj = nn.Linear(c.proprio_dim, w) if c.proprio_dim else None
        self.action_in_proj = nn.Linear(self.action_dim, w)
        self.action_time_mlp_in = nn.Linear(2 * w, w)
        self.action_time_mlp_out = nn.Linear(w, w)
        self.action_out_proj = nn.Linear(w, self.action_dim)

    # ------------------------------------------------------------------ embeddings
    def embed_prefix(self, images: torch.Tensor, token_ids: torch.Tensor,
                     token_valid: torch.Tensor):
        """Images (B, C, 3, H, W) and tokens (B, L) -> embeddings (B, P, W), valid (B, P)."""
        b, cams = images.shape[:2]
        features = self.vision(pixel_values=images.flatten(0, 1)).last_hidden_state
        image_tokens = self.projector(features).reshape(b, -1, self.config.vlm_width)
        text = self.embed_tokens(token_ids) * math.sqrt(self.config.vlm_width)
        embeds = torch.cat([image_tokens, text.to(image_tokens.dtype)], dim=1)
        image_valid = torch.ones(image_tokens.shape[:2], dtype=torch.bool, device=images.device)
        return embeds, torch.cat([image_valid, token_valid.bool()], dim=1)

    def embed_suffix(self, noisy_actions: torch.Tensor, t: torch.Tensor,
                     proprio: torch.Tensor | None):
        """[state token;] action tokens fusing (noisy action, flow time) -> (B, S, W)."""
        c = self.config
        actions = self.action_in_proj(noisy_actions)
        times = time_embedding(t, c.expert_width, c.time_min_period, c.time_max_period)
        times = times.to(actions.dtype)[:, None, :].expand_as(actions)
        fused = self.action_time_mlp_in(torch.cat([actions, times], dim=-1))
        tokens = self.action_time_mlp_out(F.silu(fused))
        if self.state_proj is None:
            return tokens
        if proprio is None:
            raise ValueError(f'pi0: the model has a state token (proprio_dim={c.proprio_dim}) '
                             f'but no proprio was given')
        return torch.cat([self.state_proj(proprio.to(tokens.dtype))[:, None], tokens], dim=1)

    def suffix_block_ids(self, device) -> torch.Tensor:
        """Block id of each suffix token (S,): the state token, then the action tokens."""
        actions = torch.full((self.config.chunk_length,), ACTION_BLOCK, device=device)
        if self.state_proj is None:
            return actions
        return torch.cat([torch.tensor([STATE_BLOCK], device=device), actions])

    # ------------------------------------------------------------------ attention passes
    def prefix_cache(self, prefix: torch.Tensor, prefix_valid: torch.Tensor) -> PrefixCache:
        """Run the VLM over the prefix alone and keep every layer's keys and values."""
        theta = self.config.rope_theta
        positions = (prefix_valid.long().cumsum(1) - 1).clamp(min=0)
        mask = block_causal_mask(torch.zeros_like(positions), prefix_valid)
        keys, values, x = [], [], prefix
        layers = self.vlm.layers
        for i, layer in enumerate(layers):
            q, k, v = layer.project(x, positions, theta)
            keys.append(k)
            values.append(v)
            if i + 1 < len(layers):  # the last layer's outputs feed nothing: skip them
                x = layer.finish(x, attend(q, k, v, mask))
        return PrefixCache(keys, values, prefix_valid, prefix_valid.long().sum(1))

    def suffix_mask(self, cache: PrefixCache) -> torch.Tensor:
        """Rows of the block-causal mask for the suffix queries (B, S, P + S)."""
        b, p = cache.valid.shape
        device = cache.valid.device
        suffix_blocks = self.suffix_block_ids(device)
        s = suffix_blocks.shape[0]
        blocks = torch.cat([torch.full((b, p), PREFIX_BLOCK, device=device),
                            suffix_blocks.expand(b, s)], dim=1)
        valid = torch.cat([cache.valid, torch.ones(b, s, dtype=torch.bool, device=device)], 1)
        return block_causal_mask(blocks, valid)[:, p:]

    def velocity_from_cache(self, cache: PrefixCache, suffix: torch.Tensor,
                            mask: torch.Tensor) -> torch.Tensor:
        """Velocity (B, T, A) of the suffix tokens given the cached prefix keys/values."""
        theta = self.config.rope_theta
        positions = cache.next_position[:, None] + torch.arange(suffix.shape[1],
                                                                device=suffix.device)
        x = suffix
        for layer, k_prefix, v_prefix in zip(self.expert.layers, cache.keys,
                                                 cache.values, strict=True):
            q, k, v = layer.project(x, positions, theta)
            k, v = torch.cat([k_prefix, k], dim=2), torch.cat([v_prefix, v], dim=2)
            x = layer.finish(x, attend(q, k, v, mask))
        x = self.expert.final_norm(x)
        return self.action_out_proj(x[:, -self.config.chunk_length:])

    def joint_velocity(self, prefix: torch.Tensor, prefix_valid: torch.Tensor,
                       suffix: torch.Tensor) -> torch.Tensor:
        """Velocity (B, T, A) from one joint pass over [prefix; suffix] (pi0's training pass).

        Each layer projects the prefix with the VLM's weights and the suffix with the
        expert's, and both read the concatenated keys/values under the full block-causal
        mask. Equal to :meth:`velocity_from_cache` because the mask hides the suffix from
        the prefix; the tests check that.
        """
        b, p = prefix_valid.shape
        device = prefix.device
        s = suffix.shape[1]
        blocks = torch.cat([torch.full((b, p), PREFIX_BLOCK, device=device),
                            self.suffix_block_ids(device).expand(b, s)], dim=1)
        valid = torch.cat([prefix_valid, torch.ones(b, s, dtype=torch.bool, device=device)], 1)
        mask = block_causal_mask(blocks, valid)
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        theta = self.config.rope_theta
        xp, xs = prefix, suffix
        depth = len(self.vlm.layers)
        for i, (vlm_layer, expert_layer) in enumerate(
                zip(self.vlm.layers, self.expert.layers, strict=True)):
            qp, kp, vp = vlm_layer.project(xp, positions[:, :p], theta)
            qs, ks, vs = expert_layer.project(xs, positions[:, p:], theta)
            k, v = torch.cat([kp, ks], dim=2), torch.cat([vp, vs], dim=2)
            if i + 1 < depth:  # the prefix's last outputs feed nothing (as in prefix_cache)
                xp = vlm_layer.finish(xp, attend(qp, k, v, mask[:, :p]))
            xs = expert_layer.finish(xs, attend(qs, k, v, mask[:, p:]))
        xs = self.expert.final_norm(xs)
        return self.action_out_proj(xs[:, -self.config.chunk_length:])

    # ------------------------------------------------------------------ flow matching
    def flow_matching_loss(self, images, token_ids, token_valid, actions, valid=None,
                           proprio=None, noise=None, t=None) -> torch.Tensor:
        """Mean over valid steps of ``|| v(a_t, t, c) - (a_1 - a_0) ||^2 / A``.

        ``actions`` (B, T, A) is the data ``a_1``; ``noise`` ``a_0`` and times ``t`` are
        drawn when not given. Times follow pi0's Beta(1.5, 1) emphasis on the noisy end,
        mirrored into this module's convention (``t = 0`` is noise).
        """
        b = actions.shape[0]
        if noise is None:
            noise = torch.randn_like(actions)
        if t is None:
            beta = torch.distributions.Beta(torch.tensor(1.5), torch.tensor(1.0))
            t = 1.0 - (beta.sample((b,)) * 0.999 + 0.001)
        t = t.to(actions.device)
        tt = t.to(actions.dtype)[:, None, None]
        noisy = (1 - tt) * noise + tt * actions
        prefix, prefix_valid = self.embed_prefix(images, token_ids, token_valid)
        velocity = self.joint_velocity(prefix, prefix_valid, self.embed_suffix(noisy, t, proprio))
        error = (velocity.float() - (actions - noise).float()).pow(2).mean(-1)  # (B, T)
        if valid is None:
            return error.mean()
        weights = valid.to(error.dtype)
        return (error * weights).sum() / weights.sum().clamp(min=1.0)

    @torch.no_grad()
    def sample_actions(self, images, token_ids, token_valid, noise, num_steps: int,
                       proprio=None) -> torch.Tensor:
        """Euler-integrate ``da/dt = v`` from the noise at t = 0 to t = 1 -> (B, T, A)."""
        prefix, prefix_valid = self.embed_prefix(images, token_ids, token_valid)
        cache = self.prefix_cache(prefix, prefix_valid)  # once per inference
        mask = self.suffix_mask(cache)
        x, dt = noise, 1.0 / num_steps
        for step in range(num_steps):
            t = torch.full((x.shape[0],), step * dt, device=x.device)
            x = x + dt * self.velocity_from_cache(cache, self.embed_suffix(x, t, proprio), mask)
        return x
