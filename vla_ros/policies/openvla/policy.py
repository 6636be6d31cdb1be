"""The OpenVLA policy: prompt + image -> greedy action tokens -> unnormalized action.

Two kinds of ``model_path``:

* a directory written by :meth:`OpenVlaPolicy.save_pretrained` (transformers
  ``save_pretrained``: config.json + model.safetensors, plus dataset_statistics.json and
  the tokenizer files), loaded with this project's model code;
* a released ``openvla/openvla-7b``-style directory (config.json model_type ``openvla``,
  sharded safetensors, Llama tokenizer): loaded natively into this project's model
  (:mod:`released_format`, :mod:`weight_mapping`, :mod:`released_loader`), whether or not
  it has an ``auto_map``; its own Python code is never imported...
* ...unless ``allow_remote_code=True`` is passed for a directory with an ``auto_map``: then
  that code runs it (:mod:`vla_ros.policies.openvla.remote`), as before.

Variants of the family (:data:`VARIANTS`, e.g. the simulation variant
:mod:`vla_ros.policies.openvla_sim`) subclass :class:`OpenVlaPolicy`; a checkpoint's
config.json selects its variant (:meth:`OpenVlaPolicy.claims`) and so does a preset name,
so ``policy:=openvla`` loads any of them.
"""

import dataclasses
import importlib
from pathlib import Path

import numpy as np
import torch

from vla_ros.actions.normalization import Normalizer, save_statistics
from vla_ros.actions.tokenizers import OpenVlaActionTokenizer
from vla_ros.policies.contract import (
    Observation,
    PolicyLoadError,
    PolicySpec,
)
from vla_ros.policies.openvla.configuration_openvla import MODEL_TYPE, PRESETS, OpenVlaConfig
from vla_ros.policies.openvla.decoding import greedy_action_tokens
from vla_ros.policies.openvla.modeling_openvla import OpenVlaForActionPrediction
from vla_ros.policies.openvla.processing_openvla import PromptEncoder
from vla_ros.policies.openvla.released_format import (
    RELEASED_MODEL_TYPE,
    check_preprocessor_config,
    parse_released_config,
)
from vla_ros.policies.openvla.released_loader import (
    PREPROCESSOR_FILE,
    build_on_meta,
    keep_rotary_float32,
    load_checkpoint_tokenizer,
    load_released_weights,
    read_json,
    released_statistics,
)
from vla_ros.policies.openvla.remote import (
    RemoteCodeOpenVlaPolicy,
    read_config,
    remote_auto_map,
)
from vla_ros.policies.tokenizer import load_text_tokenizer
from vla_ros.policies.torch_policy import STATISTICS_FILE, TorchPolicy, resolve_dtype

WEIGHT_FILES = ('model.safetensors', 'model.safetensors.index.json')
TOKENIZER_FILE = 'tokenizer.json'
# Policy classes of the family's variants ("module:Class"), imported only when asked about.
VARIANTS = ('vla_ros.policies.openvla_sim.policy:OpenVlaSimPolicy',)


def variants() -> list[type]:
    """The variant policy classes (imports their modules)."""
    found = []
    for target in VARIANTS:
        module, _, name = target.partition(':')
        found.append(getattr(importlib.import_module(module), name))
    return found


def _make_config(config_class, config, overrides: dict) -> OpenVlaConfig:
    """A ``config_class`` from a config, a dict or nothing, plus keyword overrides."""
    if isinstance(config, config_class):
        if not overrides:
            return config
        config = config.to_dict()
    config = {**(config or {}), **overrides}
    fields = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(config) - fields - {'model_type', 'transformers_version'})
    if unknown:
        raise ValueError(f'openvla: unknown option(s) {unknown}; see '
                         f'{config_class.__name__} for the configuration fields')
    return config_class.from_dict(config)


