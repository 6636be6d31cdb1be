"""Action normalization with OpenVLA/Octo ``dataset_statistics.json`` compatible statistics."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_STAT_FIELDS = ('mean', 'std', 'min', 'max', 'q01', 'q99')
MODES = ('bounds_q99', 'normal')


class UnnormKeyError(ValueError):
    """The unnormalization key is missing, ambiguous or unknown."""


@dataclass(frozen=True, eq=False)  # array fields make generated __eq__ ambiguous
class ActionStatistics:
    """Per-dimension statistics of an action (or proprio) vector.

    ``mask[i]`` False means dimension i is passed through raw (e.g. a gripper already in
    [0, 1]); it defaults to all True as in OpenVLA when the field is absent.
    """

    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        for name in _STAT_FIELDS:
            try:
                arr = np.array(getattr(self, name), dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise ValueError(f'statistics field {name!r} is not numeric: {e}') from None
            if arr.ndim != 1 or arr.size == 0:
                raise ValueError(f'statistics field {name!r} must be a non-empty 1-D list')
            if not np.all(np.isfinite(arr)):
                raise ValueError(f'statistics field {name!r} has non-finite values')
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)
        dim = self.mean.size
        sizes = {n: getattr(self, n).size for n in _STAT_FIELDS}
        mask = np.ones(dim, dtype=bool) if self.mask is None else np.array(self.mask)
        if mask.dtype != bool:
            raise ValueError(f'statistics field "mask" must be booleans, got dtype {mask.dtype}')
        sizes['mask'] = mask.size
        if set(sizes.values()) != {dim} or mask.ndim != 1:
            raise ValueError(f'statistics fields have different lengths: {sizes}')
        mask.flags.writeable = False
        object.__setattr__(self, 'mask', mask)
        if np.any(self.q01 > self.q99):
            raise ValueError(f'q01 > q99 in dimensions {np.flatnonzero(self.q01 > self.q99)}')
        if np.any(self.min > self.max):
            raise ValueError(f'min > max in dimensions {np.flatnonzero(self.min > self.max)}')
        if np.any(self.std < 0):
            raise ValueError(f'negative std in dimensions {np.flatnonzero(self.std < 0)}')

    @property
    def dim(self) -> int:
        """Number of dimensions."""
        return int(self.mean.size)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = 'statistics') -> ActionStatistics:
        """Build from a JSON mapping; errors name ``where`` and the offending field."""
        if not isinstance(d, Mapping):
            raise ValueError(f'{where}: expected an object, got {type(d).__name__}')
        missing = [k for k in _STAT_FIELDS if k not in d]
        if missing:
            raise ValueError(f'{where}: missing field(s) {missing}')
        try:
            return cls(**{k: d[k] for k in _STAT_FIELDS}, mask=d.get('mask'))
        except ValueError as e:
            raise ValueError(f'{where}: {e}') from None

    def to_dict(self) -> dict[str, list]:
        """Return the JSON form (lists of floats, mask as bools)."""
        d: dict[str, list] = {k: getattr(self, k).tolist() for k in _STAT_FIELDS}
        d['mask'] = self.mask.tolist()
        return d


@dataclass(frozen=True, eq=False)
class StatisticsEntry:
    """Statistics of one dataset (one ``unnorm_key``)."""

    action: ActionStatistics
    proprio: ActionStatistics | None = None
    num_transitions: int | None = None
    num_trajectories: int | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], key: str) -> StatisticsEntry:
        """Build from the JSON object stored under ``key``."""
        if not isinstance(d, Mapping) or 'action' not in d:
            raise ValueError(f'statistics {key!r}: missing field "action"')
        proprio = d.get('proprio')
        return cls(
            action=ActionStatistics.from_dict(d['action'], f'statistics {key!r}.action'),
            proprio=None if proprio is None
            else ActionStatistics.from_dict(proprio, f'statistics {key!r}.proprio'),
            num_transitions=_optional_int(d, 'num_transitions', key),
            num_trajectories=_optional_int(d, 'num_trajectories', key),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form, omitting absent optional fields."""
        d: dict[str, Any] = {'action': self.action.to_dict()}
        if self.proprio is not None:
            d['proprio'] = self.proprio.to_dict()
        for name in ('num_transitions', 'num_trajectories'):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        return d


def _optional_int(d: Mapping[str, Any], name: str, key: str) -> int | None:
    value = d.get(name)
    if value is None:
        return None
    # JSON written by numpy pipelines sometimes stores counts as 1234.0 or [1234].
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ValueError(f'statistics {key!r}: field {name!r} must be an integer, got {value!r}')
    return int(value)


