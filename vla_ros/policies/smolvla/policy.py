"""The SmolVLA policy: LeRobot checkpoints in, vla_ros action chunks out.

Inference reproduces LeRobot's SmolVLA pipeline (huggingface/lerobot at commit
7427f31801f944f5ec9ce53cda02862ce7d1638b): images to float [0, 1], the preprocessor's
VISUAL normalization, resize-with-pad (aspect kept, zero padding on the left/top) to
``resize_imgs_with_padding``, then ``x * 2 - 1``; ``empty_cameras`` extra blank images
(all -1, masked out); the state normalized and zero-padded to
``max_state_dim``; the task text with a trailing newline, tokenized by the VLM's
tokenizer with the preprocessor's padding/truncation settings; flow sampling from
seeded noise; the first ``action_dim`` columns unnormalized by the postprocessor.

Under ``dtype='float32'`` each part runs in the dtype LeRobot gives it (bfloat16 VLM and
expert with ``load_vlm_weights``; see :meth:`SmolVLAPolicy.apply_vlm_precision`). Checked
against LeRobot's own SmolVLA code by ``scripts/verify_lerobot_smolvla_reference.py`` (a
LeRobot-saved checkpoint, same observation and noise: bit-identical chunks in mixed
precision, within 1.2e-6 in float32, where the memory-mapped weights' alignment is the
only difference; see docs/results.md).

The initial noise is drawn from a generator seeded by ``(seed, observation stamp)``, so
one observation always gives the same chunk. Chunks are clipped to the configured action
space (a flow sample is not bounded by construction).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from vla_ros.actions.normalization import load_statistics, save_statistics
from vla_ros.policies.contract import (
    InvalidObservationError,
    Observation,
    PolicyLoadError,
    PolicySpec,
)
from vla_ros.policies.smolvla.configuration import IGNORED_KEYS, PRESETS, SmolVLAConfig
from vla_ros.policies.torch_policy import (
    CONFIG_FILE,
    STATISTICS_FILE,
    WEIGHTS_FILE,
    TorchPolicy,
    bounds_statistics,
    resolve_device,
    resolve_dtype,
    validate_model_dir,
)

VLA_ROS_KEY = 'vla_ros'


def stamp_seed(seed: int, stamp: float) -> int:
    """A 63-bit generator seed from the policy seed and the observation stamp."""
    digest = hashlib.sha256(f'smolvla:{int(seed)}:{float(stamp)!r}'.encode()).digest()
    return int.from_bytes(digest[:8], 'little') & (2**63 - 1)


def resize_with_pad(images, width: int, height: int):
    """Resize (B, C, h, w) to (B, C, height, width) keeping the aspect ratio.

    Bilinear (no antialiasing), zeros padded on the left and top (SmolVLA's convention).
    """
    import torch.nn.functional as F  # noqa: N812

    h, w = images.shape[2:]
    if (h, w) == (height, width):
        return images
    ratio = max(w / width, h / height)
    new_h, new_w = int(h / ratio), int(w / ratio)
    resized = F.interpolate(images, size=(new_h, new_w), mode='bilinear', align_corners=False)
    return F.pad(resized, (max(0, width - new_w), 0, max(0, height - new_h), 0), value=0.0)


class ActionNormalizer:
    """The preprocessor's action normalization behind the vla_ros Normalizer interface."""

    mode = 'lerobot'

    def __init__(self, normalizer, key: str):
        """Wrap a :class:`FeatureNormalizer` for feature ``key``."""
        self.normalizer, self.key = normalizer, key

    def _run(self, values, inverse: bool) -> np.ndarray:
        import torch

        x = torch.as_tensor(np.asarray(values, dtype=np.float32))
        return self.normalizer.apply(self.key, x, inverse=inverse).numpy().astype(np.float64)

    def normalize(self, values) -> np.ndarray:
        """Raw actions -> model space."""
        return self._run(values, False)

    def unnormalize(self, values) -> np.ndarray:
        """Model space -> raw actions."""
        return self._run(values, True)


def _stats_from(action_stats, state_stats=None) -> dict:
    """LeRobot statistics (float32 tensors) from vla_ros ActionStatistics."""
    import torch

    def convert(s):
        return {name: torch.as_tensor(np.asarray(getattr(s, attr), dtype=np.float32))
                for name, attr in (('mean', 'mean'), ('std', 'std'), ('min', 'min'),
                                   ('max', 'max'), ('q01', 'q01'), ('q99', 'q99'))}

    return convert(action_stats), (convert(state_stats) if state_stats is not None else None)


class SmolVLAPolicy(TorchPolicy):
    """LeRobot SmolVLA (SmolVLM2 prefix + flow-matching action expert)."""

    family = 'smolvla'
    config_class = SmolVLAConfig
    presets = PRESETS
    action_head = 'flow matching'
    action_type = 'continuous'

    def __init__(self, config=None, statistics=None, unnorm_key=None, device='cpu',
                 dtype='float32', seed=0, model=None, *, vlm_config=None, tokenizer=None,
                 pipelines=None, **overrides):
        """A preset (``config`` with ``vlm``) or a loaded checkpoint (``model`` given)."""
        from vla_ros.policies.smolvla.vlm_files import load_vlm_config, tiny_tokenizer

        if config is None or isinstance(config, dict):
            try:
                config = SmolVLAConfig(**{**(config or {}), **overrides})
            except (TypeError, ValueError) as exc:
                raise ValueError(f'smolvla: bad configuration: {exc}') from exc
            overrides = {}
        if not config.image_keys:
            raise PolicyLoadError('smolvla: the configuration has no VISUAL input feature')
        if config.state_key is None:
            raise PolicyLoadError('smolvla: the configuration has no STATE input feature '
                                  '(SmolVLA always conditions on observation.state)')
        self.vlm_config = vlm_config if vlm_config is not None else load_vlm_config(config.vlm)
        self.tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
        # make_action_space (called by TorchPolicy) reads the action statistics from here.
        self._action_stats = None if pipelines is None else \
            (pipelines[1].stats.get(config.action_key) if pipelines[1] is not None else None)
        super().__init__(config, statistics, unnorm_key, device, dtype, seed, model,
                         **overrides)
        self.apply_vlm_precision()
        if pipelines is None:
            pipelines = self._default_pipelines()
        self.pre, self.post, self.tokenizer_settings = pipelines
        self._check_pipelines()
        self.normalizer = ActionNormalizer(self.pre, self.config.action_key)

    # ------------------------------------------------------------------ building
    def apply_vlm_precision(self) -> None:
        """Under a float32 policy, the dtypes LeRobot's SmolVLA runs its parts in.

        With ``load_vlm_weights`` LeRobot builds the VLM with
        ``from_pretrained(torch_dtype='bfloat16')`` and loads the checkpoint into it
        (rounding float32 weights): VLM and expert are bfloat16. Otherwise it builds the
        VLM from its config: transformers makes the vision and text models in the dtype
        their sub-configs declare (float32 if none), the connector and ``lm_head`` in
        float32. The expert takes the text config's dtype, except the cross-attention
        ``k_proj``/``v_proj``; those and the state/action projections are float32.
        Running everything in float32 instead moves the chunk by bfloat16's rounding
        (0.03 on the reference check). Other requested dtypes apply to the whole network.
        """
        import torch

        if self.dtype != torch.float32:
            return

        def declared(sub_config):
            value = getattr(sub_config, 'dtype', None) or torch.float32
            return getattr(torch, value) if isinstance(value, str) else value

        if self.config.load_vlm_weights:
            vlm = vision = text = torch.bfloat16
        else:
            vlm = torch.float32
            vision = declared(self.vlm_config.vision_config)
            text = declared(self.vlm_config.text_config)
        self.model.model.vlm_with_expert.set_lerobot_dtypes(vlm, vision, text, text)

    @classmethod
    def build_model(cls, config: SmolVLAConfig, vlm_config=None, special_tokens=None):
        """The network for ``config`` (random initialisation on the current device)."""
        from vla_ros.policies.smolvla.modeling import SmolVLANet
        from vla_ros.policies.smolvla.vlm_files import load_vlm_config

        if vlm_config is None:
            vlm_config = load_vlm_config(config.vlm)
        if config.add_image_special_tokens and special_tokens is None:
            special_tokens = (0, 0)  # placeholder ids: only counted, never run
        return SmolVLANet(config, vlm_config, special_tokens)

    def _default_pipelines(self):
        """Processors for an untrained preset: actions scaled to the space's bounds."""
        import torch

        from vla_ros.policies.lerobot.processors import FeatureNormalizer

        c = self.config
        action, _ = _stats_from(bounds_statistics(self.action_space))
        n = c.state_dim
        state = {'mean': torch.zeros(n), 'std': torch.ones(n), 'min': -torch.ones(n),
                 'max': torch.ones(n), 'q01': -torch.ones(n), 'q99': torch.ones(n)}
        features = {**c.input_features, **c.output_features}
        stats = {c.action_key: action, c.state_key: state}
        pre = FeatureNormalizer(features, dict(c.normalization_mapping), stats)
        post = FeatureNormalizer(dict(c.output_features), dict(c.normalization_mapping),
                                 {c.action_key: dict(action)})
        tokenizer = {'max_length': c.tokenizer_max_length, 'task_key': 'task',
                     'padding_side': 'right', 'padding': c.pad_language_to,
                     'truncation': True}
        return pre, post, tokenizer

    def _check_pipelines(self) -> None:
        c = self.config
        if self.post is None or c.action_key not in self.post.features:
            raise PolicyLoadError(f'smolvla: the postprocessor does not unnormalize '
                                  f'{c.action_key!r}')
        if self.pre is None:
            raise PolicyLoadError('smolvla: the preprocessor has no normalizer step')
        if self.tokenizer_settings is None:
            raise PolicyLoadError('smolvla: the preprocessor has no tokenizer step')
        side = self.tokenizer_settings.get('padding_side', 'right')
        if side != 'right':
            raise PolicyLoadError(f'smolvla: tokenizer padding_side {side!r} is not supported')
        if self.action_space.dim != c.action_dim:
            raise PolicyLoadError(
                f'smolvla: the checkpoint acts in {c.action_dim} dimensions but action space '
                f'{self.action_space.name!r} has {self.action_space.dim}: pass action_space:= '
                f'a YAML whose dimensions match the checkpoint\'s action, in order')
        sizes = {c.image_shape(k)[1:] for k in c.image_keys}
        if len(sizes) != 1:
            raise PolicyLoadError(f'smolvla: image features of different sizes {sizes} are '
                                  f'not supported (one image_size per policy)')
        if self.config.add_image_special_tokens and self.model.model.special_tokens is None:
            raise PolicyLoadError('smolvla: image special tokens requested without ids')

    def make_action_space(self, config: SmolVLAConfig):
        """``action_names`` bounded by the checkpoint's action statistics, or action_space."""
        from types import SimpleNamespace

        from vla_ros.policies.lerobot_pi.policy import dataset_action_space

        if not config.action_names:
            return super().make_action_space(config)
        if self._action_stats is None:
            raise PolicyLoadError('smolvla: action_names names a LeRobot checkpoint\'s actions '
                                  '(bounded by its statistics); it needs model_path')
        return dataset_action_space('smolvla', config.action_names,
                                    SimpleNamespace(stats=self._action_stats))

    @property
    def action_names_known(self) -> bool:
        """Whether the action names are the checkpoint's (action_names or a chosen space).

        The default ``arm7`` space on a checkpoint is a layout, not the checkpoint's names.
        """
        return bool(self.config.action_names) or self.config.action_space != 'arm7'

    def make_spec(self, config: SmolVLAConfig) -> PolicySpec:
        """One camera per image feature at its declared size; state as proprio."""
        _, height, width = config.image_shape(config.image_keys[0])
        return PolicySpec(name=self.family, action_space=self.action_space,
                          chunk_length=config.chunk_size,
                          camera_names=config.vla_camera_names(), image_size=(width, height),
                          uses_proprio=True, control_period=config.control_period)

    # ------------------------------------------------------------------ inputs
    def validate_observation(self, observation) -> None:
        """The contract's checks plus the state length the checkpoint declares."""
        super(TorchPolicy, self).validate_observation(observation)
        n = self.config.state_dim
        if np.asarray(observation.proprio).shape != (n,):
            raise InvalidObservationError(
                f'policy {self.family!r}: proprio must have {n} values (the checkpoint\'s '
                f'{self.config.state_key}), got shape {np.asarray(observation.proprio).shape}')

    def tokenize(self, instructions):
        """Token ids and validity (B, L): each task with a trailing newline."""
        s = self.tokenizer_settings
        texts = [t if t.endswith('\n') else t + '\n' for t in instructions]
        out = self.tokenizer(texts, max_length=int(s.get('max_length',
                                                         self.config.tokenizer_max_length)),
                             truncation=bool(s.get('truncation', True)),
                             padding=s.get('padding', 'longest'), padding_side='right',
                             return_tensors='pt')
        return out['input_ids'].to(self.device), out['attention_mask'].bool().to(self.device)

    def model_images(self, images):
        """(B, cameras, 3, H, W) in [0, 1] -> per-camera model pixels and validity masks."""
        import torch

        c = self.config
        width, height = c.resize_imgs_with_padding or images.shape[-1:-3:-1]
        pixels, valid = [], []
        for index, key in enumerate(c.image_keys):
            # contiguous (B, C, H, W), as LeRobot's processors hand images over: a
            # channels-last view (a permuted HWC camera frame) makes the vision tower's
            # convolution round differently, ~1e-6 relative, which the chunk then carries
            x = images[:, index].float().contiguous()
            x = self.pre.apply(key, x) if key in self.pre.features else x
            x = resize_with_pad(x, width, height) * 2.0 - 1.0
            pixels.append(x)
            valid.append(torch.ones(x.shape[0], dtype=torch.bool, device=x.device))
        for _ in range(c.empty_cameras):
            pixels.append(-torch.ones_like(pixels[-1]))
            valid.append(torch.zeros_like(valid[-1]))
        return pixels, valid

    def model_state(self, proprio):
        """Raw state (B, S) -> normalized, zero-padded to ``max_state_dim``."""
        import torch
        import torch.nn.functional as F  # noqa: N812

        c = self.config
        x = torch.as_tensor(np.asarray(proprio, dtype=np.float32)).to(self.device)
        if x.ndim != 2 or x.shape[1] != c.state_dim:
            raise ValueError(f'smolvla: state must be (B, {c.state_dim}), got {tuple(x.shape)}')
        x = self.pre.apply(c.state_key, x)
        return F.pad(x, (0, c.max_state_dim - c.state_dim))

    def images_tensor(self, observation: Observation):
        """Camera images -> float32 (1, cameras, 3, H, W) in [0, 1] (LeRobot's input)."""
        import torch

        stack = np.stack([observation.images[c] for c in self.spec.camera_names])
        x = torch.from_numpy(stack).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        return x.unsqueeze(0)

    # ------------------------------------------------------------------ inference
    def initial_noise(self, stamp: float):
        """The t = 1 sample (1, chunk_size, max_action_dim), fixed by ``(seed, stamp)``."""
        import torch

        generator = torch.Generator().manual_seed(stamp_seed(self.seed, stamp))
        shape = (1, self.config.chunk_size, self.config.max_action_dim)
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device)

    def predict_normalized(self, observation: Observation, noise=None) -> np.ndarray:
        """The sampled chunk (T, action_dim) in the model's (normalized) space."""
        import torch

        if noise is None:
            noise = self.initial_noise(observation.stamp)
        pixels, valid = self.model_images(self.images_tensor(observation))
        ids, id_valid = self.tokenize([observation.instruction])
        state = self.model_state(np.asarray(observation.proprio)[None])
        with torch.inference_mode():
            actions = self.model.model.sample_actions(pixels, valid, ids, id_valid, state,
                                                      noise.to(self.device))
        return actions[0, :, :self.config.action_dim]

    def predict_chunk(self, observation: Observation, noise=None) -> np.ndarray:
        """Validate, sample, unnormalize with the postprocessor, clip to the action space."""
        import torch

        self.validate_observation(observation)
        with torch.inference_mode():
            normalized = self.predict_normalized(observation, noise)
            raw = self.post.apply(self.config.action_key, normalized.float(), inverse=True)
        chunk = self.action_space.clip(raw.cpu().numpy().astype(np.float64))
        return self.check_chunk(chunk.astype(np.float32))

    # ------------------------------------------------------------------ training
    def set_statistics(self, statistics, unnorm_key: str) -> None:
        """Use a dataset's statistics for both processors (modes stay the checkpoint's)."""
        entry = statistics.select(unnorm_key)
        action, state = _stats_from(entry.action, entry.proprio)
        c = self.config
        self.pre.stats[c.action_key] = action
        self.post.stats[c.action_key] = dict(action)
        if state is not None and state['mean'].shape[0] == c.state_dim:
            self.pre.stats[c.state_key] = state
        self.pre.check('set_statistics')
        self.post.check('set_statistics')
        self.statistics, self.unnorm_key = statistics, unnorm_key
        self.normalizer = ActionNormalizer(self.pre, c.action_key)

    def training_loss(self, batch: dict):
        """LeRobot's flow-matching loss; ``actions`` normalized, rows past ``valid`` ignored."""
        import torch
        import torch.nn.functional as F  # noqa: N812

        c = self.config
        actions = torch.as_tensor(batch['actions']).to(self.device, torch.float32)
        if actions.ndim != 3 or tuple(actions.shape[1:]) != (c.chunk_size, c.action_dim):
            raise ValueError(f'smolvla: actions must be (B, {c.chunk_size}, {c.action_dim}), '
                             f'got {tuple(actions.shape)}')
        batch_size = actions.shape[0]
        pixels, valid = self.model_images(batch['images'].to(self.device).float())
        ids, id_valid = self.tokenize(batch['instructions'])
        state = self.model_state(np.asarray(batch['proprio'].cpu() if hasattr(
            batch['proprio'], 'cpu') else batch['proprio']))
        padded = F.pad(actions, (0, c.max_action_dim - c.action_dim))
        noise = torch.randn_like(padded)
        time = torch.distributions.Beta(1.5, 1.0).sample((batch_size,)) * 0.999 + 0.001
        losses = self.model.model.flow_loss(pixels, valid, ids, id_valid, state, padded, noise,
                                            time.to(self.device))[:, :, :c.action_dim]
        rows = batch.get('valid')
        if rows is None:
            return losses.mean()
        rows = torch.as_tensor(rows).to(self.device).float()[:, :, None]
        return (losses * rows).sum() / (rows.sum() * c.action_dim).clamp_min(1)

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, path) -> Path:
        """Write LeRobot's layout (config.json, model.safetensors, processors) + ``vlm/``.

        ``vlm/`` (the VLM config and tokenizer this policy was built with) is vla_ros's
        addition, so that the directory reloads without ``vlm_path``; LeRobot ignores it.
        """
        from vla_ros.policies.smolvla.checkpoint import save_weights
        from vla_ros.policies.smolvla.processors import write_pipelines
        from vla_ros.policies.smolvla.vlm_files import VLM_DIR, save_vlm

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_FILE).write_text(json.dumps(self.config.lerobot_dict(), indent=2))
        save_weights(self.model, path / WEIGHTS_FILE)
        write_pipelines(path, self.config, self.pre, self.post, self.tokenizer_settings,
                        self.tokenizer)
        save_vlm(path / VLM_DIR, self.vlm_config, self.tokenizer)
        if self.statistics is not None:
            # vla_ros's record of the training data's statistics (counts included), beside
            # LeRobot's processor files, which stay what normalizes; LeRobot ignores it.
            save_statistics(path / STATISTICS_FILE, self.statistics)
        return path

    @classmethod
    def from_pretrained(cls, model_path, unnorm_key=None, device='cpu', dtype='float32',
                        seed=0, vlm_path='', **overrides) -> 'SmolVLAPolicy':
        """Load a LeRobot SmolVLA checkpoint directory strictly (see ``checkpoint``).

        ``vlm_path`` names the local SmolVLM directory (config + tokenizer); without it,
        ``<model_path>/vlm`` (written by :meth:`save_pretrained`) is used if present. A
        tokenizer the preprocessor declares as an artifact inside the checkpoint
        (``tokenizer/``, newer LeRobot) is used instead of the VLM directory's.
        ``overrides`` set vla_ros fields (``action_space``, ``camera_names``,
        ``control_period``) or inference settings (``num_steps``).
        """
        import torch

        from vla_ros.policies.lerobot.processors import (
            NORMALIZER,
            POSTPROCESSOR,
            PREPROCESSOR,
            UNNORMALIZER,
        )
        from vla_ros.policies.smolvla.checkpoint import load_strict
        from vla_ros.policies.smolvla.processors import read_pipeline
        from vla_ros.policies.smolvla.vlm_files import (
            image_token_ids,
            load_tokenizer,
            load_vlm_config,
            resolve_vlm_path,
        )

        path = validate_model_dir(model_path)
        config = read_config(path / CONFIG_FILE, overrides)
        vlm_dir = resolve_vlm_path(vlm_path, path)
        vlm_config = load_vlm_config(vlm_dir)
        pre = read_pipeline(path, PREPROCESSOR, NORMALIZER)
        post = read_pipeline(path, POSTPROCESSOR, UNNORMALIZER)
        # The checkpoint's own tokenizer artifact (newer LeRobot) wins, as in LeRobot.
        tokenizer_dir = (pre.tokenizer or {}).get('tokenizer_dir') or vlm_dir
        tokenizer = load_tokenizer(Path(tokenizer_dir))
        special = image_token_ids(tokenizer) if config.add_image_special_tokens else None
        target = resolve_device(device)
        try:
            with torch.device('meta'):
                model = cls.build_model(config, vlm_config, special)
        except ValueError as exc:
            raise PolicyLoadError(f'{path}: {exc}') from exc
        tied = {}
        if getattr(vlm_config, 'tie_word_embeddings', False) or \
                getattr(vlm_config.text_config, 'tie_word_embeddings', False):
            tied['model.vlm_with_expert.vlm.lm_head.weight'] = \
                'model.vlm_with_expert.vlm.model.text_model.embed_tokens.weight'
        load_strict(model, path / WEIGHTS_FILE, resolve_dtype(dtype), target, tied)
        stats_path = path / STATISTICS_FILE
        statistics = load_statistics(stats_path) if stats_path.is_file() else None
        return cls(config, statistics, unnorm_key, device, dtype, seed, model,
                   vlm_config=vlm_config, tokenizer=tokenizer,
                   pipelines=(pre.normalizer, post.normalizer, pre.tokenizer))