class OpenVlaPolicy(TorchPolicy):
    """OpenVLA (Prismatic DINOv2 + SigLIP -> Llama-2) predicting one action of 7 tokens."""

    family = 'openvla'
    config_class = OpenVlaConfig
    model_class = OpenVlaForActionPrediction
    presets = PRESETS
    action_head = 'text tokens (256 bins, last ids of the vocabulary)'
    action_type = 'discrete'

    def __init__(self, config=None, statistics=None, unnorm_key: str | None = None,
                 device: str = 'cpu', dtype: str = 'float32', seed: int = 0, model=None,
                 tokenizer=None, image_resize: str = 'default', **overrides):
        """Build (or wrap ``model``) with the 32k text tokenizer; see TorchPolicy.

        ``image_resize`` is how camera frames are brought to the model's size (see
        ``PolicySpec.image_resize``): OpenCV by default, OpenVLA's Pillow bicubic
        strategies for released checkpoints.
        """
        config = _make_config(self.config_class, config, overrides)
        self.image_resize = image_resize
        super().__init__(config, statistics=statistics, unnorm_key=unnorm_key, device=device,
                         dtype=dtype, seed=seed, model=model)
        keep_rotary_float32(self.model)  # TorchPolicy's model.to(dtype) cast them too
        self.tokenizer = tokenizer if tokenizer is not None else load_text_tokenizer()
        if len(self.tokenizer) > config.text_config.vocab_size:
            raise PolicyLoadError(f'the tokenizer has {len(self.tokenizer)} tokens, more than '
                                  f'the {config.text_config.vocab_size} embedding rows')
        self.prompts = PromptEncoder(self.tokenizer)
        self.action_tokenizer = OpenVlaActionTokenizer(vocab_size=config.text_vocab_size,
                                                       num_bins=config.n_action_bins)
        self._proprio_normalizer = self._make_proprio_normalizer()

    # ------------------------------------------------------------ TorchPolicy API
    @classmethod
    def build_model(cls, config: OpenVlaConfig) -> OpenVlaForActionPrediction:
        """A randomly initialised OpenVLA model (no pretrained weights exist offline)."""
        return cls.model_class(config)

    def make_spec(self, config: OpenVlaConfig) -> PolicySpec:
        """The config's cameras at ``image_size``; raw [0, 1] pixels (encoders normalize)."""
        return PolicySpec(name='openvla', action_space=self.action_space,
                          chunk_length=config.chunk_length, camera_names=config.cameras,
                          image_size=(config.image_size, config.image_size),
                          uses_proprio=config.use_proprio,
                          control_period=config.control_period,
                          image_resize=self.image_resize)

    # ------------------------------------------------------------ proprio
    def _statistics_changed(self) -> None:
        """The proprio normalizer follows the installed dataset statistics."""
        self._proprio_normalizer = self._make_proprio_normalizer()

    def _make_proprio_normalizer(self) -> Normalizer | None:
        """q01/q99 bounds to [-1, 1], as OpenVLA-OFT normalizes proprio; None: raw values."""
        if not self.config.use_proprio:
            return None
        entry = self.statistics.select(self.unnorm_key or None)
        if entry.proprio is None:
            return None
        if entry.proprio.dim != self.config.proprio_dim:
            raise PolicyLoadError(f'openvla: proprio statistics have {entry.proprio.dim} '
                                  f'dimensions, the config says {self.config.proprio_dim}')
        return Normalizer(entry.proprio, mode='bounds_q99')

    def proprio_tensor(self, proprio) -> torch.Tensor | None:
        """Raw proprio (B, P) -> normalized model input; None when the model takes none."""
        if not self.config.use_proprio:
            return None
        p = np.asarray(proprio, dtype=np.float64)
        if self._proprio_normalizer is not None:
            p = self._proprio_normalizer.normalize(p)  # clipped to [-1, 1]
        return torch.as_tensor(p, dtype=self.dtype, device=self.device)


    @property
    def num_action_tokens(self) -> int:
        """Tokens decoded per prediction: chunk_length x action dimensions (7 for arm7)."""
        return self.config.chunk_length * self.action_space.dim

    def images_tensor(self, observation: Observation) -> torch.Tensor:
        """Camera images -> float32 (1, cameras, 3, H, W) in [0, 1], whatever the dtype.

        The vision backbone normalizes per tower in float32 and casts the result, as
        OpenVLA's processor does; casting the raw [0, 1] pixels to bfloat16 first would
        round them differently.
        """
        stack = np.stack([observation.images[c] for c in self.spec.camera_names])
        pixels = torch.from_numpy(stack).to(self.device).permute(0, 3, 1, 2)
        return pixels.float().div(255.0).unsqueeze(0)

    def model_inputs(self, observation: Observation) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids (1, L), pixel_values (1, 3, H, W))`` for an observation."""
        pixels = self._pixel_values(self.images_tensor(observation))
        ids = torch.tensor([self.prompts.encode(observation.instruction)], device=self.device)
        return ids, pixels

    def _pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """(B, cameras, 3, H, W) -> the model's pixel input: (B, 3, H, W) for one camera."""
        return images[:, 0] if images.shape[1] == 1 else images

    def predict_action_tokens(self, observation: Observation) -> np.ndarray:
        """The greedy action token ids (num_action_tokens,) for an observation."""
        ids, pixels = self.model_inputs(observation)
        proprio = None if not self.config.use_proprio \
            else self.proprio_tensor(np.asarray(observation.proprio).reshape(1, -1))
        with torch.inference_mode():
            tokens = greedy_action_tokens(self.model, ids, pixels, self.num_action_tokens,
                                          self.config.action_token_range, proprio)
        return tokens[0].cpu().numpy()

    def predict_normalized(self, observation: Observation) -> np.ndarray:
        """Decode the action tokens to bin centers in [-1, 1], shape (chunk_length, dim)."""
        tokens = self.predict_action_tokens(observation)
        return self.action_tokenizer.decode(tokens).reshape(self.spec.chunk_shape)

    def predict_chunk(self, observation: Observation) -> np.ndarray:
        """As TorchPolicy, then clipped to the action space.

        Dimensions whose statistics ``mask`` is False (OpenVLA: the gripper) pass through
        as raw bin centers in [-1, 1], which can lie outside the space's bounds.
        """
        chunk = super().predict_chunk(observation)
        return self.action_space.clip(chunk).astype(np.float32)

    def training_loss(self, batch: dict) -> torch.Tensor:
        """Next-token cross-entropy on the action tokens only (teacher forcing).

        Targets are ``OpenVlaActionTokenizer.encode`` of the batch's normalized actions
        (first ``chunk_length`` steps); prompt tokens, image patches, padding and invalid
        steps are masked out of the loss.
        """
        images = torch.as_tensor(batch['images'])
        actions = torch.as_tensor(batch['actions'])
        instructions = list(batch['instructions'])
        chunk, dim = self.spec.chunk_shape
        if images.ndim != 5 or actions.ndim != 3 or actions.shape[0] != len(instructions):
            raise ValueError(f'openvla batch: need images (B, cams, 3, H, W), actions (B, T, D) '
                             f'and B instructions; got {tuple(images.shape)}, '
                             f'{tuple(actions.shape)}, {len(instructions)}')
        if actions.shape[1] < chunk or actions.shape[2] != dim:
            raise ValueError(f'openvla batch: actions must be (B, >={chunk}, {dim}), got '
                             f'{tuple(actions.shape)}')
        valid = batch.get('valid')
        valid = torch.ones(actions.shape[:2], dtype=torch.bool) if valid is None \
            else torch.as_tensor(valid, dtype=torch.bool)
        valid = valid[:, :chunk, None].expand(-1, -1, dim).reshape(len(instructions), -1)
        if not valid.any():
            raise ValueError('openvla batch: no valid action steps to learn from')
        targets = self.action_tokenizer.encode(
            actions[:, :chunk].detach().cpu().double().numpy()).reshape(len(instructions), -1)
        text = self.prompts.training_batch(instructions, targets, valid.cpu().numpy())
        proprio = None
        if self.config.use_proprio:
            if batch.get('proprio') is None:
                raise ValueError('openvla batch: this model uses proprio; the batch has none')
            proprio = self.proprio_tensor(torch.as_tensor(batch['proprio']).cpu().numpy())
        auxiliary = self.auxiliary_inputs(batch)
        out = self.model(
            **auxiliary,
            proprio=proprio,
            input_ids=torch.from_numpy(text['input_ids']).to(self.device),
            attention_mask=torch.from_numpy(text['attention_mask']).to(self.device),
            labels=torch.from_numpy(text['labels']).to(self.device),
            pixel_values=self._pixel_values(images).to(self.device, self.dtype))
        return out.loss

    def auxiliary_inputs(self, batch: dict) -> dict:
        """Training-only model inputs from the batch besides the tokens (OpenVLA: none)."""
        del batch
        return {}

    # ------------------------------------------------------------ construction
    @classmethod
    def load(cls, model_path: str = '', size: str = 'tiny', allow_remote_code: bool = False,
             **kwargs) -> 'OpenVlaPolicy | RemoteCodeOpenVlaPolicy':
        """Registry entry: a checkpoint if ``model_path`` is set, else a preset.

        A preset of a variant (e.g. ``sim_pixel``) builds that variant.
        """
        if model_path:
            return cls.from_pretrained(model_path, allow_remote_code=allow_remote_code,
                                       **kwargs)
        if size not in cls.presets:
            owner = next((v for v in variants() if issubclass(v, cls) and size in v.presets),
                         None)
            if owner is None:
                known = sorted({*cls.presets, *(p for v in variants() if issubclass(v, cls)
                                                for p in v.presets)})
                raise ValueError(f'openvla: unknown size {size!r}; presets: {known}')
            return owner.load(size=size, **kwargs)
        return cls(config=dict(cls.presets[size]), **kwargs)

    @classmethod
    def claims(cls, config: dict) -> bool:
        """Whether a checkpoint's parsed config.json is this class's own format."""
        return config.get('model_type') == MODEL_TYPE

    @classmethod
    def checkpoint_config(cls, config: dict) -> OpenVlaConfig | None:
        """The configuration to load a claimed checkpoint with (None: its config.json)."""
        del config
        return None

    @classmethod
    def checkpoint_class(cls, config: dict) -> type:
        """The family's policy class for a checkpoint: the variant that claims it, else this."""
        return next((v for v in variants() if v.claims(config)), OpenVlaPolicy)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the model (safetensors via transformers), the statistics and the tokenizer."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        from vla_ros.file_modes import respect_umask

        self.model.save_pretrained(str(path))
        self.tokenizer.save_pretrained(str(path))
        save_statistics(path / STATISTICS_FILE, self.statistics)
        respect_umask(path)  # safetensors writes 0600
        return path

    @classmethod
    def from_pretrained(cls, model_path: str | Path, unnorm_key: str | None = None,
                        device: str = 'cpu', dtype: str = 'float32', seed: int = 0,
                        allow_remote_code: bool = False, **options):
        """Load a saved policy, or a custom-code checkpoint when explicitly allowed."""
        from vla_ros.actions.normalization import load_statistics

        path = _checked_dir(model_path)
        config = read_config(path)
        run_own_code = allow_remote_code is True and remote_auto_map(config)
        if config.get('model_type') == RELEASED_MODEL_TYPE and not run_own_code:
            return cls.from_released(path, config, unnorm_key=unnorm_key, device=device,
                                     dtype=dtype, seed=seed, **options)
        if remote_auto_map(config):
            return RemoteCodeOpenVlaPolicy.load(path, allow_remote_code=allow_remote_code,
                                                unnorm_key=unnorm_key, device=device,
                                                dtype=dtype, seed=seed, **options)
        own = cls.checkpoint_class(config)
        if own is not cls and issubclass(own, cls):  # a variant's checkpoint
            return own.from_pretrained(path, unnorm_key=unnorm_key, device=device, dtype=dtype,
                                       seed=seed, **options)
        if options:
            raise ValueError(f'openvla: option(s) {sorted(options)} do not apply when loading '
                             f'a saved checkpoint (its config.json fixes them)')
        if not cls.claims(config):
            expected = (f'{MODEL_TYPE!r} or an auto_map with custom code'
                        if cls is OpenVlaPolicy else repr(cls.config_class.model_type))
            raise PolicyLoadError(f'{path} is not an openvla checkpoint of this kind '
                                  f'(config.json model_type {config.get("model_type")!r}, '
                                  f'expected {expected})')
        _require_files(path)
        try:
            checkpoint_config = cls.checkpoint_config(config)
        except ValueError as exc:
            raise PolicyLoadError(f'{path}: {exc}') from exc
        model, info = cls.model_class.from_pretrained(
            str(path), config=checkpoint_config, local_files_only=True, use_safetensors=True,
            dtype=resolve_dtype(dtype), output_loading_info=True)
        problems = {k: list(v)[:5] for k, v in info.items() if k != 'error_msgs' and v}
        if problems or info.get('error_msgs'):
            raise PolicyLoadError(f'{path}: weights do not match the configuration: '
                                  f'{problems or info["error_msgs"]}')
        return cls(config=model.config, statistics=load_statistics(path / STATISTICS_FILE),
                   unnorm_key=unnorm_key, device=device, dtype=dtype, seed=seed, model=model,
                   tokenizer=load_text_tokenizer(str(path)))

    @classmethod
    def from_released(cls, path: Path, config: dict, unnorm_key: str | None = None,
                      device: str = 'cpu', dtype: str = 'float32', seed: int = 0,
                      **options) -> 'OpenVlaPolicy':
        """A released-layout directory (``openvla/openvla-7b``), loaded without its code.

        ``config`` is its parsed config.json; ``options`` are the robot-side settings
        (``action_space``, ``camera_name``, ``control_period``). Weights are streamed in
        ``dtype`` onto ``device`` (no random initialisation, no float32 copy).
        """
        from vla_ros.policies.torch_policy import resolve_device

        released = parse_released_config(config, options)
        size = released.config.image_size
        preprocessor = read_json(path / PREPROCESSOR_FILE)
        if preprocessor is not None:
            check_preprocessor_config(preprocessor, released.image_resize_strategy, size)
        statistics = released_statistics(path, released.norm_stats)
        statistics.select(unnorm_key)  # a wrong or missing key fails before the weights load
        tokenizer = load_checkpoint_tokenizer(path)
        model = load_released_weights(build_on_meta(released.config), path,
                                      resolve_dtype(dtype), resolve_device(device))
        return cls(config=released.config, statistics=statistics, unnorm_key=unnorm_key,
                   device=device, dtype=dtype, seed=seed, model=model, tokenizer=tokenizer,
                   image_resize=released.image_resize_strategy)

    def save_released(self, path: str | Path, dtype: str = 'bfloat16',
                      max_shard_bytes: int = 5 * 1024 ** 3) -> Path:
        """Write this policy in the released OpenVLA layout (see :mod:`released_writer`)."""
        from vla_ros.policies.openvla.released_writer import write_released

        strategy = self.image_resize if self.image_resize != 'default' else 'resize-naive'
        return write_released(self.model, self.statistics, self.tokenizer, path, dtype=dtype,
                              image_resize_strategy=strategy, max_shard_bytes=max_shard_bytes)


def _checked_dir(model_path) -> Path:
    if not str(model_path):
        raise PolicyLoadError('model_path is empty')
    path = Path(model_path).expanduser()
    if not path.is_dir():
        raise PolicyLoadError(f'model_path {str(path)!r} is not an existing directory')
    return path


def _require_files(path: Path) -> None:
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        unsafe = sorted(p.name for p in path.iterdir() if p.suffix in ('.bin', '.pt', '.pth'))
        hint = f'; pickle-based {unsafe} are never loaded (they can run code)' if unsafe else ''
        raise PolicyLoadError(f'{path} has no {" or ".join(WEIGHT_FILES)}{hint}')
    for name, what in ((STATISTICS_FILE, 'normalization statistics'),
                       (TOKENIZER_FILE, 'tokenizer')):
        if not (path / name).is_file():
            raise PolicyLoadError(f'{path} lacks {name} (the {what} saved with the model)')


def load(model_path: str = '', size: str = 'tiny', **kwargs):
    """Registry entry point (``make_policy('openvla', ...)``); see OpenVlaPolicy.load."""
    return OpenVlaPolicy.load(model_path=model_path, size=size, **kwargs)
