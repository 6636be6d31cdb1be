"""LeRobot's processor files: ``policy_{pre,post}processor.json`` and their statistics.

A LeRobot checkpoint saves its pre- and post-processing as pipelines: a JSON list of
steps (``registry_name``, ``config``, optional ``state_file``) and, per stateful step, a
safetensors file of flat ``"<feature>.<stat>"`` tensors (for the normalizers:
``observation.state.mean``, ``action.q01``, ...). Read from huggingface/lerobot
``src/lerobot/processor/{pipeline,normalize_processor}.py`` at commit
7427f31801f944f5ec9ce53cda02862ce7d1638b.

Normalization per feature type (``norm_map``), in float32 as LeRobot computes it:

- ``MEAN_STD``: ``(x - mean) / (std + eps)``; inverse ``x * std + mean``;
- ``MIN_MAX`` / ``QUANTILES`` / ``QUANTILE10``: ``2 (x - lo) / (hi - lo) - 1`` with a zero
  range replaced by ``eps``; inverse ``(x + 1) (hi - lo) / 2 + lo``
  (MIN_MAX: ``(x + 1) / 2 * range + lo``);
- ``IDENTITY``: unchanged.

Unlike LeRobot, a feature whose mode needs statistics that the file lacks is an error,
not a silent pass-through, and unknown steps are refused rather than skipped.
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
# Steps whose effect vla_ros reproduces elsewhere or that change nothing numerically
# (renaming keys, adding a batch dimension, moving tensors between devices, the newline).
PASSIVE_STEPS = frozenset({'rename_observations_processor', 'to_batch_processor',
                           'device_processor', 'smolvla_new_line_processor'})
BLANK_CAMERA = 'observation.images.empty_camera_'
RANGE_STATS = {'MIN_MAX': ('min', 'max'), 'QUANTILES': ('q01', 'q99'),
               'QUANTILE10': ('q10', 'q90')}


@dataclass
class FeatureNormalizer:
    """(Un)normalization of LeRobot features by their type's mode and statistics."""

    features: dict  # key -> {"type": ..., "shape": [...]}
    norm_map: dict  # feature type -> mode
    stats: dict = field(default_factory=dict)  # key -> {stat: float32 tensor}
    eps: float = 1e-8

    def mode(self, key: str) -> str:
        """The mode applied to feature ``key`` (IDENTITY for unlisted types)."""
        return self.norm_map.get(self.features[key]['type'], 'IDENTITY')

    def check(self, where: str) -> None:
        """Raise unless every feature has the statistics its mode needs, of its width."""
        for key in self.features:
            if key.startswith(BLANK_CAMERA):
                continue  # LeRobot's placeholder images: never data, never normalized
            mode = self.mode(key)
            need = ('mean', 'std') if mode == 'MEAN_STD' else RANGE_STATS.get(mode, ())
            have = self.stats.get(key, {})
            missing = [s for s in need if s not in have]
            if missing:
                raise PolicyLoadError(f'{where}: feature {key!r} is normalized {mode} but its '
                                      f'statistics lack {missing}')
            width = int(self.features[key]['shape'][0])
            for stat in need:
                if have[stat].shape[0] != width:
                    raise PolicyLoadError(f'{where}: {key}.{stat} has shape '
                                          f'{tuple(have[stat].shape)}, feature has {width} '
                                          f'values along its first axis')

    def _stat(self, key, name, x):
        value = self.stats[key][name].to(device=x.device, dtype=x.dtype)
        if self.features[key]['type'] == 'VISUAL' and value.ndim == 1:
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
        low_name, high_name = RANGE_STATS[mode]
        low, high = self._stat(key, low_name, x), self._stat(key, high_name, x)
        span = high - low
        span = torch.where(span == 0, torch.tensor(self.eps, dtype=x.dtype, device=x.device),
                           span)
        if mode == 'MIN_MAX':
            return (x + 1) / 2 * span + low if inverse else 2 * (x - low) / span - 1
        return (x + 1.0) * span / 2.0 + low if inverse else 2.0 * (x - low) / span - 1.0

    def flat_state(self) -> dict:
        """The ``"<feature>.<stat>"`` tensors LeRobot saves for this step."""
        return {f'{k}.{s}': v.float().clone().contiguous() for k, d in self.stats.items()
                for s, v in d.items()}

    def step_config(self) -> dict:
        """The step's ``config`` entry in the pipeline JSON."""
        return {'eps': self.eps, 'features': self.features, 'norm_map': self.norm_map}


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PolicyLoadError(f'{path}: unreadable: {exc}') from exc
    if not isinstance(data, dict) or not isinstance(data.get('steps'), list):
        raise PolicyLoadError(f'{path}: not a LeRobot processor pipeline (no "steps" list)')
    return data