class DatasetStatistics(Mapping[str, StatisticsEntry]):
    """Read-only mapping ``unnorm_key -> StatisticsEntry``."""

    def __init__(self, entries: Mapping[str, StatisticsEntry]) -> None:
        if not entries:
            raise ValueError('dataset statistics are empty')
        self._entries = dict(entries)

    def __getitem__(self, key: str) -> StatisticsEntry:
        return self._entries[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def select(self, unnorm_key: str | None = None) -> StatisticsEntry:
        """Return the entry for ``unnorm_key``; None is allowed only with a single entry."""
        keys = sorted(self._entries)
        if unnorm_key is None:
            if len(keys) == 1:
                return self._entries[keys[0]]
            raise UnnormKeyError(
                f'unnorm_key is mandatory when statistics hold several datasets; '
                f'available keys: {keys}'
            )
        if unnorm_key not in self._entries:
            raise UnnormKeyError(f'unknown unnorm_key {unnorm_key!r}; available keys: {keys}')
        return self._entries[unnorm_key]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetStatistics:
        """Build from the parsed JSON (``{unnorm_key: {"action": {...}, ...}}``)."""
        if not isinstance(data, Mapping):
            raise ValueError(f'statistics must be a JSON object, got {type(data).__name__}')
        return cls({str(k): StatisticsEntry.from_dict(v, str(k)) for k, v in data.items()})

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {k: v.to_dict() for k, v in self._entries.items()}


def load_statistics(path: str | Path) -> DatasetStatistics:
    """Load a ``dataset_statistics.json`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'statistics file not found: {path}')
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except json.JSONDecodeError as e:
        raise ValueError(f'{path}: invalid JSON: {e}') from None
    try:
        return DatasetStatistics.from_dict(data)
    except ValueError as e:
        raise ValueError(f'{path}: {e}') from None


def save_statistics(path: str | Path, stats: Mapping[str, StatisticsEntry]) -> None:
    """Write statistics as JSON that ``load_statistics`` (and OpenVLA/Octo) can read."""
    data = DatasetStatistics(stats).to_dict()
    Path(path).write_text(json.dumps(data, indent=2) + '\n', encoding='utf-8')


class Normalizer:
    """Map raw actions to the model's normalized space and back.

    ``bounds_q99`` (OpenVLA): ``clip(2 (a - q01) / (q99 - q01) - 1, -1, 1)``; dimensions with
    q99 == q01 normalize to 0 and unnormalize to q01. ``normal`` (Octo): ``(a - mean) /
    (std + eps)``. Masked-out dimensions pass through unchanged in both modes.
    """

    def __init__(self, stats: ActionStatistics, mode: str = 'bounds_q99', eps: float = 1e-8):
        if mode not in MODES:
            raise ValueError(f'unknown normalization mode {mode!r}, expected one of {MODES}')
        self.stats = stats
        self.mode = mode
        self.eps = eps
        self._range = stats.q99 - stats.q01
        self._zero_range = self._range == 0
        # Dividing by 1 on zero-range dims avoids warnings; those dims are overwritten below.
        self._safe_range = np.where(self._zero_range, 1.0, self._range)

    def _check(self, x: Any, what: str) -> np.ndarray:
        a = np.asarray(x, dtype=np.float64)
        if a.ndim == 0 or a.shape[-1] != self.stats.dim:
            raise ValueError(f'{what}: last dimension must be {self.stats.dim}, got {a.shape}')
        if not np.all(np.isfinite(a)):
            col = int(np.argwhere(~np.isfinite(a))[0][-1])
            raise ValueError(f'{what}: non-finite value in dimension {col}')
        return a

    def normalize(self, actions: Any) -> np.ndarray:
        """Map raw actions (..., D) to normalized float64 actions."""
        a = self._check(actions, 'normalize')
        s = self.stats
        if self.mode == 'bounds_q99':
            out = np.clip(2.0 * (a - s.q01) / self._safe_range - 1.0, -1.0, 1.0)
            out = np.where(self._zero_range, 0.0, out)
        else:
            out = (a - s.mean) / (s.std + self.eps)
        return np.where(s.mask, out, a)

    def unnormalize(self, normalized: Any) -> np.ndarray:
        """Map normalized actions (..., D) to raw float64 actions (no clipping: see safety)."""
        x = self._check(normalized, 'unnormalize')
        s = self.stats
        if self.mode == 'bounds_q99':
            out = 0.5 * (x + 1.0) * self._range + s.q01
        else:
            out = x * (s.std + self.eps) + s.mean
        return np.where(s.mask, out, x)


def compute_statistics(actions: Any, mask: Any = None) -> ActionStatistics:
    """Compute statistics of an (N, D) array of raw actions (quantiles by ``np.quantile``)."""
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f'actions must have shape (N, D) with N, D > 0, got {a.shape}')
    if not np.all(np.isfinite(a)):
        raise ValueError('actions contain non-finite values')
    return ActionStatistics(
        mean=a.mean(axis=0),
        std=a.std(axis=0),
        min=a.min(axis=0),
        max=a.max(axis=0),
        q01=np.quantile(a, 0.01, axis=0),
        q99=np.quantile(a, 0.99, axis=0),
        mask=None if mask is None else np.asarray(mask, dtype=bool),
    )
