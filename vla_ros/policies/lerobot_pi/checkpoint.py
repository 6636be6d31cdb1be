"""Reading a LeRobot π₀ / π₀.₅ checkpoint directory: config, processors, weights.

Layout (LeRobot 0.6.x ``save_pretrained`` of the policy and of its two processor
pipelines)::

    config.json                        {"type": "pi0" | "pi05", "input_features": ..., ...}
    model.safetensors                  the policy's state dict ("model.paligemma_with_expert...")
    policy_preprocessor.json           {"name": "policy_preprocessor", "steps": [...]}
    policy_preprocessor_step_<i>_normalizer_processor.safetensors
    policy_postprocessor.json
    policy_postprocessor_step_<i>_unnormalizer_processor.safetensors

Weights are loaded strictly: every tensor the model needs must be in the file with its
exact shape, and every tensor in the file must be one the model uses, apart from the
documented aliases (LeRobot's own loader renames: keys without the ``model.`` prefix,
π₀'s old ``time_mlp_*`` names, the PaliGemma ``lm_head`` tied to the token embeddings,
and the action expert's never-used ``lm_head``; plus SigLIP keys without
``vision_model.``, as newer transformers name them). Only the LeRobot >= 0.4 format
(processor pipelines beside the weights) is read; older checkpoints with normalization
buffers inside ``model.safetensors`` are refused (no ``policy_preprocessor.json``).

The model is built on the meta device and its parameters are assigned from a memory map
of the file (copy-on-write pages: only what a dtype/device conversion touches is read
into memory).
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path
from typing import Any

from vla_ros.policies.contract import PolicyLoadError

CONFIG_FILE = 'config.json'
WEIGHTS_FILE = 'model.safetensors'
PREPROCESSOR_FILE = 'policy_preprocessor.json'
POSTPROCESSOR_FILE = 'policy_postprocessor.json'
TYPES = ('pi0', 'pi05')
# A vla_ros-only config.json key that shrinks the fixed real sizes for test fixtures;
# real LeRobot checkpoints never have it (their sizes come from the variant names).
FIXTURE_DIMS_KEY = 'vla_ros_fixture_dims'
# LeRobot keeps these parameters in fp32 when the rest of the VLM/expert runs in bf16.
FP32_SELECTORS = ('vision_tower', 'multi_modal_projector', 'input_layernorm',
                  'post_attention_layernorm', 'model.norm')
_PREFIX = 'model.'
_EMBED = 'model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight'
_LM_HEAD = 'model.paligemma_with_expert.paligemma.lm_head.weight'
_EXPERT_LM_HEAD = 'model.paligemma_with_expert.gemma_expert.lm_head.weight'
_ST_DTYPES = {'F32': 'float32', 'F16': 'float16', 'BF16': 'bfloat16', 'F64': 'float64',
              'I64': 'int64', 'I32': 'int32', 'U8': 'uint8', 'BOOL': 'bool'}


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``, or a PolicyLoadError naming the file."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PolicyLoadError(f'{path.parent}: no {path.name} ({what})') from None
    except (OSError, json.JSONDecodeError) as exc:
        raise PolicyLoadError(f'{path}: unreadable {what}: {exc}') from exc
    if not isinstance(data, dict):
        raise PolicyLoadError(f'{path}: {what} must be a JSON object')
    return data


def checkpoint_dir(model_path: Any, expected_type: str) -> tuple[Path, dict]:
    """Validate a LeRobot π checkpoint directory; return it and its config.json."""
    if not model_path:
        raise PolicyLoadError(f'{expected_type}: model_path is required (a LeRobot '
                              f'{expected_type} checkpoint directory)')
    path = Path(str(model_path)).expanduser()
    if not path.is_dir():
        raise PolicyLoadError(f'{expected_type}: model_path {str(path)!r} is not a directory')
    config = read_json(path / CONFIG_FILE, 'policy configuration')
    kind = config.get('type')
    if kind != expected_type:
        hint = (' (a vla_ros pi0-style checkpoint: use policy pi0_style)'
                if config.get('family') in ('pi0', 'pi0_style') else '')
        raise PolicyLoadError(f'{path / CONFIG_FILE}: "type" is {kind!r}, expected '
                              f'{expected_type!r}{hint}')
    missing = [f for f in (WEIGHTS_FILE, PREPROCESSOR_FILE, POSTPROCESSOR_FILE)
               if not (path / f).is_file()]
    if missing:
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in ('.bin', '.pt', '.pth'))
        hint = f'; pickle files {pickles} are never loaded' if pickles else ''
        raise PolicyLoadError(f'{path} lacks {missing}{hint}')
    for flag in ('use_visual_memory', 'use_proprioceptive_memory'):
        if config.get(flag):
            raise PolicyLoadError(f'{path}: {flag}=true (π₀.₅ MEM memory) is not supported')
    rtc = config.get('rtc_config')
    if isinstance(rtc, dict) and rtc.get('enabled'):
        raise PolicyLoadError(f'{path}: real-time chunking (rtc_config.enabled) is not '
                              f'supported')
    return path, config


# ------------------------------------------------------------------------ safetensors
class SafetensorsMap:
    """Tensors of a .safetensors file viewed through one copy-on-write memory map."""

    def __init__(self, path: Path):
        """Parse the header; map the file (nothing is read until a tensor is used)."""
        self.path = path
        try:
            with open(path, 'rb') as f:
                (header_len,) = struct.unpack('<Q', f.read(8))
                header = json.loads(f.read(header_len))
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError, struct.error) as exc:
            raise PolicyLoadError(f'{path}: not a readable safetensors file: {exc}') from exc
        header.pop('__metadata__', None)
        self._start = 8 + header_len
        self.entries = header

    def shape(self, name: str) -> tuple[int, ...]:
        """The stored shape of ``name``."""
        return tuple(self.entries[name]['shape'])

    def tensor(self, name: str):
        """``name`` as a tensor backed by the memory map (no copy)."""
        import torch

        entry = self.entries[name]
        if entry['dtype'] not in _ST_DTYPES:
            raise PolicyLoadError(f'{self.path}: tensor {name!r} has unsupported dtype '
                                  f'{entry["dtype"]}')
        dtype = getattr(torch, _ST_DTYPES[entry['dtype']])
        begin, end = entry['data_offsets']
        shape = tuple(entry['shape'])
        if end == begin:
            return torch.empty(shape, dtype=dtype)
        flat = torch.frombuffer(self._map, dtype=dtype, count=(end - begin) // dtype.itemsize,
                                offset=self._start + begin)
        return flat.view(shape)


def _canonical(name: str, pi05: bool) -> str:
    """LeRobot's key fixes: add the ``model.`` prefix; π₀'s ``time_mlp`` -> ``action_time_mlp``.

    Also accepts the SigLIP names of transformers releases after LeRobot's pin
    (``vision_tower.embeddings...`` without ``vision_model.``), the same tensors.
    """
    if not name.startswith(_PREFIX):
        name = _PREFIX + name
    tower = '.vision_tower.'
    if tower in name and tower + 'vision_model.' not in name:
        name = name.replace(tower, tower + 'vision_model.', 1)
    if not pi05:
        for old in ('time_mlp_in.', 'time_mlp_out.'):
            if name.startswith(_PREFIX + old):
                name = _PREFIX + 'action_' + name[len(_PREFIX):]
    return name


def _summary(names, limit: int = 20) -> str:
    names = sorted(names)
    more = f' ... and {len(names) - limit} more' if len(names) > limit else ''
    return ', '.join(names[:limit]) + more


def load_weights(model, path: Path, dtype, device) -> None:
    """Strictly assign ``path``'s tensors to ``model`` (built on the meta device).

    ``dtype`` float32 loads everything in fp32; bfloat16 does what LeRobot does: the
    VLM and expert in bf16 except the vision tower, projector and norms (fp32), the small
    projections around the expert in fp32.
    """
    import torch

    source = SafetensorsMap(path)
    pi05 = model.dims.pi05
    stored: dict[str, str] = {}
    duplicates = []
    for name in source.entries:
        key = _canonical(name, pi05)
        if key in stored:
            duplicates.append(name)
        stored[key] = name
    if duplicates:
        raise PolicyLoadError(f'{path}: tensors map to the same parameter twice: '
                              f'{_summary(duplicates)}')
    expected = {_PREFIX + k: tuple(v.shape) for k, v in model.state_dict().items()}
    # The tied PaliGemma LM head stands for the embeddings when they are not stored.
    if _EMBED not in stored and _LM_HEAD in stored:
        stored[_EMBED] = stored.pop(_LM_HEAD)
    optional = {_LM_HEAD: expected[_EMBED],
                _EXPERT_LM_HEAD: (model.dims.vocab_size, model.dims.expert.width)}
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected) - set(optional))
    mismatched = [f'{k} {source.shape(stored[k])} (model {shape})'
                  for k, shape in {**expected, **optional}.items()
                  if k in stored and source.shape(stored[k]) != shape]
    problems = []
    if missing:
        problems.append(f'missing {len(missing)}: {_summary(missing)}')
    if unexpected:
        problems.append(f'unexpected {len(unexpected)}: {_summary(unexpected)}')
    if mismatched:
        problems.append(f'mis-shaped {len(mismatched)}: {_summary(mismatched)}')
    if problems:
        raise PolicyLoadError(f'{path}: weights do not match the {"pi05" if pi05 else "pi0"} '
                              f'architecture of config.json; ' + '; '.join(problems))
    state = {}
    for key in expected:
        tensor = source.tensor(stored[key])
        target = dtype
        inner = key[len(_PREFIX):]
        if dtype == torch.bfloat16 and (not inner.startswith('paligemma_with_expert.') or
                                        any(s in inner for s in FP32_SELECTORS)):
            target = torch.float32
        if tensor.dtype != target or torch.device(device).type != 'cpu':
            tensor = tensor.to(device=device, dtype=target)
        state[key[len(_PREFIX):]] = tensor
    model.load_state_dict(state, strict=True, assign=True)


# ------------------------------------------------------------------------ processors
def read_pipeline(path: Path, filename: str) -> list[dict]:
    """The ``steps`` of a processor pipeline JSON, each with its state tensors loaded."""
    from safetensors.torch import load_file

    data = read_json(path / filename, 'processor pipeline')
    steps = data.get('steps')
    if not isinstance(steps, list):
        raise PolicyLoadError(f'{path / filename}: no "steps" list')
    out = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            raise PolicyLoadError(f'{path / filename}: step {i} is not an object')
        entry = {'name': step.get('registry_name') or step.get('class', ''),
                 'config': step.get('config') or {}, 'state': {}}
        state_file = step.get('state_file')
        if state_file:
            state_path = path / state_file
            if not state_path.is_file():
                raise PolicyLoadError(f'{path / filename}: step {i} ({entry["name"]}) names '
                                      f'{state_file}, which is missing')
            try:
                entry['state'] = load_file(str(state_path))
            except Exception as exc:  # noqa: BLE001 - safetensors has its own error types
                raise PolicyLoadError(f'{state_path}: unreadable: {exc}') from exc
        out.append(entry)
    return out


def find_step(steps: list[dict], name: str, where: str, required: bool = True) -> dict | None:
    """The one step registered as ``name`` (None, or an error when ``required``)."""
    found = [s for s in steps if s['name'] == name]
    if len(found) > 1:
        raise PolicyLoadError(f'{where}: {len(found)} {name!r} steps, expected one')
    if not found and required:
        raise PolicyLoadError(f'{where}: no {name!r} step (steps: '
                              f'{[s["name"] for s in steps]})')
    return found[0] if found else None
