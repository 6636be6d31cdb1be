"""Octo's diffusion action head: schedule, MLP-ResNet denoiser, loss and samplers.

The head denoises a whole flattened chunk ``(chunk_length * action_dim)`` in normalized
action space, conditioned on the transformer's mean readout embedding and a learned
Fourier embedding of the diffusion step (as Octo's ``DiffusionActionHead``). The backbone
runs once per prediction; only this small network runs once per denoising step.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the usual alias


def cosine_alpha_bars(steps: int, s: float = 0.008) -> np.ndarray:
    """Cumulative signal fractions alpha_bar_t (t = 0..steps-1) of the cosine schedule.

    Betas come from ``f(t) = cos((t / steps + s) / (1 + s) * pi / 2)**2`` as
    ``1 - f(t + 1) / f(t)``, clipped to at most 0.999 as in improved DDPM.
    """
    grid = np.linspace(0.0, 1.0, steps + 1, dtype=np.float64)
    f = np.cos((grid + s) / (1.0 + s) * math.pi / 2.0) ** 2
    betas = np.clip(1.0 - f[1:] / f[:-1], 0.0, 0.999)
    return np.cumprod(1.0 - betas)


def generator_for(seed: int, stamp: float) -> torch.Generator:
    """A CPU generator seeded from (policy seed, observation stamp): same input, same draw."""
    key = f'{int(seed)}:{float(stamp).hex()}'.encode()
    value = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), 'little')
    generator = torch.Generator(device='cpu')
    generator.manual_seed(value & (2**63 - 1))
    return generator


def _randn(shape, generator, like: torch.Tensor) -> torch.Tensor:
    # Draw on the CPU so a seed gives the same noise on every device.
    return torch.randn(shape, generator=generator).to(like.device, like.dtype)


class FourierTime(nn.Module):
    """Learned random Fourier features of the diffusion step (Octo: std 0.2 kernel)."""

    def __init__(self, dim: int):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(dim // 2, 1) * 0.2)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (B, 1) float steps -> (B, dim)."""
        angles = 2.0 * math.pi * t @ self.kernel.T
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class ResidualMLPBlock(nn.Module):
    """Pre-norm residual MLP block with a 4x expansion and SiLU (Octo's MLPResNetBlock)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.expand = nn.Linear(dim, 4 * dim)
        self.contract = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual update ``x + MLP(LN(x))``."""
        return x + self.contract(F.silu(self.expand(self.norm(x))))


PREDICTIONS = ('epsilon', 'sample')


