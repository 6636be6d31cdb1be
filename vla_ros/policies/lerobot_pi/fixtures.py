"""Writers of small LeRobot-layout π₀ / π₀.₅ checkpoints and a tiny Gemma-like tokenizer.

For tests and benchmarks: the file names, JSON step names/order, normalizer state keys
(``<feature>.<stat>``) and tensor names are those LeRobot 0.6.x writes; only the sizes
shrink, through the vla_ros-only ``vla_ros_fixture_dims`` config key (real checkpoints
are always SigLIP-So400m + Gemma-2B + Gemma-300M with a 257,152-token vocabulary).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from vla_ros.policies.lerobot_pi.checkpoint import FIXTURE_DIMS_KEY

TINY_VISION = {'width': 16, 'depth': 1, 'mlp_dim': 32, 'num_heads': 2, 'patch_size': 14}
TINY_PALIGEMMA = {'width': 32, 'depth': 2, 'mlp_dim': 64, 'num_heads': 2, 'num_kv_heads': 1,
                  'head_dim': 8}
TINY_EXPERT = {'width': 16, 'depth': 2, 'mlp_dim': 32, 'num_heads': 2, 'num_kv_heads': 1,
               'head_dim': 8}
SPECIAL_TOKENS = ('<pad>', '<eos>', '<bos>', '<unk>')  # Gemma's ids 0..3
CORPUS = ('pick up the red cube and put it in the bowl', 'open the drawer', 'Task: State: '
          'Action: ; , 0 1 2 3 4 5 6 7 8 9 10 100 127 128 200 255', 'move the arm\n',
          'stack the blue block on the green block', 'close the gripper slowly')


def write_tokenizer(path: str | Path, vocab_size: int = 300) -> Path:
    """A byte-level BPE tokenizer with Gemma's special ids and a ``<bos>`` template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token='<unk>'))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single='<bos> $A', special_tokens=[('<bos>', tok.token_to_id('<bos>'))])
    tok.save(str(path / 'tokenizer.json'))
    (path / 'tokenizer_config.json').write_text(json.dumps({
        'tokenizer_class': 'PreTrainedTokenizerFast', 'bos_token': '<bos>',
        'eos_token': '<eos>', 'pad_token': '<pad>', 'unk_token': '<unk>',
        'model_max_length': 1 << 20}))
    return path


def _stats(dim: int, rng, offset: float) -> dict:
    mean = rng.normal(offset, 0.5, dim)
    std = rng.uniform(0.2, 1.5, dim)
    low, high = mean - 3 * std, mean + 3 * std
    return {'mean': mean, 'std': std, 'min': low, 'max': high,
            'q01': mean - 2.3 * std, 'q99': mean + 2.3 * std}


def _flat(stats: dict) -> dict:
    import torch

    return {f'{key}.{name}': torch.as_tensor(np.asarray(v), dtype=torch.float32)
            for key, sub in stats.items() for name, v in sub.items()}


