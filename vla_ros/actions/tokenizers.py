"""Action tokenizers matching the conventions of RT-1, OpenVLA and RT-2 style checkpoints."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from vla_ros.actions.spaces import ActionSpace


def _integer_array(tokens: Any, what: str) -> np.ndarray:
    """Return ``tokens`` as int64, rejecting non-integral or non-finite values."""
    t = np.asarray(tokens)
    if t.dtype.kind in 'iu':
        return t.astype(np.int64)
    if t.dtype.kind == 'b' or t.dtype.kind not in 'f':
        raise ValueError(f'{what} must be integers, got dtype {t.dtype}')
    if not np.all(np.isfinite(t)) or np.any(t != np.round(t)):
        raise ValueError(f'{what} must be integer-valued')
    return t.astype(np.int64)


class Rt1ActionTokenizer:
    """Uniform per-dimension binning as in RT-1 (robotics_transformer ``RT1ActionTokenizer``).

    Continuous and binary dimensions map ``[low, high]`` onto ``num_bins`` tokens by
    truncation, so a detokenized value is the lower edge of its bin. Discrete dimensions
    (e.g. terminate) use the category index itself as the token.
    """

    def __init__(self, space: ActionSpace, num_bins: int = 256) -> None:
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
            raise ValueError(f'num_bins must be an integer >= 2, got {num_bins!r}')
        self.space = space
        self.num_bins = num_bins
        self._low = space.low
        self._high = space.high
        self._discrete = np.array([d.kind == 'discrete' for d in space.dimensions])
        # Largest valid token per dimension: bins for continuous, categories for discrete.
        self._max_token = np.array(
            [d.num_categories - 1 if d.kind == 'discrete' else num_bins - 1
             for d in space.dimensions],
            dtype=np.int64,
        )

    @property
    def bin_width(self) -> np.ndarray:
        """Per-dimension spacing between detokenized values, ``(high - low) / (num_bins - 1)``."""
        return (self._high - self._low) / (self.num_bins - 1)

    def tokenize(self, actions: Any) -> np.ndarray:
        """Map actions of shape (D,) or (N, D) to int64 tokens of the same shape."""
        a = self.space.clip(actions)  # also rejects NaN/Inf naming the dimension
        scaled = (a - self._low) / (self._high - self._low) * (self.num_bins - 1)
        # astype truncates toward zero, exactly like tf.cast(..., tf.int32) in RT-1.
        tokens = scaled.astype(np.int64)
        categories = np.clip(np.rint(a).astype(np.int64), 0, self._max_token)
        return np.where(self._discrete, categories, tokens)

    def detokenize(self, tokens: Any) -> np.ndarray:
        """Map int tokens of shape (D,) or (N, D) back to float64 actions."""
        t = _integer_array(tokens, 'RT-1 tokens')
        if t.ndim not in (1, 2) or t.shape[-1] != self.space.dim:
            raise ValueError(
                f'expected tokens of shape ({self.space.dim},) or (N, {self.space.dim}), '
                f'got {t.shape}'
            )
        bad = (t < 0) | (t > self._max_token)
        if bad.any():
            idx = tuple(np.argwhere(bad)[0])
            col = idx[-1]
            raise ValueError(
                f'token {t[idx]} for dimension {self.space.names[col]!r} outside '
                f'[0, {self._max_token[col]}]'
            )
        values = self._low + t / (self.num_bins - 1) * (self._high - self._low)
        return np.where(self._discrete, t.astype(np.float64), values)


class OpenVlaActionTokenizer:
    """OpenVLA's ``ActionTokenizer``: normalized actions in [-1, 1] to the last vocab ids.

    ``num_bins`` uniform edges on [-1, 1] give ``num_bins - 1`` bins; ``np.digitize`` yields
    1..num_bins and the id is ``vocab_size - digitized``. Decoding takes the bin center.
    Faithful quirk: exactly 1.0 digitizes to ``num_bins`` (id ``vocab_size - num_bins``),
    which decoding clips into the last bin.
    """

    def __init__(self, vocab_size: int = 32000, num_bins: int = 256) -> None:
        if not (isinstance(num_bins, int) and isinstance(vocab_size, int)):
            raise ValueError('vocab_size and num_bins must be integers')
        if num_bins < 2 or vocab_size < num_bins:
            raise ValueError(f'need 2 <= num_bins <= vocab_size, got {num_bins}, {vocab_size}')
        self.vocab_size = vocab_size
        self.num_bins = num_bins
        self.bins = np.linspace(-1.0, 1.0, num_bins)
        self.centers = (self.bins[:-1] + self.bins[1:]) / 2.0
        self.action_token_ids = np.arange(vocab_size - num_bins, vocab_size, dtype=np.int64)

    def is_action_token(self, ids: Any) -> np.ndarray:
        """Boolean mask of which ids lie in the action-token range."""
        ids = np.asarray(ids)
        return (ids >= self.vocab_size - self.num_bins) & (ids < self.vocab_size)

    def encode(self, normalized: Any) -> np.ndarray:
        """Map normalized actions (any shape) to int64 token ids; values clip to [-1, 1]."""
        a = np.asarray(normalized, dtype=np.float64)
        if not np.all(np.isfinite(a)):
            idx = tuple(np.argwhere(~np.isfinite(a))[0])
            raise ValueError(f'non-finite normalized action at index {idx}: {a[idx]}')
        digitized = np.digitize(np.clip(a, -1.0, 1.0), self.bins)
        return (self.vocab_size - digitized).astype(np.int64)

    def decode(self, token_ids: Any) -> np.ndarray:
        """Map action token ids (any shape) to normalized actions (bin centers).

        Ids outside the action range raise ValueError rather than being clipped as the
        reference code does: a text token where an action is expected means bad output.
        """
        ids = _integer_array(token_ids, 'token ids')
        if not np.all(self.is_action_token(ids)):
            bad = ids[~self.is_action_token(ids)]
            raise ValueError(
                f'ids {bad[:8].tolist()} are not action tokens '
                f'[{self.vocab_size - self.num_bins}, {self.vocab_size - 1}]'
            )
        k = np.clip(self.vocab_size - ids - 1, 0, self.num_bins - 2)
        return self.centers[k]


class MalformedActionText(ValueError):
    """Model text output that is not exactly the expected list of bin indices."""


_INT = re.compile(r'[0-9]+')


def bins_to_text(tokens: Any) -> str:
    """Render bin indices as RT-2 style text, e.g. ``'128 91 241'``."""
    t = _integer_array(tokens, 'bin indices').reshape(-1)
    return ' '.join(str(int(x)) for x in t)


def text_to_bins(text: str, expected_count: int, num_bins: int = 256) -> np.ndarray:
    """Parse RT-2 style text into int64 bin indices; never guesses.

    Tokens are separated by any whitespace (leading/trailing whitespace is ignored). Raises
    MalformedActionText unless there are exactly ``expected_count`` plain decimal integers,
    each in ``[0, num_bins - 1]``.
    """
    if not isinstance(text, str):
        raise MalformedActionText(f'expected a string, got {type(text).__name__}')
    parts = text.split()
    if not parts:
        raise MalformedActionText('empty action text')
    if len(parts) != expected_count:
        raise MalformedActionText(
            f'expected {expected_count} bin indices, got {len(parts)}: {text!r}'
        )
    bad = [p for p in parts if not _INT.fullmatch(p)]
    if bad:
        raise MalformedActionText(f'not non-negative integers: {bad} in {text!r}')
    # Range-check Python ints before building the array so huge numbers cannot overflow.
    values = [int(p) for p in parts]
    out = [v for v in values if v >= num_bins]
    if out:
        raise MalformedActionText(f'bin indices {out} outside [0, {num_bins - 1}]')
    return np.array(values, dtype=np.int64)
