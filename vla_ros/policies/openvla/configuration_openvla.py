"""Configuration of the OpenVLA family (Prismatic DINOv2 + SigLIP -> MLP -> Llama-2).

One transformers ``PreTrainedConfig`` holds the architecture (three sub-configurations)
and the few robot-side settings (action space, chunk length, control period), so a
checkpoint's ``config.json`` says everything needed to rebuild the policy.
"""

from transformers import (
    AutoConfig,
    Dinov2WithRegistersConfig,
    LlamaConfig,
    PreTrainedConfig,
    SiglipVisionConfig,
)

MODEL_TYPE = 'vla_ros_openvla'
PROJECTOR_TYPES = ('fused-gelu-mlp', 'gelu-mlp')
# OpenVLA-7B as published (prismatic `openvla/openvla-7b`): 7,541,237,184 parameters.
OPENVLA_7B_PARAMETERS = 7_541_237_184

# Sub-config entries that follow from the top-level config unless given explicitly.
DERIVED_KEYS = ('image_size', 'vocab_size', 'pad_token_id')
# ImageNet statistics for DINOv2 and 0.5/0.5 for SigLIP, as Prismatic's image transforms.
DINO_MEAN = (0.485, 0.456, 0.406)
DINO_STD = (0.229, 0.224, 0.225)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


