"""Shared machinery of the torch policy families: checkpoints, devices, normalization.

A checkpoint is a directory with ``config.json`` (family + model configuration),
``model.safetensors`` (weights; never a pickle) and ``dataset_statistics.json`` (the
normalization statistics, keyed by dataset as OpenVLA/Octo do, selected by
``unnorm_key``). Every family subclasses :class:`TorchPolicy` and implements
``build_model``, ``predict_normalized`` and ``training_loss``.
"""

import abc
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.actions.normalization import (
    ActionStatistics,
    DatasetStatistics,
    Normalizer,
    StatisticsEntry,
    load_statistics,
    save_statistics,
)
from vla_ros.actions.spaces import ActionSpace, load_action_space
from vla_ros.policies.contract import (
    InvalidObservationError,
    Observation,
    Policy,
    PolicyLoadError,
    PolicySpec,
)

CONFIG_FILE = 'config.json'
WEIGHTS_FILE = 'model.safetensors'
STATISTICS_FILE = 'dataset_statistics.json'
DTYPES = ('float32', 'bfloat16', 'float16')
LEGACY_FAMILIES = {'pi0': 'pi0_style'}  # config.json "family" -> registry name


def resolve_device(device: str):
    """A torch.device, with a clear error for unavailable accelerators."""
    import torch

    try:
        dev = torch.device(device or 'cpu')
    except RuntimeError as exc:
        raise PolicyLoadError(f'invalid device {device!r}: {exc}') from exc
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise PolicyLoadError(f'device {device!r} requested but CUDA is not available')
    return dev


def resolve_dtype(dtype: str):
    """A torch dtype from its name (float32, bfloat16, float16)."""
    import torch

    if dtype not in DTYPES:
        raise PolicyLoadError(f'dtype must be one of {DTYPES}, got {dtype!r}')
    return getattr(torch, dtype)


def bounds_statistics(space: ActionSpace) -> ActionStatistics:
    """Statistics that map [-1, 1] onto the action space bounds (for untrained models)."""
    low, high = space.low, space.high
    mid, half = (low + high) / 2, (high - low) / 2
    return ActionStatistics(mean=mid, std=half / np.sqrt(3), min=low, max=high,
                            q01=low, q99=high, mask=np.ones(space.dim, dtype=bool))


def validate_model_dir(path: str | Path) -> Path:
    """Check a checkpoint directory before touching it; clear errors otherwise."""
    if not str(path):
        raise PolicyLoadError('model_path is empty')
    path = Path(path).expanduser()
    if not path.exists():
        raise PolicyLoadError(f'model_path {str(path)!r} does not exist')
    if not path.is_dir():
        raise PolicyLoadError(f'model_path {str(path)!r} is not a directory')
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (path / f).is_file()]
    if missing:
        unsafe = sorted(p.name for p in path.glob('*') if p.suffix in ('.bin', '.pt', '.pth',
                                                                        '.ckpt', '.pkl'))
        hint = (f'; found pickle-based files {unsafe}, which are not loaded (they can run '
                f'code): convert them to safetensors') if unsafe else ''
        raise PolicyLoadError(f'{str(path)!r} lacks {missing}{hint}')
    return path


