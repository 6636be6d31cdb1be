"""Writer of tiny SmolVLA checkpoints in LeRobot's layout, independent of vla_ros's model.

Tensor names and shapes are listed here from LeRobot's module structure (SmolVLAPolicy
.model = VLAFlowMatching: vlm_with_expert.{vlm (SmolVLMForConditionalGeneration),
lm_expert (LlamaModel without embed_tokens)}, state_proj, action_in_proj,
action_out_proj, action_time_mlp_in/out), not taken from vla_ros's network, so loading
the result strictly checks vla_ros's names and shapes against them.
"""

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

# The tiny VLM: SigLIP 16 wide, 2 layers, 32 px / 8 px patches (16 patches), scale 2;
# text 32 wide, 6 layers (4 used), 4 heads of 8, 2 KV heads, vocabulary 300.
VISION, V_MLP, V_LAYERS, PATCH, PATCHES = 16, 32, 2, 8, 16
TEXT, T_MLP, HEADS, KV_HEADS, HEAD_DIM, VOCAB = 32, 64, 4, 2, 8, 300
VLM_LAYERS, SCALE = 4, 2
EXPERT = int(TEXT * 0.75)  # expert_width_multiplier 0.75
EXPERT_MLP = 256  # LeRobot's get_intermediate_size(24): 4 * int(2 * 24 / 3) -> multiple of 256
MAX_STATE, MAX_ACTION, CHUNK = 12, 10, 8
STATE_DIM, ACTION_DIM = 7, 7
IMAGE = (3, 24, 32)  # (C, H, W) of the camera feature


def vlm_config() -> dict:
    """SmolVLMConfig kwargs of the tiny VLM (what a SmolVLM2 directory's config.json holds)."""
    return {
        'scale_factor': SCALE, 'image_token_id': 3, 'tie_word_embeddings': False,
        'vision_config': {'hidden_size': VISION, 'intermediate_size': V_MLP,
                          'num_hidden_layers': V_LAYERS, 'num_attention_heads': 2,
                          'image_size': 32, 'patch_size': PATCH},
        'text_config': {'vocab_size': VOCAB, 'hidden_size': TEXT, 'intermediate_size': T_MLP,
                        'num_hidden_layers': 6, 'num_attention_heads': HEADS,
                        'num_key_value_heads': KV_HEADS, 'head_dim': HEAD_DIM,
                        'rms_norm_eps': 1e-5, 'tie_word_embeddings': False,
                        'model_type': 'llama'},
    }


def write_vlm_dir(path: Path) -> Path:
    """A local 'SmolVLM2' directory: config.json + a byte-level tokenizer."""
    from transformers import SmolVLMConfig

    from vla_ros.policies.smolvla.vlm_files import tiny_tokenizer

    path.mkdir(parents=True, exist_ok=True)
    SmolVLMConfig(**vlm_config()).save_pretrained(str(path))
    tiny_tokenizer().save_pretrained(str(path))
    return path


