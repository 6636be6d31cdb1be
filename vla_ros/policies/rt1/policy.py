"""RT-1 policy: a 6-frame history of FiLM-EfficientNet tokens -> one 11-D action per step.

Normalization. RT-1 discretizes *raw* actions uniformly over the action-space bounds
(:class:`~vla_ros.actions.tokenizers.Rt1ActionTokenizer`: truncation, 256 bins,
terminate as a category), so its output never depends on dataset statistics. This
policy therefore overrides :meth:`predict_chunk`: the argmax token of every head is
detokenized straight into action-space units, and the result lies exactly on RT-1's bin
values whatever statistics a checkpoint carries. The statistics still travel with the
checkpoint like every family's, and are used in one place: :meth:`training_loss`
receives actions normalized with them (the shared batch convention) and unnormalizes
them back to action units before tokenizing. (The alternative, forcing bounds-derived
statistics so the base class's unnormalize maps [-1, 1] onto the bounds, would silently
ignore the statistics of a trained checkpoint and round-trip every value through float
arithmetic that moves it off the bin grid.) Because training targets pass through that
normalization, actions outside a dataset's [q01, q99] are learned at q01/q99.

History. The policy keeps the tokens of the last ``history_length`` (6) frames of the
episode; each frame is encoded once. At the start of an episode the history is padded by
repeating its first frame. :meth:`reset` clears it, and so does a new instruction or a
camera stamp that goes backwards (a new episode, a restarted replay); a second call with
the same stamp replaces the newest frame instead of adding a duplicate.
"""

from __future__ import annotations

import threading

import numpy as np

