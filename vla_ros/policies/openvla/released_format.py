"""The released OpenVLA ``config.json`` (``openvla/openvla-7b`` and its fine-tunes), read natively.

Prismatic's exported config (model_type ``openvla``) names its parts by identifiers:
``vision_backbone_id`` (which timm towers, at which resolution), ``llm_backbone_id`` (which
Llama), ``arch_specifier`` (projector), ``image_resize_strategy``; ``text_config`` holds
only what differs from the transformers 4.40 ``LlamaConfig`` defaults the released code
built its Llama from (notably ``rms_norm_eps`` stays 1e-6 there). This module turns such a
config into this project's :class:`OpenVlaConfig`, refusing with the field's name whatever
it does not implement, and writes one back (:func:`released_config`).

Implemented: ``dinosiglip-vit-so-224px`` towers; Llama-architecture LLMs (``llama2-*``,
``vicuna-v15-*``); ``no-align+fused-gelu-mlp``; ``resize-naive``, ``letterbox`` and
``resize-crop``.
"""

from __future__ import annotations

from dataclasses import dataclass

from vla_ros.policies.contract import PolicyLoadError
from vla_ros.policies.openvla.configuration_openvla import (
    DINO_MEAN,
    DINO_STD,
    FULL_DINO,
    FULL_SIGLIP,
    SIGLIP_MEAN,
    SIGLIP_STD,
    OpenVlaConfig,
    padded_vocab_size,
)

RELEASED_MODEL_TYPE = 'openvla'
HUB_CODE_REPO = 'openvla/openvla-7b'
# The towers of each supported vision_backbone_id: timm ids and transformers sub-configs.
# timm's ViT uses exact GELU (SigLIP's own checkpoints use the tanh approximation, timm's
# port does not) and LayerNorm eps 1e-6.
VISION_BACKBONES = {
    'dinosiglip-vit-so-224px': dict(
        image_size=224,
        timm_model_ids=['vit_large_patch14_reg4_dinov2.lvd142m', 'vit_so400m_patch14_siglip_224'],
        dino={**FULL_DINO, 'hidden_act': 'gelu'},
        siglip={**FULL_SIGLIP, 'hidden_act': 'gelu'}),
}
# Prismatic's llm_backbone_ids whose model class is Llama: the sizes come from text_config.
LLAMA_BACKBONES = ('llama2-7b-pure', 'llama2-13b-pure', 'llama2-7b-chat', 'llama2-13b-chat',
                   'vicuna-v15-7b', 'vicuna-v15-13b')
ARCH_SPECIFIERS = {'no-align+fused-gelu-mlp': 'fused-gelu-mlp',
                   'fused-gelu-mlp': 'fused-gelu-mlp'}
RESIZE_STRATEGIES = ('resize-naive', 'letterbox', 'resize-crop')
# transformers 4.40 LlamaConfig defaults: what the released code filled text_config with.
LLAMA_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=None,
                      hidden_act='silu', max_position_embeddings=2048, rms_norm_eps=1e-6,
                      rope_theta=10000.0, rope_scaling=None, attention_bias=False,
                      mlp_bias=False, tie_word_embeddings=False, bos_token_id=1,
                      eos_token_id=2, pad_token_id=None, head_dim=None, initializer_range=0.02)
# text_config keys that change the computation and are honoured; the rest of LLAMA_DEFAULTS
# must keep its default value (checked), any other key is generic PretrainedConfig
# bookkeeping (dtype, output_*, generation defaults) and is ignored.
LLAMA_HONOURED = ('vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers',
                  'num_attention_heads', 'num_key_value_heads', 'max_position_embeddings',
                  'rms_norm_eps', 'rope_theta', 'attention_bias', 'bos_token_id',
                  'eos_token_id', 'pad_token_id', 'initializer_range')
# Not in released checkpoints: tests write small towers with this field (see the writer).
TOWERS_FIELD = 'vla_ros_vision_towers'
# Robot-side settings a released checkpoint cannot know; everything else is fixed by it.
ROBOT_OPTIONS = ('action_space', 'camera_name', 'control_period')


def _refuse(field: str, value, supported) -> PolicyLoadError:
    return PolicyLoadError(f'released OpenVLA config: {field} = {value!r} is not supported by '
                           f'the native loader (supported: {list(supported)}); pass '
                           f'allow_remote_code to run the checkpoint\'s own code instead')


@dataclass(frozen=True)
class ReleasedCheckpoint:
    """What a released config.json says, in this project's terms."""

    config: OpenVlaConfig
    image_resize_strategy: str
    norm_stats: dict | None