class TorchPolicy(Policy, abc.ABC):
    """A policy backed by a torch ``nn.Module`` with a configuration dataclass."""

    family: str = ''
    # Family names older checkpoints of this class were saved under (renamed families).
    legacy_families: tuple[str, ...] = ()
    config_class: type = None
    # Named configurations: 'tiny' runs on this CPU in tests, 'full' is the published size.
    presets: dict = {}

    def __init__(self, config=None, statistics: DatasetStatistics | None = None,
                 unnorm_key: str | None = None, device: str = 'cpu', dtype: str = 'float32',
                 seed: int = 0, model=None, **overrides):
        """Build the model from ``config`` (a dataclass, a dict, or defaults + overrides)."""
        import torch

        if config is None or isinstance(config, dict):
            try:
                config = self.config_class(**{**(config or {}), **overrides})
            except TypeError as exc:
                raise ValueError(f'{self.family}: bad configuration: {exc}') from exc
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.seed = int(seed)
        self.action_space = self.make_action_space(config)
        if statistics is None:
            statistics = DatasetStatistics({'default': StatisticsEntry(
                action=bounds_statistics(self.action_space))})
        self.statistics = statistics
        entry = statistics.select(unnorm_key or None)
        if entry.action.dim != self.action_space.dim:
            raise PolicyLoadError(f'statistics have {entry.action.dim} action dimensions, '
                                  f'the action space {self.action_space.name!r} has '
                                  f'{self.action_space.dim}')
        self.unnorm_key = unnorm_key
        self.normalizer = Normalizer(entry.action)
        torch.manual_seed(self.seed)
        self.model = (model if model is not None else self.build_model(config))
        self.model.to(self.device, self.dtype).eval()
        self._spec = self.make_spec(config)

    # ------------------------------------------------------------ subclass API
    @classmethod
    @abc.abstractmethod
    def build_model(cls, config):
        """Create the ``nn.Module`` for ``config`` (random initialisation)."""

    def make_action_space(self, config) -> ActionSpace:
        """The action space of ``config`` (a family may derive it from its checkpoint)."""
        return load_action_space(config.action_space)

    @abc.abstractmethod
    def make_spec(self, config) -> PolicySpec:
        """What this policy needs and produces."""

    @abc.abstractmethod
    def predict_normalized(self, observation: Observation) -> np.ndarray:
        """A (chunk_length, dim) chunk in normalized space ([-1, 1] where masked)."""

    def training_loss(self, batch: dict):
        """Loss on a batch {images, instructions, actions (normalized), proprio}."""
        raise NotImplementedError(f'{self.family} does not implement training')

    # ------------------------------------------------------------ construction
    @classmethod
    def load(cls, model_path: str = '', size: str = 'tiny', **kwargs) -> 'TorchPolicy':
        """Registry entry point: a checkpoint if ``model_path`` is set, else a preset."""
        if model_path:
            return cls.from_pretrained(model_path, **kwargs)
        if size not in cls.presets:
            raise ValueError(f'{cls.family}: unknown size {size!r}; presets: '
                             f'{sorted(cls.presets)}')
        known = {f.name for f in dataclasses.fields(cls.config_class)}
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in known}
        return cls(config={**cls.presets[size], **overrides}, **kwargs)

    @classmethod
    def count_parameters(cls, size: str = 'full') -> int:
        """Parameters of a preset, built on the meta device (no memory is allocated)."""
        import torch

        config = cls.config_class(**cls.presets[size])
        with torch.device('meta'):
            model = cls.build_model(config)
        return sum(p.numel() for p in model.parameters())

    def set_statistics(self, statistics: DatasetStatistics, unnorm_key: str) -> None:
        """Install dataset statistics (the trainer calls this), keeping the normalizer mode.

        Families whose inputs are normalized too (proprio) refresh that in
        :meth:`_statistics_changed`; otherwise a trained model would see raw inputs in
        training and normalized ones once loaded from its checkpoint, or the reverse.
        """
        mode = self.normalizer.mode
        self.statistics = statistics
        self.unnorm_key = unnorm_key
        self.normalizer = Normalizer(statistics.select(unnorm_key).action, mode=mode)
        self._statistics_changed()

    def _statistics_changed(self) -> None:
        """Hook: rebuild whatever derives from ``self.statistics`` (default: nothing)."""

    def collate(self, samples: list[dict]) -> dict:
        """Prepared training samples -> the shared batch convention (a family may override)."""
        from vla_ros.training.data import default_collate

        return default_collate(self, samples)

    # --------------------------------------------------------------- contract
    @property
    def spec(self) -> PolicySpec:
        """See :class:`PolicySpec`."""
        return self._spec

    def validate_observation(self, observation: Any) -> None:
        """The contract's checks plus the proprio length the model was built for."""
        super().validate_observation(observation)
        dim = getattr(self.config, 'proprio_dim', None)
        if self.spec.uses_proprio and dim is not None \
                and np.asarray(observation.proprio).size != dim:
            raise InvalidObservationError(
                f'policy {self.spec.name!r}: proprio must have {dim} values, got '
                f'{np.asarray(observation.proprio).size}')

    def predict_chunk(self, observation: Observation) -> np.ndarray:
        """Validate, predict in normalized space, unnormalize, check."""
        import torch

        self.validate_observation(observation)
        with torch.inference_mode():
            normalized = np.asarray(self.predict_normalized(observation), dtype=np.float64)
        return self.check_chunk(self.normalizer.unnormalize(normalized).astype(np.float32))

    def images_tensor(self, observation: Observation):
        """Camera images -> float tensor (1, cameras, 3, H, W), normalized as declared."""
        import torch

        spec = self.spec
        stack = np.stack([observation.images[c] for c in spec.camera_names])  # (C, H, W, 3)
        x = torch.from_numpy(stack).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        if spec.image_mean is not None:
            mean = torch.tensor(spec.image_mean, device=self.device).view(1, 3, 1, 1)
            std = torch.tensor(spec.image_std, device=self.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x.unsqueeze(0).to(self.dtype)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameter count of the model."""
        return sum(p.numel() for p in self.model.parameters()
                   if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------- checkpoints
    def save_pretrained(self, path: str | Path) -> Path:
        """Write config.json, model.safetensors and dataset_statistics.json."""
        from safetensors.torch import save_file

        from vla_ros.file_modes import respect_umask

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {'family': self.family, 'config': dataclasses.asdict(self.config)}
        (path / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        state = {k: v.detach().to('cpu').contiguous()
                 for k, v in self.model.state_dict().items()}
        save_file(_untie(state), str(path / WEIGHTS_FILE))
        respect_umask(path / WEIGHTS_FILE)  # save_file writes 0600
        save_statistics(path / STATISTICS_FILE, self.statistics)
        return path

    @classmethod
    def from_pretrained(cls, model_path: str | Path, unnorm_key: str | None = None,
                        device: str = 'cpu', dtype: str = 'float32', seed: int = 0,
                        **overrides) -> 'TorchPolicy':
        """Load a checkpoint written by :meth:`save_pretrained` (safetensors only)."""
        from safetensors.torch import load_file

        path = validate_model_dir(model_path)
        try:
            meta = json.loads((path / CONFIG_FILE).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise PolicyLoadError(f'{path / CONFIG_FILE}: unreadable: {exc}') from exc
        if meta.get('family') not in (cls.family, *cls.legacy_families):
            raise PolicyLoadError(f'{path} holds a {meta.get("family")!r} checkpoint, not '
                                  f'{cls.family!r}')
        stats_path = path / STATISTICS_FILE
        statistics = load_statistics(stats_path) if stats_path.is_file() else None
        policy = cls(config=meta['config'], statistics=statistics, unnorm_key=unnorm_key,
                     device=device, dtype=dtype, seed=seed, **overrides)
        try:
            state = load_file(str(path / WEIGHTS_FILE))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise PolicyLoadError(f'{path / WEIGHTS_FILE}: not a readable safetensors file: '
                                  f'{exc}') from exc
        missing, unexpected = policy.model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not _is_tied(policy.model, k)]
        if missing or unexpected:
            raise PolicyLoadError(f'{path}: weights do not match the configuration '
                                  f'(missing {missing[:5]}, unexpected {unexpected[:5]})')
        policy.model.to(policy.device, policy.dtype).eval()
        return policy


def _untie(state: dict) -> dict:
    """Copy tensors that share storage (tied embeddings): safetensors refuses them."""
    seen, out = {}, {}
    for key, tensor in state.items():
        ptr = (tensor.data_ptr(), tensor.shape)
        out[key] = tensor.clone() if ptr in seen else tensor
        seen.setdefault(ptr, key)
    return out


def _is_tied(model, key: str) -> bool:
    tied = getattr(model, '_tied_weights_keys', None) or ()
    return any(key == t or key.endswith(str(t)) for t in tied)


def load_any(model_path: str | Path, **kwargs: Any) -> Policy:
    """Load a checkpoint of any registered torch family from its config.json."""
    from vla_ros.policies.registry import make_policy

    path = validate_model_dir(model_path)
    family = json.loads((path / CONFIG_FILE).read_text()).get('family', '')
    # vla_ros's small pi0-style family was registered as 'pi0' before 'pi0' meant LeRobot's
    # pi0 (whose config.json has "type", not "family").
    family = LEGACY_FAMILIES.get(family, family)
    return make_policy(family, model_path=str(path), **kwargs)
