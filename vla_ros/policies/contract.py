"""The contract every policy implements, and the checks the runtime applies around it.

A policy receives an :class:`Observation` (RGB images already resized to the size its
:class:`PolicySpec` declares, the language instruction, the camera stamp and optional
proprioception) and returns an action chunk: a float32 array of shape
``(chunk_length, action_space.dim)`` in action-space units (already unnormalized), one row
per control period.

This module is pure: no rclpy and no torch, so the runtime, tools and tests can use it
without loading a model stack.
"""

from __future__ import annotations

import abc
import math
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from vla_ros.actions.spaces import ActionSpace


class InvalidObservationError(ValueError):
    """An observation does not match what the policy's spec declares."""


class InvalidChunkError(RuntimeError):
    """A policy returned an action chunk of the wrong shape or with NaN/Inf values."""


class PolicyLoadError(RuntimeError):
    """A policy could not be constructed (missing module, weights, config, ...)."""


def _as_size(value: Any) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f'image size must be a (width, height) pair, got {value!r}') from None
    if w <= 0 or h <= 0:
        raise ValueError(f'image size must be positive, got {(w, h)}')
    return w, h


def _as_rgb_stats(value: Any, what: str) -> tuple[float, float, float] | None:
    if value is None:
        return None
    stats = tuple(float(v) for v in np.ravel(value))
    if len(stats) != 3 or not all(math.isfinite(v) for v in stats):
        raise ValueError(f'{what} must be 3 finite numbers (R, G, B), got {value!r}')
    return stats  # type: ignore[return-value]


# How frames may be resized to a policy's image_size (see PolicySpec.image_resize).
IMAGE_RESIZE_METHODS = ('default', 'resize-naive', 'resize-crop', 'letterbox')


@dataclass(frozen=True)
class PolicySpec:
    """What a policy declares about its inputs and outputs.

    ``image_size`` is ``(width, height)``. ``image_mean``/``image_std`` are per-channel RGB
    statistics on the [0, 1] scale used by ``normalize_image``; ``None`` means the policy
    takes uint8 images as they are. ``control_period`` is the time in seconds between
    consecutive actions of a chunk. ``image_resize`` is how frames are brought to
    ``image_size`` (``prepare_image``'s ``method``): ``'default'`` (OpenCV area/linear) or
    one of OpenVLA's Pillow-bicubic strategies ``'resize-naive'``, ``'resize-crop'``,
    ``'letterbox'``, so a released checkpoint sees the pixels it was trained on.
    """

    name: str
    action_space: ActionSpace
    chunk_length: int
    camera_names: tuple[str, ...] = ('front',)
    image_size: tuple[int, int] = (224, 224)
    image_mean: tuple[float, float, float] | None = None
    image_std: tuple[float, float, float] | None = None
    uses_proprio: bool = False
    control_period: float = 0.1
    image_resize: str = 'default'

    def __post_init__(self) -> None:
        # Normalise user-friendly inputs (lists, numpy scalars) so specs compare and hash.
        set_ = object.__setattr__
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f'policy name must be a non-empty string, got {self.name!r}')
        if isinstance(self.chunk_length, bool) or int(self.chunk_length) != self.chunk_length:
            raise ValueError(f'chunk_length must be an integer, got {self.chunk_length!r}')
        set_(self, 'chunk_length', int(self.chunk_length))
        if self.chunk_length < 1:
            raise ValueError(f'chunk_length must be >= 1, got {self.chunk_length}')
        cams = (self.camera_names,) if isinstance(self.camera_names, str) else self.camera_names
        cams = tuple(cams)
        if not cams or not all(isinstance(c, str) and c for c in cams):
            raise ValueError(f'camera_names must be non-empty strings, got {self.camera_names!r}')
        if len(set(cams)) != len(cams):
            raise ValueError(f'camera_names has duplicates: {cams}')
        set_(self, 'camera_names', cams)
        set_(self, 'image_size', _as_size(self.image_size))
        set_(self, 'image_mean', _as_rgb_stats(self.image_mean, 'image_mean'))
        set_(self, 'image_std', _as_rgb_stats(self.image_std, 'image_std'))
        if (self.image_mean is None) != (self.image_std is None):
            raise ValueError('image_mean and image_std must be given together (or neither)')
        if self.image_std is not None and min(self.image_std) <= 0:
            raise ValueError(f'image_std must be > 0, got {self.image_std}')
        period = float(self.control_period)
        if not (math.isfinite(period) and period > 0):
            raise ValueError(f'control_period must be a positive number, got {period!r}')
        set_(self, 'control_period', period)
        set_(self, 'uses_proprio', bool(self.uses_proprio))
        if self.image_resize not in IMAGE_RESIZE_METHODS:
            raise ValueError(f'image_resize must be one of {IMAGE_RESIZE_METHODS}, got '
                             f'{self.image_resize!r}')
        for attr in ('dim', 'low', 'high', 'names', 'clip'):
            if not hasattr(self.action_space, attr):
                raise ValueError(f'action_space must be an ActionSpace, got {self.action_space!r}')

    @property
    def chunk_shape(self) -> tuple[int, int]:
        """Shape ``(chunk_length, action_dim)`` of every chunk this policy returns."""
        return (self.chunk_length, self.action_space.dim)

    @property
    def chunk_duration(self) -> float:
        """Seconds covered by one chunk (``chunk_length * control_period``)."""
        return self.chunk_length * self.control_period