def _require(config: dict, field: str):
    if field not in config:
        raise PolicyLoadError(f'released OpenVLA config: required field {field!r} is missing')
    return config[field]


def _text_config(text: dict, pad_to_multiple_of: int) -> dict:
    """The released ``text_config`` -> keyword arguments of this project's LlamaConfig."""
    if not isinstance(text, dict):
        raise PolicyLoadError('released OpenVLA config: text_config must be an object')
    if text.get('model_type', 'llama') != 'llama':
        raise _refuse('text_config.model_type', text.get('model_type'), ['llama'])
    values = {**LLAMA_DEFAULTS, **{k: v for k, v in text.items() if k in LLAMA_DEFAULTS}}
    if values['head_dim'] == values['hidden_size'] // values['num_attention_heads']:
        values['head_dim'] = None  # later transformers write the derived value out
    for key in sorted(set(LLAMA_DEFAULTS) - set(LLAMA_HONOURED)):
        if values[key] != LLAMA_DEFAULTS[key]:
            raise _refuse(f'text_config.{key}', values[key], [LLAMA_DEFAULTS[key]])
    out = {k: values[k] for k in LLAMA_HONOURED}
    if out['num_key_value_heads'] is None:
        out['num_key_value_heads'] = out['num_attention_heads']
    vocab = out['vocab_size']
    if not isinstance(vocab, int) or vocab % pad_to_multiple_of or vocab <= pad_to_multiple_of:
        raise PolicyLoadError(f'released OpenVLA config: text_config.vocab_size {vocab!r} is not '
                              f'a multiple of pad_to_multiple_of {pad_to_multiple_of} (OpenVLA '
                              f'pads the embedding table to one)')
    return out


def _towers(config: dict, backbone: dict) -> tuple[int, dict, dict]:
    """Image size and the two towers' sub-configs (standard, or the test-only override)."""
    towers = config.get(TOWERS_FIELD)
    if towers is None:
        return backbone['image_size'], dict(backbone['dino']), dict(backbone['siglip'])
    if not isinstance(towers, dict) or set(towers) != {'image_size', 'dino', 'siglip'}:
        raise PolicyLoadError(f'released OpenVLA config: {TOWERS_FIELD} must be an object with '
                              f'image_size, dino and siglip')
    return towers['image_size'], dict(towers['dino']), dict(towers['siglip'])


