"""The simulation variant's model: OpenVLA plus readout tokens and training-only probes.

:class:`OpenVlaSimForActionPrediction` is :class:`OpenVlaForActionPrediction` with, per
camera after its patches, a keypoint token (spatial soft-argmax of the patch grid), an
instruction-conditioned target token and a pixel-resolution target token (each when
configured), HL-Gauss action-token targets, and training-only probes/losses on the
simulator's ground truth (object layout, the named object, its pixel). Module names are
those of the checkpoints written when this lived in the ``openvla`` family, so they load
unchanged.
"""

import math

import torch
from torch import nn

from vla_ros.policies.openvla.configuration_openvla import SIGLIP_MEAN, SIGLIP_STD
from vla_ros.policies.openvla.modeling_openvla import (
    OpenVlaForActionPrediction,
    normalize_pixels,
)
from vla_ros.policies.openvla_sim.configuration import OpenVlaSimConfig

# The training targets OpenVlaSimForActionPrediction.forward accepts besides the labels
# (vla_ros.training.auxiliary computes them from the simulator's ground truth).
TARGET_KEYS = ('object_targets', 'object_valid', 'target_index', 'target_pixel',
               'target_pixel_valid')


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

    def __init__(self, dim: int, channels: int, heads: int, key_dim: int = 16):
        """Stem with ``channels`` channels, ``heads`` pixel attention maps, output MLP."""
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

    @property
    def feature_dim(self) -> int:
        """Width of :meth:`features`: per head (row, col), spread (row, col), evidence."""
        return 5 * self.heads

    def _attend(self, pixels: torch.Tensor, instruction: torch.Tensor):
        """-> pixel scores (B, heads, H*W) before the softmax and the (row, col) grid (H*W, 2)."""
        b, _, height, width = pixels.shape
        h, k = self.heads, self.key_dim
        keys = self.key(self.stem(normalize_pixels(pixels, SIGLIP_MEAN, SIGLIP_STD)))
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

    def forward(self, pixels: torch.Tensor, instruction: torch.Tensor):
        """-> token (B, 1, dim) and its position features (B, 5 * heads)."""
        features = self.features(pixels, instruction)
        return self.fc2(self.act(self.fc1(features)))[:, None], features


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


@torch.no_grad()
def init_sincos_positions(backbone) -> None:
    """Start both encoders' patch position embeddings (an OpenVlaVisionBackbone) from 2-D sin-cos.

    Trained from scratch, learned position embeddings begin as noise, so where a patch
    lies in the image, which is what a policy must read off to find an object, is
    learned late; a fixed 2-D code makes it available from the first step.
    """
    dino = backbone.featurizer.embeddings.position_embeddings      # (1, 1 + N, D): CLS first
    grid = int(round((dino.shape[1] - 1) ** 0.5))
    dino[0, 1:] = sincos_2d(grid, dino.shape[2]).to(dino.dtype)
    siglip = backbone.fused_featurizer.embeddings.position_embedding.weight
    siglip.copy_(sincos_2d(int(round(siglip.shape[0] ** 0.5)), siglip.shape[1]))