@dataclass
class Observation:
    """One policy input: RGB images per camera, the instruction and the camera stamp.

    ``images`` maps camera name to an HxWx3 uint8 RGB array already resized to the spec's
    ``image_size``; ``stamp`` is the camera frame's time in seconds (used to age chunks);
    ``proprio`` is an optional 1-D float state vector.
    """

    images: dict[str, np.ndarray]
    instruction: str
    stamp: float = 0.0
    proprio: np.ndarray | None = field(default=None)

    @classmethod
    def make_example(
        cls,
        spec_or_size: PolicySpec | tuple[int, int],
        instruction: str = 'pick up the red cube',
        stamp: float = 0.0,
        seed: int = 0,
    ) -> Observation:
        """Build a valid, deterministic fake observation for a spec or a ``(w, h)`` size.

        With a size, a single ``'front'`` camera is used. Proprioception (zeros of the
        action dimension) is added only when the spec declares ``uses_proprio``.
        """
        if isinstance(spec_or_size, PolicySpec):
            cams, (w, h) = spec_or_size.camera_names, spec_or_size.image_size
            proprio = (
                np.zeros(spec_or_size.action_space.dim, dtype=np.float32)
                if spec_or_size.uses_proprio
                else None
            )
        else:
            cams, (w, h), proprio = ('front',), _as_size(spec_or_size), None
        rng = np.random.default_rng(seed)
        images = {c: rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for c in cams}
        return cls(images=images, instruction=instruction, stamp=float(stamp), proprio=proprio)


def validate_observation(spec: PolicySpec, obs: Any) -> None:
    """Raise :class:`InvalidObservationError` unless ``obs`` matches ``spec``."""
    who = f'policy {spec.name!r}'
    if not isinstance(obs, Observation):
        raise InvalidObservationError(f'{who}: expected an Observation, got {type(obs).__name__}')
    if not isinstance(obs.instruction, str):
        raise InvalidObservationError(
            f'{who}: instruction must be a string, got {type(obs.instruction).__name__}'
        )
    if not obs.instruction.strip():
        raise InvalidObservationError(f'{who}: instruction is empty')
    if isinstance(obs.stamp, bool) or not isinstance(obs.stamp, numbers.Real):
        raise InvalidObservationError(
            f'{who}: stamp must be a number of seconds, got {obs.stamp!r}'
        )
    if not math.isfinite(obs.stamp):
        raise InvalidObservationError(f'{who}: stamp must be finite, got {obs.stamp!r}')
    if not isinstance(obs.images, dict):
        raise InvalidObservationError(f'{who}: images must be a dict of camera name -> array')
    w, h = spec.image_size
    for cam in spec.camera_names:
        if cam not in obs.images:
            raise InvalidObservationError(
                f'{who}: missing camera {cam!r}; expected {list(spec.camera_names)}, '
                f'got {sorted(obs.images)}'
            )
        img = obs.images[cam]
        if not isinstance(img, np.ndarray):
            raise InvalidObservationError(
                f'{who}: camera {cam!r} image must be a numpy array, got {type(img).__name__}'
            )
        if img.dtype != np.uint8:
            raise InvalidObservationError(
                f'{who}: camera {cam!r} image must be uint8 RGB, got dtype {img.dtype}'
            )
        if img.shape != (h, w, 3):
            raise InvalidObservationError(
                f'{who}: camera {cam!r} image must have shape (H, W, 3) = {(h, w, 3)} '
                f'(spec image_size {(w, h)} is width x height), got {img.shape}'
            )
    if spec.uses_proprio:
        p = obs.proprio
        if p is None:
            raise InvalidObservationError(f'{who}: declares uses_proprio but proprio is None')
        p = np.asarray(p)
        if p.ndim != 1 or p.size == 0 or not np.issubdtype(p.dtype, np.number):
            raise InvalidObservationError(
                f'{who}: proprio must be a non-empty 1-D numeric array, got shape {p.shape} '
                f'dtype {p.dtype}'
            )
        if not np.isfinite(p).all():
            raise InvalidObservationError(f'{who}: proprio contains NaN or Inf')


