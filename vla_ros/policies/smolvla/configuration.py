"""SmolVLA configuration: LeRobot's ``config.json`` fields plus vla_ros's own.

The LeRobot fields keep LeRobot's names and defaults (read from
``src/lerobot/policies/smolvla/configuration_smolvla.py`` of huggingface/lerobot at commit
7427f31801f944f5ec9ce53cda02862ce7d1638b) so that a checkpoint's ``config.json`` maps onto
them key by key. The vla_ros fields say how the checkpoint meets a robot: which action
space bounds its chunks, which vla_ros camera feeds which image feature, the control
period. ``vlm`` is the SmolVLM configuration as a dict (``SmolVLMConfig.to_dict()``);
checkpoints leave it empty and take it from a local ``vlm_path`` directory instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NORMALIZATION_MODES = ('IDENTITY', 'MEAN_STD', 'MIN_MAX', 'QUANTILES', 'QUANTILE10')
FEATURE_TYPES = ('VISUAL', 'STATE', 'ACTION', 'ENV', 'LANGUAGE', 'REWARD')
ATTENTION_MODES = ('cross_attn', 'self_attn')

# config.json keys that only concern training, the hub or LeRobot's runtime: read and
# ignored, because they do not change what the model computes at inference.
IGNORED_KEYS = frozenset({
    'type', 'n_obs_steps', 'device', 'use_amp', 'use_peft', 'push_to_hub', 'repo_id',
    'private', 'tags', 'license', 'pretrained_path', 'pretrained_revision', 'use_cache',
    'freeze_vision_encoder', 'train_expert_only', 'train_state_proj', 'optimizer_lr',
    'optimizer_betas',
    'optimizer_eps', 'optimizer_weight_decay', 'optimizer_grad_clip_norm',
    'scheduler_warmup_steps', 'scheduler_decay_steps', 'scheduler_decay_lr',
    'compile_model', 'compile_mode',
})


@dataclass
class SmolVLAConfig:
    """Every field that changes SmolVLA's inference; see the module docstring."""

    # --- LeRobot's fields (same names and defaults) ---------------------------------
    input_features: dict = field(default_factory=dict)
    output_features: dict = field(default_factory=dict)
    normalization_mapping: dict = field(default_factory=lambda: {
        'VISUAL': 'IDENTITY', 'STATE': 'MEAN_STD', 'ACTION': 'MEAN_STD'})
    chunk_size: int = 50
    n_action_steps: int = 50
    max_state_dim: int = 32
    max_action_dim: int = 32
    resize_imgs_with_padding: tuple = (512, 512)
    empty_cameras: int = 0
    adapt_to_pi_aloha: bool = False
    use_delta_joint_actions_aloha: bool = False
    tokenizer_max_length: int = 48
    num_steps: int = 10
    add_image_special_tokens: bool = False
    attention_mode: str = 'cross_attn'
    prefix_length: int = -1
    pad_language_to: str = 'longest'
    num_expert_layers: int = -1
    num_vlm_layers: int = 16
    self_attn_every_n_layers: int = 2
    expert_width_multiplier: float = 0.75
    min_period: float = 4e-3
    max_period: float = 4.0
    rtc_config: Any = None
    vlm_model_name: str = 'HuggingFaceTB/SmolVLM2-500M-Video-Instruct'  # never downloaded
    # True in LeRobot's fine-tuning recipe: LeRobot then builds the VLM with
    # from_pretrained(torch_dtype='bfloat16') before loading the checkpoint into it, so the
    # VLM runs in bfloat16 and the expert in float32; vla_ros does the same (nothing is
    # downloaded: only the precision follows)
    load_vlm_weights: bool = False
    # --- vla_ros's fields ---------------------------------------------------------------
    action_space: str = 'arm7'
    # The checkpoint's action names, in order (its dataset's "action" feature names): the
    # action space is then these names bounded by the postprocessor's action statistics,
    # and action_space is not used.
    action_names: tuple = ()
    camera_names: tuple = ()
    control_period: float = 0.1
    vlm: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check what inference depends on; clear errors for what is not supported."""
        self.resize_imgs_with_padding = tuple(int(v) for v in (self.resize_imgs_with_padding
                                                               or ()))
        self.camera_names = tuple(self.camera_names)
        self.action_names = tuple(str(n) for n in (self.action_names or ()))
        if self.action_names and self.output_features and \
                len(self.action_names) != self.action_dim:
            raise ValueError(f'smolvla: {len(self.action_names)} action_names for '
                             f'{self.action_dim} action dimensions')
        if self.attention_mode not in ATTENTION_MODES:
            raise ValueError(f'smolvla: attention_mode must be one of {ATTENTION_MODES}, got '
                             f'{self.attention_mode!r}')
        if self.adapt_to_pi_aloha or self.use_delta_joint_actions_aloha:
            raise ValueError('smolvla: adapt_to_pi_aloha / use_delta_joint_actions_aloha (the '
                             'Aloha joint conversions) are not implemented')
        rtc = self.rtc_config
        if isinstance(rtc, dict) and rtc.get('enabled'):
            raise ValueError('smolvla: real-time chunking (rtc_config.enabled) is not '
                             'implemented')
        if self.n_action_steps > self.chunk_size:
            raise ValueError(f'smolvla: n_action_steps ({self.n_action_steps}) exceeds '
                             f'chunk_size ({self.chunk_size})')
        if self.num_steps < 1:
            raise ValueError(f'smolvla: num_steps must be >= 1, got {self.num_steps}')
        for kind, mode in self.normalization_mapping.items():
            if kind not in FEATURE_TYPES or mode not in NORMALIZATION_MODES:
                raise ValueError(f'smolvla: normalization_mapping {kind!r}: {mode!r} is not '
                                 f'a known (feature type, mode) pair')
        for key, feature in {**self.input_features, **self.output_features}.items():
            if not isinstance(feature, dict) or feature.get('type') not in FEATURE_TYPES:
                raise ValueError(f'smolvla: feature {key!r} needs a "type" in '
                                 f'{FEATURE_TYPES}, got {feature!r}')
        if self.state_dim > self.max_state_dim or self.action_dim > self.max_action_dim:
            raise ValueError(f'smolvla: state/action dims ({self.state_dim}, '
                             f'{self.action_dim}) exceed max_state_dim/max_action_dim '
                             f'({self.max_state_dim}, {self.max_action_dim})')
        if self.camera_names and len(self.camera_names) != len(self.image_keys):
            raise ValueError(f'smolvla: {len(self.camera_names)} camera_names for '
                             f'{len(self.image_keys)} image features {self.image_keys}')

    # ------------------------------------------------------------------ features
    def _keys(self, features: dict, kind: str) -> list[str]:
        return [k for k, f in features.items() if f['type'] == kind]

    @property
    def image_keys(self) -> list[str]:
        """The camera features, in config order (the order the prefix sees them).

        LeRobot adds ``observation.images.empty_camera_<i>`` (i < ``empty_cameras``) to
        the features it saves; those are the blank images appended after the cameras,
        not cameras.
        """
        blanks = {f'observation.images.empty_camera_{i}' for i in range(self.empty_cameras)}
        return [k for k in self._keys(self.input_features, 'VISUAL') if k not in blanks]

    @property
    def state_key(self) -> str | None:
        """The STATE input feature (LeRobot's ``observation.state``), if any."""
        keys = self._keys(self.input_features, 'STATE')
        if len(keys) > 1:
            raise ValueError(f'smolvla: more than one STATE feature: {keys}')
        return keys[0] if keys else None

    @property
    def action_key(self) -> str:
        """The ACTION output feature (LeRobot's ``action``)."""
        keys = self._keys(self.output_features, 'ACTION')
        if len(keys) != 1:
            raise ValueError(f'smolvla: expected one ACTION output feature, got {keys}')
        return keys[0]

    @property
    def state_dim(self) -> int:
        """Length of the state vector (0 without a STATE feature)."""
        key = self.state_key
        return int(self.input_features[key]['shape'][-1]) if key else 0

    @property
    def action_dim(self) -> int:
        """Length of one action, before padding to ``max_action_dim``."""
        return int(self.output_features[self.action_key]['shape'][-1]) \
            if self.output_features else 0

    def image_shape(self, key: str) -> tuple[int, int, int]:
        """``(C, H, W)`` of an image feature."""
        return tuple(int(v) for v in self.input_features[key]['shape'])

    def vla_camera_names(self) -> tuple[str, ...]:
        """vla_ros camera name per image feature (default: the key's last component)."""
        if self.camera_names:
            return self.camera_names
        return tuple(k.rsplit('.', 1)[-1] for k in self.image_keys)

    def lerobot_dict(self) -> dict:
        """The LeRobot ``config.json`` content (vla_ros fields under ``vla_ros``)."""
        skip = {'action_space', 'action_names', 'camera_names', 'control_period', 'vlm'}
        out = {'type': 'smolvla'}
        for name in self.__dataclass_fields__:
            if name not in skip:
                value = getattr(self, name)
                out[name] = list(value) if isinstance(value, tuple) else value
        out['vla_ros'] = {'action_space': self.action_space,
                          'camera_names': list(self.camera_names),
                          'control_period': self.control_period}
        if self.action_names:
            out['vla_ros']['action_names'] = list(self.action_names)
        return out


def tiny_vlm() -> dict:
    """A SmolVLM configuration small enough for tests (2 SigLIP layers, 4 text layers)."""
    return {
        'scale_factor': 2,
        'image_token_id': 3,
        'tie_word_embeddings': False,
        'vision_config': {'hidden_size': 16, 'intermediate_size': 32, 'num_hidden_layers': 2,
                          'num_attention_heads': 2, 'image_size': 32, 'patch_size': 8},
        'text_config': {'vocab_size': 300, 'hidden_size': 32, 'intermediate_size': 64,
                        'num_hidden_layers': 6, 'num_attention_heads': 4,
                        'num_key_value_heads': 2, 'head_dim': 8, 'rms_norm_eps': 1e-5,
                        'tie_word_embeddings': False, 'model_type': 'llama'},
    }


def full_vlm() -> dict:
    """SmolVLM2-500M-Video-Instruct's sizes (SigLIP-B/16 at 512 px, SmolLM2-360M)."""
    return {
        'scale_factor': 4,
        'image_token_id': 49190,
        'tie_word_embeddings': False,
        'vision_config': {'hidden_size': 768, 'intermediate_size': 3072,
                          'num_hidden_layers': 12, 'num_attention_heads': 12,
                          'image_size': 512, 'patch_size': 16},
        'text_config': {'vocab_size': 49280, 'hidden_size': 960, 'intermediate_size': 2560,
                        'num_hidden_layers': 32, 'num_attention_heads': 15,
                        'num_key_value_heads': 5, 'head_dim': 64, 'rms_norm_eps': 1e-5,
                        'tie_word_embeddings': False, 'model_type': 'llama'},
    }


def _features(state_dim: int, action_dim: int, image: tuple[int, int, int],
              cameras: tuple[str, ...]) -> tuple[dict, dict]:
    inputs = {f'observation.images.{c}': {'type': 'VISUAL', 'shape': list(image)}
              for c in cameras}
    inputs['observation.state'] = {'type': 'STATE', 'shape': [state_dim]}
    return inputs, {'action': {'type': 'ACTION', 'shape': [action_dim]}}


_TINY_IN, _TINY_OUT = _features(7, 7, (3, 24, 32), ('front',))
_FULL_IN, _FULL_OUT = _features(6, 6, (3, 480, 640), ('top', 'wrist'))

PRESETS = {
    # Runs on this CPU in tests: a 2-layer SigLIP at 32 px, 4 of 6 text layers, 8 steps.
    'tiny': dict(input_features=_TINY_IN, output_features=_TINY_OUT, chunk_size=8,
                 n_action_steps=8, max_state_dim=12, max_action_dim=10,
                 resize_imgs_with_padding=(32, 32), num_steps=4,
                 num_vlm_layers=4, expert_width_multiplier=0.75, vlm=tiny_vlm()),
    # smolvla_base's architecture (for the policy table; a checkpoint brings its own).
    'full': dict(input_features=_FULL_IN, output_features=_FULL_OUT, vlm=full_vlm()),
}
