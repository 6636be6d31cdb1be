"""EfficientNet with a FiLM layer after every MBConv block, as RT-1's image encoder.

Written here in plain torch (no torchvision/timm). The stage table is EfficientNet-B0's
(Tan & Le 2019); B3 scales channel widths by 1.2 and block repeats by 1.4. Blocks are
inverted residuals (1x1 expansion, depthwise conv, squeeze-and-excitation, 1x1
projection) with swish activations and batch norm using Keras' eps/momentum.

Stride-2 convs pad ``k // 2 - 1`` before and ``k // 2`` after each spatial axis. That is
what RT-1's Keras graph does (its input size is unknown when the graph is built, so
Keras pads as for an even size), and it is why a 300x300 image ends as a 9x9 map: every
stride-2 stage floors the size (300 -> 150 -> 75 -> 37 -> 18 -> 9).
"""

from __future__ import annotations

import math

import torch
from torch import nn

# EfficientNet-B0 stages: (kernel, repeats, channels in, channels out, expansion, stride).
B0_STAGES = (
    (3, 1, 32, 16, 1, 1),
    (3, 2, 16, 24, 6, 2),
    (5, 2, 24, 40, 6, 2),
    (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2),
    (3, 1, 192, 320, 6, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
SE_RATIO = 0.25
# Keras' epsilon; torch's default momentum rather than Keras' 0.99 (0.01 here), whose
# running statistics lag far behind during the short trainings this package runs.
_BN = {'eps': 1e-3, 'momentum': 0.1}


def scale_channels(channels: int, multiplier: float, divisor: int = 8) -> int:
    """Channels scaled by ``multiplier``, rounded to a multiple of ``divisor``.

    Rounds to the nearest multiple but never more than 10 % below the scaled value (the
    EfficientNet rule).
    """
    scaled = channels * multiplier
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def scale_repeats(repeats: int, multiplier: float) -> int:
    """Block repeats scaled by ``multiplier``, rounded up."""
    return int(math.ceil(multiplier * repeats))


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Module:
    """A bias-free conv; stride 2 uses RT-1's asymmetric padding (see the module doc)."""
    if stride == 1:
        return nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, groups=groups, bias=False)
    before, after = kernel // 2 - 1, kernel // 2
    return nn.Sequential(
        nn.ZeroPad2d((before, after, before, after)),
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, groups=groups, bias=False),
    )