def check_chunk(spec: PolicySpec, actions: Any) -> np.ndarray:
    """Return ``actions`` as float32 ``(chunk_length, dim)``, else raise InvalidChunkError."""
    who = f'policy {spec.name!r}'
    try:
        a = np.asarray(actions, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidChunkError(f'{who}: chunk is not a numeric array ({e})') from None
    if a.shape != spec.chunk_shape:
        raise InvalidChunkError(
            f'{who}: chunk must have shape (chunk_length, action_dim) = {spec.chunk_shape}, '
            f'got {a.shape}'
        )
    bad = ~np.isfinite(a)
    if bad.any():
        step, col = (int(i) for i in np.argwhere(bad)[0])
        raise InvalidChunkError(
            f'{who}: chunk has {int(bad.sum())} non-finite value(s), first at step {step} '
            f'dimension {spec.action_space.names[col]!r}'
        )
    return a


class Policy(abc.ABC):
    """Base class of all policies: declare a spec, predict action chunks.

    Implementations must be safe to call from one worker thread at a time; the runtime
    never calls ``predict_chunk`` concurrently on the same instance.

    Besides ``spec`` and ``predict_chunk`` every policy has the members below; their
    defaults are right for an ordinary image-conditioned policy, and a family overrides
    only what it needs. Callers use them directly (never ``getattr`` probing):

    - ``needs_images`` (class attribute, default True): False promises the policy never
      looks at pixels (a privileged simulation expert), so offline rollouts may hand it
      blank frames of the declared size instead of rendering.
    - ``attach_simulator(sim, instance)``: privileged simulator access before a simulated
      episode; the default ignores it (a real policy sees observations only).
    - ``retriever`` (default None): an instruction retriever the policy maps unknown
      instructions through (see ``instruction_retrieval``), so the node can say which
      known instruction it will follow.
    - ``model`` (default None): the neural network behind the policy, if any.
    - ``history_window`` (default 1): frames one prediction sees, the newest included. A
      family with history (Octo, RT-1) keeps the frames of its last predictions within
      the episode and pads at the episode start by its own rule; training gives every
      sample the real earlier frames of its episode (``EpisodeDataset.samples``), and
      the family's ``collate`` pads them by that same rule.
    - ``action_head`` / ``action_type`` (class attributes, default ''): how the family
      produces actions, for the policy table (``'diffusion'``, ``'continuous'``, ...).
    - ``set_statistics(statistics, unnorm_key)`` and ``collate(samples)``: the training
      hooks; the default says the policy is not trainable. ``TorchPolicy`` implements
      both (the shared batch convention), a family overrides ``collate`` for its own.
    """

    needs_images: bool = True
    retriever: Any = None
    model: Any = None
    history_window: int = 1
    action_head: str = ''
    action_type: str = ''

    @property
    @abc.abstractmethod
    def spec(self) -> PolicySpec:
        """The policy's declared inputs and outputs."""

    def reset(self) -> None:  # noqa: B027 - optional hook; stateless policies need nothing
        """Forget episode state (history, caches); called on a new episode or instruction."""

    @abc.abstractmethod
    def predict_chunk(self, observation: Observation) -> np.ndarray:
        """Return a float32 ``(chunk_length, dim)`` chunk in action-space units."""

    def validate_observation(self, observation: Any) -> None:
        """Raise InvalidObservationError unless ``observation`` matches this policy's spec."""
        validate_observation(self.spec, observation)

    def check_chunk(self, actions: Any) -> np.ndarray:
        """Return ``actions`` as a validated float32 chunk, else raise InvalidChunkError."""
        return check_chunk(self.spec, actions)

    def attach_simulator(self, sim: Any, instance: Any) -> None:  # noqa: B027 - optional
        """Take privileged access to ``sim`` for the episode ``instance`` (default: ignore)."""

    def set_statistics(self, statistics: Any, unnorm_key: str) -> None:
        """Install dataset statistics before training (default: not trainable, raises)."""
        raise NotImplementedError(f'policy {self.spec.name!r} is not trainable: it takes no '
                                  f'dataset statistics')

    def collate(self, samples: list[dict]) -> dict:
        """Training samples (images already prepared) -> a batch for ``training_loss``.

        The default says the policy is not trainable.
        """
        raise NotImplementedError(f'policy {self.spec.name!r} is not trainable: it has no '
                                  f'training batch format')

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (GPU memory, threads); the default does nothing."""
