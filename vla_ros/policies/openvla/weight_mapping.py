"""Tensor names and layouts: released OpenVLA checkpoints <-> this project's OpenVLA model.

The released ``openvla/openvla-7b`` stores its two vision towers as timm
``VisionTransformer`` modules; this project builds them from transformers'
``Dinov2WithRegistersModel`` and ``SiglipVisionModel``. The projector and the Llama
language model have the same names on both sides. For the towers:

* names differ (``blocks.i.attn.proj`` -> ``encoder.layer.i.attention.o_proj``, ...);
  LayerScale's ``gamma`` is stored as ``ls1/ls2.scale_factor`` (OpenVLA renamed it
  because transformers rewrites parameter names containing "gamma");
* timm fuses query, key and value into one ``attn.qkv`` Linear whose output rows are
  ``[q; k; v]`` (it reshapes the output to (3, heads, head_dim)): split in three;
* DINOv2 (timm ``no_embed_class``) adds its position table to the patches only and then
  prepends CLS and register tokens, so its table has one row per patch. transformers adds
  ``position_embeddings`` after prepending CLS (row 0 belongs to CLS), then inserts the
  registers: a zero row 0 makes the two identical. Writing, a non-zero CLS row is folded
  into the CLS token (CLS + its position is all the model ever sees of either);
* SigLIP's table is (1, N, D) in timm, an (N, D) ``nn.Embedding`` in transformers;
* SigLIP's attention-pooling head (``attn_pool``: latent, q, kv, proj, norm, mlp) maps onto
  ``head`` (probe, ``in_proj`` = [q; kv], out_proj, layernorm, mlp). Prismatic reads the
  second-to-last block, so neither the heads nor the final norms change an action; they are
  mapped anyway so that every stored tensor is accounted for.

DINOv2's ``mask_token`` (used only for masked-image training) has no released counterpart:
loading sets it to zero, writing drops it (:data:`NATIVE_ONLY`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

DINO, SIGLIP = 'vision_backbone.featurizer.', 'vision_backbone.fused_featurizer.'
NATIVE_ONLY = (DINO + 'embeddings.mask_token',)
KINDS = ('copy', 'qkv', 'cls_position', 'squeeze', 'q_kv')


@dataclass(frozen=True)
class TensorMapping:
    """Released tensors <-> native tensors, and how one becomes the other.

    ``kind``: ``copy`` (1 <-> 1), ``qkv`` (fused [q; k; v] <-> 3), ``cls_position``
    ((CLS token, per-patch table) <-> (CLS token, table with a CLS row)), ``squeeze``
    ((1, N, D) <-> (N, D)), ``q_kv`` ((q, [k; v]) <-> fused [q; k; v]).
    """

    released: tuple[str, ...]
    native: tuple[str, ...]
    kind: str = 'copy'

    def to_native(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Released tensors (in ``released`` order) -> native tensors (``native`` order)."""
        if self.kind == 'copy':
            return list(tensors)
        if self.kind == 'qkv':
            return list(tensors[0].chunk(3, dim=0))
        if self.kind == 'cls_position':
            cls, table = tensors
            zero = torch.zeros_like(table[:, :1])
            return [cls, torch.cat([zero, table], dim=1)]
        if self.kind == 'squeeze':
            return [tensors[0].reshape(tensors[0].shape[1:])]
        if self.kind == 'q_kv':
            return [torch.cat(tensors, dim=0)]
        raise ValueError(f'unknown mapping kind {self.kind!r}')

    def to_released(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Native tensors -> released tensors (the inverse of :meth:`to_native`)."""
        if self.kind == 'copy':
            return list(tensors)
        if self.kind == 'qkv':
            return [torch.cat(tensors, dim=0)]
        if self.kind == 'cls_position':
            cls, table = tensors
            return [cls + table[:, :1], table[:, 1:]]
        if self.kind == 'squeeze':
            return [tensors[0][None]]
        if self.kind == 'q_kv':
            width = tensors[0].shape[0] // 3
            return [tensors[0][:width], tensors[0][width:]]
        raise ValueError(f'unknown mapping kind {self.kind!r}')


def _affine(released: str, native: str) -> list[TensorMapping]:
    return [TensorMapping((f'{released}.{p}',), (f'{native}.{p}',)) for p in ('weight', 'bias')]


def _fused_attention(released: str, natives: tuple[str, str, str]) -> list[TensorMapping]:
    return [TensorMapping((f'{released}.{p}',), tuple(f'{n}.{p}' for n in natives), 'qkv')
            for p in ('weight', 'bias')]


def dino_mappings(num_layers: int) -> list[TensorMapping]:
    """Map timm ``vit_large_patch14_reg4_dinov2`` names <-> ``Dinov2WithRegistersModel``."""
    f, n = DINO, DINO
    out = [TensorMapping((f + 'cls_token', f + 'pos_embed'),
                         (n + 'embeddings.cls_token', n + 'embeddings.position_embeddings'),
                         'cls_position'),
           TensorMapping((f + 'reg_token',), (n + 'embeddings.register_tokens',)),
           *_affine(f + 'patch_embed.proj', n + 'embeddings.patch_embeddings.projection')]
    for i in range(num_layers):
        b, layer = f'{f}blocks.{i}.', f'{n}encoder.layer.{i}.'
        attn = layer + 'attention.'
        out += [*_affine(b + 'norm1', layer + 'norm1'),
                *_fused_attention(b + 'attn.qkv', (attn + 'q_proj', attn + 'k_proj',
                                                   attn + 'v_proj')),
                *_affine(b + 'attn.proj', attn + 'o_proj'),
                TensorMapping((b + 'ls1.scale_factor',), (layer + 'layer_scale1.lambda1',)),
                *_affine(b + 'norm2', layer + 'norm2'),
                *_affine(b + 'mlp.fc1', layer + 'mlp.fc1'),
                *_affine(b + 'mlp.fc2', layer + 'mlp.fc2'),
                TensorMapping((b + 'ls2.scale_factor',), (layer + 'layer_scale2.lambda1',))]
    return out + _affine(f + 'norm', n + 'layernorm')


def siglip_mappings(num_layers: int) -> list[TensorMapping]:
    """Map timm ``vit_so400m_patch14_siglip_224`` names <-> ``SiglipVisionModel``."""
    f, n = SIGLIP, SIGLIP
    out = [TensorMapping((f + 'pos_embed',), (n + 'embeddings.position_embedding.weight',),
                         'squeeze'),
           *_affine(f + 'patch_embed.proj', n + 'embeddings.patch_embedding')]
    for i in range(num_layers):
        b, layer = f'{f}blocks.{i}.', f'{n}encoder.layers.{i}.'
        attn = layer + 'self_attn.'
        out += [*_affine(b + 'norm1', layer + 'layer_norm1'),
                *_fused_attention(b + 'attn.qkv', (attn + 'q_proj', attn + 'k_proj',
                                                   attn + 'v_proj')),
                *_affine(b + 'attn.proj', attn + 'out_proj'),
                *_affine(b + 'norm2', layer + 'layer_norm2'),
                *_affine(b + 'mlp.fc1', layer + 'mlp.fc1'),
                *_affine(b + 'mlp.fc2', layer + 'mlp.fc2')]
    pool, head = f + 'attn_pool.', n + 'head.'
    out += [*_affine(f + 'norm', n + 'post_layernorm'),
            TensorMapping((pool + 'latent',), (head + 'probe',)),
            *[TensorMapping((f'{pool}q.{p}', f'{pool}kv.{p}'), (f'{head}attention.in_proj_{p}',),
                            'q_kv') for p in ('weight', 'bias')],
            *_affine(pool + 'proj', head + 'attention.out_proj'),
            *_affine(pool + 'norm', head + 'layernorm'),
            *_affine(pool + 'mlp.fc1', head + 'mlp.fc1'),
            *_affine(pool + 'mlp.fc2', head + 'mlp.fc2')]
    return out


_SAME_NAME = re.compile(r'^(projector\.fc[123]\.|language_model\.)')


def mapping_plan(native_names, dino_layers: int, siglip_layers: int) -> list[TensorMapping]:
    """Every released <-> native mapping for a model whose state dict has ``native_names``.

    The projector and language model keep their names. Fails (ValueError) if a native
    tensor is covered by no mapping, or a mapping names a tensor the model lacks: the plan
    covers the model exactly, so loading can be strict.
    """
    names = list(native_names)
    plan = dino_mappings(dino_layers) + siglip_mappings(siglip_layers)
    plan += [TensorMapping((name,), (name,)) for name in names if _SAME_NAME.match(name)]
    covered = [n for m in plan for n in m.native]
    present = set(names)
    absent = [n for n in covered if n not in present]
    uncovered = sorted(present - set(covered) - set(NATIVE_ONLY))
    if absent or uncovered:
        raise ValueError(f'the released-format mapping does not match this model: mapped but '
                         f'absent {absent[:5]}, present but unmapped {uncovered[:5]} (only the '
                         f'plain Prismatic architecture has a released layout)')
    return plan


def released_shapes(plan: list[TensorMapping], native_shapes: dict) -> dict[str, tuple]:
    """The shape every released tensor must have, derived from the native model's shapes."""
    shapes = {}
    for mapping in plan:
        fakes = [torch.empty(native_shapes[n], device='meta') for n in mapping.native]
        for name, tensor in zip(mapping.released, mapping.to_released(fakes), strict=True):
            shapes[name] = tuple(tensor.shape)
    return shapes