def tensor_shapes(attention_mode: str = 'cross_attn', expert_layers: int = VLM_LAYERS) -> dict:
    """Every tensor of the tiny checkpoint with its shape, named as LeRobot saves them.

    Self-attention every 2nd layer; ``expert_layers`` (LeRobot's num_expert_layers) may be
    fewer than the VLM's, expert layer j then pairing with VLM layer j * stride.
    """
    shapes = {}
    vis = 'model.vlm_with_expert.vlm.model.vision_model.'
    shapes[vis + 'embeddings.patch_embedding.weight'] = (VISION, 3, PATCH, PATCH)
    shapes[vis + 'embeddings.patch_embedding.bias'] = (VISION,)
    shapes[vis + 'embeddings.position_embedding.weight'] = (PATCHES, VISION)
    for i in range(V_LAYERS):
        layer = f'{vis}encoder.layers.{i}.'
        for proj in ('q_proj', 'k_proj', 'v_proj', 'out_proj'):
            shapes[f'{layer}self_attn.{proj}.weight'] = (VISION, VISION)
            shapes[f'{layer}self_attn.{proj}.bias'] = (VISION,)
        for norm in ('layer_norm1', 'layer_norm2'):
            shapes[f'{layer}{norm}.weight'] = shapes[f'{layer}{norm}.bias'] = (VISION,)
        shapes[f'{layer}mlp.fc1.weight'], shapes[f'{layer}mlp.fc1.bias'] = (V_MLP, VISION), \
            (V_MLP,)
        shapes[f'{layer}mlp.fc2.weight'], shapes[f'{layer}mlp.fc2.bias'] = (VISION, V_MLP), \
            (VISION,)
    shapes[vis + 'post_layernorm.weight'] = shapes[vis + 'post_layernorm.bias'] = (VISION,)
    shapes['model.vlm_with_expert.vlm.model.connector.modality_projection.proj.weight'] = \
        (TEXT, VISION * SCALE ** 2)
    text = 'model.vlm_with_expert.vlm.model.text_model.'
    shapes[text + 'embed_tokens.weight'] = (VOCAB, TEXT)
    shapes[text + 'norm.weight'] = (TEXT,)
    shapes['model.vlm_with_expert.vlm.lm_head.weight'] = (VOCAB, TEXT)
    kv = KV_HEADS * HEAD_DIM
    for i in range(VLM_LAYERS):  # only the first num_vlm_layers are kept
        layer = f'{text}layers.{i}.'
        shapes[layer + 'self_attn.q_proj.weight'] = (HEADS * HEAD_DIM, TEXT)
        shapes[layer + 'self_attn.k_proj.weight'] = (kv, TEXT)
        shapes[layer + 'self_attn.v_proj.weight'] = (kv, TEXT)
        shapes[layer + 'self_attn.o_proj.weight'] = (TEXT, HEADS * HEAD_DIM)
        shapes[layer + 'mlp.gate_proj.weight'] = shapes[layer + 'mlp.up_proj.weight'] = \
            (T_MLP, TEXT)
        shapes[layer + 'mlp.down_proj.weight'] = (TEXT, T_MLP)
        shapes[layer + 'input_layernorm.weight'] = (TEXT,)
        shapes[layer + 'post_attention_layernorm.weight'] = (TEXT,)
    expert = 'model.vlm_with_expert.lm_expert.'
    shapes[expert + 'norm.weight'] = (EXPERT,)
    for i in range(expert_layers):
        layer = f'{expert}layers.{i}.'
        # in cross_attn mode, expert layers whose own index is odd read the VLM's keys and
        # values (LeRobot tests the expert layer index; bias=attention_bias, False for Llama)
        cross = attention_mode == 'cross_attn' and i % 2 != 0
        shapes[layer + 'self_attn.q_proj.weight'] = (HEADS * HEAD_DIM, EXPERT)
        shapes[layer + 'self_attn.k_proj.weight'] = (kv, kv if cross else EXPERT)
        shapes[layer + 'self_attn.v_proj.weight'] = (kv, kv if cross else EXPERT)
        shapes[layer + 'self_attn.o_proj.weight'] = (EXPERT, HEADS * HEAD_DIM)
        shapes[layer + 'mlp.gate_proj.weight'] = shapes[layer + 'mlp.up_proj.weight'] = \
            (EXPERT_MLP, EXPERT)
        shapes[layer + 'mlp.down_proj.weight'] = (EXPERT, EXPERT_MLP)
        shapes[layer + 'input_layernorm.weight'] = (EXPERT,)
        shapes[layer + 'post_attention_layernorm.weight'] = (EXPERT,)
    for name, (out, inp) in {'state_proj': (TEXT, MAX_STATE),
                             'action_in_proj': (EXPERT, MAX_ACTION),
                             'action_out_proj': (MAX_ACTION, EXPERT),
                             'action_time_mlp_in': (EXPERT, 2 * EXPERT),
                             'action_time_mlp_out': (EXPERT, EXPERT)}.items():
        shapes[f'model.{name}.weight'], shapes[f'model.{name}.bias'] = (out, inp), (out,)
    return shapes