def _read_stats(path: Path) -> dict:
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


def _artifact(directory: Path, relative: str, where: Path) -> Path:
    """A declared artifact path, which must stay inside the checkpoint and exist."""
    rel = Path(relative)
    if rel.is_absolute() or '..' in rel.parts:
        raise PolicyLoadError(f'{where}: artifact path {relative!r} leaves the checkpoint')
    if not (directory / rel).exists():
        raise PolicyLoadError(f'{where}: declared artifact {relative!r} is missing')
    return directory / rel


@dataclass
class Pipeline:
    """What vla_ros uses of one saved pipeline: its normalizer and tokenizer settings."""

    normalizer: FeatureNormalizer | None
    tokenizer: dict | None


def read_pipeline(directory: Path, name: str, normalizer_step: str) -> Pipeline:
    """Read ``<name>.json`` and its normalizer statistics from a checkpoint directory."""
    path = directory / f'{name}.json'
    if not path.is_file():
        raise PolicyLoadError(f'{directory}: {path.name} is missing (LeRobot >= 0.4 '
                              f'checkpoints carry their normalization there; older ones keep '
                              f'it inside model.safetensors: convert them with LeRobot\'s '
                              f'processor/migrate_policy_normalization.py)')
    data = _read_json(path)
    normalizer, tokenizer = None, None
    for index, step in enumerate(data['steps']):
        step_name = step.get('registry_name') or step.get('class', '?')
        config = step.get('config') or {}
        if step_name == normalizer_step:
            if normalizer is not None:
                raise PolicyLoadError(f'{path}: more than one {normalizer_step} step')
            state_file = step.get('state_file')
            stats = _read_stats(directory / state_file) if state_file else {}
            normalizer = FeatureNormalizer(config.get('features', {}),
                                           config.get('norm_map', {}), stats,
                                           float(config.get('eps', 1e-8)))
            normalizer.check(f'{path.name} step {index}')
        elif step_name == TOKENIZER and normalizer_step == NORMALIZER:
            tokenizer = dict(config)
            artifact = (step.get('artifacts') or {}).get('tokenizer_name')
            if artifact:  # newer LeRobot saves the tokenizer inside the checkpoint
                tokenizer['tokenizer_dir'] = str(_artifact(directory, artifact, path))
        elif step_name not in PASSIVE_STEPS:
            raise PolicyLoadError(f'{path}: step {index} {step_name!r} is not supported by '
                                  f'vla_ros (its effect would be lost)')
    return Pipeline(normalizer, tokenizer)


def write_pipelines(directory: Path, config, pre: FeatureNormalizer,
                    post: FeatureNormalizer, tokenizer: dict, tokenizer_object=None) -> None:
    """Write both pipelines as LeRobot's ``make_smolvla_pre_post_processors`` saves them.

    With ``tokenizer_object``, the tokenizer is saved under ``tokenizer/`` and declared as
    the tokenizer step's artifact, as current LeRobot does.
    """
    from safetensors.torch import save_file

    tokenizer_step = {'registry_name': TOKENIZER,
                      'config': {k: v for k, v in tokenizer.items() if k != 'tokenizer_dir'}}
    if tokenizer_object is not None:
        tokenizer_object.save_pretrained(str(directory / 'tokenizer'))
        tokenizer_step['config']['tokenizer_name'] = 'tokenizer'
        tokenizer_step['artifacts'] = {'tokenizer_name': 'tokenizer'}

    pre_state = f'{PREPROCESSOR}_step_5_{NORMALIZER}.safetensors'
    post_state = f'{POSTPROCESSOR}_step_0_{UNNORMALIZER}.safetensors'
    steps = [
        {'registry_name': 'rename_observations_processor', 'config': {'rename_map': {}}},
        {'registry_name': 'to_batch_processor', 'config': {}},
        {'registry_name': 'smolvla_new_line_processor', 'config': {}},
        tokenizer_step,
        {'registry_name': 'device_processor', 'config': {'device': 'cpu',
                                                         'float_dtype': None}},
        {'registry_name': NORMALIZER, 'config': pre.step_config(), 'state_file': pre_state},
    ]
    (directory / f'{PREPROCESSOR}.json').write_text(
        json.dumps({'name': PREPROCESSOR, 'steps': steps}, indent=2))
    save_file(pre.flat_state(), str(directory / pre_state))
    steps = [
        {'registry_name': UNNORMALIZER, 'config': post.step_config(), 'state_file': post_state},
        {'registry_name': 'device_processor', 'config': {'device': 'cpu',
                                                         'float_dtype': None}},
    ]
    (directory / f'{POSTPROCESSOR}.json').write_text(
        json.dumps({'name': POSTPROCESSOR, 'steps': steps}, indent=2))
    save_file(post.flat_state(), str(directory / post_state))