def parse_released_config(config: dict, options: dict | None = None) -> ReleasedCheckpoint:
    """Validate a released config.json (parsed) and build the native configuration.

    ``options`` are robot-side settings (:data:`ROBOT_OPTIONS`). Raises PolicyLoadError
    naming the first field that is missing, inconsistent or not implemented.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(ROBOT_OPTIONS))
    if unknown:
        raise ValueError(f'openvla (released checkpoint): unknown option(s) {unknown}; the '
                         f'checkpoint fixes the model, only {list(ROBOT_OPTIONS)} can be set')
    if config.get('model_type') != RELEASED_MODEL_TYPE:
        raise PolicyLoadError(f'not a released OpenVLA config (model_type '
                              f'{config.get("model_type")!r}, expected {RELEASED_MODEL_TYPE!r})')
    vision_id = _require(config, 'vision_backbone_id')
    if vision_id not in VISION_BACKBONES:
        raise _refuse('vision_backbone_id', vision_id, VISION_BACKBONES)
    backbone = VISION_BACKBONES[vision_id]
    llm_id = _require(config, 'llm_backbone_id')
    if llm_id not in LLAMA_BACKBONES:
        raise _refuse('llm_backbone_id', llm_id, LLAMA_BACKBONES)
    arch = _require(config, 'arch_specifier')
    if arch not in ARCH_SPECIFIERS:
        raise _refuse('arch_specifier', arch, ARCH_SPECIFIERS)
    strategy = config.get('image_resize_strategy', 'letterbox')  # Prismatic's default
    if strategy not in RESIZE_STRATEGIES:
        raise _refuse('image_resize_strategy', strategy, RESIZE_STRATEGIES)
    if config.get('use_fused_vision_backbone', True) is not True:
        raise _refuse('use_fused_vision_backbone', config['use_fused_vision_backbone'], [True])
    image_size, dino, siglip = _towers(config, backbone)
    expected = {'image_sizes': [image_size, image_size],
                'timm_model_ids': backbone['timm_model_ids'],
                'timm_override_act_layers': [None, None]}
    for field, value in expected.items():
        if field in config and config[field] != value:
            raise _refuse(field, config[field], [value])
    multiple = config.get('pad_to_multiple_of', 64)
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise PolicyLoadError(f'released OpenVLA config: pad_to_multiple_of must be a positive '
                              f'integer, got {multiple!r}')
    text = _text_config(_require(config, 'text_config'), multiple)
    # OpenVLA decodes bins from text_config.vocab_size - pad_to_multiple_of (32064 - 64).
    text_vocab = text['vocab_size'] - multiple
    if padded_vocab_size(text_vocab, multiple) != text['vocab_size']:
        raise PolicyLoadError(f'released OpenVLA config: text_config.vocab_size '
                              f'{text["vocab_size"]} leaves no room for the pad token above '
                              f'{text_vocab} text ids')
    pad = config.get('pad_token_id', text_vocab)
    if pad != text_vocab:
        raise _refuse('pad_token_id', pad, [text_vocab])
    text['pad_token_id'] = text_vocab
    bins = config.get('n_action_bins', 256)
    if isinstance(bins, bool) or not isinstance(bins, int) or not 2 <= bins <= text_vocab:
        raise PolicyLoadError(f'released OpenVLA config: n_action_bins must be an integer in '
                              f'[2, {text_vocab}], got {bins!r}')
    norm_stats = config.get('norm_stats')
    if norm_stats is not None and not isinstance(norm_stats, dict):
        raise PolicyLoadError('released OpenVLA config: norm_stats must be an object')
    try:
        native = OpenVlaConfig(
            image_size=image_size, projector_type=ARCH_SPECIFIERS[arch], vision_feature_layer=-2,
            text_vocab_size=text_vocab, pad_to_multiple_of=multiple, n_action_bins=bins,
            dino_config={**dino, 'image_size': image_size},
            siglip_config={**siglip, 'image_size': image_size},
            text_config=text, **options)
    except ValueError as exc:
        raise PolicyLoadError(f'released OpenVLA config: inconsistent: {exc}') from exc
    return ReleasedCheckpoint(config=native, image_resize_strategy=strategy,
                              norm_stats=norm_stats)


def check_preprocessor_config(preprocessor: dict, strategy: str, image_size: int) -> None:
    """A released ``preprocessor_config.json`` must describe the transform implemented here."""
    expected = {
        'image_resize_strategy': strategy,
        'input_sizes': [[3, image_size, image_size]] * 2,
        'interpolations': ['bicubic', 'bicubic'],
        'means': [list(DINO_MEAN), list(SIGLIP_MEAN)],
        'stds': [list(DINO_STD), list(SIGLIP_STD)],
    }
    for field, value in expected.items():
        if field not in preprocessor:
            continue
        given = preprocessor[field]
        same = (given == value if not isinstance(value, list) or field in (
            'interpolations', 'input_sizes', 'image_resize_strategy')
            else _close(given, value))
        if not same:
            raise PolicyLoadError(f'preprocessor_config.json: {field} = {given!r} differs from '
                                  f'what the native loader implements ({value!r})')


def _close(given, value) -> bool:
    try:
        return all(abs(float(a) - float(b)) < 1e-6 for g, v in zip(given, value, strict=True)
                   for a, b in zip(g, v, strict=True))
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------------- writing
def released_config(native: OpenVlaConfig, norm_stats: dict, image_resize_strategy: str =
                    'resize-naive', dtype: str = 'bfloat16') -> dict:
    """The released config.json for a native configuration (refused if not representable).

    ``auto_map`` points at OpenVLA's code on the hub (``openvla/openvla-7b--...``), so
    OpenVLA's own tools can open the directory; this project never imports it.
    """
    bad = ['use_proprio'] if native.use_proprio else []
    if type(native) is not OpenVlaConfig:  # a variant's readout tokens and probes
        bad.append(f'model_type {native.model_type}')
    if native.camera_names and len(native.cameras) > 1:
        bad.append('camera_names')
    if native.projector_type != 'fused-gelu-mlp':
        bad.append(f'projector_type={native.projector_type}')
    if native.vision_feature_layer != -2:
        bad.append(f'vision_feature_layer={native.vision_feature_layer}')
    if native.siglip_config.hidden_act != 'gelu' or native.dino_config.hidden_act != 'gelu':
        bad.append('vision hidden_act (the released towers use exact GELU)')
    if native.text_config.tie_word_embeddings:
        bad.append('tied word embeddings')
    if image_resize_strategy not in RESIZE_STRATEGIES:
        bad.append(f'image_resize_strategy={image_resize_strategy}')
    if bad:
        raise ValueError(f'this OpenVLA model has no released-format equivalent: {bad}')
    text = native.text_config
    text_dict = {'model_type': 'llama', 'pad_token_id': native.text_vocab_size,
                 'torch_dtype': dtype, 'vocab_size': text.vocab_size}
    rope = (getattr(text, 'rope_parameters', None) or {}).get('rope_theta', 10000.0)
    actual = dict(hidden_size=text.hidden_size, intermediate_size=text.intermediate_size,
                  num_hidden_layers=text.num_hidden_layers,
                  num_attention_heads=text.num_attention_heads,
                  num_key_value_heads=text.num_key_value_heads,
                  max_position_embeddings=text.max_position_embeddings,
                  rms_norm_eps=text.rms_norm_eps, rope_theta=rope,
                  attention_bias=text.attention_bias, bos_token_id=text.bos_token_id,
                  eos_token_id=text.eos_token_id)
    for key, value in actual.items():  # only what differs from the 4.40 defaults, as released
        default = LLAMA_DEFAULTS[key]
        if key == 'num_key_value_heads' and value == text.num_attention_heads:
            continue
        if value != default:
            text_dict[key] = value
    vision_id = 'dinosiglip-vit-so-224px'
    backbone = VISION_BACKBONES[vision_id]
    size = native.image_size
    out = {
        'architectures': ['OpenVLAForActionPrediction'],
        'auto_map': {
            'AutoConfig': f'{HUB_CODE_REPO}--configuration_prismatic.OpenVLAConfig',
            'AutoModelForVision2Seq':
                f'{HUB_CODE_REPO}--modeling_prismatic.OpenVLAForActionPrediction'},
        'arch_specifier': 'no-align+fused-gelu-mlp',
        'hf_llm_id': 'meta-llama/Llama-2-7b-hf',
        'image_resize_strategy': image_resize_strategy,
        'image_sizes': [size, size],
        'llm_backbone_id': 'llama2-7b-pure',
        'llm_max_length': 2048,
        'model_type': RELEASED_MODEL_TYPE,
        'n_action_bins': native.n_action_bins,
        'norm_stats': norm_stats,
        'output_projector_states': False,
        'pad_to_multiple_of': native.pad_to_multiple_of,
        'pad_token_id': native.text_vocab_size,
        'text_config': text_dict,
        'timm_model_ids': backbone['timm_model_ids'],
        'timm_override_act_layers': [None, None],
        'torch_dtype': dtype,
        'transformers_version': '4.40.1',
        'use_fused_vision_backbone': True,
        'vision_backbone_id': vision_id,
    }
    towers = _tower_dicts(native)
    if towers != (backbone['image_size'], _standard(backbone['dino'], native.dino_config),
                  _standard(backbone['siglip'], native.siglip_config)):
        out[TOWERS_FIELD] = {'image_size': size, 'dino': towers[1], 'siglip': towers[2]}
    return out


_TOWER_KEYS = {'dino': ('hidden_size', 'num_hidden_layers', 'num_attention_heads', 'mlp_ratio',
                        'patch_size', 'num_register_tokens', 'layer_norm_eps', 'hidden_act'),
               'siglip': ('hidden_size', 'intermediate_size', 'num_hidden_layers',
                          'num_attention_heads', 'patch_size', 'layer_norm_eps', 'hidden_act')}


def _tower_dicts(native: OpenVlaConfig) -> tuple[int, dict, dict]:
    dino = {k: getattr(native.dino_config, k) for k in _TOWER_KEYS['dino']}
    siglip = {k: getattr(native.siglip_config, k) for k in _TOWER_KEYS['siglip']}
    return native.image_size, dino, siglip


def _standard(standard: dict, sub) -> dict:
    """The standard tower's values for the keys compared (what an override would say)."""
    keys = _TOWER_KEYS['dino'] if 'num_register_tokens' in standard else _TOWER_KEYS['siglip']
    return {k: standard.get(k, getattr(sub, k)) for k in keys}


def released_preprocessor_config(strategy: str, image_size: int) -> dict:
    """``preprocessor_config.json`` as the released directory has it (for other tools)."""
    return {
        'auto_map': {'AutoImageProcessor':
                     f'{HUB_CODE_REPO}--processing_prismatic.PrismaticImageProcessor',
                     'AutoProcessor': f'{HUB_CODE_REPO}--processing_prismatic.PrismaticProcessor'},
        'image_processor_type': 'PrismaticImageProcessor',
        'image_resize_strategy': strategy,
        'input_sizes': [[3, image_size, image_size]] * 2,
        'interpolations': ['bicubic', 'bicubic'],
        'means': [list(DINO_MEAN), list(SIGLIP_MEAN)],
        'stds': [list(DINO_STD), list(SIGLIP_STD)],
        'processor_class': 'PrismaticProcessor',
        'use_fused_vision_backbone': True,
    }