from vla_ros.actions.tokenizers import Rt1ActionTokenizer
from vla_ros.policies.contract import Observation, PolicySpec
from vla_ros.policies.rt1.configuration import PRESETS, Rt1Config
from vla_ros.policies.text import EMBEDDING_DIM
from vla_ros.policies.torch_policy import TorchPolicy

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Rt1Policy(TorchPolicy):
    """RT-1: FiLM-EfficientNet-B3 + TokenLearner + Transformer with 256-bin action heads."""

    family = 'rt1'
    config_class = Rt1Config
    presets = PRESETS

    def __init__(self, config=None, statistics=None, unnorm_key=None, device='cpu',
                 dtype='float32', seed=0, model=None, text_encoder=None, **overrides):
        """Build the policy (see :class:`TorchPolicy`) with an optional text encoder.

        ``text_encoder`` is any object with ``encode(list[str]) -> (N, 384)``; by default
        the shared offline MiniLM encoder is loaded on first use.
        """
        super().__init__(config, statistics=statistics, unnorm_key=unnorm_key, device=device,
                         dtype=dtype, seed=seed, model=model, **overrides)
        self.action_tokenizer = Rt1ActionTokenizer(self.action_space, self.config.num_bins)
        self._text_encoder = text_encoder
        self._lock = threading.Lock()
        self._history: list = []        # per-frame tokens, oldest first
        self._last_stamp: float | None = None
        self._instruction: str | None = None

    # ------------------------------------------------------------ TorchPolicy API
    @classmethod
    def build_model(cls, config: Rt1Config):
        """A randomly initialised :class:`~vla_ros.policies.rt1.modeling.Rt1Model`.

        Off the meta device its batch-norm statistics are calibrated on two fixed noise
        images (see ``FilmEfficientNet.calibrate_batch_norm``).
        """
        import torch

        from vla_ros.actions.spaces import load_action_space
        from vla_ros.policies.rt1.modeling import Rt1Model

        model = Rt1Model(config, load_action_space(config.action_space), EMBEDDING_DIM)
        if not next(model.parameters()).is_meta:
            noise = torch.Generator().manual_seed(0)
            size = config.image_size
            model.backbone.calibrate_batch_norm(torch.randn(2, 3, size, size, generator=noise))
        return model

    def make_spec(self, config: Rt1Config) -> PolicySpec:
        """One action per inference, every ``control_period`` (RT-1: 3 Hz)."""
        return PolicySpec(name=self.family, action_space=self.action_space, chunk_length=1,
                          camera_names=config.camera_names,
                          image_size=(config.image_size, config.image_size),
                          image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
                          control_period=config.control_period)

    @property
    def history_window(self) -> int:
        """Frames per prediction (the configuration's ``history_length``)."""
        return self.config.history_length

    def reset(self) -> None:
        """Forget the frame history (a new episode starts)."""
        with self._lock:
            self._clear_history()

    def predict_chunk(self, observation: Observation) -> np.ndarray:
        """Validate, add the frame to the history, decode argmax tokens to action units."""
        tokens = self.predict_tokens(observation)
        actions = self.action_tokenizer.detokenize(tokens[None])
        return self.check_chunk(actions.astype(np.float32))

    def predict_normalized(self, observation: Observation) -> np.ndarray:
        """The predicted chunk in normalized space (clipped to [-1, 1] outside [q01, q99]).

        Not used by :meth:`predict_chunk` (see the module docstring); provided for tools
        that compare families in normalized space.
        """
        return self.normalizer.normalize(self.predict_chunk(observation))

    def training_loss(self, batch: dict):
        """Mean cross-entropy of the action heads against RT-1 tokens of the batch actions.

        ``images`` is (B, cameras, 3, H, W), one frame per sample (treated as an episode
        start: the history repeats it), or (B, F, cameras, 3, H, W) with F <= 6 frames,
        oldest first. Only the first action row of each sample is a target
        (chunk_length 1); samples whose first row is not ``valid`` are ignored.
        """
        from torch.nn import functional as F

        frames, context, targets, weights = self._training_inputs(batch)
        logits = self.model(frames, context)
        per_dim = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction='none')
        return (per_dim.mean(dim=1) * weights).sum() / weights.sum().clamp(min=1.0)

    def collate(self, samples: list[dict]) -> dict:
        """The shared batch, with each sample's history window as inference builds it.

        Samples carrying ``history`` (their episode's earlier frames, see
        ``EpisodeDataset.samples``) get images (B, history_length, cameras, 3, H, W):
        the newest frames, padded at the front by repeating the oldest real one, exactly
        as :meth:`_remember` pads at an episode start. Without history the batch keeps one
        frame per sample (the model pads it the same way).
        """
        import torch

        from vla_ros.training.data import default_collate

        batch = default_collate(self, samples)
        window = self.config.history_length
        if window == 1 or not any(s.get('history') for s in samples):
            return batch
        stacks = []
        for sample, newest in zip(samples, batch['images'], strict=True):
            frames = [self.images_tensor(Observation(f['images'], sample['instruction']))[0]
                      for f in list(sample.get('history') or ())[-(window - 1):]]
            frames.append(newest)
            stacks.append(torch.stack([frames[0]] * (window - len(frames)) + frames))
        batch['images'] = torch.stack(stacks)
        return batch

    # ---------------------------------------------------------------- helpers
    def embed_instructions(self, instructions):
        """Instruction embeddings (N, 384) as a tensor on the model's device and dtype."""
        import torch

        if self._text_encoder is None:
            from vla_ros.policies.text import shared_encoder

            self._text_encoder = shared_encoder()
        emb = np.asarray(self._text_encoder.encode(list(instructions)), dtype=np.float32)
        if emb.shape != (len(instructions), EMBEDDING_DIM) or not np.isfinite(emb).all():
            raise ValueError(f'rt1: text encoder returned shape {emb.shape} (or non-finite '
                             f'values); expected ({len(instructions)}, {EMBEDDING_DIM})')
        return torch.from_numpy(emb).to(self.device, self.dtype)

    def predict_tokens(self, observation: Observation) -> np.ndarray:
        """Argmax token per action dimension (int64, shape (dim,)); updates the history."""
        return self.predict_logits(observation).argmax(axis=-1).astype(np.int64)

    def predict_logits(self, observation: Observation) -> np.ndarray:
        """Logits (dim, num_bins) of every action head; adds the frame to the history.

        Bins a discrete dimension cannot take hold the most negative float.
        """
        import torch

        self.validate_observation(observation)
        with torch.inference_mode():
            context = self.embed_instructions([observation.instruction])
            frame = self.model.encode_frames(self.images_tensor(observation), context)[0]
            with self._lock:
                history = self._remember(observation, frame)
            logits = self.model.decode(history[None])
        return logits[0].float().cpu().numpy()

    @property
    def history_size(self) -> int:
        """Frames currently remembered (0 after reset, at most ``history_length``)."""
        return len(self._history)

    def _clear_history(self) -> None:
        self._history = []
        self._last_stamp = None
        self._instruction = None

    def _remember(self, observation: Observation, frame):
        """Add a frame's tokens; return the padded (history_length, T, C) history."""
        import torch

        stamp, instruction = float(observation.stamp), observation.instruction.strip()
        if instruction != self._instruction or (
                self._last_stamp is not None and stamp < self._last_stamp):
            self._clear_history()
        if self._history and stamp == self._last_stamp:
            self._history[-1] = frame
        else:
            self._history = (self._history + [frame])[-self.config.history_length:]
        self._last_stamp, self._instruction = stamp, instruction
        padding = [self._history[0]] * (self.config.history_length - len(self._history))
        return torch.stack(padding + self._history)

    def _training_inputs(self, batch: dict):
        """Check a training batch; return frames, context, target tokens, row weights."""
        import torch

        missing = [k for k in ('images', 'instructions', 'actions') if k not in batch]
        if missing:
            raise ValueError(f'rt1: training batch lacks {missing}')
        images, actions = batch['images'], batch['actions']
        instructions = list(batch['instructions'])
        if images.dim() == 5:
            images = images[:, None]
        if images.dim() != 6:
            raise ValueError(f'rt1: images must be (B, cameras, 3, H, W) or (B, F, cameras, '
                             f'3, H, W), got {tuple(batch["images"].shape)}')
        b, dim = images.shape[0], self.action_space.dim
        if actions.dim() != 3 or actions.shape[0] != b or actions.shape[2] != dim:
            raise ValueError(f'rt1: actions must be (B={b}, T, {dim}), '
                             f'got {tuple(actions.shape)}')
        if len(instructions) != b:
            raise ValueError(f'rt1: {len(instructions)} instructions for a batch of {b}')
        valid = batch.get('valid')
        weights = (torch.ones(b) if valid is None else valid[:, 0].float()).to(self.device)
        raw = self.normalizer.unnormalize(actions[:, 0].detach().cpu().double().numpy())
        targets = torch.from_numpy(self.action_tokenizer.tokenize(raw)).to(self.device)
        frames = images.to(self.device, self.dtype)
        return frames, self.embed_instructions(instructions), targets, weights


def load(model_path: str = '', size: str = 'tiny', **kwargs) -> Rt1Policy:
    """Registry entry point: a checkpoint if ``model_path`` is set, else a preset."""
    return Rt1Policy.load(model_path=model_path, size=size, **kwargs)
