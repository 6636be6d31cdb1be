"""An independent reading of the released OpenVLA checkpoint format, for tests.

Written from the semantics of OpenVLA's released code (Prismatic's HF export on timm
0.9 ViTs and transformers 4.40's Llama) without using any of vla_ros's OpenVLA modules:

* ``released_checkpoint``: random tensors under the names and shapes the released
  ``openvla/openvla-7b`` stores (timm ``VisionTransformer`` modules: fused ``attn.qkv``,
  LayerScale as ``ls1/ls2.scale_factor``, DINOv2's per-patch ``pos_embed`` with
  ``no_embed_class``, SigLIP's ``attn_pool``), plus its config.json fields;
* ``reference_predict_action``: the released ``predict_action`` on them: timm's ViT
  forward up to the second-to-last block, the fused projector, the patches after BOS,
  unconstrained greedy decoding, ``vocab_size - pad_to_multiple_of`` bin decoding and
  q01/q99 unnormalization with the mask.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# Small towers with the real patch size (14) and the real structure.
IMAGE = 56
DINO = dict(width=32, depth=3, heads=2, mlp=128, registers=4, patch=14)
SIGLIP = dict(width=48, depth=3, heads=2, mlp=64, patch=14)
LLAMA = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             vocab_size=32064)
PAD_MULTIPLE = 64
# What transformers 4.40's LlamaConfig() fills in when text_config does not say.
LLAMA_440_DEFAULTS = dict(hidden_act='silu', max_position_embeddings=2048, rms_norm_eps=1e-6,
                          rope_theta=10000.0, bos_token_id=1, eos_token_id=2,
                          tie_word_embeddings=False, attention_bias=False)
DINO_MEAN, DINO_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIGLIP_MEAN, SIGLIP_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def _vit_tensors(prefix: str, spec: dict, gen: torch.Generator, dino: bool) -> dict:
    d, n = spec['width'], (IMAGE // spec['patch']) ** 2

    def r(*shape, scale=0.05):
        return torch.randn(*shape, generator=gen) * scale

    t = {f'{prefix}pos_embed': r(1, n, d, scale=0.5),
         f'{prefix}patch_embed.proj.weight': r(d, 3, spec['patch'], spec['patch']),
         f'{prefix}patch_embed.proj.bias': r(d)}
    if dino:
        t[f'{prefix}cls_token'] = r(1, 1, d, scale=0.5)
        t[f'{prefix}reg_token'] = r(1, spec['registers'], d, scale=0.5)
    for i in range(spec['depth']):
        b = f'{prefix}blocks.{i}.'
        t.update({b + 'norm1.weight': 1 + r(d), b + 'norm1.bias': r(d),
                  b + 'attn.qkv.weight': r(3 * d, d, scale=0.3), b + 'attn.qkv.bias': r(3 * d),
                  b + 'attn.proj.weight': r(d, d, scale=0.3), b + 'attn.proj.bias': r(d),
                  b + 'norm2.weight': 1 + r(d), b + 'norm2.bias': r(d),
                  b + 'mlp.fc1.weight': r(spec['mlp'], d, scale=0.3),
                  b + 'mlp.fc1.bias': r(spec['mlp']),
                  b + 'mlp.fc2.weight': r(d, spec['mlp'], scale=0.3), b + 'mlp.fc2.bias': r(d)})
        if dino:
            t[b + 'ls1.scale_factor'] = 0.5 + r(d)
            t[b + 'ls2.scale_factor'] = 0.5 + r(d)
    t.update({f'{prefix}norm.weight': 1 + r(d), f'{prefix}norm.bias': r(d)})
    if not dino:
        p = f'{prefix}attn_pool.'
        t.update({p + 'latent': r(1, 1, d), p + 'q.weight': r(d, d), p + 'q.bias': r(d),
                  p + 'kv.weight': r(2 * d, d), p + 'kv.bias': r(2 * d),
                  p + 'proj.weight': r(d, d), p + 'proj.bias': r(d),
                  p + 'norm.weight': 1 + r(d), p + 'norm.bias': r(d),
                  p + 'mlp.fc1.weight': r(spec['mlp'], d), p + 'mlp.fc1.bias': r(spec['mlp']),
                  p + 'mlp.fc2.weight': r(d, spec['mlp']), p + 'mlp.fc2.bias': r(d)})
    return t


def released_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float32 tensors under the released names (timm towers, projector, Llama).

    The output head's rows outside the action ids are zero, so unconstrained greedy
    decoding picks action tokens, as a trained OpenVLA does.
    """
    gen = torch.Generator().manual_seed(seed)
    t = {**_vit_tensors('vision_backbone.featurizer.', DINO, gen, dino=True),
         **_vit_tensors('vision_backbone.fused_featurizer.', SIGLIP, gen, dino=False)}
    v, h = DINO['width'] + SIGLIP['width'], LLAMA['hidden_size']
    for name, (out, inp) in {'fc1': (4 * v, v), 'fc2': (h, 4 * v), 'fc3': (h, h)}.items():
        t[f'projector.{name}.weight'] = torch.randn(out, inp, generator=gen) * inp ** -0.5
        t[f'projector.{name}.bias'] = torch.randn(out, generator=gen) * 0.02
    inter, vocab = LLAMA['intermediate_size'], LLAMA['vocab_size']
    m = 'language_model.model.'
    t[m + 'embed_tokens.weight'] = torch.randn(vocab, h, generator=gen) * 0.5
    for i in range(LLAMA['num_hidden_layers']):
        b = f'{m}layers.{i}.'
        for proj in ('q_proj', 'k_proj', 'v_proj', 'o_proj'):
            t[f'{b}self_attn.{proj}.weight'] = torch.randn(h, h, generator=gen) * h ** -0.5
        t[b + 'mlp.gate_proj.weight'] = torch.randn(inter, h, generator=gen) * h ** -0.5
        t[b + 'mlp.up_proj.weight'] = torch.randn(inter, h, generator=gen) * h ** -0.5
        t[b + 'mlp.down_proj.weight'] = torch.randn(h, inter, generator=gen) * inter ** -0.5
        t[b + 'input_layernorm.weight'] = 1 + 0.1 * torch.randn(h, generator=gen)
        t[b + 'post_attention_layernorm.weight'] = 1 + 0.1 * torch.randn(h, generator=gen)
    t[m + 'norm.weight'] = 1 + 0.1 * torch.randn(h, generator=gen)
    head = torch.zeros(vocab, h)
    text_vocab = vocab - PAD_MULTIPLE
    head[text_vocab - 256:text_vocab] = torch.randn(256, h, generator=gen)
    t['language_model.lm_head.weight'] = head
    return t