def write_checkpoint(
    path: str | Path, kind: str = 'pi0', *, vocab_size: int = 300, state_dim: int = 6,
    action_dim: int = 7, cameras: Sequence[str] = ('base_0_rgb', 'left_wrist_0_rgb'),
    image_hw: tuple[int, int] = (48, 64), image_resolution: int = 28, chunk_size: int = 4,
    max_state_dim: int = 8, max_action_dim: int = 8, num_inference_steps: int = 3,
    state_mode: str | None = None, action_mode: str | None = None,
    stats: dict | None = None, relative: bool = False,
    exclude_joints: Sequence[str] = ('gripper',), action_names: Sequence[str] | None = None,
    dims: dict | None = None, seed: int = 0,
    edit_state: Callable[[dict], dict] | None = None, dtype: str = 'float32',
) -> Path:
    """Write a LeRobot-layout checkpoint with random tiny weights; returns ``path``.

    ``edit_state`` may change the state dict (names -> tensors, LeRobot names with the
    ``model.`` prefix) before it is saved; ``stats`` maps feature key -> {stat: array}.
    """
    import torch
    from safetensors.torch import save_file

    from vla_ros.policies.lerobot_pi.modeling import PiModel
    from vla_ros.policies.lerobot_pi.policy import dims_from_config

    if kind not in ('pi0', 'pi05'):
        raise ValueError(kind)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state_mode = state_mode or ('QUANTILES' if kind == 'pi05' else 'MEAN_STD')
    action_mode = action_mode or ('QUANTILES' if kind == 'pi05' else 'MEAN_STD')
    fixture_dims = dims or {'vision': TINY_VISION, 'paligemma': TINY_PALIGEMMA,
                            'expert': TINY_EXPERT, 'vocab_size': vocab_size}
    h, w = image_hw
    inputs = {f'observation.images.{c}': {'type': 'VISUAL', 'shape': [3, h, w]}
              for c in cameras}
    inputs['observation.state'] = {'type': 'STATE', 'shape': [state_dim]}
    outputs = {'action': {'type': 'ACTION', 'shape': [action_dim]}}
    norm_map = {'VISUAL': 'IDENTITY', 'STATE': state_mode, 'ACTION': action_mode}
    config = {
        'type': kind, 'n_obs_steps': 1, 'input_features': inputs, 'output_features': outputs,
        'device': 'cpu', 'use_amp': False, 'paligemma_variant': 'gemma_2b',
        'action_expert_variant': 'gemma_300m', 'dtype': dtype, 'chunk_size': chunk_size,
        'n_action_steps': chunk_size, 'max_state_dim': max_state_dim,
        'max_action_dim': max_action_dim, 'num_inference_steps': num_inference_steps,
        'time_sampling_beta_alpha': 1.5, 'time_sampling_beta_beta': 1.0,
        'time_sampling_scale': 0.999, 'time_sampling_offset': 0.001, 'min_period': 0.004,
        'max_period': 4.0, 'use_relative_actions': relative,
        'relative_exclude_joints': list(exclude_joints),
        'action_feature_names': list(action_names) if action_names else None,
        'rtc_config': None, 'image_resolution': [image_resolution, image_resolution],
        'empty_cameras': 0, 'normalization_mapping': norm_map,
        'tokenizer_max_length': 48 if kind == 'pi0' else 200,
        FIXTURE_DIMS_KEY: fixture_dims}
    (path / 'config.json').write_text(json.dumps(config, indent=2))

    rng = np.random.default_rng(seed)
    stats = stats or {'observation.state': _stats(state_dim, rng, 0.3),
                      'action': _stats(action_dim, rng, -0.2)}
    features = {**inputs, **outputs}
    tokenizer_cfg = {'max_length': config['tokenizer_max_length'], 'task_key': 'task',
                     'padding_side': 'right', 'padding': 'max_length', 'truncation': True,
                     'tokenizer_name': 'google/paligemma-3b-pt-224'}
    relative_cfg = {'enabled': relative, 'exclude_joints': list(exclude_joints),
                    'action_names': list(action_names) if action_names else None}
    normalizer = {'registry_name': 'normalizer_processor',
                  'config': {'eps': 1e-8, 'features': features, 'norm_map': norm_map}}
    device = {'registry_name': 'device_processor', 'config': {'device': 'cpu',
                                                               'float_dtype': None}}
    if kind == 'pi0':
        pre = [{'registry_name': 'rename_observations_processor', 'config': {'rename_map': {}}},
               {'registry_name': 'to_batch_processor', 'config': {}},
               {'registry_name': 'pi0_new_line_processor', 'config': {}},
               {'registry_name': 'tokenizer_processor', 'config': tokenizer_cfg},
               device,
               {'registry_name': 'relative_actions_processor', 'config': relative_cfg},
               normalizer]
    else:
        pre = [{'registry_name': 'rename_observations_processor', 'config': {'rename_map': {}}},
               {'registry_name': 'to_batch_processor', 'config': {}},
               {'registry_name': 'relative_actions_processor', 'config': relative_cfg},
               normalizer,
               {'registry_name': 'pi05_prepare_state_tokenizer_processor_step', 'config': {}},
               {'registry_name': 'tokenizer_processor', 'config': tokenizer_cfg},
               device]
    post = [{'registry_name': 'unnormalizer_processor',
             'config': {'eps': 1e-8, 'features': outputs, 'norm_map': norm_map}},
            {'registry_name': 'absolute_actions_processor', 'config': {'enabled': relative}},
            {'registry_name': 'device_processor', 'config': {'device': 'cpu',
                                                              'float_dtype': None}}]
    for name, steps, flat in (('policy_preprocessor', pre, _flat(stats)),
                              ('policy_postprocessor', post,
                               _flat({'action': stats['action']}))):
        for i, step in enumerate(steps):
            if step['registry_name'] in ('normalizer_processor', 'unnormalizer_processor'):
                step['state_file'] = f'{name}_step_{i}_{step["registry_name"]}.safetensors'
                save_file(flat, str(path / step['state_file']))
        (path / f'{name}.json').write_text(json.dumps({'name': name, 'steps': steps},
                                                      indent=2))

    torch.manual_seed(seed)
    model = PiModel(dims_from_config(config, pi05=kind == 'pi05'))
    with torch.no_grad():  # Gemma RMSNorm weights start at 0 (scale 1 + w): perturb them
        for name, p in model.named_parameters():
            if name.endswith('norm.weight') and ('language_model' in name or
                                                 'gemma_expert' in name):
                p.normal_(0.0, 0.1)
    state = {f'model.{k}': v.detach().clone().contiguous() for k, v in
             model.state_dict().items()}
    # LeRobot's file keeps the tied LM head instead of the embeddings (sorted-name dedup).
    embed = 'model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight'
    state['model.paligemma_with_expert.paligemma.lm_head.weight'] = state.pop(embed)
    if edit_state is not None:
        state = edit_state(state)
    if dtype == 'bfloat16':
        state = {k: v.to(torch.bfloat16) for k, v in state.items()}
    save_file(state, str(path / 'model.safetensors'))
    return path
