"""Policies trained by this project and shipped with it (see docs/results.md).

Each sub-directory is a checkpoint that ``make_policy(family, model_path=...)`` loads:
safetensors weights, config.json and the dataset_statistics.json it was trained with
(plus the tokenizer files for the OpenVLA family). They were made by
``scripts/train_shipped_policies.sh`` from expert demonstrations in the simulator.
"""

from pathlib import Path

__all__ = ['MODELS_DIR', 'DEFAULTS', 'shipped_models', 'model_path']

MODELS_DIR = Path(__file__).resolve().parent
# The shipped checkpoint each family uses when no model_path is given in sim mode.
DEFAULTS = {'openvla': 'openvla_sim', 'octo': 'octo_sim'}


def shipped_models() -> tuple[str, ...]:
    """Names of the shipped checkpoints (directories holding a config.json)."""
    return tuple(sorted(p.parent.name for p in MODELS_DIR.glob('*/config.json')))


def model_path(name: str) -> str:
    """Directory of the shipped checkpoint ``name`` (or of a family's default, e.g. 'octo')."""
    name = DEFAULTS.get(name, name)
    path = MODELS_DIR / name
    if not (path / 'config.json').is_file():
        raise ValueError(f'no shipped checkpoint {name!r}; shipped: {list(shipped_models())} '
                         f'(family defaults: {DEFAULTS})')
    return str(path)