def norm_stats() -> dict:
    """Two datasets' statistics in the released layout (gripper unnormalized: mask False)."""
    def entry(scale):
        q01 = [-0.03 * scale] * 3 + [-0.2 * scale] * 3 + [0.0]
        q99 = [0.03 * scale] * 3 + [0.2 * scale] * 3 + [1.0]
        return {'action': {'mean': [0.0] * 7, 'std': [0.01] * 7, 'min': q01, 'max': q99,
                           'q01': q01, 'q99': q99, 'mask': [True] * 6 + [False]},
                'proprio': {k: [0.0] * 7 for k in ('mean', 'std', 'min', 'max', 'q01', 'q99')},
                'num_transitions': 1000, 'num_trajectories': 10}
    return {'bridge_orig': entry(1.0), 'fractal20220817_data': entry(2.0)}


def released_config_json() -> dict:
    """config.json as openvla-7b has it, plus the test-only tower sizes of this fixture."""
    return {
        'arch_specifier': 'no-align+fused-gelu-mlp',
        'architectures': ['OpenVLAForActionPrediction'],
        'auto_map': {'AutoConfig': 'configuration_prismatic.OpenVLAConfig',
                     'AutoModelForVision2Seq': 'modeling_prismatic.OpenVLAForActionPrediction'},
        'hf_llm_id': 'meta-llama/Llama-2-7b-hf',
        'image_resize_strategy': 'resize-naive',
        'image_sizes': [IMAGE, IMAGE],
        'llm_backbone_id': 'llama2-7b-pure',
        'llm_max_length': 2048,
        'model_type': 'openvla',
        'n_action_bins': 256,
        'norm_stats': norm_stats(),
        'output_projector_states': False,
        'pad_to_multiple_of': PAD_MULTIPLE,
        'pad_token_id': 32000,
        'text_config': {'model_type': 'llama', 'pad_token_id': 32000, 'torch_dtype': 'bfloat16',
                        **LLAMA},
        'timm_model_ids': ['vit_large_patch14_reg4_dinov2.lvd142m',
                           'vit_so400m_patch14_siglip_224'],
        'timm_override_act_layers': [None, None],
        'torch_dtype': 'bfloat16',
        'transformers_version': '4.40.1',
        'use_fused_vision_backbone': True,
        'vision_backbone_id': 'dinosiglip-vit-so-224px',
        'vla_ros_vision_towers': {
            'image_size': IMAGE,
            'dino': dict(hidden_size=DINO['width'], num_hidden_layers=DINO['depth'],
                         num_attention_heads=DINO['heads'], mlp_ratio=DINO['mlp'] // DINO['width'],
                         patch_size=14, num_register_tokens=4, layer_norm_eps=1e-6,
                         hidden_act='gelu'),
            'siglip': dict(hidden_size=SIGLIP['width'], intermediate_size=SIGLIP['mlp'],
                           num_hidden_layers=SIGLIP['depth'], num_attention_heads=SIGLIP['heads'],
                           patch_size=14, layer_norm_eps=1e-6, hidden_act='gelu')},
    }


