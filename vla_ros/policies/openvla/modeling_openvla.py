"""The OpenVLA model: fused DINOv2 + SigLIP patches -> MLP projector -> Llama-2.

The layout follows Prismatic/OpenVLA: both vision encoders see the same image, their
patch features from the second-to-last layer are concatenated channel-wise, projected into
the Llama embedding width, and inserted right after the BOS token of the prompt. Module
names (``vision_backbone.featurizer``/``fused_featurizer``, ``projector.fc1..fc3``,
``language_model``) match OpenVLA's released modeling code.
"""

import math

import torch
from torch import nn
from transformers import (
    Dinov2WithRegistersModel,
    GenerationMixin,
    LlamaForCausalLM,
    PreTrainedModel,
    SiglipVisionModel,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

from vla_ros.policies.openvla.configuration_openvla import (
    DINO_MEAN,
    DINO_STD,
    SIGLIP_MEAN,
    SIGLIP_STD,
    OpenVlaConfig,
)

IGNORE_INDEX = -100


class OpenVlaProjector(nn.Module):
    """Patch features -> LLM embeddings.

    ``fused-gelu-mlp`` is Prismatic's projector for fused DINOv2 + SigLIP features, the one
    OpenVLA-7B uses: Linear(v, 4v), GELU, Linear(4v, d), GELU, Linear(d, d).
    ``gelu-mlp`` is the two-layer variant: Linear(v, d), GELU, Linear(d, d).
    """

    def __init__(self, vision_dim: int, llm_dim: int, projector_type: str):
        """Create the layers for ``projector_type``."""
        super().__init__()
        self.act = nn.GELU()
        if projector_type == 'fused-gelu-mlp':
            self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
            self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
            self.fc3 = nn.Linear(llm_dim, llm_dim)
        else:
            self.fc1 = nn.Linear(vision_dim, llm_dim)
            self.fc2 = nn.Linear(llm_dim, llm_dim)
            self.fc3 = None

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, P, vision_dim) -> (B, P, llm_dim)."""
        x = self.fc2(self.act(self.fc1(patches)))
        return x if self.fc3 is None else self.fc3(self.act(x))


class OpenVlaProprioProjector(nn.Module):
    """Normalized proprio vector -> one LLM embedding (OpenVLA-OFT's proprio projector).

    Linear(p, d), GELU, Linear(d, d).
    """

    def __init__(self, proprio_dim: int, llm_dim: int):
        """Create the two layers."""
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        """(B, proprio_dim) -> (B, 1, llm_dim)."""
        return self.fc2(self.act(self.fc1(proprio)))[:, None]


def grid_coordinates(grid: int, device=None) -> torch.Tensor:
    """(grid * grid, 2) (row, column) of each patch in [-1, 1], row-major as ViT patches.

    Built per call, not kept in a buffer: a checkpoint loaded through transformers leaves
    buffers it does not store uninitialised.
    """
    axis = torch.linspace(-1.0, 1.0, grid, device=device)
    rows, cols = torch.meshgrid(axis, axis, indexing='ij')
    return torch.stack([rows, cols], -1).reshape(-1, 2)


class OpenVlaKeypointReadout(nn.Module):
    """Spatial soft-argmax of a camera's patch grid -> one token (and the raw keypoints).

    Every channel of the projected patch tokens becomes a softmax over the grid whose
    expected (row, column) is a keypoint in [-1, 1] (Levine et al. 2016's spatial softmax
    read off a ViT's patches); an MLP turns the keypoints into one LLM token. Attention
    can only find an object's coordinates after it has learned where to look; the
    soft-argmax states them outright, which a policy trained from scratch learns from
    far sooner.
    """

    def __init__(self, dim: int, grid: int):
        """The keypoint -> token MLP for a ``grid`` x ``grid`` patch layout."""
        super().__init__()
        self.grid = grid
        self.fc1 = nn.Linear(2 * dim, dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim, dim)

    def keypoints(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, grid * grid, dim) -> (B, dim * 2) expected (row, column) per channel."""
        coordinates = grid_coordinates(self.grid, patches.device)
        weights = patches.float().softmax(dim=1)
        return torch.einsum('bpc,pk->bck', weights, coordinates).flatten(1)

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, P, dim) -> token (B, 1, dim) and keypoints (B, 2 * dim)."""
        points = self.keypoints(patches)
        return self.fc2(self.act(self.fc1(points.to(patches.dtype))))[:, None], points


class OpenVlaTargetReadout(nn.Module):
    """Instruction-conditioned spatial soft-argmax of a camera's patch grid -> one token.

    The mean embedding of the prompt's words becomes, per head, a query over the patch grid
    (keys and values are linear maps of the projected patches); each head yields the
    expected (row, column) under its attention and the attended value. An MLP turns them
    into one LLM token. Where the keypoint token states where *every* salient thing is, this
    one states where the thing the instruction names is: the colour word -> object binding
    that a small language model trained from scratch otherwise has to discover through
    several attention layers (language-conditioned spatial attention as in CLIPort).
    """

    def __init__(self, dim: int, grid: int, heads: int):
        """Query/key/value maps and the output MLP for ``heads`` heads on a ``grid``^2 grid."""
        super().__init__()
        if dim % heads:
            raise ValueError(f'target readout: width {dim} is not divisible by {heads} heads')
        self.grid, self.heads, self.head_dim = grid, heads, dim // heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.fc1 = nn.Linear(dim + 2 * heads, dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim, dim)

    def features(self, patches: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        """(B, P, dim) patches, (B, dim) instruction -> (B, dim + 2 * heads) features.

        The features are the attended values of all heads followed by each head's
        expected (row, column) in [-1, 1].
        """
        b, p, _ = patches.shape
        h, d = self.heads, self.head_dim
        query = self.query(instruction).view(b, h, 1, d)
        keys = self.key(patches).view(b, p, h, d).transpose(1, 2)
        values = self.value(patches).view(b, p, h, d).transpose(1, 2)
        weights = (query @ keys.transpose(-1, -2) / d ** 0.5).float().softmax(-1)  # B,h,1,P
        points = (weights @ grid_coordinates(self.grid, patches.device)).flatten(1)  # B, 2h
        attended = (weights.to(values.dtype) @ values).flatten(1)  # B, h * d
        return torch.cat([attended, points.to(attended.dtype)], dim=1)

    def forward(self, patches: torch.Tensor, instruction: torch.Tensor):
        """-> token (B, 1, dim) and its features (B, dim + 2 * heads)."""
        features = self.features(patches, instruction)
        return self.fc2(self.act(self.fc1(features)))[:, None], features


class OpenVlaPixelTargetReadout(nn.Module):
    """Instruction-conditioned spatial soft-argmax over a camera's *pixels* -> one token.

    The patch-level target token can only say which 8 px patch holds the named object, a
    few centimetres of table at 64 px: enough to choose the object, not to reach it (the
    hand hovered centimetres off). Here a small convolutional stem keeps full resolution,
    each head scores every pixel against a query made from the prompt's mean word
    embedding (colour words map to colour detectors), and a softmax over the pixels gives
    the named object's expected (row, column) to a fraction of a pixel, the spread of the
    attention (the object's apparent size: its distance in the wrist camera) and how much
    evidence there was (log-mean-exp of the scores: is it in view at all). An MLP turns
    these features into one LLM token (a deep spatial autoencoder's feature points, Levine
    et al. 2016 / Finn et al. 2016, conditioned on language as in CLIPort).
    """

    def __init__(self, dim: int, channels: int, heads: int, key_dim: int = 16,
                 orientation: bool = False):
        """Stem with ``channels`` channels, ``heads`` pixel attention maps, output MLP.

        ``orientation``: also feed each head's fourth-order angular moment into the token
        (see :meth:`orientation_features`), through its own zero-initialised layer.
        """
        super().__init__()
        self.heads, self.key_dim = heads, key_dim
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1), nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.GELU())
        self.key = nn.Conv2d(channels, heads * key_dim, 1)
        # The mean word embedding of two prompts differs by a word or two out of ~20: the
        # colour word is a small offset on a large common vector. Standardising each channel
        # over the batch (running statistics at inference) removes the common part, so the
        # query depends on the words that differ from the first step on.
        self.instruction_norm = nn.BatchNorm1d(dim, affine=False)
        self.query = nn.Linear(dim, heads * key_dim)
        # Per-head sharpness of the pixel softmax (log scale, learned).
        self.log_sharpness = nn.Parameter(torch.zeros(heads))
        self.fc1 = nn.Linear(5 * heads, dim)
        self.orientation = nn.Linear(2 * heads, dim) if orientation else None
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim, dim)

    @torch.no_grad()
    def reset_for_training(self) -> None:
        """Initialisation for learning from scratch (the model's default N(0, 0.02) is not).

        With weights that small every pixel scores about the same, the softmax over the
        4,096 pixels is flat and each pixel's gradient is 1/4,096 of the signal: the
        readout barely learns. PyTorch's fan-in initialisation of the stem, keys and query
        with a sharpness of 4 starts it with contrast; the output layer starts at zero so a
        trained model grown by this token keeps its behaviour until the readout has learned.
        """
        for module in (*self.stem, self.key, self.query, self.fc1):
            if hasattr(module, 'reset_parameters'):
                module.reset_parameters()
        self.log_sharpness.fill_(math.log(4.0))
        self.fc2.weight.zero_()
        self.fc2.bias.zero_()
        if self.orientation is not None:  # a model grown by it keeps its behaviour at first
            self.orientation.weight.zero_()
            self.orientation.bias.zero_()

    @property
    def feature_dim(self) -> int:
        """Width of :meth:`features`: per head (row, col), spread (row, col), evidence."""
        return 5 * self.heads

    def _attend(self, pixels: torch.Tensor, instruction: torch.Tensor):
        """-> pixel scores (B, heads, H*W) before the softmax and the (row, col) grid (H*W, 2)."""
        b, _, height, width = pixels.shape
        h, k = self.heads, self.key_dim
        keys = self.key(self.stem(_normalize(pixels, SIGLIP_MEAN, SIGLIP_STD)))
        keys = keys.view(b, h, k, height * width)
        query = self.query(self.instruction_norm(instruction)).view(b, h, 1, k)
        sharpness = self.log_sharpness.exp().view(1, h, 1) / k ** 0.5
        scores = (query @ keys).squeeze(2).float() * sharpness            # B, h, HW
        rows = torch.linspace(-1.0, 1.0, height, device=pixels.device)
        cols = torch.linspace(-1.0, 1.0, width, device=pixels.device)
        grid = torch.stack(torch.meshgrid(rows, cols, indexing='ij'), -1).reshape(-1, 2)
        return scores, grid

    def features(self, pixels: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1], (B, dim) instruction -> (B, 5 * heads) features."""
        scores, grid = self._attend(pixels, instruction)
        return self._position_features(scores, scores.softmax(-1), grid).to(pixels.dtype)

    @staticmethod
    def _position_features(scores: torch.Tensor, weights: torch.Tensor,
                           grid: torch.Tensor) -> torch.Tensor:
        mean = weights @ grid                                               # B, h, 2
        spread = (weights @ grid ** 2 - mean ** 2).clamp(min=1e-6).sqrt()
        evidence = torch.logsumexp(scores, -1, keepdim=True) - math.log(grid.shape[0])
        return torch.cat([mean, spread, evidence / 10.0], -1).flatten(1)

    @staticmethod
    def orientation_features(weights: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """(B, heads, N) attention, (N, 2) grid -> (B, 2 * heads): E[z^4] / E[|z|^2]^2.

        z is a pixel's offset from the head's mean as a complex number. A cube seen from
        above is a square, the same every quarter turn, and its second moments (the
        spreads) are the same at any yaw; the fourth-order moment turns with it as
        exp(4i yaw) (magnitude 0.6 for a uniformly attended square, 0 for a disc). In the
        wrist camera, which turns with the hand, that is the yaw the grasp must close.
        """
        mean = weights @ grid                                               # B, h, 2
        du = grid[:, 0] - mean[..., :1]                                     # B, h, N
        dv = grid[:, 1] - mean[..., 1:]
        square_re, square_im = du * du - dv * dv, 2.0 * du * dv             # z^2
        fourth = torch.stack([square_re ** 2 - square_im ** 2,
                              2.0 * square_re * square_im], -1)             # z^4
        variance = (weights * (du * du + dv * dv)).sum(-1, keepdim=True)    # B, h, 1
        moment = (weights[..., None] * fourth).sum(-2)                      # B, h, 2
        return (moment / (variance ** 2 + 1e-8)).flatten(1)

    def forward(self, pixels: torch.Tensor, instruction: torch.Tensor):
        """-> token (B, 1, dim) and its position features (B, 5 * heads)."""
        scores, grid = self._attend(pixels, instruction)
        weights = scores.softmax(-1)  # one softmax over the pixels for both feature sets
        features = self._position_features(scores, weights, grid).to(pixels.dtype)
        hidden = self.fc1(features)
        if self.orientation is not None:
            hidden = hidden + self.orientation(
                self.orientation_features(weights, grid).to(pixels.dtype))
        return self.fc2(self.act(hidden))[:, None], features


class OpenVlaObjectProbe(nn.Module):
    """Training-only readout of where the scene objects are, from the first camera's keypoints.

    An MLP regresses each object's targets (position, cube yaw; see
    :mod:`vla_ros.training.auxiliary`), so the keypoints the LLM reads learn to mark them.
    The same class, with one object and the target readout's features as input, is the
    target probe: where the object the instruction names is.
    """

    def __init__(self, in_dim: int, dim: int, num_objects: int, out_dim: int):
        """The MLP (hidden width ``dim``) from ``in_dim`` features to num_objects x out_dim."""
        super().__init__()
        self.shape = (num_objects, out_dim)
        self.fc1 = nn.Linear(in_dim, dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim, num_objects * out_dim)

    def forward(self, keypoints: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, num_objects, out_dim)."""
        return self.fc2(self.act(self.fc1(keypoints))).reshape(-1, *self.shape)


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position code (grid * grid, dim), row-major as ViT patches.

    A quarter of the channels each carry sin/cos of the row and of the column index at
    geometrically spaced frequencies (as in MAE). ``dim`` must be a multiple of 4.
    """
    if dim % 4:
        raise ValueError(f'sine-cosine position codes need a width divisible by 4, got {dim}')
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing='ij')
    rows = rows.reshape(-1, 1).double() * omega
    cols = cols.reshape(-1, 1).double() * omega
    return torch.cat([rows.sin(), rows.cos(), cols.sin(), cols.cos()], dim=1).float()


def _normalize(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
    return (pixels - m) / s


class OpenVlaVisionBackbone(nn.Module):
    """DINOv2 (``featurizer``) and SigLIP (``fused_featurizer``) on the same image."""

    def __init__(self, config: OpenVlaConfig):
        """Build both encoders from their sub-configurations (random initialisation)."""
        super().__init__()
        self.featurizer = Dinov2WithRegistersModel(config.dino_config)
        self.fused_featurizer = SiglipVisionModel(config.siglip_config)
        self.feature_layer = config.vision_feature_layer
        # DINOv2 prepends CLS and register tokens; Prismatic keeps patch tokens only.
        self.num_prefix_tokens = 1 + config.dino_config.num_register_tokens

    @torch.no_grad()
    def init_sincos_positions(self) -> None:
        """Start both encoders' patch position embeddings from a 2-D sine-cosine code.

        Trained from scratch, learned position embeddings begin as noise, so where a patch
        lies in the image, which is what a policy must read off to find an object, is
        learned late; a fixed 2-D code makes it available from the first step.
        """
        dino = self.featurizer.embeddings.position_embeddings      # (1, 1 + N, D): CLS first
        grid = int(round((dino.shape[1] - 1) ** 0.5))
        dino[0, 1:] = sincos_2d(grid, dino.shape[2]).to(dino.dtype)
        siglip = self.fused_featurizer.embeddings.position_embedding.weight
        siglip.copy_(sincos_2d(int(round(siglip.shape[0] ** 0.5)), siglip.shape[1]))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1], (B, 3, H, W) -> fused patch features (B, P, dino + siglip).

        Each tower's normalization is computed in float32 and only its result cast to the
        weights' dtype, as OpenVLA's processor does (k / 255 is not exact in bfloat16).
        """
        dtype = self.featurizer.embeddings.patch_embeddings.projection.weight.dtype
        pixels = pixel_values.float()
        dino = self.featurizer(pixel_values=_normalize(pixels, DINO_MEAN, DINO_STD).to(dtype),
                               output_hidden_states=True).hidden_states[self.feature_layer]
        siglip = self.fused_featurizer(
            pixel_values=_normalize(pixels, SIGLIP_MEAN, SIGLIP_STD).to(dtype),
            output_hidden_states=True).hidden_states[self.feature_layer]
        return torch.cat([dino[:, self.num_prefix_tokens:], siglip], dim=-1)


class OpenVlaPreTrainedModel(PreTrainedModel):
    """transformers plumbing shared by the OpenVLA model classes."""

    config_class = OpenVlaConfig
    config: OpenVlaConfig
    base_model_prefix = 'openvla'
    main_input_name = 'input_ids'
    input_modalities = ('image', 'text')
    supports_gradient_checkpointing = True
    _no_split_modules = ['LlamaDecoderLayer', 'Dinov2WithRegistersLayer', 'SiglipEncoderLayer']
    _supports_sdpa = True


class OpenVlaForActionPrediction(OpenVlaPreTrainedModel, GenerationMixin):
    """Image + prompt -> next-token logits over the (padded) Llama vocabulary."""

    def __init__(self, config: OpenVlaConfig):
        """Build the vision backbone, the projector and the Llama language model."""
        super().__init__(config)
        self.vision_backbone = OpenVlaVisionBackbone(config)
        self.projector = OpenVlaProjector(config.vision_dim, config.text_config.hidden_size,
                                          config.projector_type)
        self.proprio_projector = (
            OpenVlaProprioProjector(config.proprio_dim, config.text_config.hidden_size)
            if config.use_proprio else None)
        self.keypoint_readout = (
            OpenVlaKeypointReadout(config.text_config.hidden_size,
                                   config.image_size // config.siglip_config.patch_size)
            if config.keypoint_tokens else None)
        self.language_model = LlamaForCausalLM(config.text_config)
        width = config.text_config.hidden_size
        self.object_probe = (
            OpenVlaObjectProbe(2 * width, width, config.object_probe_objects,
                               config.object_probe_dim)
            if config.object_probe_weight > 0 else None)
        self.target_readout = (
            OpenVlaTargetReadout(width, config.image_size // config.siglip_config.patch_size,
                                 config.target_readout_heads)
            if config.target_readout else None)
        self.target_probe = (
            OpenVlaObjectProbe(width + 2 * config.target_readout_heads, width, 1,
                               config.object_probe_dim)
            if config.target_probe_weight > 0 else None)
        self.state_probe = (OpenVlaObjectProbe(width, width, 1, config.object_probe_dim)
                            if config.state_probe_weight > 0 else None)
        self.pixel_readout = (
            OpenVlaPixelTargetReadout(width, config.pixel_readout_channels,
                                      config.pixel_readout_heads,
                                      orientation=config.pixel_orientation_features)
            if config.pixel_target_readout else None)
        self.pixel_probe = (
            OpenVlaObjectProbe(self.pixel_readout.feature_dim, width, 1,
                               config.object_probe_dim)
            if config.pixel_probe_weight > 0 else None)
        self.post_init()
        if config.sincos_position_init:
            self.vision_backbone.init_sincos_positions()
        if self.pixel_readout is not None:
            self.pixel_readout.reset_for_training()

    def get_input_embeddings(self) -> nn.Module:
        """The Llama token embedding table."""
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        """Replace the Llama token embedding table."""
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        """The Llama output head."""
        return self.language_model.get_output_embeddings()

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected patch embeddings (B, num_patches, llm_dim).

        ``pixel_values`` is (B, 3, H, W) for one camera or (B, cameras, 3, H, W): every
        camera goes through the same backbone and projector, and the patch tokens are
        concatenated camera after camera (OpenVLA-OFT's multi-image input).
        """
        if pixel_values.ndim == 5:
            b, c = pixel_values.shape[:2]
            patches = self.projector(self.vision_backbone(pixel_values.flatten(0, 1)))
            return patches.reshape(b, c * patches.shape[1], patches.shape[2])
        return self.projector(self.vision_backbone(pixel_values))

    def embed_inputs(self, input_ids: torch.Tensor,
                     pixel_values: torch.Tensor | None = None,
                     proprio: torch.Tensor | None = None,
                     keypoints_out: list | None = None,
                     targets_out: list | None = None,
                     pixel_targets_out: list | None = None) -> torch.Tensor:
        """Token embeddings with the image inserted after BOS.

        Inserted, in order: the image patches (camera after camera), one keypoint token per
        camera if ``keypoint_tokens``, one target token per camera if ``target_readout``,
        one pixel target token per camera if ``pixel_target_readout``, the proprio token
        if ``use_proprio`` (which then requires ``proprio`` (B, proprio_dim), normalized).
        Nothing is inserted without ``pixel_values`` (cached decoding steps).
        ``keypoints_out``, ``targets_out`` and ``pixel_targets_out``, if lists, receive each
        camera's keypoints, target-readout and pixel-readout features (for the
        training-only probes).
        """
        embeds = self.get_input_embeddings()(input_ids)
        if pixel_values is None:
            return embeds
        if input_ids.shape[1] < 1:
            raise ValueError('the prompt must start with a BOS token before the image')
        patches = self.embed_images(pixel_values)  # the backbone normalizes in float32
        per_camera = self.config.patches_per_image
        cameras = [patches[:, start:start + per_camera]
                   for start in range(0, patches.shape[1], per_camera)]
        inserted = [patches]
        if self.keypoint_readout is not None:
            for camera in cameras:
                token, points = self.keypoint_readout(camera)
                inserted.append(token)
                if keypoints_out is not None:
                    keypoints_out.append(points)
        if self.target_readout is not None or self.pixel_readout is not None:
            instruction = self._instruction_embedding(input_ids, embeds)
        if self.target_readout is not None:
            for camera in cameras:
                token, features = self.target_readout(camera, instruction)
                inserted.append(token)
                if targets_out is not None:
                    targets_out.append(features)
        if self.pixel_readout is not None:
            images = pixel_values if pixel_values.ndim == 5 else pixel_values[:, None]
            for index in range(images.shape[1]):
                token, features = self.pixel_readout(images[:, index].to(embeds.dtype),
                                                     instruction)
                inserted.append(token)
                if pixel_targets_out is not None:
                    pixel_targets_out.append(features)
        if self.proprio_projector is not None:
            if proprio is None:
                raise ValueError('this model uses proprio, but none was given')
            if proprio.shape != (input_ids.shape[0], self.config.proprio_dim):
                raise ValueError(f'proprio must be (batch, {self.config.proprio_dim}), got '
                                 f'{tuple(proprio.shape)}')
            inserted.append(self.proprio_projector(proprio.to(embeds.dtype)))
        return torch.cat([embeds[:, :1], *inserted, embeds[:, 1:]], dim=1)

    def _instruction_embedding(self, input_ids, embeds) -> torch.Tensor:
        """Mean embedding of the prompt's tokens (B, dim).

        Action tokens (present in teacher-forced training rows) and padding are left out,
        so training and inference pool the same tokens.
        """
        first, stop = self.config.action_token_range
        prompt = (input_ids < first) | (input_ids >= stop)
        pad = self.config.text_config.pad_token_id
        if pad is not None:
            prompt &= input_ids != pad
        weights = prompt.to(embeds.dtype)[..., None]
        return (embeds * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def forward(self, input_ids: torch.LongTensor | None = None,
                pixel_values: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, cache=None,
                labels: torch.LongTensor | None = None, use_cache: bool | None = None,
                logits_to_keep: int = 0, position_ids=None,
                proprio: torch.Tensor | None = None,
                object_targets: torch.Tensor | None = None,
                object_valid: torch.Tensor | None = None,
                target_index: torch.Tensor | None = None,
                target_pixel: torch.Tensor | None = None,
                target_pixel_valid: torch.Tensor | None = None, **kwargs):
        """Multimodal forward; also the step function ``generate`` calls.

        ``pixel_values`` (RGB in [0, 1]) are given on the prefill only; later steps reuse
        the cache. ``attention_mask`` and ``labels`` cover the text tokens: positions of
        the inserted patches are added here (attended, never predicted). ``position_ids``
        from ``generate`` count text tokens only, so they are recomputed from the mask.
        With ``labels`` the output head runs only where a label is set: ``logits`` are then
        (N supervised tokens, vocab) and ``loss`` their mean cross-entropy, equal to the
        usual shifted loss at a fraction of the cost (7 of ~90 positions in OpenVLA).
        """
        del position_ids
        if input_ids is None:
            raise ValueError('input_ids are required')
        keypoints, target_features, pixel_features = [], [], []
        embeds = self.embed_inputs(input_ids, pixel_values, proprio, keypoints,
                                   target_features, pixel_features)
        inserted = embeds.shape[1] - input_ids.shape[1]
        if labels is not None and inserted:
            ignore = labels.new_full((labels.shape[0], inserted), IGNORE_INDEX)
            labels = torch.cat([labels[:, :1], ignore, labels[:, 1:]], dim=1)
        past = cache.get_seq_length() if cache is not None else 0
        mask, positions = None, None
        if attention_mask is not None:
            mask = self._full_attention_mask(attention_mask, past + embeds.shape[1])
            positions = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -embeds.shape[1]:]
        if labels is not None:
            out, state = self._supervised_loss(embeds, mask, positions, labels)
            if self.object_probe is not None and object_targets is not None \
                    and pixel_values is not None and object_valid.any():
                # The first camera's keypoints, as the LLM's keypoint token summarises them.
                predicted = self.object_probe(keypoints[0])
                error = (predicted.float() - object_targets.to(predicted.device)) ** 2
                valid = object_valid.to(error.device)
                probe = (error * valid).sum() / valid.sum()
                out.loss = out.loss + self.config.object_probe_weight * probe
            if self.target_probe is not None and target_index is not None \
                    and object_targets is not None and target_features:
                out.loss = out.loss + self.config.target_probe_weight * self._target_probe_loss(
                    self.target_probe, target_features[0], object_targets, object_valid,
                    target_index)
            if self.pixel_probe is not None and target_index is not None \
                    and object_targets is not None and pixel_features:
                out.loss = out.loss + self.config.pixel_probe_weight * self._target_probe_loss(
                    self.pixel_probe, pixel_features[0], object_targets, object_valid,
                    target_index)
            weight = self.config.pixel_keypoint_weight
            if weight > 0 and target_pixel is not None and pixel_features \
                    and target_pixel_valid.any():
                # Head 0 of each camera's pixel readout: (row, col) first in its features.
                predicted = torch.stack([f[:, :2] for f in pixel_features], 1)
                out.loss = out.loss + weight * self._keypoint_loss(
                    predicted, target_pixel, target_pixel_valid, pixel_values.shape[-1])
            if self.state_probe is not None and target_index is not None \
                    and object_targets is not None:
                out.loss = out.loss + self.config.state_probe_weight * self._target_probe_loss(
                    self.state_probe, state, object_targets, object_valid, target_index)
            return out
        return self.language_model(inputs_embeds=embeds, attention_mask=mask,
                                   position_ids=positions, cache=cache, use_cache=use_cache,
                                   logits_to_keep=logits_to_keep, **kwargs)

    @staticmethod
    def _keypoint_loss(predicted, target, valid, width: int) -> torch.Tensor:
        """Huber loss (1 px) between predicted and true (row, col) in [-1, 1], in pixels.

        ``predicted`` and ``target`` are (B, cameras, 2), ``valid`` (B, cameras); the mean
        is over the valid (sample, camera) pairs.
        """
        scale = (width - 1) / 2
        valid = valid.to(predicted.device)
        error = nn.functional.smooth_l1_loss(predicted[valid].float() * scale,
                                             target.to(predicted.device)[valid] * scale,
                                             beta=1.0, reduction='none').sum(-1)
        return error.mean()

    @staticmethod
    def _target_probe_loss(probe, features, object_targets, object_valid, target_index):
        """Squared error of ``probe(features)`` on the named object's targets (valid ones)."""
        index = target_index.to(features.device).long()
        rows = torch.arange(len(index), device=features.device)
        named = index.clamp(min=0)
        targets = object_targets.to(features.device)[rows, named]
        valid = object_valid.to(features.device)[rows, named] & (index >= 0)[:, None]
        if not valid.any():
            return features.new_zeros(())
        predicted = probe(features)[:, 0].float()
        return (((predicted - targets) ** 2) * valid).sum() / valid.sum()

    def _supervised_loss(self, embeds, mask, positions, labels):
        """Loss over the supervised tokens, and the state the first action is read from.

        Returns the output (loss, logits) and each row's final hidden state (B, dim) at the
        position that predicts its first supervised token.
        """
        hidden = self.language_model.model(inputs_embeds=embeds, attention_mask=mask,
                                           position_ids=positions,
                                           use_cache=False).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        if not keep.any():
            raise ValueError('labels contain no supervised token')
        first = keep.int().argmax(dim=1)
        state = hidden[:, :-1][torch.arange(len(first), device=first.device), first]
        logits = self.language_model.lm_head(hidden[:, :-1][keep]).float()
        targets = targets[keep]
        sigma = self.config.action_label_sigma
        if sigma > 0:
            loss = self._gaussian_label_loss(logits, targets, sigma)
        else:
            loss = nn.functional.cross_entropy(logits, targets)
        return CausalLMOutputWithPast(loss=loss, logits=logits), state

    def _gaussian_label_loss(self, logits, targets, sigma: float) -> torch.Tensor:
        """Cross-entropy against a Gaussian over the neighbouring action bins (HL-Gauss).

        Action tokens are ordered bins, so a target spread over its neighbours (standard
        deviation ``sigma`` bins; Imani & White 2018, Farebrother et al. 2024) teaches the
        model that bin 120 is almost right when 121 is, which one-hot targets never say.
        The soft target lives on the action ids only; other supervised ids stay one-hot.
        """
        first, stop = self.config.action_token_range
        log_probs = nn.functional.log_softmax(logits, dim=-1)
        is_action = (targets >= first) & (targets < stop)
        ids = torch.arange(first, stop, device=targets.device, dtype=torch.float32)
        weights = torch.exp(-0.5 * ((ids[None] - targets[:, None].float()) / sigma) ** 2)
        weights = weights / weights.sum(dim=1, keepdim=True)
        soft = -(weights * log_probs[:, first:stop]).sum(dim=1)
        hard = -log_probs.gather(1, targets[:, None]).squeeze(1)
        return torch.where(is_action, soft, hard).mean()

    def _full_attention_mask(self, mask: torch.Tensor, total: int) -> torch.Tensor:
        """Text mask -> mask over cache + input, with ones for the inserted embeddings."""
        if mask.shape[1] == total:
            return mask
        patches = self.config.num_inserted_tokens
        if mask.shape[1] + patches != total:
            raise ValueError(f'attention_mask covers {mask.shape[1]} tokens; expected {total} '
                             f'or {total - patches} (text tokens without the image patches)')
        ones = mask.new_ones((mask.shape[0], patches))
        return torch.cat([mask[:, :1], ones, mask[:, 1:]], dim=1)
