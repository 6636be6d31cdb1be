"""Configuration of OpenVLA's simulation variant, its stage presets and legacy checkpoints.

:class:`OpenVlaSimConfig` is :class:`OpenVlaConfig` plus the variant's options, saved
with model type ``vla_ros_openvla_sim``. Checkpoints written before the variant moved out
of the ``openvla`` family (the shipped ``openvla_sim``, its training lineage) have model
type ``vla_ros_openvla`` and these options among the family's: :func:`is_legacy_variant`
recognises them, :func:`config_from_checkpoint` reads them unchanged.
"""

import dataclasses

from transformers import AutoConfig

from vla_ros.policies.openvla.configuration_openvla import (
    MODEL_TYPE,
    OpenVlaConfig,
    check_booleans,
    check_positive_integers,
)
from vla_ros.policies.openvla.configuration_openvla import PRESETS as OPENVLA_PRESETS

SIM_MODEL_TYPE = 'vla_ros_openvla_sim'
# An option tried and not shipped (a cube-yaw moment of the pixel readout; docs/results.md):
# old configs carry it as false, a true one names a model this code cannot rebuild.
REMOVED_OPTIONS = ('pixel_orientation_features',)


class OpenVlaSimConfig(OpenVlaConfig):
    """OpenVLA plus the simulation variant's readouts, probes and training options.

    The readout tokens (``keypoint_tokens``, ``target_readout``, ``pixel_target_readout``)
    enter the sequence after each camera's patches and are used at inference. The
    ``*_weight`` options add training-only losses on the simulator's ground truth
    (:mod:`vla_ros.training.auxiliary`); inference ignores them and their probes.
    """

    model_type = SIM_MODEL_TYPE

    # Random initialisation only: start the ViTs' position embeddings from a 2-D sine-cosine
    # code instead of noise (for training from scratch; loaded weights replace them anyway).
    sincos_position_init: bool = False
    # Training only: > 0 spreads each action-token target over its neighbouring bins with
    # this standard deviation (in bins) instead of one-hot (see the model's loss).
    action_label_sigma: float = 0.0
    # One spatial-soft-argmax keypoint token per camera after its patches (see the model).
    keypoint_tokens: bool = False
    # Training only: > 0 adds an object probe (an MLP on the first camera's keypoints; needs
    # keypoint_tokens) that regresses each scene object's position and cube yaw from the
    # simulator's layout, weighted by this factor. Inference ignores it.
    object_probe_weight: float = 0.0
    object_probe_objects: int = 4
    object_probe_dim: int = 4
    # One instruction-conditioned soft-argmax token per camera after the keypoint tokens:
    # where the object the instruction names is (see the model's OpenVlaTargetReadout).
    target_readout: bool = False
    target_readout_heads: int = 4
    # Training only: > 0 adds a target probe (an MLP on the first camera's target-readout
    # features; needs target_readout) that regresses the named object's position and cube
    # yaw, weighted by this factor. Inference ignores it.
    target_probe_weight: float = 0.0
    # Training only: > 0 adds a state probe: an MLP on the language model's last hidden
    # state where it predicts the first action token regresses the named object's position
    # and cube yaw, so the target's whereabouts reach the state the action is read from.
    state_probe_weight: float = 0.0
    # One instruction-conditioned pixel-resolution soft-argmax token per camera (a small
    # convolutional stem at full resolution; see the model's OpenVlaPixelTargetReadout):
    # where the named object is to a fraction of a pixel, and how large it looks.
    pixel_target_readout: bool = False
    pixel_readout_channels: int = 16
    pixel_readout_heads: int = 4
    # Training only: > 0 adds a probe (an MLP on the first camera's pixel-readout features)
    # regressing the named object's position and cube yaw, weighted by this factor.
    pixel_probe_weight: float = 0.0
    # Training only: > 0 pulls each camera's first pixel-readout head onto the named object
    # where the simulator's layout (and, for an arm-mounted camera, the arm's pose) puts it
    # (Huber loss in pixels), so that head finds the object the words name instead of
    # whatever predicts the action best.
    pixel_keypoint_weight: float = 0.0

    def _validate(self) -> None:
        super()._validate()
        check_positive_integers(self, ('object_probe_objects', 'object_probe_dim',
                                       'target_readout_heads', 'pixel_readout_channels',
                                       'pixel_readout_heads'))
        check_booleans(self, ('sincos_position_init', 'keypoint_tokens', 'target_readout',
                              'pixel_target_readout'))
        if isinstance(self.action_label_sigma, bool) or not isinstance(
                self.action_label_sigma, (int, float)) or not 0 <= self.action_label_sigma <= 64:
            raise ValueError(f'action_label_sigma must be in [0, 64] bins, got '
                             f'{self.action_label_sigma!r}')
        for name in LOSS_WEIGHTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not value >= 0 or value == float('inf'):
                raise ValueError(f'{name} must be a finite number >= 0, got {value!r}')
        if self.object_probe_weight > 0 and not self.keypoint_tokens:
            raise ValueError('object_probe_weight > 0 needs keypoint_tokens (the probe reads '
                             'the keypoints)')
        if self.target_probe_weight > 0 and not self.target_readout:
            raise ValueError('target_probe_weight > 0 needs target_readout (the probe reads '
                             'its features)')
        for name in ('pixel_probe_weight', 'pixel_keypoint_weight'):
            if getattr(self, name) > 0 and not self.pixel_target_readout:
                raise ValueError(f'{name} > 0 needs pixel_target_readout (it trains that '
                                 f'readout)')
        if self.target_readout and self.text_config.hidden_size % self.target_readout_heads:
            raise ValueError(f'target_readout_heads ({self.target_readout_heads}) must divide '
                             f'the language model width ({self.text_config.hidden_size})')

    @property
    def readout_tokens_per_camera(self) -> int:
        """Keypoint, target and pixel target tokens, each when enabled."""
        return int(self.keypoint_tokens) + int(self.target_readout) \
            + int(self.pixel_target_readout)

    @property
    def uses_simulator_targets(self) -> bool:
        """Whether training needs the simulator's ground truth (some auxiliary loss is on)."""
        return any(getattr(self, name) > 0 for name in LOSS_WEIGHTS)


