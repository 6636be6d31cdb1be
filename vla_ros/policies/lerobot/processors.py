"""LeRobot's saved processor pipelines and their per-feature (un)normalization.

A LeRobot (>= 0.4) checkpoint saves its pre- and post-processing as pipelines,
``policy_preprocessor.json`` / ``policy_postprocessor.json``: a JSON list of steps
(``registry_name``, ``config``, optional ``state_file`` and ``artifacts``) and, per stateful
step, a safetensors file of flat ``"<feature>.<stat>"`` tensors
(``policy_preprocessor_step_<i>_normalizer_processor.safetensors``: ``observation.state.mean``,
``action.q01``, ...). Read from huggingface/lerobot
``src/lerobot/processor/{pipeline,normalize_processor}.py`` at commit
7427f31801f944f5ec9ce53cda02862ce7d1638b.

Normalization per feature type (the step's ``norm_map``; IDENTITY for unmapped types and
for features the step does not list), in float32 and in LeRobot's expression order:

- ``MEAN_STD``: ``(x - mean) / (std + eps)``; inverse ``x * std + mean``;
- ``MIN_MAX`` / ``QUANTILES`` (q01/q99) / ``QUANTILE10`` (q10/q90):
  ``2 * (x - lo) / (hi - lo) - 1`` with a zero range replaced by ``eps``; inverse
  ``(x + 1) * (hi - lo) / 2 + lo``, except MIN_MAX: ``(x + 1) / 2 * (hi - lo) + lo``
  (LeRobot writes the two differently; both are kept verbatim, although halving is exact
  in binary floating point, so the orders agree bit for bit outside subnormals);
- ``IDENTITY``: unchanged.

Unlike LeRobot, a feature whose mode needs statistics that the step's file lacks is an
error, not a silent pass-through: an action left unnormalized would drive a robot in the
wrong units. Checkpoints do not legitimately lack them: LeRobot writes the dataset's
statistics of every normalized feature, and features needing none are IDENTITY (images
of π₀/π₀.₅/SmolVLA) or LeRobot's ``empty_camera_*`` placeholders, which are exempt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vla_ros.policies.contract import PolicyLoadError

PREPROCESSOR = 'policy_preprocessor'
POSTPROCESSOR = 'policy_postprocessor'
NORMALIZER = 'normalizer_processor'
UNNORMALIZER = 'unnormalizer_processor'
TOKENIZER = 'tokenizer_processor'
BLANK_CAMERA = 'observation.images.empty_camera_'
MODES = ('IDENTITY', 'MEAN_STD', 'MIN_MAX', 'QUANTILES', 'QUANTILE10')
# The statistics each mode reads; for the range modes, (low, high).
NEEDED_STATS = {'MEAN_STD': ('mean', 'std'), 'MIN_MAX': ('min', 'max'),
                'QUANTILES': ('q01', 'q99'), 'QUANTILE10': ('q10', 'q90')}
MIGRATION_HINT = ('LeRobot >= 0.4 checkpoints carry their normalization there; older ones '
                  'keep it inside model.safetensors: convert them with LeRobot\'s '
                  'processor/migrate_policy_normalization.py')


@dataclass
class FeatureNormalizer:
    """One (un)normalizer step: features by type, each type's mode, and the statistics."""

    features: dict  # key -> {"type": ..., "shape": [...]}
    norm_map: dict  # feature type -> mode
    stats: dict = field(default_factory=dict)  # key -> {stat: float32 tensor}
    eps: float = 1e-8

    def mode(self, key: str) -> str:
        """The mode applied to feature ``key`` (IDENTITY for unlisted features/types)."""
        if key not in self.features:
            return 'IDENTITY'
        return self.norm_map.get(self.features[key].get('type'), 'IDENTITY')

    def check(self, where: str) -> None:
        """Raise unless every feature's mode is known and has its statistics, of its width."""
        for key in self.features:
            mode = self.mode(key)
            if mode not in MODES:
                raise PolicyLoadError(f'{where}: feature {key!r}: unsupported normalization '
                                      f'mode {mode!r}')
            if key.startswith(BLANK_CAMERA):
                continue  # LeRobot's placeholder images: never data, never normalized
            need = NEEDED_STATS.get(mode, ())
            have = self.stats.get(key, {})
            missing = [s for s in need if s not in have]
            if missing:
                raise PolicyLoadError(f'{where}: feature {key!r} is normalized {mode} but its '
                                      f'statistics lack {missing} (it has {sorted(have)})')
            shape = self.features[key].get('shape')
            if not shape:
                continue
            width = int(shape[0])
            for stat in need:
                if have[stat].ndim == 0 or have[stat].shape[0] != width:
                    raise PolicyLoadError(f'{where}: {key}.{stat} has shape '
                                          f'{tuple(have[stat].shape)}, feature has {width} '
                                          f'values along its first axis')

    def _stat(self, key, name, x):
        value = self.stats[key][name].to(device=x.device, dtype=x.dtype)
        if self.features[key].get('type') == 'VISUAL' and value.ndim == 1:
            value = value.reshape(-1, 1, 1)  # per-channel statistics of (..., C, H, W)
        return value

    def apply(self, key: str, x: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        """Normalize (or with ``inverse`` unnormalize) ``x`` as feature ``key``."""
        mode = self.mode(key)
        if mode == 'IDENTITY':
            return x
        if mode == 'MEAN_STD':
            mean, std = self._stat(key, 'mean', x), self._stat(key, 'std', x)
            return x * std + mean if inverse else (x - mean) / (std + self.eps)
        low_name, high_name = NEEDED_STATS[mode]
        low, high = self._stat(key, low_name, x), self._stat(key, high_name, x)
        span = high - low
        span = torch.where(span == 0, torch.tensor(self.eps, dtype=x.dtype, device=x.device),
                           span)
        if not inverse:
            return 2.0 * (x - low) / span - 1.0
        if mode == 'MIN_MAX':
            return (x + 1.0) / 2.0 * span + low
        return (x + 1.0) * span / 2.0 + low

    def feature(self, key: str) -> 'FeatureView':
        """This step's (un)normalization of the one feature ``key``."""
        return FeatureView(self, key)

    def flat_state(self) -> dict:
        """The ``"<feature>.<stat>"`` tensors LeRobot saves for this step."""
        return {f'{k}.{s}': v.float().clone().contiguous() for k, d in self.stats.items()
                for s, v in d.items()}

    def step_config(self) -> dict:
        """The step's ``config`` entry in the pipeline JSON."""
        return {'eps': self.eps, 'features': self.features, 'norm_map': self.norm_map}


@dataclass
class FeatureView:
    """One feature of a :class:`FeatureNormalizer`: ``normalize`` / ``unnormalize`` it."""

    normalizer: FeatureNormalizer
    key: str

    @property
    def mode(self) -> str:
        """The feature's normalization mode."""
        return self.normalizer.mode(self.key)

    @property
    def stats(self) -> dict:
        """The feature's statistics, name -> float32 tensor (empty if it has none)."""
        return self.normalizer.stats.get(self.key, {})

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw -> model units."""
        return self.normalizer.apply(self.key, x)

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model units -> raw."""
        return self.normalizer.apply(self.key, x, inverse=True)


# ------------------------------------------------------------------------ pipeline files
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


def read_stats(path: Path) -> dict:
    """A step's statistics file -> ``{feature: {stat: float32 tensor}}``."""
    from safetensors.torch import load_file

    try:
        flat = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise PolicyLoadError(f'{path}: not a readable safetensors file: {exc}') from exc
    stats: dict = {}
    for name, tensor in flat.items():
        key, _, stat = name.rpartition('.')
        if not key:
            raise PolicyLoadError(f'{path}: tensor {name!r} is not "<feature>.<stat>"')
        stats.setdefault(key, {})[stat] = tensor.to(torch.float32)
    return stats


def read_steps(directory: Path, name: str) -> list[dict]:
    """The steps of ``<directory>/<name>.json``, each with its statistics loaded.

    Each step is ``{"index", "name", "config", "artifacts", "stats"}`` (``stats`` as
    :func:`read_stats` gives them, empty for stateless steps).
    """
    path = directory / f'{name}.json'
    if not path.is_file():
        raise PolicyLoadError(f'{directory}: {path.name} is missing ({MIGRATION_HINT})')
    data = read_json(path, 'processor pipeline')
    if not isinstance(data.get('steps'), list):
        raise PolicyLoadError(f'{path}: not a LeRobot processor pipeline (no "steps" list)')
    out = []
    for index, step in enumerate(data['steps']):
        if not isinstance(step, dict):
            raise PolicyLoadError(f'{path}: step {index} is not an object')
        entry = {'index': index, 'name': step.get('registry_name') or step.get('class', ''),
                 'config': step.get('config') or {}, 'artifacts': step.get('artifacts') or {},
                 'stats': {}}
        state_file = step.get('state_file')
        if state_file:
            state_path = artifact_path(directory, state_file, path)
            entry['stats'] = read_stats(state_path)
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


def step_normalizer(step: dict, where: str) -> FeatureNormalizer:
    """The checked :class:`FeatureNormalizer` of a (un)normalizer step."""
    config = step['config']
    normalizer = FeatureNormalizer(dict(config.get('features') or {}),
                                   dict(config.get('norm_map') or {}), step['stats'],
                                   float(config.get('eps', 1e-8)))
    normalizer.check(f'{where} step {step["index"]} ({step["name"]})')
    return normalizer


def artifact_path(directory: Path, relative: str, where: Path) -> Path:
    """A declared file of the checkpoint, which must stay inside it and exist."""
    rel = Path(relative)
    if rel.is_absolute() or '..' in rel.parts:
        raise PolicyLoadError(f'{where}: artifact path {relative!r} leaves the checkpoint')
    if not (directory / rel).exists():
        raise PolicyLoadError(f'{where}: declared artifact {relative!r} is missing')
    return directory / rel
