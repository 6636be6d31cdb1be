"""OpenVLA prompts: the exact prompt text, its token ids, and training sequences."""

from collections.abc import Sequence

import numpy as np

from vla_ros.policies.contract import PolicyLoadError

PROMPT_TEMPLATE = 'In: What action should the robot take to {instruction}?\nOut:'
# SentencePiece's word-boundary marker; alone it is the "space" token OpenVLA appends.
SPACE_PIECE = '\u2581'
IGNORE_INDEX = -100


def build_prompt(instruction: str) -> str:
    """OpenVLA's prompt for ``instruction`` (lower-cased, as the released model expects)."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f'instruction must be a non-empty string, got {instruction!r}')
    return PROMPT_TEMPLATE.format(instruction=instruction.lower())


def space_token_id(tokenizer) -> int:
    """Id of the lone space piece (29871 in Llama-2; asked from the tokenizer, never assumed)."""
    token_id = tokenizer.convert_tokens_to_ids(SPACE_PIECE)
    if not isinstance(token_id, int) or token_id == tokenizer.unk_token_id:
        raise PolicyLoadError(f'the tokenizer has no lone {SPACE_PIECE!r} token; OpenVLA '
                              f'prompts need one')
    return token_id


class PromptEncoder:
    """Token ids of OpenVLA prompts, and prompt + action sequences for training."""

    def __init__(self, tokenizer):
        """Wrap a SentencePiece (Llama-style) tokenizer that adds BOS."""
        self.tokenizer = tokenizer
        self.space_id = space_token_id(tokenizer)
        self.bos_id = tokenizer.bos_token_id
        if self.bos_id is None:
            raise PolicyLoadError('the tokenizer has no BOS token; the image goes after it')
        # Padding only ever follows the real tokens (right padding) and is never attended
        # to or predicted, so any id works; EOS avoids relying on an added pad token.
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else tokenizer.eos_token_id

    def encode(self, instruction: str) -> list[int]:
        """BOS + prompt ids, with the space token appended unless already last."""
        ids = list(self.tokenizer(build_prompt(instruction), add_special_tokens=True).input_ids)
        if not ids or ids[0] != self.bos_id:
            ids.insert(0, self.bos_id)
        if ids[-1] != self.space_id:
            ids.append(self.space_id)
        return ids

    def training_batch(self, instructions: Sequence[str], action_ids: np.ndarray,
                       action_valid: np.ndarray | None = None) -> dict:
        """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (numpy int64).

        Each row is prompt + action ids (teacher forcing); labels are the action ids only
        (prompt and padding are IGNORE_INDEX, as are actions whose ``action_valid`` is
        False). ``action_ids`` is (B, N).
        """
        action_ids = np.asarray(action_ids, dtype=np.int64)
        if action_ids.ndim != 2 or action_ids.shape[0] != len(instructions):
            raise ValueError(f'action_ids must be (B={len(instructions)}, N), got '
                             f'{action_ids.shape}')
        valid = np.ones_like(action_ids, dtype=bool) if action_valid is None \
            else np.asarray(action_valid, dtype=bool)
        if valid.shape != action_ids.shape:
            raise ValueError(f'action_valid must be {action_ids.shape}, got {valid.shape}')
        prompts = [self.encode(text) for text in instructions]
        length = max(len(p) for p in prompts) + action_ids.shape[1]
        batch = len(prompts)
        input_ids = np.full((batch, length), self.pad_id, dtype=np.int64)
        labels = np.full((batch, length), IGNORE_INDEX, dtype=np.int64)
        mask = np.zeros((batch, length), dtype=np.int64)
        for row, (prompt, actions) in enumerate(zip(prompts, action_ids, strict=True)):
            end = len(prompt) + len(actions)
            input_ids[row, :end] = prompt + actions.tolist()
            labels[row, len(prompt):end] = np.where(valid[row], actions, IGNORE_INDEX)
            mask[row, :end] = 1
        return {'input_ids': input_ids, 'attention_mask': mask, 'labels': labels}