# Training-only loss weights (0: off).
LOSS_WEIGHTS = ('object_probe_weight', 'target_probe_weight', 'state_probe_weight',
                'pixel_probe_weight', 'pixel_keypoint_weight')
# The options this variant adds to OpenVLA's configuration, with their defaults.
VARIANT_DEFAULTS = {f.name: f.default for f in dataclasses.fields(OpenVlaSimConfig)
                    if f.name not in {g.name for g in dataclasses.fields(OpenVlaConfig)}}


def is_legacy_variant(config: dict) -> bool:
    """Whether a ``vla_ros_openvla`` config.json uses the variant (an option not at default).

    Such checkpoints were written while these options lived in the ``openvla`` family;
    one with every option at its default is plain OpenVLA.
    """
    if config.get('model_type') != MODEL_TYPE:
        return False
    changed = [k for k, default in VARIANT_DEFAULTS.items() if config.get(k, default) != default]
    return bool(changed) or any(config.get(k) for k in REMOVED_OPTIONS)


def config_from_checkpoint(config: dict) -> OpenVlaSimConfig:
    """The variant's configuration from a checkpoint's config.json (current or legacy).

    ValueError for a removed option that is switched on (the weights would not fit).
    """
    config = dict(config)
    for name in REMOVED_OPTIONS:
        if config.pop(name, False):
            raise ValueError(f'{name} was an experiment that was removed (docs/results.md); '
                             f'this checkpoint needs the code that had it')
    config.pop('model_type', None)
    return OpenVlaSimConfig.from_dict(config)


# The shipped simulation policy's first stage (~2.7 M parameters, 2.1 M of them the tied
# 32k-token embedding): front and wrist cameras at 64 px with 8 px patches (64 per camera;
# 16 px patches left a 4 px object a quarter of one token and the policy could not find
# it) through one small DINOv2 + SigLIP backbone, a keypoint token per camera, plus an
# OFT-style proprio token (7 joints + gripper), sized so a training run fits about an hour
# of this 2-core CPU.
SIM_BASE = dict(
    image_size=64, camera_names=['front', 'wrist'], use_proprio=True, proprio_dim=8,
    sincos_position_init=True, action_label_sigma=2.0, keypoint_tokens=True,
    object_probe_weight=1.0,
    dino_config=dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=2, mlp_ratio=2,
                     patch_size=8, num_register_tokens=4),
    siglip_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                       num_attention_heads=2, patch_size=8),
    text_config=dict(hidden_size=64, intermediate_size=192, num_hidden_layers=4,
                     num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                     bos_token_id=1, eos_token_id=2, tie_word_embeddings=True),
)
# The shipped policy's fourth stage: the first grown by an instruction-conditioned target
# token per camera, its training-only probe and the state probe (``vla-ros train --size sim
# --init-weights ...``).
SIM = dict(SIM_BASE, target_readout=True, target_probe_weight=5.0, state_probe_weight=5.0)
# The same grown by a pixel-resolution target token per camera and its training-only probe
# (``vla-ros train --size sim_pixel --init-weights <a sim checkpoint>``): the shipped model.
SIM_PIXEL = dict(SIM, pixel_target_readout=True, pixel_probe_weight=5.0,
                 pixel_keypoint_weight=0.2)
# OpenVLA's sizes ('tiny', 'medium', 'full') with every option off (tests switch on what
# they test), and the training stages of the shipped model.
PRESETS = {**OPENVLA_PRESETS, 'sim_base': SIM_BASE, 'sim': SIM, 'sim_pixel': SIM_PIXEL}

AutoConfig.register(SIM_MODEL_TYPE, OpenVlaSimConfig, exist_ok=True)
