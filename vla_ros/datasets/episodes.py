"""Episodes of (images, instruction, action) steps, stored as one .npz per episode.

One schema for every source: the scripted expert in simulation, rosbag2 recordings and
anything a user converts. Actions are in action-space units (per control period), the
same numbers a policy outputs, so statistics computed here normalize exactly what the
runtime unnormalizes.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vla_ros.actions.normalization import (
    DatasetStatistics,
    StatisticsEntry,
    compute_statistics,
)


@dataclass
class Episode:
    """One demonstration: an instruction and T synchronized steps."""

    instruction: str
    action_space: str
    control_period: float
    images: dict[str, np.ndarray]   # camera -> (T, H, W, 3) uint8
    actions: np.ndarray             # (T, D) float32
    stamps: np.ndarray              # (T,) float64 seconds
    proprio: np.ndarray | None = None  # (T, P) float32
    metadata: dict = field(default_factory=dict)
    # (T,) bool: the task was already achieved in the state of frame t (None: unknown,
    # e.g. recordings made before the label existed). What a learned stop is trained on.
    done: np.ndarray | None = None

    def __post_init__(self):
        self.actions = np.asarray(self.actions, dtype=np.float32)
        self.stamps = np.asarray(self.stamps, dtype=np.float64)
        n = len(self.actions)
        if self.actions.ndim != 2 or n == 0:
            raise ValueError(f'actions must be (T, D) with T > 0, got {self.actions.shape}')
        if not np.all(np.isfinite(self.actions)):
            raise ValueError('actions contain NaN or Inf')
        if self.stamps.shape != (n,):
            raise ValueError(f'stamps must be ({n},), got {self.stamps.shape}')
        for camera, frames in self.images.items():
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != n \
                    or frames.shape[-1] != 3:
                raise ValueError(f'images[{camera!r}] must be ({n}, H, W, 3) uint8, got '
                                 f'{frames.dtype} {frames.shape}')
        if self.proprio is not None:
            self.proprio = np.asarray(self.proprio, dtype=np.float32)
            if self.proprio.ndim != 2 or self.proprio.shape[0] != n:
                raise ValueError(f'proprio must be ({n}, P), got {self.proprio.shape}')
        if not self.instruction.strip():
            raise ValueError('instruction is empty')
        if self.done is not None:
            self.done = np.asarray(self.done)
            if self.done.shape != (n,) or self.done.dtype != bool:
                raise ValueError(f'done must be a ({n},) bool array, got {self.done.dtype} '
                                 f'{self.done.shape}')

    def __len__(self) -> int:
        return len(self.actions)

    def save(self, path: str | Path) -> Path:
        """Write one compressed .npz (arrays) with the metadata as JSON inside."""
        path = Path(path)
        arrays = {f'image_{c}': v for c, v in self.images.items()}
        arrays.update(actions=self.actions, stamps=self.stamps)
        if self.proprio is not None:
            arrays['proprio'] = self.proprio
        if self.done is not None:
            arrays['done'] = self.done
        meta = {'instruction': self.instruction, 'action_space': self.action_space,
                'control_period': self.control_period, 'metadata': self.metadata}
        arrays['meta'] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        np.savez_compressed(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> 'Episode':
        """Read an episode written by :meth:`save` (no pickles are loaded)."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data['meta']).decode())
            images = {k[len('image_'):]: data[k] for k in data.files if k.startswith('image_')}
            proprio = data['proprio'] if 'proprio' in data.files else None
            done = data['done'] if 'done' in data.files else None
            return cls(meta['instruction'], meta['action_space'], meta['control_period'],
                       images, data['actions'], data['stamps'], proprio, meta['metadata'],
                       done)


class EpisodeDataset:
    """A list of episodes with chunked training samples and action statistics."""

    def __init__(self, episodes: list[Episode]):
        """Check that every episode shares one action space and control period."""
        if not episodes:
            raise ValueError('a dataset needs at least one episode')
        spaces = {(e.action_space, e.control_period, e.actions.shape[1]) for e in episodes}
        if len(spaces) != 1:
            raise ValueError(f'episodes mix action spaces / periods: {sorted(spaces)}')
        self.episodes = list(episodes)
        self.action_space, self.control_period, self.action_dim = spaces.pop()

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def num_steps(self) -> int:
        """Total number of steps."""
        return sum(len(e) for e in self.episodes)

    def save(self, directory: str | Path) -> Path:
        """Write episode_00000.npz, ... into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for i, episode in enumerate(self.episodes):
            episode.save(directory / f'episode_{i:05d}.npz')
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> 'EpisodeDataset':
        """Read every episode_*.npz of ``directory``."""
        files = sorted(Path(directory).glob('episode_*.npz'))
        if not files:
            raise FileNotFoundError(f'no episode_*.npz in {directory}')
        return cls([Episode.load(f) for f in files])

    def statistics(self, key: str = 'default', mask=None) -> DatasetStatistics:
        """q01/q99 and mean/std of all actions, keyed like dataset_statistics.json."""
        actions = np.concatenate([e.actions for e in self.episodes])
        entry = StatisticsEntry(action=compute_statistics(actions, mask),
                                num_transitions=len(actions),
                                num_trajectories=len(self.episodes))
        return DatasetStatistics({key: entry})

    def samples(self, chunk_length: int, history: int = 0, stride: int = 1):
        """Yield training samples: the frame at t and the actions t .. t+chunk-1.

        Past the end of an episode the chunk is padded with the last action and the
        ``valid`` mask says which rows are real (so a loss can ignore the padding).

        ``history`` > 0 adds ``sample['history']``: the real earlier frames of the same
        episode a policy with a history window would have seen at step t, oldest first,
        each ``{'images': {camera: HxWx3}, 'proprio': ...}``: the frames at t - k x
        ``stride`` for k = ``history`` .. 1 that lie within the episode, where ``stride``
        is the number of control ticks between two inferences at run time (the history
        is made of the frames earlier inferences looked at). Nothing is padded here: near
        the episode start the list is shorter, and the family pads it by the same rule
        its inference uses.
        """
        if isinstance(history, bool) or int(history) != history or history < 0:
            raise ValueError(f'history must be an integer >= 0, got {history!r}')
        if isinstance(stride, bool) or int(stride) != stride or stride < 1:
            raise ValueError(f'stride must be an integer >= 1, got {stride!r}')
        for episode in self.episodes:
            n = len(episode)
            for t in range(n):
                rows = np.minimum(np.arange(t, t + chunk_length), n - 1)
                sample = {
                    'images': {c: frames[t] for c, frames in episode.images.items()},
                    'instruction': episode.instruction,
                    'actions': episode.actions[rows],
                    'valid': np.arange(t, t + chunk_length) < n,
                    'proprio': None if episode.proprio is None else episode.proprio[t],
                    'done': None if episode.done is None else bool(episode.done[t]),
                    'metadata': episode.metadata,
                }
                if history:
                    earlier = [t - k * stride for k in range(int(history), 0, -1)]
                    sample['history'] = [
                        {'images': {c: frames[s] for c, frames in episode.images.items()},
                         'proprio': None if episode.proprio is None else episode.proprio[s]}
                        for s in earlier if s >= 0]
                yield sample
