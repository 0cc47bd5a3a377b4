"""Turns token ids into text one token at a time, without splitting characters or losing spaces."""

from __future__ import annotations

from typing import Protocol


class Decoder(Protocol):
    def decode(self, ids: list[int], *, skip_special_tokens: bool = ...) -> str: ...


# A window of a few tokens before the new ones gives tokenizers the context they need to decide
# leading spaces (sentencepiece) without re-decoding the whole output every step.
_CONTEXT_TOKENS = 6


class IncrementalDetokenizer:
    """Decodes a growing list of ids; `push` returns only the text the newest id completed.

    The text pushed out, joined, equals decoding all ids at once. A token that ends inside a
    multi-byte character (decoded as U+FFFD) is held until the character is complete.
    """

    def __init__(self, tokenizer: Decoder, hidden: frozenset[int] | None = None) -> None:
        """`hidden`: the special tokens to leave out, where some special tokens must show (a
        family's tool-call markers); None leaves out every special token."""
        self._tokenizer = tokenizer
        self._hidden = hidden
        self.ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Text still held back (an incomplete character at the very end)."""
        return self._advance(final=True)

    def _decode(self, ids: list[int]) -> str:
        if self._hidden is None:
            return self._tokenizer.decode(ids, skip_special_tokens=True)
        return self._tokenizer.decode([i for i in ids if i not in self._hidden], skip_special_tokens=False)

    def _advance(self, *, final: bool) -> str:
        prefix = self._decode(self.ids[self._prefix_offset : self._read_offset])
        full = self._decode(self.ids[self._prefix_offset :])
        if len(full) <= len(prefix) or (full.endswith("\ufffd") and not final):
            return ""
        new_text = full[len(prefix) :]
        self._read_offset = len(self.ids)
        self._prefix_offset = max(0, self._read_offset - _CONTEXT_TOKENS)
        return new_text
