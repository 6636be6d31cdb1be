"""A learned stop: train a policy's ``terminate`` dimension from the per-frame ``done`` label.

Episodes that run on after success (``vla-ros collect``, the default) record ``done``: the
task was already achieved in that frame. A policy learns to say so through an action
space that extends its own by a ``terminate`` dimension (``arm7`` -> ``arm7_done``):

1. :func:`grow_checkpoint` copies a trained checkpoint and switches it to the extended
   space (config ``action_space``; one more statistics dimension with fixed bounds
   [0, 1], so label 0 and 1 map to the outermost bins). The weights are untouched: in the
   OpenVLA family every action dimension is one more token from the same 256 bins, so
   the model decodes the extra token with the weights it has and training teaches it.
2. ``vla-ros train --done-label --model-path GROWN --keep-statistics`` trains on
   :func:`add_done_dimension` of the data (the done label appended to every action).

Checkpoints on the plain space are never changed, so they keep today's behaviour: no
terminate dimension, no stop. Pure file and array logic; no torch.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np

from vla_ros.actions.normalization import (
    ActionStatistics,
    DatasetStatistics,
    load_statistics,
    save_statistics,
)
from vla_ros.actions.spaces import ActionSpace, load_action_space
from vla_ros.datasets.episodes import EpisodeDataset

__all__ = ['TERMINATE', 'done_space', 'add_done_dimension', 'pad_done',
           'extend_statistics', 'grow_checkpoint']

TERMINATE = 'terminate'


def done_space(base: str) -> ActionSpace:
    """The shipped space ``<base>_done``: ``base``'s dimensions and then ``terminate``."""
    base_space = load_action_space(base)
    try:
        space = load_action_space(f'{base}_done')
    except ValueError:
        raise ValueError(f'no action space {base}_done ships for a learned stop on '
                         f'{base!r}; add config/action_spaces/{base}_done.yaml') from None
    if space.names != base_space.names + (TERMINATE,) or \
            not np.array_equal(space.low[:-1], base_space.low) or \
            not np.array_equal(space.high[:-1], base_space.high):
        raise ValueError(f'action space {space.name!r} must be {base!r} plus a last '
                         f'{TERMINATE!r} dimension with the same bounds')
    return space


def settled_done(done: np.ndarray, hold_steps: int) -> np.ndarray:
    """``done[t]`` and the ``hold_steps`` frames before it all achieved (0: ``done`` itself).

    >>> settled_done(np.array([0, 1, 1, 1, 0, 1, 1], bool), 2).astype(int).tolist()
    [0, 0, 0, 1, 0, 0, 0]
    """
    done = np.asarray(done, dtype=bool)
    if hold_steps < 0:
        raise ValueError(f'hold_steps must be >= 0, got {hold_steps}')
    run = np.zeros(len(done), dtype=np.int64)  # achieved frames in a row, ending at t
    count = 0
    for t, achieved in enumerate(done):
        count = count + 1 if achieved else 0
        run[t] = count
    return run > hold_steps


def add_done_dimension(dataset: EpisodeDataset, hold_steps: int = 0) -> EpisodeDataset:
    """Every action gets its frame's ``done`` label (0.0 / 1.0) as a last dimension.

    Every episode must carry the label (recorded by ``vla-ros collect`` since it exists);
    older data is an error naming how many episodes lack it, never silently "not done".
    With ``hold_steps`` the label is :func:`settled_done`.
    """
    space = done_space(dataset.action_space)
    missing = [i for i, e in enumerate(dataset.episodes) if e.done is None]
    if missing:
        raise ValueError(f'{len(missing)} of {len(dataset)} episodes have no done label '
                         f'(first: episode {missing[0]}); record them again with '
                         f'`vla-ros collect` (episodes run to the horizon)')
    return EpisodeDataset([dataclasses.replace(
        e, action_space=space.name,
        actions=np.concatenate(
            [e.actions, settled_done(e.done, hold_steps)[:, None].astype(np.float32)],
            axis=1))
        for e in dataset.episodes])


def pad_done(samples: list[dict], dim: int) -> list[dict]:
    """Give samples one action dimension short (counterfactual relabels) ``done`` = 0.

    Counterfactual samples name another object than the one handled, in frames before
    anything was touched, so that task is not done in them.
    """
    out = []
    for s in samples:
        actions = np.asarray(s['actions'])
        if actions.shape[-1] == dim - 1:
            s = dict(s, actions=np.concatenate(
                [actions, np.zeros(actions.shape[:-1] + (1,), actions.dtype)], axis=-1))
        out.append(s)
    return out


def extend_statistics(statistics: DatasetStatistics) -> DatasetStatistics:
    """Append a ``terminate`` dimension with bounds [0, 1] to every entry's actions.

    Fixed bounds rather than data quantiles: q01/q99 of a 0/1 label collapse when fewer
    than 1 % of the frames are done, and then "done" could not be expressed at all.
    """
    entries = {}
    for key, entry in statistics.items():
        a = entry.action

        def grow(values, extra):
            return np.r_[np.asarray(values, float), extra]

        action = ActionStatistics(
            mean=grow(a.mean, 0.5), std=grow(a.std, 0.5), min=grow(a.min, 0.0),
            max=grow(a.max, 1.0), q01=grow(a.q01, 0.0), q99=grow(a.q99, 1.0),
            mask=np.r_[a.mask, True])
        entries[key] = dataclasses.replace(entry, action=action)
    return DatasetStatistics(entries)


def grow_checkpoint(source: str | Path, output: str | Path) -> Path:
    """Copy checkpoint ``source`` to ``output`` with a ``terminate`` action dimension.

    Only ``config.json`` (``action_space`` -> ``<space>_done``) and
    ``dataset_statistics.json`` (:func:`extend_statistics`) change; everything else is
    copied as is. Refuses a source that already has the dimension or an existing output.
    """
    source, output = Path(source).expanduser(), Path(output).expanduser()
    config_path = source / 'config.json'
    if not config_path.is_file():
        raise FileNotFoundError(f'{source} is not a checkpoint (no config.json)')
    config = json.loads(config_path.read_text())
    base = config.get('action_space')
    if not isinstance(base, str) or not base:
        raise ValueError(f'{config_path} names no action_space')
    if TERMINATE in load_action_space(base).names:
        raise ValueError(f'{source} already has a {TERMINATE!r} dimension ({base!r})')
    space = done_space(base)
    if output.exists():
        raise FileExistsError(f'{output} exists; choose a new directory')
    statistics = extend_statistics(load_statistics(source / 'dataset_statistics.json'))
    shutil.copytree(source, output, ignore=shutil.ignore_patterns('checkpoints'))
    config['action_space'] = space.name
    (output / 'config.json').write_text(json.dumps(config, indent=2) + '\n')
    save_statistics(output / 'dataset_statistics.json', statistics)
    return output


def main(argv=None) -> int:
    """``python -m vla_ros.training.done_label SOURCE OUTPUT``: grow a checkpoint."""
    import argparse

    p = argparse.ArgumentParser(description=grow_checkpoint.__doc__)
    p.add_argument('source')
    p.add_argument('output')
    args = p.parse_args(argv)
    print(grow_checkpoint(args.source, args.output))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