class OpenVlaSimForActionPrediction(OpenVlaForActionPrediction):
    """OpenVLA with the variant's readout tokens, HL-Gauss targets and training probes."""

    config_class = OpenVlaSimConfig

    def __init__(self, config: OpenVlaSimConfig):
        """Build OpenVLA's modules and the configured readouts and probes."""
        super().__init__(config)
        if config.sincos_position_init:
            init_sincos_positions(self.vision_backbone)
        if self.pixel_readout is not None:
            self.pixel_readout.reset_for_training()

    def _build(self, config: OpenVlaSimConfig) -> None:
        """OpenVLA's modules with the variant's in between (the order fixes the random init)."""
        grid = config.image_size // config.siglip_config.patch_size
        width = config.text_config.hidden_size
        self._build_vision(config)
        self.keypoint_readout = (OpenVlaKeypointReadout(width, grid)
                                 if config.keypoint_tokens else None)
        self._build_language_model(config)
        self.object_probe = (
            OpenVlaObjectProbe(2 * width, width, config.object_probe_objects,
                               config.object_probe_dim)
            if config.object_probe_weight > 0 else None)
        self.target_readout = (OpenVlaTargetReadout(width, grid, config.target_readout_heads)
                               if config.target_readout else None)
        self.target_probe = (
            OpenVlaObjectProbe(width + 2 * config.target_readout_heads, width, 1,
                               config.object_probe_dim)
            if config.target_probe_weight > 0 else None)
        self.state_probe = (OpenVlaObjectProbe(width, width, 1, config.object_probe_dim)
                            if config.state_probe_weight > 0 else None)
        self.pixel_readout = (
            OpenVlaPixelTargetReadout(width, config.pixel_readout_channels,
                                      config.pixel_readout_heads)
            if config.pixel_target_readout else None)
        self.pixel_probe = (
            OpenVlaObjectProbe(self.pixel_readout.feature_dim, width, 1,
                               config.object_probe_dim)
            if config.pixel_probe_weight > 0 else None)

    def readout_tokens(self, input_ids, embeds, pixel_values, patches,
                       features_out: dict | None) -> list[torch.Tensor]:
        """One keypoint, target and pixel target token per camera (each when configured).

        ``features_out``, if a dict, receives per camera (lists, camera order) the
        ``'keypoints'``, ``'targets'`` (target-readout features) and ``'pixels'``
        (pixel-readout features) the training-only probes read.
        """
        found = {'keypoints': [], 'targets': [], 'pixels': []}
        per_camera = self.config.patches_per_image
        cameras = [patches[:, start:start + per_camera]
                   for start in range(0, patches.shape[1], per_camera)]
        inserted = []
        if self.keypoint_readout is not None:
            for camera in cameras:
                token, points = self.keypoint_readout(camera)
                inserted.append(token)
                found['keypoints'].append(points)
        if self.target_readout is not None or self.pixel_readout is not None:
            instruction = self._instruction_embedding(input_ids, embeds)
        if self.target_readout is not None:
            for camera in cameras:
                token, features = self.target_readout(camera, instruction)
                inserted.append(token)
                found['targets'].append(features)
        if self.pixel_readout is not None:
            images = pixel_values if pixel_values.ndim == 5 else pixel_values[:, None]
            for index in range(images.shape[1]):
                token, features = self.pixel_readout(images[:, index].to(embeds.dtype),
                                                     instruction)
                inserted.append(token)
                found['pixels'].append(features)
        if features_out is not None:
            features_out.update(found)
        return inserted

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

    def add_auxiliary_losses(self, loss, state, features, pixel_values, targets):
        """``loss`` plus each configured probe's and the pixel keypoint loss's weighted term.

        ``targets`` are :data:`TARGET_KEYS` (any may be missing or None: its terms are
        skipped); anything else is refused.
        """
        unknown = sorted(set(targets) - set(TARGET_KEYS))
        if unknown:
            raise TypeError(f'{type(self).__name__}: unknown training targets {unknown}; '
                            f'known: {list(TARGET_KEYS)}')
        object_targets, object_valid, target_index, target_pixel, target_pixel_valid = (
            targets.get(key) for key in TARGET_KEYS)
        keypoints = features.get('keypoints', [])
        target_features = features.get('targets', [])
        pixel_features = features.get('pixels', [])
        config = self.config
        if self.object_probe is not None and object_targets is not None \
                and pixel_values is not None and object_valid.any():
            # The first camera's keypoints, as the LLM's keypoint token summarises them.
            predicted = self.object_probe(keypoints[0])
            error = (predicted.float() - object_targets.to(predicted.device)) ** 2
            valid = object_valid.to(error.device)
            probe = (error * valid).sum() / valid.sum()
            loss = loss + config.object_probe_weight * probe
        if self.target_probe is not None and target_index is not None \
                and object_targets is not None and target_features:
            loss = loss + config.target_probe_weight * self._target_probe_loss(
                self.target_probe, target_features[0], object_targets, object_valid,
                target_index)
        if self.pixel_probe is not None and target_index is not None \
                and object_targets is not None and pixel_features:
            loss = loss + config.pixel_probe_weight * self._target_probe_loss(
                self.pixel_probe, pixel_features[0], object_targets, object_valid,
                target_index)
        weight = config.pixel_keypoint_weight
        if weight > 0 and target_pixel is not None and pixel_features \
                and target_pixel_valid.any():
            # Head 0 of each camera's pixel readout: (row, col) first in its features.
            predicted = torch.stack([f[:, :2] for f in pixel_features], 1)
            loss = loss + weight * self._keypoint_loss(
                predicted, target_pixel, target_pixel_valid, pixel_values.shape[-1])
        if self.state_probe is not None and target_index is not None \
                and object_targets is not None:
            loss = loss + config.state_probe_weight * self._target_probe_loss(
                self.state_probe, state, object_targets, object_valid, target_index)
        return loss

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

    def token_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """HL-Gauss targets when ``action_label_sigma`` > 0, else OpenVLA's cross-entropy."""
        sigma = self.config.action_label_sigma
        if sigma > 0:
            return self._gaussian_label_loss(logits, targets, sigma)
        return super().token_loss(logits, targets)

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
