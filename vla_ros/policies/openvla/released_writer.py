"""Write an OpenVLA model in the released ``openvla/openvla-7b`` layout.

For tests (a fixture exactly as a user's download is laid out) and for users who fine-tune
with ``vla-ros train`` and want a directory OpenVLA's own tools can read:

* ``config.json``: the released field names (:func:`released_config`), ``norm_stats``;
* ``model-0000k-of-0000n.safetensors`` + ``model.safetensors.index.json``: the released
  tensor names and layouts (:mod:`weight_mapping`), in ``dtype`` (bfloat16 as released);
* ``dataset_statistics.json``, ``preprocessor_config.json``, ``generation_config.json``;
* the tokenizer, with OpenVLA's added ``<PAD>`` token (id = text vocabulary size).

The Prismatic Python files are not copied (they are not this project's to ship):
``auto_map`` names them in the ``openvla/openvla-7b`` hub repository instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vla_ros.actions.normalization import save_statistics
from vla_ros.policies.openvla.released_format import (
    released_config,
    released_preprocessor_config,
)
from vla_ros.policies.openvla.safetensors_io import write_shards
from vla_ros.policies.openvla.weight_mapping import mapping_plan

PAD_TOKEN = '<PAD>'


def released_state_dict(model, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The model's tensors under their released names and layouts, in ``dtype``."""
    config = model.config
    state = model.state_dict()
    plan = mapping_plan(state.keys(), config.dino_config.num_hidden_layers,
                        config.siglip_config.num_hidden_layers)
    out = {}
    for mapping in plan:
        natives = [state[name].detach().to('cpu') for name in mapping.native]
        for name, tensor in zip(mapping.released, mapping.to_released(natives), strict=True):
            out[name] = tensor.to(dtype).contiguous()
    return out


def _tokenizer_with_pad(tokenizer, text_vocab_size: int):
    """A copy of ``tokenizer`` whose pad token is ``<PAD>`` at id ``text_vocab_size``."""
    import copy

    tokenizer = copy.deepcopy(tokenizer)
    if tokenizer.convert_tokens_to_ids(PAD_TOKEN) == text_vocab_size:
        tokenizer.pad_token = PAD_TOKEN
        return tokenizer
    if len(tokenizer) != text_vocab_size:
        raise ValueError(f'the tokenizer has {len(tokenizer)} tokens; the released layout adds '
                         f'{PAD_TOKEN} as id {text_vocab_size}, which needs exactly '
                         f'{text_vocab_size}')
    tokenizer.add_special_tokens({'pad_token': PAD_TOKEN})
    return tokenizer


def write_released(model, statistics, tokenizer, path: str | Path, dtype: str = 'bfloat16',
                   image_resize_strategy: str = 'resize-naive',
                   max_shard_bytes: int = 5 * 1024 ** 3) -> Path:
    """Write ``model`` (an OpenVlaForActionPrediction) and its companions to ``path``.

    ``statistics`` is a DatasetStatistics (becomes ``norm_stats``). Raises ValueError if
    the model uses anything the released layout cannot express (extra tokens, proprio,
    several cameras, tanh-GELU towers).
    """
    path = Path(path)
    config = model.config
    norm_stats = statistics.to_dict()
    meta = released_config(config, norm_stats, image_resize_strategy, dtype)
    tensors = released_state_dict(model, getattr(torch, dtype))
    path.mkdir(parents=True, exist_ok=True)
    write_shards(tensors, path, max_shard_bytes)
    (path / 'config.json').write_text(json.dumps(meta, indent=2) + '\n')
    (path / 'preprocessor_config.json').write_text(json.dumps(
        released_preprocessor_config(image_resize_strategy, config.image_size), indent=2) + '\n')
    (path / 'generation_config.json').write_text(json.dumps(
        {'bos_token_id': config.text_config.bos_token_id,
         'eos_token_id': config.text_config.eos_token_id,
         'pad_token_id': config.text_vocab_size, 'transformers_version': '4.40.1'},
        indent=2) + '\n')
    save_statistics(path / 'dataset_statistics.json', statistics)
    _tokenizer_with_pad(tokenizer, config.text_vocab_size).save_pretrained(str(path))
    return path
