"""Configuration of the OpenVLA family (Prismatic DINOv2 + SigLIP -> MLP -> Llama-2).

One transformers ``PreTrainedConfig`` holds the architecture (three sub-configurations)
and the few robot-side settings (action space, chunk length, control period, cameras and
OFT-style proprio), so a checkpoint's ``config.json`` says everything needed to rebuild
the policy. The simulation variant's readouts, probes and stage presets extend it in
:mod:`vla_ros.policies.openvla_sim`.
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


def check_positive_integers(config, names) -> None:
    """ValueError naming the first of ``names`` that is not an integer >= 1 (bools are not)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be a positive integer, got {value!r}')


def check_booleans(config, names) -> None:
    """ValueError naming the first of ``names`` that is not true or false."""
    for name in names:
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f'{name} must be true or false, got {getattr(config, name)!r}')


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
        check_positive_integers(self, ('image_size', 'text_vocab_size', 'pad_to_multiple_of',
                                       'n_action_bins', 'chunk_length', 'proprio_dim'))
        check_booleans(self, ('use_proprio',))
        if not self.n_action_bins <= self.text_vocab_size:
            raise ValueError('n_action_bins must not exceed text_vocab_size')
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
    def readout_tokens_per_camera(self) -> int:
        """Tokens a variant inserts per camera after the patches (OpenVLA itself: none)."""
        return 0

    @property
    def num_inserted_tokens(self) -> int:
        """Embeddings inserted after BOS: patches, a variant's readout tokens, proprio."""
        return self.num_patches + len(self.cameras) * self.readout_tokens_per_camera \
            + int(self.use_proprio)

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
PRESETS = {'tiny': TINY, 'medium': MEDIUM, 'full': FULL}

# Known to AutoConfig so that tools reading a checkpoint's config.json (e.g. AutoTokenizer
# on the same directory) recognise the model type instead of warning about it.
AutoConfig.register(MODEL_TYPE, OpenVlaConfig, exist_ok=True)