def make_weights(seed: int = 0, **layout) -> dict:
    """Random weights (std 0.2; norms near 1) for every tensor of :func:`tensor_shapes`."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in tensor_shapes(**layout).items():
        value = torch.randn(shape, generator=gen) * 0.2
        if 'norm' in name and name.endswith('weight'):
            value = value + 1.0
        state[name] = value
    return state


STATS = {
    'observation.state': {'mean': np.linspace(-1, 1, STATE_DIM), 'std': np.linspace(0.5, 2,
                                                                                    STATE_DIM),
                          'q01': np.linspace(-3, -1, STATE_DIM),
                          'q99': np.linspace(1, 4, STATE_DIM),
                          'min': -np.full(STATE_DIM, 5.0), 'max': np.full(STATE_DIM, 5.0)},
    'action': {'mean': np.linspace(-0.5, 0.5, ACTION_DIM), 'std': np.linspace(0.1, 0.7,
                                                                              ACTION_DIM),
               'q01': np.linspace(-2, -1, ACTION_DIM), 'q99': np.linspace(1, 3, ACTION_DIM),
               'min': -np.full(ACTION_DIM, 4.0), 'max': np.full(ACTION_DIM, 4.0)},
}


def lerobot_config(**changes) -> dict:
    """config.json as LeRobot 0.4+ writes it for SmolVLA (training keys included)."""
    config = {
        'type': 'smolvla', 'n_obs_steps': 1,
        'input_features': {
            'observation.state': {'type': 'STATE', 'shape': [STATE_DIM]},
            'observation.images.front': {'type': 'VISUAL', 'shape': list(IMAGE)}},
        'output_features': {'action': {'type': 'ACTION', 'shape': [ACTION_DIM]}},
        'device': 'cpu', 'use_amp': False, 'push_to_hub': True, 'repo_id': None,
        'private': None, 'tags': None, 'license': None,
        'chunk_size': CHUNK, 'n_action_steps': CHUNK,
        'normalization_mapping': {'VISUAL': 'IDENTITY', 'STATE': 'MEAN_STD',
                                  'ACTION': 'MEAN_STD'},
        'max_state_dim': MAX_STATE, 'max_action_dim': MAX_ACTION,
        'resize_imgs_with_padding': [32, 32], 'empty_cameras': 0, 'adapt_to_pi_aloha': False,
        'use_delta_joint_actions_aloha': False, 'tokenizer_max_length': 48, 'num_steps': 5,
        'use_cache': True, 'freeze_vision_encoder': True, 'train_expert_only': True,
        'train_state_proj': True, 'optimizer_lr': 1e-4, 'optimizer_betas': [0.9, 0.95],
        'optimizer_eps': 1e-8, 'optimizer_weight_decay': 1e-10,
        'optimizer_grad_clip_norm': 10, 'scheduler_warmup_steps': 1000,
        'scheduler_decay_steps': 30000, 'scheduler_decay_lr': 2.5e-6,
        'vlm_model_name': 'HuggingFaceTB/SmolVLM2-500M-Video-Instruct',
        'load_vlm_weights': False, 'add_image_special_tokens': False,
        'attention_mode': 'cross_attn', 'prefix_length': -1, 'pad_language_to': 'max_length',
        'num_expert_layers': -1, 'num_vlm_layers': VLM_LAYERS, 'self_attn_every_n_layers': 2,
        'expert_width_multiplier': 0.75, 'min_period': 4e-3, 'max_period': 4.0,
        'rtc_config': None, 'compile_model': False, 'compile_mode': 'max-autotune',
    }
    config.update(changes)
    return config


def write_checkpoint(path: Path, weights: dict | None = None, config: dict | None = None,
                     norm_map: dict | None = None, max_length: int = 20,
                     stats: dict | None = None) -> Path:
    """A LeRobot SmolVLA checkpoint directory (no VLM files, as on the hub).

    ``stats`` (feature -> {stat: array}) replaces :data:`STATS`, e.g. for other state or
    action widths set in ``config``.
    """
    path.mkdir(parents=True, exist_ok=True)
    config = config or lerobot_config()
    norm_map = norm_map or config['normalization_mapping']
    (path / 'config.json').write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in (weights or make_weights()).items()},
              str(path / 'model.safetensors'))
    features = {**config['input_features'], **config['output_features']}
    flat = {f'{k}.{s}': torch.tensor(np.asarray(v), dtype=torch.float32)
            for k, d in (stats or STATS).items() for s, v in d.items()}
    pre_file = 'policy_preprocessor_step_5_normalizer_processor.safetensors'
    post_file = 'policy_postprocessor_step_0_unnormalizer_processor.safetensors'
    save_file(flat, str(path / pre_file))
    save_file({k: v for k, v in flat.items() if k.startswith('action.')}, str(path / post_file))
    pre = {'name': 'policy_preprocessor', 'steps': [
        {'registry_name': 'rename_observations_processor', 'config': {'rename_map': {}}},
        {'registry_name': 'to_batch_processor', 'config': {}},
        {'registry_name': 'smolvla_new_line_processor', 'config': {}},
        {'registry_name': 'tokenizer_processor', 'config': {
            'max_length': max_length, 'task_key': 'task', 'padding_side': 'right',
            'padding': 'max_length', 'truncation': True,
            'tokenizer_name': 'HuggingFaceTB/SmolVLM2-500M-Video-Instruct'}},
        {'registry_name': 'device_processor', 'config': {'device': 'cpu',
                                                         'float_dtype': None}},
        {'registry_name': 'normalizer_processor', 'config': {
            'eps': 1e-8, 'features': features, 'norm_map': norm_map},
         'state_file': pre_file}]}
    post = {'name': 'policy_postprocessor', 'steps': [
        {'registry_name': 'unnormalizer_processor', 'config': {
            'eps': 1e-8, 'features': config['output_features'], 'norm_map': norm_map},
         'state_file': post_file},
        {'registry_name': 'device_processor', 'config': {'device': 'cpu',
                                                         'float_dtype': None}}]}
    (path / 'policy_preprocessor.json').write_text(json.dumps(pre, indent=2))
    (path / 'policy_postprocessor.json').write_text(json.dumps(post, indent=2))
    return path


def write_action_space(path: Path, dim: int = ACTION_DIM, bound: float = 100.0) -> Path:
    """A joint-like action space YAML wide enough that nothing is clipped."""
    import yaml

    dims = [{'name': f'joint{i}', 'low': -bound, 'high': bound, 'unit': 'rad'}
            for i in range(dim)]
    path.write_text(yaml.safe_dump({'name': 'tiny_joints', 'dimensions': dims}))
    return path
