"""The input/output processing of LeRobot π₀ / π₀.₅, as their saved pipelines describe it.

* (un)normalization per feature type with the statistics saved beside the pipeline
  (``normalizer_processor`` / ``unnormalizer_processor`` steps): IDENTITY, MEAN_STD
  (``(x - mean) / (std + eps)``, inverse ``x * std + mean``), MIN_MAX, QUANTILES
  (q01/q99 -> [-1, 1]) and QUANTILE10 (q10/q90), computed in fp32 as LeRobot does;
* relative actions (``relative_actions_processor`` / ``absolute_actions_processor``):
  ``absolute = action + raw state`` on the dimensions not excluded by name;
* prompts: π₀ appends a newline to the task; π₀.₅ writes ``"Task: <task>, State: <256-bin
  state>;<newline>Action: "`` from the normalized state;
* images: [0, 1] floats resized with centred zero padding to the model resolution
  (bilinear, aspect kept), then scaled to [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from vla_ros.policies.contract import PolicyLoadError

MODES = ('IDENTITY', 'MEAN_STD', 'MIN_MAX', 'QUANTILES', 'QUANTILE10')
_NEEDS = {'MEAN_STD': ('mean', 'std'), 'MIN_MAX': ('min', 'max'),
          'QUANTILES': ('q01', 'q99'), 'QUANTILE10': ('q10', 'q90')}


@dataclass
class FeatureNormalizer:
    """(Un)normalizes one feature with one mode and its statistics (fp32 tensors)."""

    key: str
    mode: str
    stats: dict = field(default_factory=dict)
    eps: float = 1e-8

    def __post_init__(self):
        """Check the mode and that the statistics it needs are present."""
        if self.mode not in MODES:
            raise PolicyLoadError(f'{self.key}: unsupported normalization mode {self.mode!r}')
        for name in _NEEDS.get(self.mode, ()):
            if name not in self.stats:
                raise PolicyLoadError(f'{self.key}: {self.mode} normalization needs the '
                                      f'{name!r} statistic; the file has '
                                      f'{sorted(self.stats)}')
        self.stats = {k: v.to(torch.float32) for k, v in self.stats.items()}

    def _bounds(self):
        lo, hi = _NEEDS[self.mode]
        low, high = self.stats[lo], self.stats[hi]
        span = high - low
        return low, torch.where(span == 0, torch.tensor(self.eps, dtype=span.dtype), span)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw -> model units."""
        if self.mode == 'IDENTITY':
            return x
        if self.mode == 'MEAN_STD':
            return (x - self.stats['mean']) / (self.stats['std'] + self.eps)
        low, span = self._bounds()
        return 2.0 * (x - low) / span - 1.0

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model units -> raw."""
        if self.mode == 'IDENTITY':
            return x
        if self.mode == 'MEAN_STD':
            return x * self.stats['std'] + self.stats['mean']
        low, span = self._bounds()
        return (x + 1.0) * span / 2.0 + low


def feature_normalizer(step: dict, key: str, where: str) -> FeatureNormalizer:
    """The normalizer a (un)normalizer step applies to feature ``key``.

    Like LeRobot: the mode comes from ``norm_map[features[key].type]`` (IDENTITY when the
    type is not mapped), and a feature without statistics passes through unchanged.
    """
    config = step['config']
    features = config.get('features') or {}
    if key not in features:
        return FeatureNormalizer(key, 'IDENTITY')
    kind = features[key].get('type')
    mode = (config.get('norm_map') or {}).get(kind, 'IDENTITY')
    prefix = key + '.'
    stats = {name[len(prefix):]: t for name, t in step['state'].items()
             if name.startswith(prefix) and '.' not in name[len(prefix):]}
    if mode != 'IDENTITY' and not stats:
        return FeatureNormalizer(key, 'IDENTITY')
    try:
        return FeatureNormalizer(key, mode, stats, float(config.get('eps', 1e-8)))
    except PolicyLoadError as exc:
        raise PolicyLoadError(f'{where}: {exc}') from None


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
