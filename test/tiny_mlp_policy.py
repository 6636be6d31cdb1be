"""A test-only TorchPolicy: a tiny MLP over pooled pixels and a hashed instruction embedding.

It exercises the whole TorchPolicy API (presets, checkpoints, normalization, training
loss) in milliseconds, so the training loop and the zoo-wide contract test have a torch
policy to run on whatever families are installed. Importing this module registers it as
``test_tiny_mlp`` (registry name == family, so ``load_any`` finds it too).
"""

import re
import zlib
from dataclasses import dataclass

import numpy as np

from vla_ros.policies.contract import PolicySpec
from vla_ros.policies.registry import registered
from vla_ros.policies.torch_policy import TorchPolicy

NAME = 'test_tiny_mlp'
LINEAR_LAYERS = ('image_proj', 'fuse', 'head')


@dataclass
class TinyMLPConfig:
    """Sizes of the test MLP; lists are accepted where tuples are expected (JSON)."""

    action_space: str = 'arm7'
    chunk_length: int = 4
    image_size: tuple = (32, 24)
    camera_names: tuple = ('front',)
    pool: int = 4
    text_buckets: int = 64
    text_dim: int = 16
    hidden: int = 64
    control_period: float = 0.1

    def __post_init__(self):
        if self.chunk_length < 1 or self.pool < 1 or self.hidden < 1:
            raise ValueError('chunk_length, pool and hidden must be >= 1')


def instruction_tokens(text: str, buckets: int) -> list[int]:
    """Stable word hashes (crc32, not Python's salted hash) into ``buckets`` ids."""
    words = re.findall(r'[a-z0-9]+', text.lower()) or ['<empty>']
    return [zlib.crc32(w.encode()) % buckets for w in words]


def _build(config: TinyMLPConfig):
    import torch
    from torch import nn

    class TinyMLP(nn.Module):
        def __init__(self, c: TinyMLPConfig, dim: int):
            super().__init__()
            self.pool, self.chunk, self.dim = c.pool, c.chunk_length, dim
            pixels = len(c.camera_names) * 3 * c.pool * c.pool
            self.text = nn.EmbeddingBag(c.text_buckets, c.text_dim, mode='mean')
            self.image_proj = nn.Linear(pixels, c.hidden)
            self.fuse = nn.Linear(c.hidden + c.text_dim, c.hidden)
            self.head = nn.Linear(c.hidden, c.chunk_length * dim)

        def forward(self, images, token_lists):
            b = images.shape[0]
            pooled = nn.functional.adaptive_avg_pool2d(images.flatten(0, 1), self.pool)
            x = torch.relu(self.image_proj(pooled.reshape(b, -1)))
            ids = torch.tensor([i for t in token_lists for i in t], device=images.device)
            offsets = torch.tensor(np.cumsum([0] + [len(t) for t in token_lists[:-1]]),
                                   device=images.device)
            words = self.text(ids, offsets)
            x = torch.relu(self.fuse(torch.cat([x, words], dim=-1)))
            return torch.tanh(self.head(x)).view(b, self.chunk, self.dim)

    from vla_ros.actions.spaces import load_action_space

    return TinyMLP(config, load_action_space(config.action_space).dim)


class TinyMLPPolicy(TorchPolicy):
    """Tiny MLP test policy: pooled pixels + bag of hashed words -> tanh action chunk."""

    family = NAME
    config_class = TinyMLPConfig
    presets = {'tiny': {}, 'full': {'hidden': 512, 'pool': 16, 'text_buckets': 4096}}
    action_head = 'MLP regression (tanh)'
    action_type = 'continuous'

    @classmethod
    def build_model(cls, config):
        """Random-initialised TinyMLP for ``config``."""
        return _build(config)

    def make_spec(self, config) -> PolicySpec:
        """Spec from the configuration (images normalised with mean/std 0.5/0.25)."""
        return PolicySpec(NAME, self.action_space, config.chunk_length,
                          camera_names=tuple(config.camera_names),
                          image_size=tuple(config.image_size), image_mean=(0.5, 0.5, 0.5),
                          image_std=(0.25, 0.25, 0.25), control_period=config.control_period)

    def _tokens(self, texts):
        return [instruction_tokens(t, self.config.text_buckets) for t in texts]

    def predict_normalized(self, observation) -> np.ndarray:
        """One forward pass; tanh keeps the chunk in [-1, 1]."""
        out = self.model(self.images_tensor(observation), self._tokens([observation.instruction]))
        return out[0].float().cpu().numpy()

    def training_loss(self, batch):
        """Mean squared error over valid rows, in normalized action space."""
        pred = self.model(batch['images'], self._tokens(batch['instructions']))
        target = batch['actions'].to(pred.dtype)
        valid = batch['valid'].to(pred.dtype).unsqueeze(-1)
        return ((pred - target) ** 2 * valid).sum() / (valid.sum() * pred.shape[-1])


# Register the classmethod (the registry entry point), not the class: make_policy then
# accepts model_path/size like every family.
registered(NAME, description='Test-only tiny MLP policy (pooled pixels + hashed words).',
           family=NAME, replace=True)(TinyMLPPolicy.load)
