"""Checkpoints that bring their own model code (``openvla/openvla-7b`` style), gated.

The released OpenVLA directory has a ``config.json`` whose ``auto_map`` points at Python
files in the directory (``modeling_prismatic.py``, ...). Loading it runs that code, so it
is refused unless the caller passes ``allow_remote_code=True`` explicitly. Nothing is ever
fetched: every load is ``local_files_only``.
"""

import json
from pathlib import Path

import numpy as np

from vla_ros.actions.normalization import DatasetStatistics, Normalizer, load_statistics
from vla_ros.actions.spaces import load_action_space
from vla_ros.actions.tokenizers import OpenVlaActionTokenizer
from vla_ros.policies.contract import Observation, Policy, PolicyLoadError, PolicySpec
from vla_ros.policies.openvla.decoding import ActionTokenLogitsProcessor
from vla_ros.policies.openvla.processing_openvla import build_prompt, space_token_id
from vla_ros.policies.torch_policy import STATISTICS_FILE, resolve_device, resolve_dtype

# auto_map keys that name the model class, in order of preference (the real OpenVLA
# checkpoint uses AutoModelForVision2Seq, which transformers 5 no longer has).
MODEL_AUTO_CLASSES = ('AutoModelForVision2Seq', 'AutoModelForImageTextToText',
                      'AutoModelForCausalLM', 'AutoModel')
REMOTE_OPTIONS = ('action_space', 'image_size', 'camera_name', 'control_period',
                  'text_vocab_size')
ALLOW_HINT = ('pass allow_remote_code=True (in the inference node: policy_params: '
              '\'{"allow_remote_code": true}\')')


def read_config(path: Path) -> dict:
    """The parsed ``config.json`` of a checkpoint directory (PolicyLoadError otherwise)."""
    file = path / 'config.json'
    try:
        config = json.loads(file.read_text(encoding='utf-8'))
    except FileNotFoundError:
        raise PolicyLoadError(f'{path} has no config.json') from None
    except (OSError, json.JSONDecodeError) as exc:
        raise PolicyLoadError(f'{file}: unreadable: {exc}') from exc
    if not isinstance(config, dict):
        raise PolicyLoadError(f'{file}: expected a JSON object')
    return config


def remote_auto_map(config: dict) -> dict:
    """The ``auto_map`` of a config (empty when the checkpoint needs no custom code)."""
    auto_map = config.get('auto_map') or {}
    return auto_map if isinstance(auto_map, dict) else {}


def refuse_remote_code(path: Path, auto_map: dict) -> PolicyLoadError:
    """The error raised when custom code was found but not allowed."""
    files = sorted({str(v).split('--')[-1].split('.')[0] + '.py' for v in auto_map.values()})
    return PolicyLoadError(
        f'{path} ships its own model code ({", ".join(files)}, via config.json auto_map); '
        f'loading it would execute that Python code, so it is refused by default. If you '
        f'trust this directory, {ALLOW_HINT}.')