def _init_conv(module: nn.Module) -> None:
    # He-normal on fan-out, as EfficientNet initialises its conv kernels. The fan-out of a
    # depthwise conv is kernel area x (out / groups), not torch's default count over all
    # channels, which would shrink depthwise kernels by sqrt(channels).
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            nn.init.normal_(m.weight, std=math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class FiLM(nn.Module):
    """Feature-wise linear modulation: ``(1 + W_g c) * x + W_b c`` per channel.

    Both projections start at zero, so the layer is the identity at initialisation and
    conditioning is learned from there (FiLM, Perez et al. 2018; RT-1 does the same).
    """

    def __init__(self, channels: int, context_dim: int):
        super().__init__()
        self.to_gamma = nn.Linear(context_dim, channels)
        self.to_beta = nn.Linear(context_dim, channels)
        for layer in (self.to_gamma, self.to_beta):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Modulate (N, C, H, W) or (N, C) features with a (N, context_dim) context."""
        gamma = 1.0 + self.to_gamma(context)
        beta = self.to_beta(context)
        if x.dim() == 4:
            gamma, beta = gamma[:, :, None, None], beta[:, :, None, None]
        return gamma * x + beta


class SqueezeExcite(nn.Module):
    """Channel gates from globally pooled features (two 1x1 convs, swish then sigmoid)."""

    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale each channel of ``x`` by a gate in (0, 1)."""
        gate = x.mean(dim=(2, 3), keepdim=True)
        gate = torch.sigmoid(self.expand(self.act(self.reduce(gate))))
        return x * gate


class MBConv(nn.Module):
    """Inverted residual block: expand, depthwise conv, squeeze-excite, project (+ skip)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expansion: int,
                 drop_rate: float = 0.0):
        super().__init__()
        hidden = in_ch * expansion
        layers = []
        if expansion != 1:
            layers += [_conv(in_ch, hidden, 1), nn.BatchNorm2d(hidden, **_BN), nn.SiLU()]
        layers += [
            _conv(hidden, hidden, kernel, stride, groups=hidden),
            nn.BatchNorm2d(hidden, **_BN),
            nn.SiLU(),
            SqueezeExcite(hidden, max(1, int(in_ch * SE_RATIO))),
            _conv(hidden, out_ch, 1),
            nn.BatchNorm2d(out_ch, **_BN),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block; residual blocks drop their branch per sample while training."""
        out = self.body(x)
        if not self.residual:
            return out
        if self.training and self.drop_rate > 0:
            keep = 1.0 - self.drop_rate
            mask = torch.rand(out.shape[0], 1, 1, 1, device=out.device, dtype=out.dtype) < keep
            out = out * mask / keep
        return out + x


class FilmEfficientNet(nn.Module):
    """EfficientNet feature extractor (no classifier) with FiLM after every MBConv block.

    ``forward(images, context)`` returns the (N, out_channels, H/32, W/32) map of the
    final 1x1 conv; with ``context=None`` the FiLM layers are skipped (the plain
    EfficientNet), which at initialisation gives exactly the same output.
    """

    def __init__(self, width_multiplier: float, depth_multiplier: float, context_dim: int,
                 drop_connect_rate: float = 0.0):
        super().__init__()
        stem = scale_channels(STEM_CHANNELS, width_multiplier)
        self.stem = nn.Sequential(_conv(3, stem, 3, stride=2), nn.BatchNorm2d(stem, **_BN),
                                  nn.SiLU())
        plan = []
        for kernel, repeats, in_ch, out_ch, expansion, stride in B0_STAGES:
            in_ch = scale_channels(in_ch, width_multiplier)
            out_ch = scale_channels(out_ch, width_multiplier)
            for i in range(scale_repeats(repeats, depth_multiplier)):
                plan.append((in_ch if i == 0 else out_ch, out_ch, kernel,
                             stride if i == 0 else 1, expansion))
        # Stochastic depth grows linearly with the block index, as in EfficientNet.
        self.blocks = nn.ModuleList(
            MBConv(*args, drop_rate=drop_connect_rate * i / len(plan))
            for i, args in enumerate(plan))
        self.films = nn.ModuleList(FiLM(args[1], context_dim) for args in plan)
        self.out_channels = scale_channels(HEAD_CHANNELS, width_multiplier)
        self.head = nn.Sequential(_conv(plan[-1][1], self.out_channels, 1),
                                  nn.BatchNorm2d(self.out_channels, **_BN), nn.SiLU())
        _init_conv(self)

    @torch.no_grad()
    def calibrate_batch_norm(self, images: torch.Tensor) -> None:
        """Set every batch norm's running statistics to those of one pass over ``images``.

        A fresh network in eval mode uses running statistics of 0 and 1, and with swish
        and squeeze-excite gates its activations then shrink block after block (to ~1e-4
        at the output), so an untrained model would ignore its image. One pass over
        synthetic images gives eval mode the per-layer normalization that training mode
        has; trained checkpoints overwrite these statistics when they load.
        """
        norms = [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)]
        was_training = self.training
        self.eval()  # no stochastic depth; only the batch norms switch to batch statistics
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: after one batch, exactly its statistics
            m.train()
        self(images, None)
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        self.train(was_training)

    def forward(self, images: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """(N, 3, H, W) normalized images, (N, context_dim) or None -> feature map."""
        x = self.stem(images)
        for block, film in zip(self.blocks, self.films, strict=True):
            x = block(x)
            if context is not None:
                x = film(x, context)
        return self.head(x)