class DiffusionActionHead(nn.Module):
    """MLP-ResNet denoiser of action chunks with DDPM/DDIM sampling.

    ``prediction='epsilon'`` (Octo) regresses the added noise. ``'sample'`` regresses the
    clean chunk instead: with few diffusion steps the cosine schedule's last step has
    alpha_bar ~ 0, where turning a noise estimate into a chunk divides by ~sqrt(alpha_bar)
    and amplifies its error ~30x; a predicted chunk needs no such division.
    """

    def __init__(self, cond_dim: int, action_dim: int, chunk_length: int, time_dim: int = 32,
                 hidden_dim: int = 256, num_blocks: int = 3, diffusion_steps: int = 20,
                 max_action: float = 5.0, prediction: str = 'epsilon'):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f'prediction must be one of {PREDICTIONS}, got {prediction!r}')
        self.prediction = prediction
        self.action_dim = int(action_dim)
        self.chunk_length = int(chunk_length)
        self.diffusion_steps = int(diffusion_steps)
        self.max_action = float(max_action)
        # Kept in float64 numpy, not as buffers: a bfloat16 cast would ruin the schedule.
        self.alpha_bars = cosine_alpha_bars(self.diffusion_steps)
        self.alphas = self.alpha_bars / np.concatenate([[1.0], self.alpha_bars[:-1]])
        flat = self.chunk_length * self.action_dim
        self.time_features = FourierTime(time_dim)
        self.time_encoder = nn.Sequential(nn.Linear(time_dim, 2 * time_dim), nn.SiLU(),
                                          nn.Linear(2 * time_dim, time_dim))
        self.input = nn.Linear(time_dim + cond_dim + flat, hidden_dim)
        self.blocks = nn.ModuleList(ResidualMLPBlock(hidden_dim) for _ in range(num_blocks))
        self.output = nn.Linear(hidden_dim, flat)

    def forward(self, cond: torch.Tensor, noisy: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted noise (B, chunk * dim) for flat noisy chunks at integer steps ``t`` (B,)."""
        time = self.time_encoder(self.time_features(t.to(cond.dtype).unsqueeze(-1)))
        x = self.input(torch.cat([time, cond, noisy], dim=-1))
        for block in self.blocks:
            x = block(x)
        return self.output(F.silu(x))

    # ------------------------------------------------------------------ training
    def loss(self, cond: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Epsilon MSE on normalized chunks (B, T, D); rows with ``valid`` False are ignored."""
        batch = actions.shape[0]
        t = torch.randint(0, self.diffusion_steps, (batch,), generator=generator)
        noise = _randn(actions.shape, generator, actions)
        bars = torch.as_tensor(self.alpha_bars[t.numpy()], dtype=actions.dtype,
                               device=actions.device).view(batch, 1, 1)
        noisy = bars.sqrt() * actions + (1.0 - bars).sqrt() * noise
        predicted = self(cond, noisy.flatten(1), t.to(actions.device)).view_as(actions)
        target = noise if self.prediction == 'epsilon' else actions
        weight = valid.to(actions.dtype).unsqueeze(-1).expand_as(actions)
        return ((predicted - target) ** 2 * weight).sum() / weight.sum().clamp(min=1.0)

    # ------------------------------------------------------------------ sampling
    def sample(self, cond: torch.Tensor, generator: torch.Generator, sampler: str = 'ddpm',
               ddim_steps: int = 5) -> torch.Tensor:
        """Denoise from Gaussian noise to chunks (B, T, D), clipped to [-1, 1]."""
        shape = (cond.shape[0], self.chunk_length * self.action_dim)
        x = _randn(shape, generator, cond)
        if sampler == 'ddpm':
            x = self._ddpm(cond, x, generator)
        elif sampler == 'ddim':
            x = self._ddim(cond, x, ddim_steps)
        else:
            raise ValueError(f'unknown sampler {sampler!r}; expected ddpm or ddim')
        return x.clamp(-1.0, 1.0).view(-1, self.chunk_length, self.action_dim)

    def _steps(self, t: int, batch: int, like: torch.Tensor) -> torch.Tensor:
        return torch.full((batch,), t, dtype=torch.long, device=like.device)

    def _ddpm(self, cond, x, generator):
        if self.prediction == 'sample':
            return self._ddpm_sample(cond, x, generator)
        for t in range(self.diffusion_steps - 1, -1, -1):
            eps = self(cond, x, self._steps(t, x.shape[0], x))
            alpha, bar = float(self.alphas[t]), float(self.alpha_bars[t])
            x = (x - (1.0 - alpha) / math.sqrt(1.0 - bar) * eps) / math.sqrt(alpha)
            if t > 0:
                x = x + math.sqrt(1.0 - alpha) * _randn(x.shape, generator, x)
            x = x.clamp(-self.max_action, self.max_action)
        return x

    def _ddpm_sample(self, cond, x, generator):
        # Posterior q(x_{t-1} | x_t, x0) with the predicted x0 (no division by alpha_bar).
        for t in range(self.diffusion_steps - 1, -1, -1):
            x0 = self(cond, x, self._steps(t, x.shape[0], x)).clamp(-self.max_action,
                                                                     self.max_action)
            if t == 0:
                return x0
            alpha, bar = float(self.alphas[t]), float(self.alpha_bars[t])
            prev = float(self.alpha_bars[t - 1])
            beta = 1.0 - alpha
            mean = (math.sqrt(prev) * beta * x0
                    + math.sqrt(alpha) * (1.0 - prev) * x) / (1.0 - bar)
            std = math.sqrt(beta * (1.0 - prev) / (1.0 - bar))
            x = mean + std * _randn(x.shape, generator, x)
        return x

    def _ddim(self, cond, x, num_steps):
        # Evenly spaced steps from the noisiest to 0; eta = 0, so no noise after the start.
        schedule = np.unique(np.linspace(0, self.diffusion_steps - 1, num_steps).round())
        schedule = schedule.astype(int)[::-1]
        for i, t in enumerate(schedule):
            out = self(cond, x, self._steps(int(t), x.shape[0], x))
            bar = float(self.alpha_bars[t])
            x0 = out if self.prediction == 'sample' else \
                (x - math.sqrt(1.0 - bar) * out) / math.sqrt(bar)
            x0 = x0.clamp(-self.max_action, self.max_action)
            if i + 1 == len(schedule):
                return x0
            eps = (x - math.sqrt(bar) * x0) / math.sqrt(1.0 - bar)
            prev = float(self.alpha_bars[schedule[i + 1]])
            x = math.sqrt(prev) * x0 + math.sqrt(1.0 - prev) * eps
        return x
