"""Action spaces: named, bounded, typed action dimensions loaded from YAML."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml

from vla_ros.paths import config_dir

KINDS = ('continuous', 'binary', 'discrete')
_DIM_FIELDS = ('name', 'low', 'high', 'unit', 'kind', 'num_categories', 'description')
_SPACE_FIELDS = ('name', 'description', 'dimensions')


@dataclass(frozen=True)
class ActionDimension:
    """One action component with its bounds, unit and kind.

    ``binary`` dimensions (e.g. a gripper) are continuous values in ``[low, high]`` that a
    driver thresholds; ``discrete`` dimensions (e.g. terminate) hold a category index.
    """

    name: str
    low: float
    high: float
    unit: str = '1'
    kind: str = 'continuous'
    num_categories: int | None = None
    description: str = ''

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f'action dimension name must be a non-empty str, got {self.name!r}')
        where = f'action dimension {self.name!r}'
        for attr in ('low', 'high'):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f'{where}: {attr} must be a number, got {value!r}')
            if not math.isfinite(value):
                raise ValueError(f'{where}: {attr} must be finite, got {value!r}')
            object.__setattr__(self, attr, float(value))
        if not self.low < self.high:
            raise ValueError(f'{where}: low ({self.low}) must be < high ({self.high})')
        if self.kind not in KINDS:
            raise ValueError(f'{where}: unknown kind {self.kind!r}, expected one of {KINDS}')
        if self.kind == 'discrete':
            n = self.num_categories
            if isinstance(n, bool) or not isinstance(n, int) or n < 2:
                raise ValueError(f'{where}: discrete needs integer num_categories >= 2, got {n!r}')
            if (self.low, self.high) != (0.0, float(n - 1)):
                raise ValueError(
                    f'{where}: discrete bounds must be [0, num_categories - 1] = [0, {n - 1}], '
                    f'got [{self.low}, {self.high}]'
                )
        elif self.num_categories is not None:
            raise ValueError(f'{where}: num_categories is only valid for kind "discrete"')
        if not isinstance(self.unit, str) or not isinstance(self.description, str):
            raise ValueError(f'{where}: unit and description must be strings')

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ActionDimension:
        """Build a dimension from a mapping; unknown keys are rejected to catch typos."""
        if not isinstance(d, Mapping):
            raise ValueError(f'action dimension must be a mapping, got {type(d).__name__}')
        unknown = set(d) - set(_DIM_FIELDS)
        if unknown:
            raise ValueError(
                f'action dimension {d.get("name")!r}: unknown keys {sorted(unknown)}, '
                f'allowed: {list(_DIM_FIELDS)}'
            )
        missing = [k for k in ('name', 'low', 'high') if k not in d]
        if missing:
            raise ValueError(f'action dimension {d.get("name")!r}: missing keys {missing}')
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """Return a plain mapping suitable for YAML (num_categories only when discrete)."""
        d = {k: getattr(self, k) for k in _DIM_FIELDS}
        if d['num_categories'] is None:
            del d['num_categories']
        return d


@dataclass(frozen=True)
class ActionSpace:
    """An ordered tuple of action dimensions; actions are arrays of shape (D,) or (N, D)."""

    name: str
    dimensions: tuple[ActionDimension, ...]
    description: str = ''

    def __post_init__(self) -> None:
        dims = tuple(self.dimensions)
        object.__setattr__(self, 'dimensions', dims)
        if not dims:
            raise ValueError(f'action space {self.name!r} has no dimensions')
        if not all(isinstance(d, ActionDimension) for d in dims):
            raise ValueError(f'action space {self.name!r}: dimensions must be ActionDimension')
        names = [d.name for d in dims]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f'action space {self.name!r}: duplicate dimension names {duplicates}')

    @property
    def dim(self) -> int:
        """Number of action dimensions D."""
        return len(self.dimensions)

    @property
    def names(self) -> tuple[str, ...]:
        """Dimension names in order."""
        return tuple(d.name for d in self.dimensions)

    @property
    def low(self) -> np.ndarray:
        """Lower bounds, float64 array of shape (D,)."""
        return np.array([d.low for d in self.dimensions], dtype=np.float64)

    @property
    def high(self) -> np.ndarray:
        """Upper bounds, float64 array of shape (D,)."""
        return np.array([d.high for d in self.dimensions], dtype=np.float64)

    def index(self, name: str) -> int:
        """Return the position of dimension ``name``."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(
                f'action space {self.name!r} has no dimension {name!r}; dimensions: '
                f'{list(self.names)}'
            ) from None

    def check(self, actions: Any) -> np.ndarray:
        """Return ``actions`` as float64 of shape (D,) or (N, D) after shape and NaN/Inf checks."""
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim not in (1, 2) or a.shape[-1] != self.dim:
            raise ValueError(
                f'action space {self.name!r} expects shape ({self.dim},) or (N, {self.dim}), '
                f'got {a.shape}'
            )
        bad = ~np.isfinite(a)
        if bad.any():
            col = int(np.argwhere(bad)[0][-1])
            raise ValueError(
                f'action space {self.name!r}: non-finite value in dimension '
                f'{self.names[col]!r} (index {col})'
            )
        return a

    def clip(self, actions: Any) -> np.ndarray:
        """Return a float64 copy of ``actions`` clipped to the bounds."""
        return np.clip(self.check(actions), self.low, self.high)

    def validate(self, actions: Any) -> np.ndarray:
        """Return ``actions`` as float64 if finite and within bounds, else raise ValueError."""
        a = self.check(actions)
        outside = (a < self.low) | (a > self.high)
        if outside.any():
            idx = tuple(np.argwhere(outside)[0])
            d = self.dimensions[idx[-1]]
            raise ValueError(
                f'action space {self.name!r}: dimension {d.name!r} value {a[idx]} outside '
                f'[{d.low}, {d.high}] {d.unit}'
            )
        return a

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ActionSpace:
        """Build a space from ``{name, description?, dimensions: [...]}``."""
        if not isinstance(d, Mapping):
            raise ValueError(f'action space must be a mapping, got {type(d).__name__}')
        unknown = set(d) - set(_SPACE_FIELDS)
        if unknown:
            raise ValueError(f'action space: unknown keys {sorted(unknown)}')
        if 'name' not in d or not isinstance(d.get('dimensions'), Sequence):
            raise ValueError('action space needs a "name" and a list of "dimensions"')
        dims = tuple(ActionDimension.from_dict(x) for x in d['dimensions'])
        return cls(name=d['name'], dimensions=dims, description=d.get('description', ''))

    def to_dict(self) -> dict[str, Any]:
        """Return a plain mapping; ``from_dict(to_dict())`` reproduces the space."""
        return {
            'name': self.name,
            'description': self.description,
            'dimensions': [d.to_dict() for d in self.dimensions],
        }


def available_action_spaces() -> list[str]:
    """Names of the action spaces shipped in ``config/action_spaces``."""
    return sorted(p.stem for p in config_dir('action_spaces').glob('*.yaml'))


def load_action_space(name_or_path: str | Path) -> ActionSpace:
    """Load an action space by shipped name (e.g. ``'arm7'``) or from a YAML file path."""
    text = str(name_or_path)
    path = Path(text)
    if not (path.suffix in ('.yaml', '.yml') or path.is_file()):
        path = config_dir('action_spaces') / f'{text}.yaml'
        if not path.is_file():
            raise ValueError(
                f'unknown action space {text!r}; available: {available_action_spaces()} '
                f'(or pass a path to a YAML file)'
            )
    if not path.is_file():
        raise FileNotFoundError(f'action space file not found: {path}')
    with open(path, encoding='utf-8') as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f'{path}: invalid YAML: {e}') from e
    try:
        return ActionSpace.from_dict(data)
    except (ValueError, TypeError) as e:
        raise ValueError(f'{path}: {e}') from e