def _model_class(path: Path, auto_map: dict):
    """The custom model class named by ``auto_map`` (imports the directory's code)."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    for key in MODEL_AUTO_CLASSES:
        if key in auto_map:
            return get_class_from_dynamic_module(auto_map[key], str(path),
                                                 local_files_only=True)
    raise PolicyLoadError(f'{path}: config.json auto_map names no model class '
                          f'(looked for {list(MODEL_AUTO_CLASSES)}), got {sorted(auto_map)}')


def _load_model(path: Path, auto_map: dict, dtype):
    import transformers

    auto_class = getattr(transformers, 'AutoModelForVision2Seq', None)
    kwargs = dict(trust_remote_code=True, local_files_only=True, dtype=dtype)
    if auto_class is not None and 'AutoModelForVision2Seq' in auto_map:
        return auto_class.from_pretrained(str(path), **kwargs)
    return _model_class(path, auto_map).from_pretrained(str(path), **kwargs)


def _statistics(path: Path, config: dict) -> DatasetStatistics | None:
    """dataset_statistics.json, else the ``norm_stats`` OpenVLA keeps in config.json."""
    file = path / STATISTICS_FILE
    if file.is_file():
        return load_statistics(file)
    if isinstance(config.get('norm_stats'), dict):
        return DatasetStatistics.from_dict(config['norm_stats'])
    return None


class RemoteCodeOpenVlaPolicy(Policy):
    """An OpenVLA checkpoint run through its own (trusted) modeling and processing code.

    Uses the model's ``predict_action`` (which unnormalizes with its own statistics) when
    it has one; otherwise greedy ``generate`` restricted to the action tokens, decoded
    with :class:`OpenVlaActionTokenizer` and unnormalized with the directory's statistics.
    """

    def __init__(self, model, processor, action_space: str = 'arm7', image_size: int = 224,
                 camera_name: str = 'front', control_period: float = 0.1,
                 unnorm_key: str | None = None, statistics: DatasetStatistics | None = None,
                 text_vocab_size: int | None = None, device: str = 'cpu',
                 dtype: str = 'float32'):
        """Wrap an already loaded model and processor."""
        self.model, self.processor = model, processor
        self.device, self.dtype = resolve_device(device), resolve_dtype(dtype)
        self.unnorm_key = unnorm_key
        space = load_action_space(action_space)
        self._spec = PolicySpec(name='openvla', action_space=space, chunk_length=1,
                                camera_names=(camera_name,), image_size=(image_size, image_size),
                                control_period=control_period)
        if statistics is not None:
            statistics.select(unnorm_key)  # a missing/unknown key fails at load, not per call
        self.uses_predict_action = callable(getattr(model, 'predict_action', None))
        if not self.uses_predict_action:
            self._prepare_generate(statistics, text_vocab_size)

    def _prepare_generate(self, statistics, text_vocab_size) -> None:
        if statistics is None:
            raise PolicyLoadError('the model has no predict_action and the directory has no '
                                  'dataset_statistics.json or config.json norm_stats')
        self.normalizer = Normalizer(statistics.select(self.unnorm_key).action)
        if text_vocab_size is None:
            config = self.model.config
            text = getattr(config, 'text_config', config)
            pad = getattr(config, 'pad_to_multiple_of', None)
            if pad is None:
                raise PolicyLoadError('cannot tell the text vocabulary size from the config; '
                                      'pass text_vocab_size')
            text_vocab_size = int(text.vocab_size) - int(pad)
        self.action_tokenizer = OpenVlaActionTokenizer(vocab_size=int(text_vocab_size))
        tokenizer = getattr(self.processor, 'tokenizer', self.processor)
        self.space_id = space_token_id(tokenizer)

    @classmethod
    def load(cls, model_path, allow_remote_code: bool = False, unnorm_key: str | None = None,
             device: str = 'cpu', dtype: str = 'float32', seed: int = 0,
             **options) -> 'RemoteCodeOpenVlaPolicy':
        """Load a directory with ``auto_map`` custom code; refused unless allowed.

        ``options`` are the robot-side settings the checkpoint cannot know: ``action_space``,
        ``image_size``, ``camera_name``, ``control_period`` and ``text_vocab_size``.
        """
        del seed  # greedy decoding is deterministic
        path = Path(model_path).expanduser()
        config = read_config(path)
        auto_map = remote_auto_map(config)
        if not auto_map:
            raise PolicyLoadError(f'{path}: config.json has no auto_map (no custom code)')
        if allow_remote_code is not True:
            raise refuse_remote_code(path, auto_map)
        unknown = sorted(set(options) - set(REMOTE_OPTIONS))
        if unknown:
            raise ValueError(f'openvla (custom-code checkpoint): unknown option(s) {unknown}; '
                             f'allowed: {list(REMOTE_OPTIONS)}')
        from transformers import AutoProcessor

        torch_dtype = resolve_dtype(dtype)
        try:
            model = _load_model(path, auto_map, torch_dtype)
            processor = AutoProcessor.from_pretrained(str(path), trust_remote_code=True,
                                                      local_files_only=True)
        except PolicyLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - custom code can raise anything
            raise PolicyLoadError(f'{path}: its custom code failed to load: '
                                  f'{type(exc).__name__}: {exc}') from exc
        model.to(resolve_device(device)).eval()
        return cls(model, processor, unnorm_key=unnorm_key, device=device, dtype=dtype,
                   statistics=_statistics(path, config), **options)

    @property
    def spec(self) -> PolicySpec:
        """See :class:`PolicySpec`."""
        return self._spec

    def _inputs(self, observation: Observation) -> dict:
        import torch
        from PIL import Image

        image = Image.fromarray(observation.images[self._spec.camera_names[0]])
        inputs = self.processor(build_prompt(observation.instruction), image)
        moved = {}
        for key, value in dict(inputs).items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(self.dtype)
            moved[key] = value
        return moved

    def predict_chunk(self, observation: Observation) -> np.ndarray:
        """Validate, run the checkpoint's code, return a clipped (1, dim) chunk."""
        import torch

        self.validate_observation(observation)
        inputs = self._inputs(observation)
        with torch.inference_mode():
            if self.uses_predict_action:
                action = self.model.predict_action(**inputs, unnorm_key=self.unnorm_key,
                                                   do_sample=False)
            else:
                action = self._generate(inputs)
        action = np.asarray(action, dtype=np.float64)
        # OpenVLA's predict_action returns one (dim,) action; check_chunk reports a mismatch.
        chunk = self.check_chunk(action.reshape(1, -1) if action.ndim == 1 else action)
        return self._spec.action_space.clip(chunk).astype(np.float32)

    def _generate(self, inputs: dict) -> np.ndarray:
        import torch

        ids = inputs['input_ids']
        if int(ids[0, -1]) != self.space_id:
            space = torch.full_like(ids[:, :1], self.space_id)
            inputs['input_ids'] = torch.cat([ids, space], dim=1)
            if 'attention_mask' in inputs:
                mask = inputs['attention_mask']
                inputs['attention_mask'] = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        first = self.action_tokenizer.vocab_size - self.action_tokenizer.num_bins
        dim = self._spec.action_space.dim
        out = self.model.generate(**inputs, max_new_tokens=dim, min_new_tokens=dim,
                                  do_sample=False, logits_processor=[
                                      ActionTokenLogitsProcessor(first,
                                                                 self.action_tokenizer.vocab_size)])
        tokens = out[0, -dim:].cpu().numpy()
        return self.normalizer.unnormalize(self.action_tokenizer.decode(tokens))
