"""SmolVLA's processor pipelines: what vla_ros reads of them and how it writes them.

The format (pipeline JSON, statistics files, per-feature normalization) is LeRobot's and
is shared with π₀/π₀.₅: see :mod:`vla_ros.policies.lerobot.processors`. SmolVLA-specific
here: which steps are accepted (unknown steps are refused rather than skipped, since their
effect would be lost), the tokenizer step's settings and artifact, and the step layout
LeRobot's ``make_smolvla_pre_post_processors`` saves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vla_ros.policies.contract import PolicyLoadError
from vla_ros.policies.lerobot.processors import (
    NORMALIZER,
    POSTPROCESSOR,
    PREPROCESSOR,
    TOKENIZER,
    UNNORMALIZER,
    FeatureNormalizer,
    artifact_path,
    read_steps,
    step_normalizer,
)

# Steps whose effect vla_ros reproduces elsewhere or that change nothing numerically
# (renaming keys, adding a batch dimension, moving tensors between devices, the newline).
PASSIVE_STEPS = frozenset({'rename_observations_processor', 'to_batch_processor',
                           'device_processor', 'smolvla_new_line_processor'})


@dataclass
class Pipeline:
    """What vla_ros uses of one saved pipeline: its normalizer and tokenizer settings."""

    normalizer: FeatureNormalizer | None
    tokenizer: dict | None


def read_pipeline(directory: Path, name: str, normalizer_step: str) -> Pipeline:
    """Read ``<name>.json`` and its normalizer statistics from a checkpoint directory."""
    path = directory / f'{name}.json'
    normalizer, tokenizer = None, None
    for step in read_steps(directory, name):
        step_name, config = step['name'], step['config']
        if step_name == normalizer_step:
            if normalizer is not None:
                raise PolicyLoadError(f'{path}: more than one {normalizer_step} step')
            normalizer = step_normalizer(step, path.name)
        elif step_name == TOKENIZER and normalizer_step == NORMALIZER:
            tokenizer = dict(config)
            artifact = step['artifacts'].get('tokenizer_name')
            if artifact:  # newer LeRobot saves the tokenizer inside the checkpoint
                tokenizer['tokenizer_dir'] = str(artifact_path(directory, artifact, path))
        elif step_name not in PASSIVE_STEPS:
            raise PolicyLoadError(f'{path}: step {step["index"]} {step_name!r} is not '
                                  f'supported by vla_ros (its effect would be lost)')
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
