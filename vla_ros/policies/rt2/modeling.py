"""The RT-2-style network: transformers' PaliGemma built from a config (random init).

PaliGemma fits RT-2's recipe directly: image tokens and the prompt form a bidirectional
prefix, the answer is decoded causally after it (``token_type_ids`` 0 / 1), and the
answer here is the action as text. The image placeholder id is set one past the text
vocabulary, so the embedding table has exactly the tokenizer's rows (PaliGemma swaps the
placeholder for the projected image features before the lookup).
"""

import torch
from transformers import (
    GemmaConfig,
    LogitsProcessor,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    SiglipVisionConfig,
)

from vla_ros.policies.rt2.configuration import Rt2Config
from vla_ros.policies.rt2.grammar import ActionGrammar

IGNORE_INDEX = -100  # label of positions that do not count in the loss


def build_paligemma(config: Rt2Config, bos_id: int = 1, eos_id: int = 2,
                    pad_id: int = 0) -> PaliGemmaForConditionalGeneration:
    """A randomly initialised PaliGemma of ``config``'s size, using the given special ids."""
    c = config
    vision = SiglipVisionConfig(
        hidden_size=c.vision_width, intermediate_size=c.vision_mlp_dim,
        num_hidden_layers=c.vision_depth, num_attention_heads=c.vision_heads,
        patch_size=c.patch_size, image_size=c.image_size, vision_use_head=False)
    text = GemmaConfig(
        hidden_size=c.text_width, intermediate_size=c.text_mlp_dim,
        num_hidden_layers=c.text_depth, num_attention_heads=c.text_heads,
        num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim, vocab_size=c.vocab_size,
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id,
        # Causal by default; the prompt's bidirectionality comes from token_type_ids only.
        use_bidirectional_attention=False)
    model = PaliGemmaForConditionalGeneration(PaliGemmaConfig(
        vision_config=vision, text_config=text, image_token_index=c.vocab_size,
        vocab_size=c.vocab_size, projection_dim=c.text_width, hidden_size=c.text_width))
    generation = model.generation_config
    generation.bos_token_id, generation.eos_token_id, generation.pad_token_id = (
        bos_id, eos_id, pad_id)
    return model


class GrammarLogitsProcessor(LogitsProcessor):
    """Sets every token outside :class:`ActionGrammar`'s next-token set to -inf."""

    def __init__(self, grammar: ActionGrammar, prompt_length: int):
        self.grammar, self.prompt_length = grammar, int(prompt_length)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor):
        """Mask ``scores`` (B, V) given the sequences so far (B, prompt + generated)."""
        mask = torch.full_like(scores, float('-inf'))
        for row, sequence in enumerate(input_ids[:, self.prompt_length:].tolist()):
            allowed = self.grammar.allowed(sequence)
            mask[row, allowed] = 0.0
        return scores + mask


def training_sequences(prompts: list, targets: list, pad_id: int):
    """Right-padded ``input_ids``, ``attention_mask``, ``token_type_ids`` and ``labels``.

    ``prompts`` and ``targets`` are token-id lists per row; labels are the target tokens
    and IGNORE_INDEX elsewhere, so the loss counts the answer only.
    """
    length = max(len(p) + len(t) for p, t in zip(prompts, targets, strict=True))
    b = len(prompts)
    input_ids = torch.full((b, length), pad_id, dtype=torch.long)
    attention = torch.zeros((b, length), dtype=torch.long)
    token_types = torch.ones((b, length), dtype=torch.long)
    labels = torch.full((b, length), IGNORE_INDEX, dtype=torch.long)
    for i, (prompt, target) in enumerate(zip(prompts, targets, strict=True)):
        n, m = len(prompt), len(target)
        input_ids[i, :n + m] = torch.tensor(prompt + target)
        attention[i, :n + m] = 1
        token_types[i, :n] = 0
        labels[i, n:n + m] = torch.tensor(target)
    return input_ids, attention, token_types, labels


def answer_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy where ``labels`` != IGNORE_INDEX (the answer tokens)."""
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
        ignore_index=IGNORE_INDEX)
