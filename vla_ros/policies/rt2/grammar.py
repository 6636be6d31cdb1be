"""The token grammar of an action written as text, for constrained decoding (pure Python).

The 32k SentencePiece tokenizer writes ``"128 7 255"`` as ``▁ 1 2 8 ▁ 7 ▁ 2 5 5``: a lone
word-boundary piece before each number and one piece per digit. An action is therefore
``(SEP DIGIT{1,3}){n} EOS`` with every number a canonical integer below ``num_bins`` (no
leading zeros). :meth:`ActionGrammar.allowed` returns the tokens that keep a partial
output on that path, so a decoder restricted to them always ends with text that
:func:`vla_ros.actions.tokenizers.text_to_bins` accepts.
"""

from __future__ import annotations

from collections.abc import Sequence

SEPARATOR_PIECE = '\u2581'  # SentencePiece's word-boundary marker


class ActionGrammar:
    """Valid next tokens for ``num_values`` integers in ``[0, num_bins)`` written as text."""

    def __init__(self, separator_id: int, digit_ids: Sequence[int], eos_id: int,
                 num_values: int, num_bins: int = 256):
        if len(digit_ids) != 10 or len(set(digit_ids)) != 10:
            raise ValueError(f'need 10 distinct digit token ids (0-9), got {digit_ids!r}')
        if separator_id in digit_ids or eos_id in digit_ids or separator_id == eos_id:
            raise ValueError('separator, digit and EOS token ids must all differ')
        if num_values < 1 or num_bins < 2:
            raise ValueError(f'need num_values >= 1 and num_bins >= 2, got {num_values}, '
                             f'{num_bins}')
        self.separator_id, self.eos_id = int(separator_id), int(eos_id)
        self.digit_ids = tuple(int(i) for i in digit_ids)
        self._digit_of = {tok: str(d) for d, tok in enumerate(self.digit_ids)}
        self.num_values, self.num_bins = int(num_values), int(num_bins)
        self.max_digits = len(str(num_bins - 1))

    @classmethod
    def from_tokenizer(cls, tokenizer, num_values: int, num_bins: int = 256) -> ActionGrammar:
        """Read the separator and digit ids from a SentencePiece-style tokenizer.

        Checks that the tokenizer really writes numbers digit by digit behind a lone
        separator; a tokenizer that merges digits would need a different grammar.
        """
        separator = tokenizer.convert_tokens_to_ids(SEPARATOR_PIECE)
        digits = [tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]
        unknown = tokenizer.unk_token_id
        if unknown in (separator, *digits):
            raise ValueError('the tokenizer has no lone separator piece or single-digit pieces')
        grammar = cls(separator, digits, tokenizer.eos_token_id, num_values, num_bins)
        values = [(num_bins - 1, 0, 10 % num_bins)[i % 3] for i in range(num_values)]
        ids = tokenizer.encode(' '.join(map(str, values)), add_special_tokens=False)
        if not grammar.accepts(ids + [grammar.eos_id]):
            raise ValueError(f'the tokenizer writes {values} as {ids}, outside the grammar')
        return grammar

    @property
    def max_length(self) -> int:
        """Most tokens a complete action can take (separators, digits and EOS)."""
        return self.num_values * (1 + self.max_digits) + 1

    def _parse(self, tokens: Sequence[int]):
        """Numbers written so far (digit strings), or None once off the grammar or done."""
        numbers: list[str] = []
        for tok in tokens:
            tok = int(tok)
            if tok == self.separator_id and (not numbers or numbers[-1]) \
                    and len(numbers) < self.num_values:
                numbers.append('')
            elif tok in self._digit_of and numbers and self._prefix_ok(
                    numbers[-1] + self._digit_of[tok]):
                numbers[-1] += self._digit_of[tok]
            else:  # EOS, or a token the grammar never allows here
                return None
        return numbers

    def allowed(self, tokens: Sequence[int]) -> list[int]:
        """Token ids that may follow the generated ``tokens``.

        After EOS, or on a path outside the grammar (only possible when unconstrained
        tokens were forced in), only EOS is allowed: the output then fails to parse and
        the policy refuses it rather than guessing.
        """
        numbers = self._parse(tokens)
        if numbers is None:
            return [self.eos_id]
        if not numbers:
            return [self.separator_id]
        current = numbers[-1]
        ids = [tok for d, tok in enumerate(self.digit_ids) if self._prefix_ok(current + str(d))]
        if current:
            ids.append(self.separator_id if len(numbers) < self.num_values else self.eos_id)
        return ids

    def _prefix_ok(self, digits: str) -> bool:
        if not digits:
            return True
        canonical = digits == '0' or not digits.startswith('0')
        return canonical and len(digits) <= self.max_digits and int(digits) < self.num_bins

    def accepts(self, tokens: Sequence[int], complete: bool = True) -> bool:
        """Whether ``tokens`` follow the grammar (and, if ``complete``, end with EOS).

        With ``complete=False`` a prefix of an action is accepted too.
        """
        for i, tok in enumerate(tokens):
            if int(tok) not in self.allowed(tokens[:i]):
                return False
            if int(tok) == self.eos_id:
                return i == len(tokens) - 1
        return not complete
