"""SmolVLA's network: a truncated SmolVLM2 prefix and an interleaved action expert.

Module and parameter names follow LeRobot's so that ``state_dict()`` keys equal the keys
of a LeRobot ``model.safetensors`` (``model.vlm_with_expert.vlm.model.text_model...``,
``model.vlm_with_expert.lm_expert.layers...``, ``model.state_proj``, ...). The building
blocks (SigLIP-style vision tower, pixel-shuffle connector, Llama layers) are
transformers' SmolVLM / Llama modules; the joint forward pass is written here because
SmolVLA runs them its own way:

- the prefix is ``[image tokens (x sqrt(d)) ..., language tokens (x sqrt(d)), state]``;
  images and language attend to each other bidirectionally, the state token sees them
  and itself; the suffix (one token per action) is causal and sees the whole prefix;
- every VLM layer runs self-attention over the prefix once; its rotated keys and values
  are kept. Expert layer ``i`` either joins layer ``i``'s self-attention (keys/values of
  prefix and suffix concatenated) or, in ``cross_attn`` mode on layers with
  ``i % self_attn_every_n_layers != 0``, projects the prefix's keys/values with its own
  ``k_proj``/``v_proj`` and attends to them only;
- rotary embeddings use a fixed base of 10,000 on first/second halves (not the text
  model's ``rope_theta``), attention is computed in float32 with masked logits set to
  the float32 minimum;
- dtypes may be mixed as in LeRobot (with ``load_vlm_weights``: bfloat16 VLM and expert,
  float32 cross-attention k/v projections, state/action projections and attention
  softmax): every cast LeRobot makes is made at the same place;
- flow matching integrates ``x <- x + dt * v`` from t = 1 (noise) to t = 0 with
  ``dt = -1 / num_steps``; training regresses ``v = noise - actions`` at
  ``x_t = t * noise + (1 - t) * actions``.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from vla_ros.policies.smolvla.configuration import SmolVLAConfig

ROPE_BASE = 10_000


def expert_intermediate_size(width: int, multiplier: int = 4, multiple_of: int = 256) -> int:
    """The expert MLP width LeRobot derives from the expert's hidden size."""
    size = int(multiplier * int(2 * width / 3))
    return multiple_of * ((size + multiple_of - 1) // multiple_of)


def rotate(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x (B, L, H, D) at integer positions (B, L), halves layout."""
    half = x.shape[-1] // 2
    dtype = x.dtype
    x = x.float()
    exponents = (2.0 / x.shape[-1]) * torch.arange(half, dtype=torch.float32, device=x.device)
    radians = positions[..., None].float() / (ROPE_BASE ** exponents)[None, None, :]
    sin, cos = torch.sin(radians)[..., None, :], torch.cos(radians)[..., None, :]
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, second * cos + first * sin], -1).to(dtype)


def sinusoidal_time(time: torch.Tensor, dim: int, min_period: float, max_period: float):
    """Sine-cosine embedding (B, dim) of flow times (B,), computed in float64."""
    if dim % 2:
        raise ValueError(f'time embedding width must be even, got {dim}')
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = time[:, None] * (1.0 / period * 2 * math.pi)
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


def attention_2d(valid: torch.Tensor, block_starts: torch.Tensor) -> torch.Tensor:
    """(B, N, N) mask: token i sees valid token j iff j's block began no later than i's."""
    blocks = torch.cumsum(block_starts.long(), dim=1)
    return (blocks[:, None, :] <= blocks[:, :, None]) & (valid[:, None, :] & valid[:, :, None])


def _attend(query, key, value, mask, heads: int, kv_heads: int):
    """Grouped-query attention in float32; (B, Lq, H, D) x (B, Lk, Hkv, D) -> (B, Lq, H*D)."""
    batch, length, _, dim = key.shape
    groups = heads // kv_heads
    key = key[:, :, :, None, :].expand(batch, length, kv_heads, groups, dim)
    value = value[:, :, :, None, :].expand(batch, length, kv_heads, groups, dim)
    key = key.reshape(batch, length, heads, dim).float().transpose(1, 2)
    value = value.reshape(batch, length, heads, dim)
    logits = torch.matmul(query.float().transpose(1, 2), key.transpose(2, 3)) * dim ** -0.5
    logits = torch.where(mask[:, None], logits, torch.finfo(torch.float32).min)
    probs = torch.softmax(logits, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
    return out.reshape(batch, out.shape[1], heads * dim)


def _project(layer, hidden: torch.Tensor):
    """Pre-norm q, k, v of a Llama layer as (B, L, heads, head_dim)."""
    attn = layer.self_attn
    x = layer.input_layernorm(hidden).to(attn.q_proj.weight.dtype)
    shape = (*x.shape[:-1], -1, attn.head_dim)
    return attn.q_proj(x).view(shape), attn.k_proj(x).view(shape), attn.v_proj(x).view(shape)


def _finish(layer, hidden: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
    """Output projection, residual, post-norm MLP, residual.

    Each sum takes the dtype of the layer's output, as LeRobot's in-place ``+=`` does:
    with a bfloat16 VLM fed float32 prefix embeddings (the state token is float32), the
    residual stream is bfloat16 from the first layer's output on.
    """
    out = layer.self_attn.o_proj(attended.to(layer.self_attn.o_proj.weight.dtype))
    out = (out + hidden).to(out.dtype)
    mlp = layer.mlp(layer.post_attention_layernorm(out))
    return (mlp + out).to(mlp.dtype)


class VLMBody(nn.Module):
    """SmolVLM's ``model``: vision tower, connector and (truncated) text model."""

    def __init__(self, vlm_config, num_layers: int):
        """Build transformers' SmolVLM parts; keep the first ``num_layers`` text layers."""
        super().__init__()
        from transformers import LlamaModel
        from transformers.models.smolvlm.modeling_smolvlm import (
            SmolVLMConnector,
            SmolVLMVisionTransformer,
        )

        self.vision_model = SmolVLMVisionTransformer(vlm_config.vision_config)
        self.connector = SmolVLMConnector(vlm_config)
        self.text_model = LlamaModel(vlm_config.text_config)
        if num_layers > 0:
            self.text_model.layers = self.text_model.layers[:num_layers]
        self.text_model.rotary_emb = None  # SmolVLA rotates with its own fixed base


class VLM(nn.Module):
    """SmolVLMForConditionalGeneration's parameter layout (``model.*``, ``lm_head``)."""

    def __init__(self, vlm_config, num_layers: int):
        """See :class:`VLMBody`; ``lm_head`` is kept only because checkpoints carry it."""
        super().__init__()
        self.config = vlm_config
        self.model = VLMBody(vlm_config, num_layers)
        text = vlm_config.text_config
        self.lm_head = nn.Linear(text.hidden_size, text.vocab_size, bias=False)


class VLMWithExpert(nn.Module):
    """The VLM and the action expert, run layer by layer (see the module docstring)."""

    def __init__(self, config: SmolVLAConfig, vlm_config):
        """Build the VLM and an expert ``expert_width_multiplier`` times narrower."""
        super().__init__()
        from transformers import LlamaModel

        self.vlm = VLM(vlm_config, config.num_vlm_layers)
        text = vlm_config.text_config
        self.num_vlm_layers = len(self.vlm.model.text_model.layers)
        expert_config = copy.deepcopy(text)
        width = int(text.hidden_size * config.expert_width_multiplier)
        expert_config.hidden_size = width
        expert_config.intermediate_size = expert_intermediate_size(width)
        expert_config.num_hidden_layers = self.num_vlm_layers
        if config.num_expert_layers > 0:
            if self.num_vlm_layers % config.num_expert_layers:
                raise ValueError(f'smolvla: {self.num_vlm_layers} VLM layers are not a '
                                 f'multiple of num_expert_layers={config.num_expert_layers}')
            expert_config.num_hidden_layers = config.num_expert_layers
        self.lm_expert = LlamaModel(expert_config)
        self.lm_expert.embed_tokens = None
        self.lm_expert.rotary_emb = None
        self.cross = config.attention_mode == 'cross_attn'
        self.every = config.self_attn_every_n_layers
        kv_width = text.num_key_value_heads * text.head_dim
        self.cross_layers = []  # expert layers whose k/v read the VLM's keys and values
        for index, layer in enumerate(self.lm_expert.layers):
            if self.cross and not self._self_attention(index):
                self.cross_layers.append(layer)
                bias = expert_config.attention_bias
                layer.self_attn.k_proj = nn.Linear(kv_width, kv_width, bias=bias)
                layer.self_attn.v_proj = nn.Linear(kv_width, kv_width, bias=bias)
        self.expert_width = width
        self.heads, self.kv_heads = text.num_attention_heads, text.num_key_value_heads
        self.head_dim = text.head_dim
        self.stride = self.num_vlm_layers // len(self.lm_expert.layers)
        # LeRobot shapes expert layer j by j's parity but runs it by its VLM layer's: with
        # fewer expert layers the two can disagree, which LeRobot cannot run either.
        for index in range(self.num_vlm_layers):
            layer = self.expert_layer(index)
            if layer is not None:
                built = self._self_attention(index // self.stride)
                if built != self._self_attention(index):
                    raise ValueError(f'smolvla: expert layer {index // self.stride} is shaped '
                                     f'for {"self" if built else "cross"}-attention but runs '
                                     f'with VLM layer {index}, which is not (num_expert_layers'
                                     f'={config.num_expert_layers}, self_attn_every_n_layers='
                                     f'{self.every})')

    def set_lerobot_dtypes(self, vlm: torch.dtype, vision: torch.dtype, text: torch.dtype,
                           expert: torch.dtype) -> None:
        """Give each part the dtype LeRobot builds it with (see ``apply_vlm_precision``).

        ``vlm`` is the rest of the VLM (connector, ``lm_head``). The expert is made from a
        copy of the VLM's text config (hence its dtype); the cross-attention layers'
        ``k_proj``/``v_proj`` are new ``nn.Linear`` modules, float32 in any case.
        """
        self.vlm.to(vlm)
        self.vlm.model.vision_model.to(vision)
        self.vlm.model.text_model.to(text)
        # the float32 projections are never cast (a round trip through bfloat16 would
        # round their weights)
        keep = {id(module) for layer in self.cross_layers
                for module in (layer.self_attn.k_proj, layer.self_attn.v_proj)}
        for module in self.lm_expert.modules():
            for param in module.parameters(recurse=False):
                param.data = param.data.to(torch.float32 if id(module) in keep else expert)

    def _self_attention(self, index: int) -> bool:
        return not self.cross or (self.every > 0 and index % self.every == 0)

    def expert_layer(self, index: int):
        """The expert layer paired with VLM layer ``index`` (None between sparse ones)."""
        if self.stride > 0 and index % self.stride:
            return None
        return self.lm_expert.layers[index // self.stride if self.stride > 0 else index]

    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> connector tokens (B, N, text width)."""
        vision = self.vlm.model.vision_model
        dtype = vision.embeddings.patch_embedding.weight.dtype
        hidden = vision(pixel_values=pixels.to(dtype)).last_hidden_state
        return self.vlm.model.connector(hidden)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids -> text embeddings (unscaled)."""
        return self.vlm.model.text_model.embed_tokens(ids)

    def prefix_cache(self, embeds, mask, positions):
        """Run the VLM layers over the prefix; return each layer's rotated (keys, values)."""
        cache = []
        hidden = embeds
        for layer in self.vlm.model.text_model.layers:
            query, key, value = _project(layer, hidden)
            key = rotate(key, positions)
            cache.append((key, value))
            attended = _attend(rotate(query, positions), key, value, mask, self.heads,
                               self.kv_heads)
            hidden = _finish(layer, hidden, attended)
        return cache

    def expert(self, suffix, cache, mask, positions):
        """Run the expert over suffix tokens given the prefix cache; final-normed output.

        ``mask`` is (B, S, P + S) over [prefix; suffix] keys, ``positions`` the suffix's
        positions after the prefix.
        """
        prefix_len = cache[0][0].shape[1]
        hidden = suffix
        for index in range(self.num_vlm_layers):
            layer = self.expert_layer(index)
            if layer is None:
                continue
            prefix_key, prefix_value = cache[index]
            if self._self_attention(index):
                query, key, value = _project(layer, hidden)
                key = torch.cat([prefix_key, rotate(key, positions)], dim=1)
                value = torch.cat([prefix_value, value], dim=1)
                attended = _attend(rotate(query, positions), key, value, mask, self.heads,
                                   self.kv_heads)
            else:
                attn = layer.self_attn
                x = layer.input_layernorm(hidden).to(attn.q_proj.weight.dtype)
                query = attn.q_proj(x).view(*x.shape[:-1], -1, attn.head_dim)
                flat = (*prefix_key.shape[:2], -1)
                key = attn.k_proj(prefix_key.to(attn.k_proj.weight.dtype).reshape(flat))
                value = attn.v_proj(prefix_value.to(attn.v_proj.weight.dtype).reshape(flat))
                key = key.view(*flat[:2], -1, attn.head_dim)
                value = value.view(*flat[:2], -1, attn.head_dim)
                local = positions - positions.min(dim=1, keepdim=True).values
                attended = _attend(rotate(query, local), key, value, mask[:, :, :prefix_len],
                                   self.heads, self.kv_heads)
            hidden = _finish(layer, hidden, attended)
        return self.lm_expert.norm(hidden)


class FlowMatching(nn.Module):
    """LeRobot's ``VLAFlowMatching``: prefix embedding, suffix embedding, sampling, loss."""

    def __init__(self, config: SmolVLAConfig, vlm_config, special_tokens=None):
        """``special_tokens`` = (fake image token id, global image token id) if used."""
        super().__init__()
        self.config = config
        self.vlm_with_expert = VLMWithExpert(config, vlm_config)
        width = self.vlm_with_expert.expert_width
        text_width = vlm_config.text_config.hidden_size
        self.state_proj = nn.Linear(config.max_state_dim, text_width)
        self.action_in_proj = nn.Linear(config.max_action_dim, width)
        self.action_out_proj = nn.Linear(width, config.max_action_dim)
        self.action_time_mlp_in = nn.Linear(2 * width, width)
        self.action_time_mlp_out = nn.Linear(width, width)
        if config.add_image_special_tokens and special_tokens is None:
            raise ValueError('smolvla: add_image_special_tokens needs the tokenizer\'s '
                             '<fake_token_around_image> and <global-img> ids')
        self.special_tokens = special_tokens

    # ------------------------------------------------------------------ prefix
    def _special(self, ids, batch: int, device) -> torch.Tensor:
        return self.vlm_with_expert.embed_tokens(
            torch.tensor(ids, dtype=torch.long, device=device))[None].expand(batch, -1, -1)

    def embed_prefix(self, images, image_valid, token_ids, token_valid, state):
        """Embeddings (B, P, d), validity (B, P) and block starts (B, P) of the prefix."""
        embeds, valid, starts = [], [], []
        batch, device = state.shape[0], state.device

        def add(x, ok):
            embeds.append(x)
            valid.append(ok)
            starts.append(torch.zeros(x.shape[1], dtype=torch.bool, device=device))

        ones = torch.ones
        for pixels, ok in zip(images, image_valid, strict=True):
            if self.config.add_image_special_tokens:
                fake, global_img = self.special_tokens
                add(self._special([fake, global_img], batch, device),
                    ones(batch, 2, dtype=torch.bool, device=device))
            tokens = self.vlm_with_expert.embed_image(pixels)
            tokens = tokens * torch.tensor(tokens.shape[-1] ** 0.5, dtype=tokens.dtype,
                                           device=tokens.device)
            add(tokens, ok[:, None].expand(batch, tokens.shape[1]))
            if self.config.add_image_special_tokens:
                add(self._special([self.special_tokens[0]], batch, device),
                    ones(batch, 1, dtype=torch.bool, device=device))
        text = self.vlm_with_expert.embed_tokens(token_ids)
        add(text * math.sqrt(text.shape[-1]), token_valid)
        proj = self.state_proj
        embeds.append(proj(state.to(proj.weight.dtype))[:, None, :])
        valid.append(ones(batch, 1, dtype=torch.bool, device=device))
        starts.append(ones(1, dtype=torch.bool, device=device))
        embeds, valid = torch.cat(embeds, 1), torch.cat(valid, 1)
        starts = torch.cat(starts)[None].expand(batch, -1)
        short = self.config.prefix_length - embeds.shape[1]
        if short > 0:  # right-pad to a fixed prefix length with invalid tokens
            embeds = F.pad(embeds, (0, 0, 0, short))
            valid = F.pad(valid, (0, short))
            starts = F.pad(starts, (0, short))
        return embeds, valid, starts

    def encode_prefix(self, images, image_valid, token_ids, token_valid, state):
        """The prefix's per-layer key/value cache and its validity (B, P)."""
        embeds, valid, starts = self.embed_prefix(images, image_valid, token_ids, token_valid,
                                                  state)
        mask = attention_2d(valid, starts)
        positions = torch.cumsum(valid.long(), dim=1) - 1
        return self.vlm_with_expert.prefix_cache(embeds, mask, positions), valid

    # ------------------------------------------------------------------ suffix
    def embed_suffix(self, noisy: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """Action tokens: ``mlp_out(silu(mlp_in([action_in(x), time embedding])))``."""
        action = self.action_in_proj(noisy.to(self.action_in_proj.weight.dtype))
        width = self.vlm_with_expert.expert_width
        time_emb = sinusoidal_time(time, width, self.config.min_period, self.config.max_period)
        time_emb = time_emb.to(action.dtype)[:, None, :].expand_as(action)
        hidden = self.action_time_mlp_in(torch.cat([action, time_emb], dim=2))
        return self.action_time_mlp_out(F.silu(hidden))

    def velocity(self, cache, prefix_valid, noisy, time):
        """The flow's velocity (B, T, max_action_dim) in float32 at ``noisy``, ``time``."""
        suffix = self.embed_suffix(noisy, time)
        batch, length = suffix.shape[:2]
        causal = torch.ones(length, length, dtype=torch.bool, device=suffix.device).tril()
        mask = torch.cat([prefix_valid[:, None, :].expand(batch, length, -1),
                          causal[None].expand(batch, -1, -1)], dim=2)
        positions = (prefix_valid.sum(dim=1, keepdim=True)
                     + torch.arange(length, device=suffix.device)[None])
        out = self.vlm_with_expert.expert(suffix, cache, mask, positions)
        out = out[:, -self.config.chunk_size:].float()
        proj = self.action_out_proj
        return F.linear(out, proj.weight.float(), proj.bias.float())

    def sample_actions(self, images, image_valid, token_ids, token_valid, state, noise):
        """Euler-integrate from ``noise`` (t = 1) to actions (t = 0) in ``num_steps``."""
        cache, prefix_valid = self.encode_prefix(images, image_valid, token_ids, token_valid,
                                                 state)
        steps = self.config.num_steps
        dt = -1.0 / steps
        x = noise.float()
        for step in range(steps):
            time = torch.full((x.shape[0],), 1.0 + step * dt, dtype=torch.float32,
                              device=x.device)
            x = x + dt * self.velocity(cache, prefix_valid, x, time)
        return x

    def flow_loss(self, images, image_valid, token_ids, token_valid, state, actions, noise,
                  time):
        """Per-element squared error (B, T, max_action_dim) of the predicted velocity."""
        t = time[:, None, None]
        noisy = t * noise + (1 - t) * actions
        cache, prefix_valid = self.encode_prefix(images, image_valid, token_ids, token_valid,
                                                 state)
        velocity = self.velocity(cache, prefix_valid, noisy, time)
        return F.mse_loss(noise - actions, velocity, reduction='none')


class SmolVLANet(nn.Module):
    """Root module: LeRobot's ``SmolVLAPolicy`` holds the flow model as ``model``."""

    def __init__(self, config: SmolVLAConfig, vlm_config, special_tokens=None):
        """See :class:`FlowMatching`."""
        super().__init__()
        self.model = FlowMatching(config, vlm_config, special_tokens)
