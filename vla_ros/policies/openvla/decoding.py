"""Greedy action decoding restricted to the action tokens, with a reused KV cache.

OpenVLA decodes its 7 action tokens with the generic ``generate``. Here one prefill (image
patches + prompt) fills a ``DynamicCache`` and each further token is a single-token step.
Only the output-head rows of the action tokens are evaluated: taking the argmax over them
is the same as setting every other logit to -inf, and it skips ~99 % of the head (256 of
32064 rows), which dominates the cost of a step in small models.
"""

import torch
from transformers import DynamicCache, LogitsProcessor


class ActionTokenLogitsProcessor(LogitsProcessor):
    """For ``generate``: every logit outside ``[first, stop)`` becomes -inf."""

    def __init__(self, first: int, stop: int):
        """Allow ids ``first .. stop - 1`` only."""
        if not 0 <= first < stop:
            raise ValueError(f'need 0 <= first < stop, got {first}, {stop}')
        self.first, self.stop = first, stop

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor):
        """Return ``scores`` with disallowed ids masked."""
        masked = torch.full_like(scores, float('-inf'))
        masked[:, self.first:self.stop] = scores[:, self.first:self.stop]
        return masked


def _head_rows(head: torch.nn.Linear, first: int, stop: int):
    weight = head.weight[first:stop]
    bias = None if head.bias is None else head.bias[first:stop]
    return weight, bias


def greedy_action_tokens(model, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                         num_tokens: int, token_range: tuple[int, int],
                         proprio: torch.Tensor | None = None) -> torch.Tensor:
    """Greedily decode ``num_tokens`` ids from ``token_range`` = ``[first, stop)``.

    ``model`` is an :class:`OpenVlaForActionPrediction`; ``input_ids`` (B, L) hold the
    prompt (no padding), ``pixel_values`` (B, 3, H, W) the image, ``proprio`` (B, P) the
    normalized state when the model uses it. Returns (B, num_tokens)
    int64 ids. One prefill, then ``num_tokens - 1`` single-token steps on the KV cache.
    """
    if num_tokens < 1:
        raise ValueError(f'num_tokens must be >= 1, got {num_tokens}')
    first, stop = token_range
    lm = model.language_model
    decoder = lm.model
    weight, bias = _head_rows(lm.get_output_embeddings(), first, stop)
    cache = DynamicCache(config=lm.config)
    embeds = model.embed_inputs(input_ids, pixel_values, proprio)
    hidden = decoder(inputs_embeds=embeds, cache=cache, use_cache=True).last_hidden_state
    tokens = []
    for step in range(num_tokens):
        logits = torch.nn.functional.linear(hidden[:, -1], weight, bias)
        token = logits.argmax(dim=-1) + first
        tokens.append(token)
        if step + 1 < num_tokens:
            hidden = decoder(input_ids=token[:, None], cache=cache,
                             use_cache=True).last_hidden_state
    return torch.stack(tokens, dim=1)
