"""Training data: load a dataset, install its statistics, order samples, collate batches.

The dataset is anything with the :class:`~vla_ros.datasets.episodes.EpisodeDataset`
interface (``samples(chunk_length)``, ``statistics(key)``, ``action_space``,
``control_period``), so episodes recorded in simulation and episodes read from bags go
through the same path. The batch convention is the one every family's
``training_loss`` accepts: images preprocessed exactly as at inference, actions
normalized with the statistics the checkpoint will carry, a ``valid`` mask for padding.
"""

import dataclasses
import sys
from pathlib import Path

import numpy as np

from vla_ros.actions.normalization import ActionStatistics, DatasetStatistics
from vla_ros.datasets.episodes import EpisodeDataset
from vla_ros.images import prepare_image
from vla_ros.policies.contract import Observation


def load_dataset(path: str | Path) -> EpisodeDataset:
    """Load episodes from ``path``: episode_*.npz files, a rosbag2 bag, or a folder of bags."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f'dataset directory {str(path)!r} does not exist')
    if any(path.glob('episode_*.npz')):
        return EpisodeDataset.load(path)
    bags = [path] if (path / 'metadata.yaml').is_file() else sorted(
        p.parent for p in path.glob('*/metadata.yaml'))
    if bags:
        # Recorded sessions: one episode per instruction, actions from the commands.
        from vla_ros.bags.dataset import bags_to_dataset

        dataset, notes = bags_to_dataset(bags)
        for note in notes:
            print(f'note: {note}')
        return dataset
    raise FileNotFoundError(f'no episode_*.npz and no rosbag2 bag in {path}')


def bounded_statistics(statistics: DatasetStatistics, space) -> DatasetStatistics:
    """Clip every entry's q01/q99 into the action space bounds.

    Recorded actions can stray past the bounds (teleoperation, noise); statistics that
    follow them would let a model's +-1 unnormalize to out-of-bounds commands.
    """
    entries = {}
    for key, entry in statistics.items():
        a = entry.action
        if a.dim != space.dim:
            raise ValueError(f'dataset actions have {a.dim} dimensions, action space '
                             f'{space.name!r} has {space.dim}')
        q01, q99 = np.clip(a.q01, space.low, space.high), np.clip(a.q99, space.low, space.high)
        outside = [space.names[i] for i in np.flatnonzero((q01 != a.q01) | (q99 != a.q99))]
        if outside:
            print(f'warning: dataset {key!r} actions exceed the {space.name!r} bounds in '
                  f'{outside}; their q01/q99 are clipped to the bounds', file=sys.stderr)
        action = ActionStatistics(mean=a.mean, std=a.std, min=a.min, max=a.max, q01=q01,
                                  q99=q99, mask=a.mask)
        entries[key] = dataclasses.replace(entry, action=action)
    return DatasetStatistics(entries)


def install_statistics(policy, statistics: DatasetStatistics, unnorm_key: str) -> None:
    """Make ``statistics`` the policy's normalization (saved with every checkpoint).

    Through the contract's ``set_statistics`` (``TorchPolicy`` rebuilds its normalizer in
    its own mode; a family may do more, e.g. keep proprio statistics).
    """
    entry = statistics.select(unnorm_key)
    dim = policy.spec.action_space.dim
    if entry.action.dim != dim:
        raise ValueError(f'dataset actions have {entry.action.dim} dimensions, policy '
                         f'{policy.spec.name!r} has {dim}')
    policy.set_statistics(statistics, unnorm_key)


def check_compatible(policy, dataset, first_sample: dict) -> None:
    """Refuse data the policy cannot learn from (other action space, missing cameras)."""
    spec = policy.spec
    if dataset.action_space != policy.action_space.name:
        raise ValueError(f'dataset action space {dataset.action_space!r} differs from policy '
                         f'{spec.name!r} action space {policy.action_space.name!r}')
    cameras = sorted(first_sample['images'])
    missing = [c for c in spec.camera_names if c not in first_sample['images']]
    if missing:
        raise ValueError(f'policy {spec.name!r} needs cameras {list(spec.camera_names)}; the '
                         f'dataset has {cameras} (missing {missing})')
    if spec.uses_proprio and first_sample.get('proprio') is None:
        raise ValueError(f'policy {spec.name!r} uses proprioception but the dataset has none')
    if abs(dataset.control_period - spec.control_period) > 1e-9:
        # Not fatal (the model is still trained), but chunks will be timed wrongly at run time.
        print(f'warning: dataset control period {dataset.control_period} s differs from '
              f'policy {spec.name!r} control period {spec.control_period} s', file=sys.stderr)


def history_sampling(policy, stride: int = 0) -> dict:
    """``EpisodeDataset.samples`` arguments giving each sample its run-time history.

    A policy seeing ``history_window`` frames gets the ``history_window - 1`` earlier
    frames of the episode, ``stride`` control ticks apart (0: the default inference
    interval of ``vla-ros eval``, see ``default_inference_interval``).
    """
    from vla_ros.runtime.lockstep import default_inference_interval

    history = int(policy.history_window) - 1
    if history < 1:
        return {}
    if not stride:
        stride = default_inference_interval(policy.spec.chunk_length)
    return {'history': history, 'stride': int(stride)}


def batch_indices(step: int, batch_size: int, num_samples: int, seed: int) -> np.ndarray:
    """Sample indices of training step ``step``: a pure function of its arguments.

    Steps walk through seeded per-epoch permutations; being stateless is what makes a
    resumed run see exactly the batches an uninterrupted run would.
    """
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = np.divmod(positions, num_samples)
    perms = {e: np.random.default_rng((seed, int(e))).permutation(num_samples)
             for e in np.unique(epochs)}
    return np.array([perms[e][o] for e, o in zip(epochs, offsets, strict=True)])


def collate(policy, samples: list[dict]) -> dict:
    """Samples -> the policy's training batch (on its device).

    Images (and the frames of a sample's ``history``) are first resized with
    ``prepare_image`` to the spec's size the spec's way (``image_resize``), as the
    inference node does; then the policy's
    ``collate`` (the contract's training hook) builds the
    batch: :func:`default_collate` for every ``TorchPolicy`` unless the family has its own.
    """
    spec = policy.spec

    def prepared(images: dict) -> dict:
        return {c: prepare_image(images[c], spec.image_size, method=spec.image_resize)
                for c in spec.camera_names}

    samples = [dict(s, images=prepared(s['images'])) for s in samples]
    for s in samples:
        if s.get('history'):  # earlier frames of the episode, for a history window
            s['history'] = [dict(f, images=prepared(f['images'])) for f in s['history']]
    return policy.collate(samples)


def default_collate(policy, samples: list[dict]) -> dict:
    """Prepared samples -> the shared batch convention.

    Images go through the policy's own ``images_tensor``, so training sees exactly what
    inference sees; actions are normalized with the policy's normalizer.
    """
    spec = policy.spec
    import torch

    images = [policy.images_tensor(Observation(s['images'], s['instruction']))
              for s in samples]
    actions = np.stack([policy.normalizer.normalize(s['actions']) for s in samples])
    proprio = None
    if spec.uses_proprio:
        proprio = torch.as_tensor(np.stack([s['proprio'] for s in samples]),
                                  dtype=torch.float32, device=policy.device)
    return {
        'images': torch.cat(images),
        'instructions': [s['instruction'] for s in samples],
        'actions': torch.as_tensor(actions, dtype=torch.float32, device=policy.device),
        'valid': torch.as_tensor(np.stack([s['valid'] for s in samples]), dtype=torch.bool,
                                 device=policy.device),
        'proprio': proprio,
    }