def write_released_directory(path: Path, tokenizer_dir: Path, seed: int = 0,
                             dtype=torch.bfloat16, shards: int = 3) -> dict:
    """A released-layout directory: config, sharded safetensors + index, tokenizer, code.

    The Prismatic code files are stand-ins that raise when imported, so a test notices if
    anything runs them. Returns the stored tensors (in ``dtype``).
    """
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.to(dtype).contiguous() for k, v in released_tensors(seed).items()}
    names = list(tensors)
    weight_map = {}
    for k in range(shards):
        part = names[k::shards]
        file = f'model-{k + 1:05d}-of-{shards:05d}.safetensors'
        save_file({n: tensors[n] for n in part}, str(path / file), metadata={'format': 'pt'})
        weight_map.update({n: file for n in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (path / 'model.safetensors.index.json').write_text(
        json.dumps({'metadata': {'total_size': total}, 'weight_map': weight_map}))
    (path / 'config.json').write_text(json.dumps(released_config_json(), indent=2))
    (path / 'dataset_statistics.json').write_text(json.dumps(norm_stats()))
    for code in ('configuration_prismatic.py', 'modeling_prismatic.py',
                 'processing_prismatic.py'):
        (path / code).write_text("raise RuntimeError('released code must not be imported')\n")
    for file in tokenizer_dir.iterdir():
        if file.is_file() and file.name.startswith(('tokenizer', 'special_tokens')):
            (path / file.name).write_bytes(file.read_bytes())
    return tensors


# ------------------------------------------------------------------ reference forward
def _timm_vit(t: dict, prefix: str, spec: dict, x: torch.Tensor, dino: bool) -> torch.Tensor:
    """Timm VisionTransformer.get_intermediate_layers(n={depth - 2}): patch tokens only."""
    b = x.shape[0]
    x = F.conv2d(x, t[prefix + 'patch_embed.proj.weight'], t[prefix + 'patch_embed.proj.bias'],
                 stride=spec['patch']).flatten(2).transpose(1, 2)
    if dino:  # no_embed_class: positions for the patches, then CLS and registers in front
        x = x + t[prefix + 'pos_embed']
        x = torch.cat([t[prefix + 'cls_token'].expand(b, -1, -1),
                       t[prefix + 'reg_token'].expand(b, -1, -1), x], dim=1)
        prefix_tokens = 1 + spec['registers']
    else:
        x = x + t[prefix + 'pos_embed']
        prefix_tokens = 0
    d, heads = spec['width'], spec['heads']
    for i in range(spec['depth'] - 1):  # the output of block depth - 2
        k = f'{prefix}blocks.{i}.'
        h = F.layer_norm(x, (d,), t[k + 'norm1.weight'], t[k + 'norm1.bias'], eps=1e-6)
        qkv = F.linear(h, t[k + 'attn.qkv.weight'], t[k + 'attn.qkv.bias'])
        qkv = qkv.reshape(b, -1, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        q, key, v = qkv[0], qkv[1], qkv[2]
        att = (q @ key.transpose(-2, -1) * (d // heads) ** -0.5).softmax(-1)
        h = (att @ v).transpose(1, 2).reshape(b, -1, d)
        h = F.linear(h, t[k + 'attn.proj.weight'], t[k + 'attn.proj.bias'])
        x = x + (h * t[k + 'ls1.scale_factor'] if dino else h)
        h = F.layer_norm(x, (d,), t[k + 'norm2.weight'], t[k + 'norm2.bias'], eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, t[k + 'mlp.fc1.weight'], t[k + 'mlp.fc1.bias'])),
                     t[k + 'mlp.fc2.weight'], t[k + 'mlp.fc2.bias'])
        x = x + (h * t[k + 'ls2.scale_factor'] if dino else h)
    return x[:, prefix_tokens:]


def reference_pixel_values(rgb: np.ndarray) -> torch.Tensor:
    """Prismatic's processor (resize-naive): PIL bicubic, to_tensor, per-tower normalize."""
    from PIL import Image

    image = Image.fromarray(rgb).resize((IMAGE, IMAGE), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255)
    dino = (x - torch.tensor(DINO_MEAN)[:, None, None]) / torch.tensor(DINO_STD)[:, None, None]
    sig = (x - torch.tensor(SIGLIP_MEAN)[:, None, None]) / torch.tensor(SIGLIP_STD)[:, None, None]
    return torch.cat([dino, sig])[None]  # channel-stacked (1, 6, H, W)


def reference_logits(t: dict, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                     text_config: dict) -> torch.Tensor:
    """Logits (1, L, vocab) of the multimodal forward, patches inserted after BOS."""
    from transformers import LlamaConfig, LlamaForCausalLM

    t = {k: v.float() for k, v in t.items()}
    dino = _timm_vit(t, 'vision_backbone.featurizer.', DINO, pixel_values[:, :3], dino=True)
    sig = _timm_vit(t, 'vision_backbone.fused_featurizer.', SIGLIP, pixel_values[:, 3:],
                    dino=False)
    x = torch.cat([dino, sig], dim=2)
    x = F.gelu(F.linear(x, t['projector.fc1.weight'], t['projector.fc1.bias']))
    x = F.gelu(F.linear(x, t['projector.fc2.weight'], t['projector.fc2.bias']))
    patches = F.linear(x, t['projector.fc3.weight'], t['projector.fc3.bias'])
    config = {**LLAMA_440_DEFAULTS, **{k: v for k, v in text_config.items()
                                       if k not in ('model_type', 'torch_dtype')}}
    llm = LlamaForCausalLM(LlamaConfig(**config)).eval()
    llm.load_state_dict({k[len('language_model.'):]: v for k, v in t.items()
                         if k.startswith('language_model.')}, strict=True)
    embeds = llm.get_input_embeddings()(input_ids)
    embeds = torch.cat([embeds[:, :1], patches, embeds[:, 1:]], dim=1)
    with torch.no_grad():
        return llm(inputs_embeds=embeds, use_cache=False).logits


def reference_predict_action(t: dict, config: dict, input_ids: torch.Tensor, rgb: np.ndarray,
                             unnorm_key: str, space_id: int):
    """The released ``predict_action``: (token ids (7,), unnormalized action (7,))."""
    if int(input_ids[0, -1]) != space_id:
        input_ids = torch.cat([input_ids, torch.tensor([[space_id]])], dim=1)
    pixel_values = reference_pixel_values(rgb)
    stats = config['norm_stats'][unnorm_key]['action']
    dim = len(stats['q01'])
    ids = input_ids
    for _ in range(dim):  # greedy over the whole vocabulary, recomputed (no cache)
        logits = reference_logits(t, ids, pixel_values, config['text_config'])
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    tokens = ids[0, -dim:].numpy()
    vocab = config['text_config']['vocab_size'] - config['pad_to_multiple_of']
    bins = np.linspace(-1, 1, config['n_action_bins'])
    centers = (bins[:-1] + bins[1:]) / 2.0
    normalized = centers[np.clip(vocab - tokens - 1, 0, centers.shape[0] - 1)]
    low, high = np.array(stats['q01']), np.array(stats['q99'])
    action = np.where(stats['mask'], 0.5 * (normalized + 1) * (high - low) + low, normalized)
    return tokens, action