def padded_vocab_size(text_vocab_size: int, multiple: int) -> int:
    """Embedding rows: the text vocabulary plus the added ``<PAD>`` token, rounded up.

    OpenVLA adds a pad token (id 32000) to Llama-2's 32000 ids and pads the embedding to a
    multiple of 64: 32001 -> 32064.
    """
    return -(-(text_vocab_size + 1) // multiple) * multiple


class OpenVlaConfig(PreTrainedConfig):
    """Architecture and robot settings of an OpenVLA-style policy.

    ``dino_config`` (DINOv2 with registers) and ``siglip_config`` see the same image at
    ``image_size`` and must yield the same number of patches; their features from layer
    ``vision_feature_layer`` are concatenated channel-wise and projected into the Llama
    embedding width. Action tokens are the last ``n_action_bins`` ids of the
    ``text_vocab_size`` text vocabulary; id ``text_vocab_size`` is the added pad token and
    the embedding table is padded to a multiple of ``pad_to_multiple_of``. Defaults are the
    OpenVLA-7B sizes.
    """

    model_type = MODEL_TYPE
    sub_configs_defaults = {
        'dino_config': Dinov2WithRegistersConfig,
        'siglip_config': SiglipVisionConfig,
        'text_config': LlamaConfig,
    }

    dino_config: dict | PreTrainedConfig | None = None
    siglip_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    family: str = 'openvla'
    image_size: int = 224
    projector_type: str = 'fused-gelu-mlp'
    vision_feature_layer: int = -2
    text_vocab_size: int = 32000
    pad_to_multiple_of: int = 64
    n_action_bins: int = 256
    action_space: str = 'arm7'
    chunk_length: int = 1
    control_period: float = 0.1
    camera_name: str = 'front'
    # Several cameras (OpenVLA-OFT style): each image goes through the same vision backbone
    # and the patch tokens are concatenated in this order. None: only ``camera_name``.
    camera_names: list | None = None
    # Proprioception (OpenVLA-OFT): the normalized state vector goes through its own MLP
    # projector and enters the sequence as one token right after the image patches.
    use_proprio: bool = False
    proprio_dim: int = 8
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
    # simulator's layout, weighted by this factor (vla_ros.training.auxiliary). Inference
    # ignores it.
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
    # The pixel token also reads each head's fourth-order angular moment: a cube's yaw,
    # relative to the hand in the wrist camera (needs pixel_target_readout).
    pixel_orientation_features: bool = False
    # Training only: > 0 adds a probe (an MLP on the first camera's pixel-readout features)
    # regressing the named object's position and cube yaw, weighted by this factor.
    pixel_probe_weight: float = 0.0
    # Training only: > 0 pulls each camera's first pixel-readout head onto the named object
    # where the simulator's layout (and, for the wrist camera, the arm's pose) puts it
    # (Huber loss in pixels), so that head finds the object the words name instead of
    # whatever predicts the action best.
    pixel_keypoint_weight: float = 0.0
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        """Fill sub-configuration defaults that follow from this config, then validate."""
        self._fill_defaults()
        super().__post_init__(**kwargs)
        self._validate()

    # A dict sub-config gets the image size, padded vocabulary and pad id from here unless it
    # says otherwise; a missing sub-config gets the OpenVLA-7B sizes.
    def _fill_defaults(self) -> None:
        sizes = {'image_size': self.image_size}
        defaults = {
            'dino_config': {**FULL_DINO, **sizes},
            'siglip_config': {**FULL_SIGLIP, **sizes},
            'text_config': {**FULL_LLAMA, 'pad_token_id': self.text_vocab_size,
                            'vocab_size': padded_vocab_size(self.text_vocab_size,
                                                            self.pad_to_multiple_of)},
        }
        for key, base in defaults.items():
            value = getattr(self, key)
            if value is None:
                setattr(self, key, base)
            elif isinstance(value, dict):
                fill = {k: v for k, v in base.items() if k in DERIVED_KEYS}
                setattr(self, key, {**fill, **value})

    def _validate(self) -> None:
        if self.projector_type not in PROJECTOR_TYPES:
            raise ValueError(f'projector_type must be one of {PROJECTOR_TYPES}, '
                             f'got {self.projector_type!r}')
        for name in ('image_size', 'text_vocab_size', 'pad_to_multiple_of', 'n_action_bins',
                     'chunk_length', 'proprio_dim', 'object_probe_objects', 'object_probe_dim',
                     'target_readout_heads', 'pixel_readout_channels', 'pixel_readout_heads'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be a positive integer, got {value!r}')
        for name in ('use_proprio', 'sincos_position_init', 'keypoint_tokens',
                     'target_readout', 'pixel_target_readout', 'pixel_orientation_features'):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f'{name} must be true or false, got {getattr(self, name)!r}')
        if not self.n_action_bins <= self.text_vocab_size:
            raise ValueError('n_action_bins must not exceed text_vocab_size')
        if isinstance(self.action_label_sigma, bool) or not isinstance(
                self.action_label_sigma, (int, float)) or not 0 <= self.action_label_sigma <= 64:
            raise ValueError(f'action_label_sigma must be in [0, 64] bins, got '
                             f'{self.action_label_sigma!r}')
        if self.object_probe_weight > 0 and not self.keypoint_tokens:
            raise ValueError('object_probe_weight > 0 needs keypoint_tokens (the probe reads '
                             'the keypoints)')
        for name in ('object_probe_weight', 'target_probe_weight', 'state_probe_weight',
                     'pixel_probe_weight', 'pixel_keypoint_weight'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not value >= 0 or value == float('inf'):
                raise ValueError(f'{name} must be a finite number >= 0, got {value!r}')
        if self.target_probe_weight > 0 and not self.target_readout:
            raise ValueError('target_probe_weight > 0 needs target_readout (the probe reads '
                             'its features)')
        if self.pixel_orientation_features and not self.pixel_target_readout:
            raise ValueError('pixel_orientation_features needs pixel_target_readout')
        for name in ('pixel_probe_weight', 'pixel_keypoint_weight'):
            if getattr(self, name) > 0 and not self.pixel_target_readout:
                raise ValueError(f'{name} > 0 needs pixel_target_readout (it trains that '
                                 f'readout)')
        if self.target_readout and self.text_config.hidden_size % self.target_readout_heads:
            raise ValueError(f'target_readout_heads ({self.target_readout_heads}) must divide '
                             f'the language model width ({self.text_config.hidden_size})')
        if not (isinstance(self.control_period, (int, float)) and self.control_period > 0):
            raise ValueError(f'control_period must be > 0, got {self.control_period!r}')
        padded = padded_vocab_size(self.text_vocab_size, self.pad_to_multiple_of)
        if self.text_config.vocab_size != padded:
            raise ValueError(f'text_config.vocab_size must be {padded} (text_vocab_size '
                             f'{self.text_vocab_size} + pad token, rounded up to a multiple of '
                             f'{self.pad_to_multiple_of}), got {self.text_config.vocab_size}')
        grids = {}
        for key in ('dino_config', 'siglip_config'):
            sub = getattr(self, key)
            if sub.image_size != self.image_size:
                raise ValueError(f'{key}.image_size {sub.image_size} != image_size '
                                 f'{self.image_size}: both encoders see the same image')
            if self.image_size % sub.patch_size:
                raise ValueError(f'image_size {self.image_size} is not a multiple of '
                                 f'{key}.patch_size {sub.patch_size}')
            grids[key] = (self.image_size // sub.patch_size) ** 2
        if len(set(grids.values())) != 1:
            raise ValueError(f'both encoders must produce the same number of patches to be '
                             f'fused channel-wise, got {grids}')
        cams = self.cameras
        if not cams or not all(isinstance(c, str) and c for c in cams) \
                or len(set(cams)) != len(cams):
            raise ValueError(f'camera_names must be distinct non-empty names, got {cams!r}')
        layers = min(self.dino_config.num_hidden_layers, self.siglip_config.num_hidden_layers)
        if not -layers <= self.vision_feature_layer < 0:
            raise ValueError(f'vision_feature_layer must be in [-{layers}, -1], got '
                             f'{self.vision_feature_layer}')

    @property
    def cameras(self) -> tuple[str, ...]:
        """The cameras the model sees, in the order their patches enter the sequence."""
        return tuple(self.camera_names) if self.camera_names else (self.camera_name,)

    @property
    def patches_per_image(self) -> int:
        """Patches one camera image contributes."""
        return (self.image_size // self.siglip_config.patch_size) ** 2

    @property
    def num_patches(self) -> int:
        """Image patches inserted into the language model's input sequence (all cameras)."""
        return self.patches_per_image * len(self.cameras)

    @property
    def num_inserted_tokens(self) -> int:
        """Embeddings inserted after BOS: patches, keypoint and target tokens, proprio."""
        per_camera = int(self.keypoint_tokens) + int(self.target_readout) \
            + int(self.pixel_target_readout)
        return self.num_patches + len(self.cameras) * per_camera + int(self.use_proprio)

    @property
    def vision_dim(self) -> int:
        """Channel width of the fused patch features (DINOv2 + SigLIP)."""
        return self.dino_config.hidden_size + self.siglip_config.hidden_size

    @property
    def action_token_range(self) -> tuple[int, int]:
        """``[first, last + 1)`` ids of the action tokens."""
        return self.text_vocab_size - self.n_action_bins, self.text_vocab_size


# OpenVLA-7B: DINOv2 ViT-L/14 with 4 registers, SigLIP SO400M/14 @ 224, Llama-2-7B.
FULL_DINO = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                 mlp_ratio=4, patch_size=14, num_register_tokens=4, layerscale_value=1e-5,
                 layer_norm_eps=1e-6)
FULL_SIGLIP = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                   num_attention_heads=16, patch_size=14, layer_norm_eps=1e-6)
FULL_LLAMA = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, rms_norm_eps=1e-5,
                  max_position_embeddings=4096, bos_token_id=1, eos_token_id=2)

# Presets: keyword arguments of OpenVlaConfig.
FULL = dict(image_size=224, dino_config=dict(FULL_DINO), siglip_config=dict(FULL_SIGLIP),
            text_config=dict(FULL_LLAMA))
TINY = dict(
    image_size=64,
    dino_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                     patch_size=8, num_register_tokens=4),
    siglip_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, patch_size=8),
    text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                     bos_token_id=1, eos_token_id=2),
)
# ~35 M parameters: large enough that decoding latencies mean something on a CPU.
MEDIUM = dict(
    image_size=224,
    dino_config=dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, mlp_ratio=4,
                     patch_size=16, num_register_tokens=4),
    siglip_config=dict(hidden_size=192, intermediate_size=768, num_hidden_layers=4,
                       num_attention_heads=3, patch_size=16),
    text_config=dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=4,
                     num_attention_heads=6, num_key_value_heads=6, max_position_embeddings=1024,
                     bos_token_id=1, eos_token_id=2),
)
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
# The shipped policy: the first stage grown by an instruction-conditioned target token per
# camera, its training-only probe and the state probe (``vla-ros train --size sim
# --init-weights ...``).
SIM = dict(SIM_BASE, target_readout=True, target_probe_weight=5.0, state_probe_weight=5.0)
# The same grown by a pixel-resolution target token per camera and its training-only probe
# (``vla-ros train --size sim_pixel --init-weights <a sim checkpoint>``).
SIM_PIXEL = dict(SIM, pixel_target_readout=True, pixel_probe_weight=5.0,
                 pixel_keypoint_weight=0.2)
PRESETS = {'tiny': TINY, 'sim_base': SIM_BASE, 'sim': SIM, 'sim_pixel': SIM_PIXEL,
           'medium': MEDIUM, 'full': FULL}

# Known to AutoConfig so that tools reading a checkpoint's config.json (e.g. AutoTokenizer
# on the same directory) recognise the model type instead of warning about it.
AutoConfig.register(MODEL_TYPE, OpenVlaConfig, exist_ok=True)
