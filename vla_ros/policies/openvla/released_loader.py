"""Load a released-layout OpenVLA directory into this project's model, natively.

The model is built on the meta device (no memory, no random initialisation), each stored
tensor is read from its shard straight into CPU memory (:mod:`safetensors_io`), converted
to the requested dtype, moved to the requested device and assigned in place of its meta
placeholder; only one tensor is in flight at a time besides the growing model, so peak
memory is about the weights at their final dtype. Loading is strict: a tensor missing from
the checkpoint, one the model does not have, or one of the wrong shape is an error listing
them all, before anything is read.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vla_ros.policies.contract import PolicyLoadError
from vla_ros.policies.openvla.configuration_openvla import OpenVlaConfig
from vla_ros.policies.openvla.modeling_openvla import OpenVlaForActionPrediction
from vla_ros.policies.openvla.safetensors_io import (
    TensorEntry,
    checkpoint_tensors,
    read_tensor,
)
from vla_ros.policies.openvla.weight_mapping import (
    NATIVE_ONLY,
    TensorMapping,
    mapping_plan,
    released_shapes,
)

PREPROCESSOR_FILE = 'preprocessor_config.json'
_LISTED = 8  # names shown per problem kind in an error message


def build_on_meta(config: OpenVlaConfig) -> OpenVlaForActionPrediction:
    """The model with every parameter and buffer on the meta device (nothing allocated)."""
    with torch.device('meta'):
        return OpenVlaForActionPrediction(config)


def plan_for(model: OpenVlaForActionPrediction) -> list[TensorMapping]:
    """The released <-> native mapping of ``model``'s state dict."""
    config = model.config
    return mapping_plan(model.state_dict().keys(), config.dino_config.num_hidden_layers,
                        config.siglip_config.num_hidden_layers)


def check_tensors(plan: list[TensorMapping], native_shapes: dict,
                  stored: dict[str, TensorEntry], where: Path) -> None:
    """Every tensor the plan needs is stored with its shape, and nothing else is stored."""
    expected = released_shapes(plan, native_shapes)
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    misshaped = sorted(f'{n} {list(stored[n].shape)} (expected {list(expected[n])})'
                       for n in set(expected) & set(stored) if stored[n].shape != expected[n])
    problems = [f'{len(items)} {what}: {items[:_LISTED]}' + (' ...' if len(items) > _LISTED
                                                              else '')
                for what, items in (('missing', missing), ('unexpected', unexpected),
                                    ('mis-shaped', misshaped)) if items]
    if problems:
        raise PolicyLoadError(f'{where}: the stored weights do not match the configuration; '
                              + '; '.join(problems))


def load_released_weights(model: OpenVlaForActionPrediction, directory: Path,
                          dtype: torch.dtype, device: torch.device) -> OpenVlaForActionPrediction:
    """Fill a meta-device ``model`` from ``directory``'s safetensors, tensor by tensor."""
    plan = plan_for(model)
    native_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    stored = checkpoint_tensors(directory)
    check_tensors(plan, native_shapes, stored, directory)
    state = {}
    for mapping in plan:
        released = [read_tensor(stored[name]) for name in mapping.released]
        for name, tensor in zip(mapping.native, mapping.to_native(released), strict=True):
            if tensor.is_floating_point():
                tensor = tensor.to(dtype)
            state[name] = tensor.to(device)
        del released
    for name in NATIVE_ONLY:  # not stored in the released format; unused at inference
        state[name] = torch.zeros(native_shapes[name], dtype=dtype, device=device)
    model.load_state_dict(state, strict=True, assign=True)
    materialize_buffers(model, device)
    return model


def materialize_buffers(model: torch.nn.Module, device: torch.device) -> None:
    """Recreate the non-persistent buffers (never stored) that are still on the meta device.

    Rotary inverse frequencies stay float32 whatever the weights' dtype, as transformers
    computes them; patch position ids are a range. Anything else left on meta is an error.
    """
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    for module in model.modules():
        if isinstance(module, LlamaRotaryEmbedding) and module.inv_freq.is_meta:
            fresh = LlamaRotaryEmbedding(module.config)
            module.inv_freq = fresh.inv_freq.to(device)
            module.original_inv_freq = fresh.original_inv_freq.to(device)
        position_ids = getattr(module, 'position_ids', None)
        if isinstance(position_ids, torch.Tensor) and position_ids.is_meta:
            module.position_ids = torch.arange(position_ids.shape[-1], device=device).expand(
                position_ids.shape)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise PolicyLoadError(f'loading left tensors uninitialised (meta): {left[:_LISTED]}')


def keep_rotary_float32(model: torch.nn.Module) -> None:
    """Recompute rotary inverse frequencies in float32 after a ``model.to(bfloat16)``.

    ``Module.to(dtype)`` casts buffers too; bf16 frequencies put position 300 several
    degrees off, where transformers (and the released code) keep them in float32.
    """
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    for module in model.modules():
        if isinstance(module, LlamaRotaryEmbedding) and module.inv_freq.dtype != torch.float32:
            fresh = LlamaRotaryEmbedding(module.config)
            device = module.inv_freq.device
            module.inv_freq = fresh.inv_freq.to(device)
            module.original_inv_freq = fresh.original_inv_freq.to(device)


def read_json(file: Path) -> dict | None:
    """A JSON object from ``file``, None if absent; PolicyLoadError if unreadable."""
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding='utf-8'))
    except (OSError, json.JSONDecodeError) as exc:
        raise PolicyLoadError(f'{file}: unreadable: {exc}') from exc
    if not isinstance(data, dict):
        raise PolicyLoadError(f'{file}: expected a JSON object')
    return data


def released_statistics(directory: Path, norm_stats: dict | None):
    """config.json ``norm_stats`` plus dataset_statistics.json; disagreeing entries fail."""
    from vla_ros.actions.normalization import DatasetStatistics

    from_file = read_json(directory / 'dataset_statistics.json')
    if norm_stats is None and from_file is None:
        raise PolicyLoadError(f'{directory}: no norm_stats in config.json and no '
                              f'dataset_statistics.json: actions cannot be unnormalized')
    merged = dict(from_file or {})
    for key, entry in (norm_stats or {}).items():
        if key in merged and _action_stats(merged[key]) != _action_stats(entry):
            raise PolicyLoadError(f'{directory}: statistics {key!r} differ between config.json '
                                  f'norm_stats and dataset_statistics.json')
        merged[key] = entry
    try:
        return DatasetStatistics.from_dict(merged)
    except ValueError as exc:
        raise PolicyLoadError(f'{directory}: bad normalization statistics: {exc}') from exc


def _action_stats(entry) -> dict:
    action = entry.get('action', {}) if isinstance(entry, dict) else {}
    return {k: action.get(k) for k in ('q01', 'q99', 'mask')}


TOKENIZER_FILES = ('tokenizer.json', 'tokenizer.model')


def load_checkpoint_tokenizer(directory: Path):
    """The Llama tokenizer saved beside the weights (tokenizer.json or tokenizer.model)."""
    from transformers import LlamaTokenizer

    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise PolicyLoadError(f'{directory} has no tokenizer ({" or ".join(TOKENIZER_FILES)}): '
                              f'OpenVLA prompts must be tokenized with the checkpoint\'s own')
    try:
        # Every supported llm_backbone_id is a Llama; AutoTokenizer would also read the
        # config.json of model_type "openvla", which transformers does not know.
        return LlamaTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - tokenizer loading raises many types
        raise PolicyLoadError(f'{directory}: the tokenizer does not load: '
                              f'{type(exc).__name__}: {exc}') from exc