def read_config(path: Path, overrides: dict) -> SmolVLAConfig:
    """``config.json`` -> :class:`SmolVLAConfig`; unknown keys are an error."""
    from vla_ros.policies.lerobot.processors import read_json

    data = read_json(path, 'policy configuration')
    if data.get('type') != 'smolvla':
        raise PolicyLoadError(f'{path}: "type" is {data.get("type")!r}, not "smolvla"')
    fields = {f.name for f in dataclasses.fields(SmolVLAConfig)}
    known = {k: v for k, v in data.items() if k in fields}
    unknown = sorted(set(data) - fields - IGNORED_KEYS - {VLA_ROS_KEY})
    if unknown:
        raise PolicyLoadError(f'{path}: unknown SmolVLA settings {unknown} (written by a '
                              f'newer LeRobot?); refusing to guess their effect')
    extra = data.get(VLA_ROS_KEY) or {}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise PolicyLoadError(f'smolvla: unknown parameters {bad}')
    try:
        return SmolVLAConfig(**{**known, **extra, **overrides})
    except (TypeError, ValueError) as exc:
        raise PolicyLoadError(f'{path}: {exc}') from exc


def load(model_path: str = '', size: str = 'tiny', **kwargs) -> SmolVLAPolicy:
    """Registry entry: a LeRobot checkpoint if ``model_path`` is set, else a preset."""
    if not model_path and kwargs.pop('vlm_path', ''):
        raise PolicyLoadError('smolvla: vlm_path needs model_path (a LeRobot checkpoint)')
    return SmolVLAPolicy.load(model_path=model_path, size=size, **kwargs)
