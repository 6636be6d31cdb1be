"""``pi0`` / ``pi05``: LeRobot π₀ and π₀.₅ checkpoints behind the vla_ros Policy contract.

``make_policy('pi0', model_path=DIR, tokenizer_path=TOK)`` reads DIR as LeRobot saved it
(see :mod:`.checkpoint`), builds the network on the meta device, assigns the weights
strictly, and predicts chunks the way LeRobot's ``predict_action_chunk`` + processors do:

observation -> normalized state (+ π₀.₅ prompt with the discretized state) -> tokens ->
images resized with padding to 224, [-1, 1] -> Euler flow from noise (chunk_size,
max_action_dim) -> first ``action`` dims -> unnormalized -> (+ state when relative).

Actions are in the training dataset's units (usually joint targets plus a gripper): the
action space is named by the checkpoint's ``action_feature_names`` or the ``action_names``
parameter so a joint-space robot configuration can match them by name, and its bounds
are the dataset's action min/max. The chunk is returned as the model computed it
(never clipped here: the driver's safety limits apply downstream).

The Gemma tokenizer is not part of these checkpoints: it is read from ``tokenizer_path``,
else from a ``tokenizer/`` folder the pipeline names, else from the local Hugging Face
cache of the pipeline's tokenizer repository; never downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vla_ros.actions.spaces import ActionDimension, ActionSpace
from vla_ros.policies.contract import (
    InvalidObservationError,
    Observation,
    Policy,
    PolicyLoadError,
    PolicySpec,
)
from vla_ros.policies.lerobot.processors import (
    NORMALIZER,
    POSTPROCESSOR,
    PREPROCESSOR,
    TOKENIZER,
    UNNORMALIZER,
    find_step,
    read_steps,
    step_normalizer,
)
from vla_ros.policies.lerobot_pi.checkpoint import (
    FIXTURE_DIMS_KEY,
    POSTPROCESSOR_FILE,
    PREPROCESSOR_FILE,
    WEIGHTS_FILE,
    checkpoint_dir,
)
from vla_ros.policies.lerobot_pi.processors import (
    pi0_prompt,
    pi05_prompt,
    relative_mask,
    siglip_pixels,
)

IMAGE_PREFIX = 'observation.images.'
STATE_KEY = 'observation.state'
ACTION_KEY = 'action'
DEFAULT_TOKENIZER_REPO = 'google/paligemma-3b-pt-224'
TOKENIZER_FILES = ('tokenizer.json', 'tokenizer.model')


def dims_from_config(config: dict, pi05: bool):
    """The :class:`PiDims` of a LeRobot config (real variants, or a fixture's override)."""
    from vla_ros.policies.lerobot_pi.modeling import (
        GEMMA_VARIANTS,
        VOCAB_SIZE,
        GemmaDims,
        PiDims,
        VisionDims,
    )

    def variant(key):
        name = config.get(key, 'gemma_2b' if key == 'paligemma_variant' else 'gemma_300m')
        if name not in GEMMA_VARIANTS:
            raise PolicyLoadError(f'config.json: {key} {name!r} is not one of '
                                  f'{sorted(GEMMA_VARIANTS)}')
        return GEMMA_VARIANTS[name]

    resolution = config.get('image_resolution') or [224, 224]
    if len(resolution) != 2 or resolution[0] != resolution[1]:
        raise PolicyLoadError(f'config.json: image_resolution must be square, got {resolution}')
    paligemma, expert, vision = variant('paligemma_variant'), variant('action_expert_variant'), \
        VisionDims()
    vocab, projection = VOCAB_SIZE, 2048
    fixture = config.get(FIXTURE_DIMS_KEY)
    if fixture:  # test fixtures only: real checkpoints have the fixed sizes above
        try:
            paligemma = GemmaDims(**fixture['paligemma'])
            expert = GemmaDims(**fixture['expert'])
            vision = VisionDims(**fixture['vision'])
            vocab = int(fixture['vocab_size'])
            projection = paligemma.width
        except (KeyError, TypeError) as exc:
            raise PolicyLoadError(f'config.json: bad {FIXTURE_DIMS_KEY}: {exc}') from exc
    if expert.head_dim != paligemma.head_dim or expert.depth != paligemma.depth:
        raise PolicyLoadError('config.json: the expert must match the VLM in depth and head '
                              'size (their attention is joint)')
    try:
        return PiDims(pi05=pi05, vision=vision, paligemma=paligemma, expert=expert,
                      vocab_size=vocab, image_size=int(resolution[0]),
                      chunk_size=int(config.get('chunk_size', 50)),
                      max_state_dim=int(config.get('max_state_dim', 32)),
                      max_action_dim=int(config.get('max_action_dim', 32)),
                      min_period=float(config.get('min_period', 4e-3)),
                      max_period=float(config.get('max_period', 4.0)),
                      projection_dim=projection)
    except (TypeError, ValueError) as exc:
        raise PolicyLoadError(f'config.json: {exc}') from exc


def hf_cache_dirs() -> list[Path]:
    """Local Hugging Face hub caches, in the order huggingface_hub resolves them."""
    dirs = []
    for var in ('HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE'):
        if os.environ.get(var):
            dirs.append(Path(os.environ[var]))
    home = os.environ.get('HF_HOME')
    dirs.append(Path(home) / 'hub' if home else Path.home() / '.cache' / 'huggingface' / 'hub')
    return dirs


def find_cached_tokenizer(repo_id: str) -> Path | None:
    """A snapshot of ``repo_id`` in a local HF cache that holds tokenizer files."""
    folder = 'models--' + repo_id.replace('/', '--')
    for cache in hf_cache_dirs():
        for snapshot in sorted((cache / folder / 'snapshots').glob('*')):
            if any((snapshot / f).is_file() for f in TOKENIZER_FILES):
                return snapshot
    return None


def load_tokenizer(tokenizer_path: str, model_dir: Path, step_config: dict):
    """The prompt tokenizer, from local files only (see the module docstring)."""
    from transformers import AutoTokenizer

    name = str(step_config.get('tokenizer_name') or DEFAULT_TOKENIZER_REPO)
    if tokenizer_path:
        directory = Path(tokenizer_path).expanduser()
        if not directory.is_dir():
            raise PolicyLoadError(f'tokenizer_path {str(directory)!r} is not a directory')
    elif (model_dir / name).is_dir():
        directory = model_dir / name
    else:
        directory = find_cached_tokenizer(name)
        if directory is None:
            raise PolicyLoadError(
                f'no tokenizer: LeRobot π checkpoints do not contain it. Pass tokenizer_path '
                f'(a local copy of {name!r}: tokenizer.json or tokenizer.model with '
                f'tokenizer_config.json) or put it in the Hugging Face cache '
                f'({", ".join(str(d) for d in hf_cache_dirs())}); nothing is downloaded')
    if not any((directory / f).is_file() for f in TOKENIZER_FILES):
        raise PolicyLoadError(f'{directory} has none of {list(TOKENIZER_FILES)}')
    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds
        raise PolicyLoadError(f'{directory}: cannot load the tokenizer: {exc}') from exc


def dataset_action_space(kind: str, names: Sequence[str], normalizer) -> ActionSpace:
    """Dataset-unit action dimensions named ``names``, bounded by the dataset's min/max."""
    stats = normalizer.stats
    for low_key, high_key in (('min', 'max'), ('q01', 'q99')):
        if low_key in stats and high_key in stats:
            low = stats[low_key].double().numpy().ravel()
            high = stats[high_key].double().numpy().ravel()
            break
    else:
        raise PolicyLoadError(f'{kind}: the action statistics have neither min/max nor '
                              f'q01/q99 ({sorted(stats)}); the action bounds are unknown')
    if low.size != len(names) or high.size != len(names):
        raise PolicyLoadError(f'{kind}: action statistics have {low.size} values, the action '
                              f'feature {len(names)}')
    dims = []
    for name, lo, hi in zip(names, low, high, strict=True):
        if not hi > lo:  # a constant dimension in the dataset
            lo, hi = lo - 1e-6, hi + 1e-6
        dims.append(ActionDimension(str(name), float(lo), float(hi), unit='dataset',
                                    description='training dataset units (LeRobot action)'))
    return ActionSpace(f'{kind}_dataset_actions', tuple(dims),
                       'LeRobot checkpoint actions in training-dataset units')


class LeRobotPiPolicy(Policy):
    """A LeRobot π₀ (``kind='pi0'``) or π₀.₅ (``kind='pi05'``) checkpoint."""

    action_head = 'flow matching (LeRobot checkpoint)'
    action_type = 'continuous'

    def __init__(self, kind: str, model_path: str = '', tokenizer_path: str = '',
                 device: str = 'cpu', dtype: str = '', seed: int = 0,
                 action_names: Sequence[str] | None = None,
                 num_inference_steps: int | None = None,
                 missing_cameras: Sequence[str] = (), image_size: Sequence[int] | None = None,
                 control_period: float = 0.1):
        """Load ``model_path`` (see the module docstring for the parameters' meaning)."""
        import torch

        from vla_ros.policies.lerobot_pi.checkpoint import load_weights
        from vla_ros.policies.lerobot_pi.modeling import PiModel
        from vla_ros.policies.torch_policy import resolve_device, resolve_dtype

        if kind not in ('pi0', 'pi05'):
            raise ValueError(f'kind must be pi0 or pi05, got {kind!r}')
        self.kind = kind
        self.path, self.config = checkpoint_dir(model_path, kind)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype or self.config.get('dtype') or 'float32')
        self.seed = int(seed)
        steps = int(num_inference_steps or self.config.get('num_inference_steps', 10))
        if steps < 1:
            raise ValueError(f'{kind}: num_inference_steps must be >= 1, got {steps}')
        self.num_inference_steps = steps
        self.dims = dims_from_config(self.config, pi05=kind == 'pi05')
        self._read_processors()
        self._read_features(action_names, missing_cameras)
        tok_step = find_step(self.pre_steps, TOKENIZER, str(self.path / PREPROCESSOR_FILE))
        self.token_options = {
            'max_length': int(tok_step['config'].get(
                'max_length', self.config.get('tokenizer_max_length', 48))),
            'padding': tok_step['config'].get('padding', 'max_length'),
            'padding_side': tok_step['config'].get('padding_side', 'right'),
            'truncation': bool(tok_step['config'].get('truncation', True))}
        self.tokenizer = load_tokenizer(tokenizer_path, self.path, tok_step['config'])
        if len(self.tokenizer) > self.dims.vocab_size:
            raise PolicyLoadError(f'{kind}: the tokenizer has {len(self.tokenizer)} tokens, the '
                                  f'model {self.dims.vocab_size} embeddings')
        with torch.device('meta'):
            model = PiModel(self.dims)
        load_weights(model, self.path / WEIGHTS_FILE, self.dtype, self.device)
        self.model = model.eval()
        first = self.config['input_features'][self.camera_keys[0]]['shape']
        size = tuple(int(v) for v in image_size) if image_size else (int(first[2]),
                                                                    int(first[1]))
        self._spec = PolicySpec(
            name=kind, action_space=self.action_space, chunk_length=self.dims.chunk_size,
            camera_names=tuple(k[len(IMAGE_PREFIX):] for k in self.present_cameras),
            image_size=size, uses_proprio=True, control_period=control_period)

    # ------------------------------------------------------------ checkpoint parts
    def _read_processors(self) -> None:
        pre_where = str(self.path / PREPROCESSOR_FILE)
        post_where = str(self.path / POSTPROCESSOR_FILE)
        self.pre_steps = read_steps(self.path, PREPROCESSOR)
        self.post_steps = read_steps(self.path, POSTPROCESSOR)
        self.normalizer = step_normalizer(find_step(self.pre_steps, NORMALIZER, pre_where),
                                          PREPROCESSOR_FILE)
        self.unnormalizer = step_normalizer(find_step(self.post_steps, UNNORMALIZER,
                                                      post_where), POSTPROCESSOR_FILE)
        self.relative_step = find_step(self.pre_steps, 'relative_actions_processor',
                                       pre_where, required=False)
        absolute = find_step(self.post_steps, 'absolute_actions_processor', post_where,
                             required=False)
        self.relative = bool(absolute and absolute['config'].get('enabled'))
        if self.relative and self.relative_step is None:
            raise PolicyLoadError(f'{post_where}: absolute actions need the preprocessor\'s '
                                  f'relative_actions_processor step (it holds the mask)')

    def _read_features(self, action_names, missing_cameras) -> None:
        config, kind = self.config, self.kind
        inputs = dict(config.get('input_features') or {})
        outputs = config.get('output_features') or {}
        for i in range(int(config.get('empty_cameras', 0))):
            inputs.setdefault(f'{IMAGE_PREFIX}empty_camera_{i}',
                              {'type': 'VISUAL', 'shape': [3, *self.dims_image()]})
        cameras = [k for k, f in inputs.items() if f.get('type') == 'VISUAL']
        if not cameras:
            raise PolicyLoadError(f'{self.path / "config.json"}: no VISUAL input features')
        unknown = sorted(set(missing_cameras) - {k[len(IMAGE_PREFIX):] for k in cameras})
        if unknown:
            raise PolicyLoadError(f'{kind}: missing_cameras {unknown} are not cameras of the '
                                  f'checkpoint ({[k[len(IMAGE_PREFIX):] for k in cameras]})')
        missing = {IMAGE_PREFIX + c for c in missing_cameras} | {
            k for k in cameras if k[len(IMAGE_PREFIX):].startswith('empty_camera_')}
        # LeRobot's order: the cameras given, in feature order, then the empty ones.
        self.camera_keys = [k for k in cameras if k not in missing] + \
            [k for k in cameras if k in missing]
        self.present_cameras = [k for k in cameras if k not in missing]
        if not self.present_cameras:
            raise PolicyLoadError(f'{kind}: at least one camera must be given')
        state = inputs.get(STATE_KEY)
        action = outputs.get(ACTION_KEY)
        if state is None or action is None:
            raise PolicyLoadError(f'{self.path / "config.json"}: needs {STATE_KEY!r} input and '
                                  f'{ACTION_KEY!r} output features')
        self.state_dim = int(state['shape'][0])
        self.action_dim = int(action['shape'][0])
        if self.state_dim > self.dims.max_state_dim or self.action_dim > \
                self.dims.max_action_dim:
            raise PolicyLoadError(f'{kind}: state/action dims {self.state_dim}/'
                                  f'{self.action_dim} exceed max_state_dim/max_action_dim')
        self.state_normalizer = self.normalizer.feature(STATE_KEY)
        self.action_normalizer = self.unnormalizer.feature(ACTION_KEY)
        names = list(action_names or config.get('action_feature_names') or
                     [f'action_{i}' for i in range(self.action_dim)])
        if len(names) != self.action_dim:
            raise PolicyLoadError(f'{kind}: {len(names)} action names for {self.action_dim} '
                                  f'action dimensions')
        self.action_names_known = bool(action_names or config.get('action_feature_names'))
        self.action_space = dataset_action_space(kind, names, self.action_normalizer)
        if self.relative:
            if self.state_dim < self.action_dim:
                raise PolicyLoadError(f'{kind}: relative actions need a state at least as long '
                                      f'as the action ({self.state_dim} < {self.action_dim})')
            self.relative_mask = relative_mask(self.relative_step['config'], self.action_dim)

    def dims_image(self) -> tuple[int, int]:
        """The model's square input resolution (H, W)."""
        return (self.dims.image_size, self.dims.image_size)

    # --------------------------------------------------------------- contract
    @property
    def spec(self) -> PolicySpec:
        """See :class:`PolicySpec`."""
        return self._spec

    def validate_observation(self, observation: Any) -> None:
        """The contract's checks plus the state length of the checkpoint."""
        super().validate_observation(observation)
        size = np.asarray(observation.proprio).size
        if size != self.state_dim:
            raise InvalidObservationError(f'policy {self.kind!r}: proprio (observation.state) '
                                          f'must have {self.state_dim} values, got {size}')

    def initial_noise(self, stamp: float):
        """The t = 1 sample (1, chunk_size, max_action_dim), fixed by ``(seed, stamp)``."""
        import torch

        from vla_ros.policies.pi0.policy import stamp_seed

        generator = torch.Generator().manual_seed(stamp_seed(self.seed, stamp))
        shape = (1, self.dims.chunk_size, self.dims.max_action_dim)
        return torch.randn(shape, generator=generator, dtype=torch.float32)

    def model_inputs(self, observation: Observation) -> dict:
        """Everything the network takes for one observation (what LeRobot's processors make)."""
        import torch

        raw_state = torch.as_tensor(np.asarray(observation.proprio, dtype=np.float32))[None]
        state = self.state_normalizer.normalize(raw_state)
        if self.kind == 'pi05':
            prompt = pi05_prompt(observation.instruction, state[0].numpy())
        else:
            prompt = pi0_prompt(observation.instruction)
        encoded = self.tokenizer(prompt, return_tensors='pt', **self.token_options)
        ids = encoded['input_ids'].to(torch.long)
        if int(ids.max()) >= self.dims.vocab_size:
            raise InvalidObservationError(f'{self.kind}: token id {int(ids.max())} is outside '
                                          f'the {self.dims.vocab_size}-row embedding')
        images, masks = [], []
        for key in self.camera_keys:
            name = key[len(IMAGE_PREFIX):]
            if key in self.present_cameras:
                images.append(siglip_pixels(observation.images[name], self.dims.image_size))
                masks.append(torch.ones(1, dtype=torch.bool))
            else:  # an absent camera: a -1 image the attention mask hides
                images.append(-torch.ones(1, 3, self.dims.image_size, self.dims.image_size))
                masks.append(torch.zeros(1, dtype=torch.bool))
        padded = torch.zeros(1, self.dims.max_state_dim)
        padded[:, :self.state_dim] = state
        dev = self.device
        return {'images': [i.to(dev) for i in images], 'image_masks': [m.to(dev) for m in masks],
                'token_ids': ids.to(dev),
                'token_masks': encoded['attention_mask'].to(dev, torch.bool),
                'state': padded.to(dev), 'raw_state': raw_state, 'prompt': prompt}

    def predict_with_noise(self, observation: Observation, noise) -> np.ndarray:
        """The chunk (chunk_size, action_dim) in dataset units for explicit initial noise."""
        import torch

        self.validate_observation(observation)
        noise = torch.as_tensor(noise, dtype=torch.float32)
        expected = (1, self.dims.chunk_size, self.dims.max_action_dim)
        if tuple(noise.shape) != expected:
            raise ValueError(f'{self.kind}: noise must have shape {expected}, got '
                             f'{tuple(noise.shape)}')
        x = self.model_inputs(observation)
        with torch.inference_mode():
            actions = self.model.sample_actions(
                x['images'], x['image_masks'], x['token_ids'], x['token_masks'], x['state'],
                noise.to(self.device), self.num_inference_steps)
        actions = self.action_normalizer.unnormalize(actions[:, :, :self.action_dim].cpu())
        if self.relative:
            mask = torch.tensor(self.relative_mask, dtype=actions.dtype)
            actions = actions + (x['raw_state'][:, :self.action_dim] * mask)[:, None]
        return self.check_chunk(actions[0].numpy().astype(np.float32))

    def predict_chunk(self, observation: Observation) -> np.ndarray:
        """Seeded noise from ``(seed, stamp)``, then :meth:`predict_with_noise`."""
        return self.predict_with_noise(observation, self.initial_noise(observation.stamp))

    def close(self) -> None:
        """Drop the model (and its memory map)."""
        self.model = None


OPTIONS = ('model_path', 'tokenizer_path', 'device', 'dtype', 'seed', 'action_names',
           'num_inference_steps', 'missing_cameras', 'image_size', 'control_period')


def _make(kind: str, options: dict) -> LeRobotPiPolicy:
    if 'unnorm_key' in options:
        raise ValueError(f'{kind}: unnorm_key does not apply: a LeRobot checkpoint has one set '
                         f'of statistics (its processor files)')
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f'{kind}: unknown option(s) {unknown}; options: {list(OPTIONS)}')
    return LeRobotPiPolicy(kind, **options)


def load_pi0(**options) -> LeRobotPiPolicy:
    """Registry entry ``pi0``: a LeRobot π₀ checkpoint directory (see :data:`OPTIONS`)."""
    return _make('pi0', options)


def load_pi05(**options) -> LeRobotPiPolicy:
    """Registry entry ``pi05``: a LeRobot π₀.₅ checkpoint directory (see :data:`OPTIONS`)."""
    return _make('pi05', options)
