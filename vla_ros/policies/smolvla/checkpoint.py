"""Strict loading of ``model.safetensors`` into a model built on the meta device.

The model is constructed on torch's meta device (no memory, no random initialisation);
every tensor then comes from the memory-mapped safetensors file, converted to the
requested dtype/device one at a time, and is assigned in place of its meta placeholder.
Missing, unexpected and mis-shaped tensors are one error that lists them (LeRobot itself
loads with ``strict=False``). The only tolerated absence is a tied output head
(``lm_head.weight`` when the VLM config ties it to the input embeddings).
"""

from __future__ import annotations

from pathlib import Path

import torch

from vla_ros.policies.contract import PolicyLoadError
from vla_ros.policies.lerobot.weights import read_header
from vla_ros.policies.strict_loading import summary, weight_mismatch_error


def load_strict(model: torch.nn.Module, path: Path, dtype: torch.dtype, device,
                tied: dict[str, str] | None = None) -> None:
    """Assign every tensor of ``path`` to ``model`` (built on meta), or raise listing why."""
    from safetensors import safe_open

    tied = tied or {}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    present = {k: tuple(e['shape']) for k, e in read_header(path)[1].items()}
    missing = [k for k in expected if k not in present
               and not (k in tied and tied[k] in present)]
    unexpected = [k for k in present if k not in expected]
    shapes = [f'{k} {present[k]} (model {expected[k]})' for k in expected
              if k in present and present[k] != expected[k]]
    error = weight_mismatch_error(path, 'the SmolVLA architecture built from config.json '
                                  'and the VLM config', missing, unexpected, shapes)
    if error is not None:
        raise error
    try:
        handle = safe_open(str(path), framework='pt', device='cpu')
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise PolicyLoadError(f'{path}: not a readable safetensors file: {exc}') from exc
    with handle as f:
        state = {}
        for key in expected:
            source = key if key in present else tied[key]
            tensor = f.get_tensor(source)
            if tensor.is_floating_point():
                tensor = tensor.to(dtype)
            state[key] = tensor.to(device)
    model.load_state_dict(state, strict=True, assign=True)
    leftovers = [n for n, t in [*model.named_parameters(), *model.named_buffers()]
                 if t.is_meta]
    if leftovers:
        raise PolicyLoadError(f'{path}: tensors left without values: {summary(leftovers)}')


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Write the model's state dict with LeRobot's tensor names (``model.*``)."""
    from safetensors.torch import save_file

    state = {k: v.detach().to('cpu').contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={'format': 'pt'})
