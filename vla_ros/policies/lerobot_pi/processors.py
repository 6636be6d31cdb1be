"""The input/output processing of LeRobot π₀ / π₀.₅, as their saved pipelines describe it.

* (un)normalization per feature type with the statistics saved beside the pipeline: the
  LeRobot format shared with SmolVLA, :mod:`vla_ros.policies.lerobot.processors`;
* relative actions (``relative_actions_processor`` / ``absolute_actions_processor``):
  ``absolute = action + raw state`` on the dimensions not excluded by name;
* prompts: π₀ appends a newline to the task; π₀.₅ writes ``"Task: <task>, State: <256-bin
  state>;<newline>Action: "`` from the normalized state;
* images: [0, 1] floats resized with centred zero padding to the model resolution
  (bilinear, aspect kept), then scaled to [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812


def relative_mask(config: dict, action_dim: int) -> list[bool]:
    """Dimensions made relative: all, minus those whose name contains an excluded token."""
    exclude = [str(n).lower() for n in (config.get('exclude_joints') or []) if n]
    names = config.get('action_names')
    if not exclude or names is None:
        return [True] * action_dim
    mask = [not any(t == str(n).lower() or t in str(n).lower() for t in exclude)
            for n in names[:action_dim]]
    return mask + [True] * (action_dim - len(mask))


def pi0_prompt(task: str) -> str:
    """π₀: the task text, ending in a newline."""
    return task if task.endswith('\n') else task + '\n'


def discretize_state(normalized_state: np.ndarray) -> np.ndarray:
    """π₀.₅: normalized state (≈[-1, 1]) -> bin indices 0..255 (values < -1 give -1)."""
    bins = np.linspace(-1, 1, 256 + 1)[:-1]
    return np.digitize(normalized_state, bins=bins) - 1


def pi05_prompt(task: str, normalized_state: np.ndarray | None) -> str:
    """π₀.₅: ``Task: ..., State: ...;<newline>Action: `` (no state when None)."""
    text = task.strip().replace('_', ' ').replace('\n', ' ')
    if normalized_state is None:
        return f'Task: {text};\nAction: '
    state = ' '.join(map(str, discretize_state(normalized_state)))
    return f'Task: {text}, State: {state};\nAction: '


def resize_with_pad(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 3, h, w) floats in [0, 1] -> (B, 3, height, width), aspect kept, centred zero pad."""
    _, _, h, w = images.shape
    if (h, w) == (height, width):
        return images
    ratio = max(w / width, h / height)
    new_h, new_w = int(h / ratio), int(w / ratio)
    resized = F.interpolate(images, size=(new_h, new_w), mode='bilinear', align_corners=False)
    resized = resized.clamp(0.0, 1.0)
    top, extra_h = divmod(height - new_h, 2)
    left, extra_w = divmod(width - new_w, 2)
    return F.pad(resized, (left, left + extra_w, top, top + extra_h), value=0.0)


def siglip_pixels(image_uint8: np.ndarray, size: int) -> torch.Tensor:
    """One HxWx3 uint8 frame -> (1, 3, size, size) in [-1, 1] (LeRobot's π preprocessing)."""
    x = torch.from_numpy(np.ascontiguousarray(image_uint8)).permute(2, 0, 1)[None]
    x = x.to(torch.float32) / 255.0
    return resize_with_pad(x, size, size) * 2.0 - 1.0
