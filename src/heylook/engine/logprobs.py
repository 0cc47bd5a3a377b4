"""Log probabilities of generated tokens, as both APIs report them: each token's own text and
bytes, its log probability under the model's raw distribution, and the most likely alternatives.
`LogprobTrail` keeps them in step with the text a sequence shows, whatever the detokenizer holds
back and the stop sequences cut."""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import replace
from typing import Any

import torch

from heylook.types import LOGPROB_FLOOR, Logprob, TokenLogprob

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@functools.cache
def _byte_level_bytes() -> dict[str, int]:
    """GPT-2's byte-level alphabet, read backwards: each printable stand-in to its byte."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    stand_ins = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            stand_ins.append(256 + extra)
            extra += 1
    return {chr(char): byte for byte, char in zip(printable, stand_ins, strict=True)}


def _decoder_types(tokenizer: Any) -> set[str]:
    """The types of the fast tokenizer's decoders (ByteLevel, ByteFallback, ...); empty for others."""
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    if decoder is None:
        return set()
    try:
        state = json.loads(decoder.__getstate__())
    except (AttributeError, TypeError, ValueError):
        return set()
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("type"), str):
                found.add(node["type"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(state)
    return found


class TokenPieces:
    """Each token's own bytes, as the tokenizer's vocabulary spells them: byte-level BPE's stand-in
    characters read back to bytes, sentencepiece's ▁ as a space and <0xNN> as that byte, added
    tokens as written. Worked out once per token, on first use."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        kinds = _decoder_types(tokenizer)
        self._byte_level = "ByteLevel" in kinds
        self._byte_fallback = "ByteFallback" in kinds or "Metaspace" in kinds
        self._added = {
            int(i): str(getattr(t, "content", t))
            for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()
        }
        self._cache: dict[int, tuple[str, bytes]] = {}

    def piece(self, token_id: int) -> tuple[str, bytes]:
        """The token's text (its bytes as UTF-8, U+FFFD for a piece of a character) and bytes."""
        found = self._cache.get(token_id)
        if found is None:
            raw = self._bytes(token_id)
            found = self._cache[token_id] = (raw.decode("utf-8", errors="replace"), raw)
        return found

    def _bytes(self, token_id: int) -> bytes:
        if token_id in self._added:
            return self._added[token_id].encode()
        spelled = self._tokenizer.convert_ids_to_tokens(token_id)
        if isinstance(spelled, str):
            if self._byte_level:
                table = _byte_level_bytes()
                if all(char in table for char in spelled):
                    return bytes(table[char] for char in spelled)
            if self._byte_fallback:
                byte = _BYTE_TOKEN.fullmatch(spelled)
                return bytes([int(byte.group(1), 16)]) if byte else spelled.replace("▁", " ").encode()
        return str(self._tokenizer.decode([token_id], skip_special_tokens=False)).encode()


def _finite(value: float) -> float:
    return value if math.isfinite(value) else LOGPROB_FLOOR


def token_logprob(pieces: TokenPieces, logprobs: torch.Tensor, token_id: int, alternatives: int) -> Logprob:
    """The token's entry: `logprobs` is the step's log_softmax of the raw logits, shape (vocab,)."""
    top: tuple[TokenLogprob, ...] = ()
    if alternatives > 0:
        values, ids = torch.topk(logprobs, min(alternatives, logprobs.shape[-1]))
        top = tuple(_entry(pieces, i, v) for v, i in zip(values.tolist(), ids.tolist(), strict=True))
    text, raw = pieces.piece(token_id)
    return Logprob(text, _finite(float(logprobs[token_id])), raw, top)


def _entry(pieces: TokenPieces, token_id: int, value: float) -> TokenLogprob:
    text, raw = pieces.piece(token_id)
    return TokenLogprob(text, _finite(value), raw)


class LogprobTrail:
    """A sequence's logprobs kept in step with its text: each token is stamped with where its text
    starts in the text the detokenizer has produced, and goes out once the text shown reaches past
    that point (a token whose text is held back, a piece of a character or a possible stop
    sequence, waits for it). Text a stop sequence cuts is never shown, so its tokens never go out."""

    def __init__(self) -> None:
        self._waiting: list[Logprob] = []
        self._produced = 0  # characters the detokenizer has given out
        self._shown = 0  # characters that went to the client

    def produced(self, entry: Logprob, text: str) -> None:
        """The detokenizer turned the token of `entry` into `text`. That text may begin with what
        earlier tokens held back (the start of a character, which may turn out to be no character:
        then U+FFFD): the token's own text starts after it."""
        start = self._produced
        if entry.token and text.endswith(entry.token):
            start += len(text) - len(entry.token)
        self._waiting.append(replace(entry, offset=start))
        self._produced += len(text)

    def shown(self, text: str) -> tuple[Logprob, ...]:
        """`text` went out: the tokens whose text starts within what has been shown so far."""
        self._shown += len(text)
        count = 0  # the offsets only grow: the tokens ready are the first ones
        while count < len(self._waiting) and self._waiting[count].offset < self._shown:
            count += 1
        ready, self._waiting = tuple(self._waiting[:count]), self._waiting[count:]
        return ready

    def rest(self) -> tuple[Logprob, ...]:
        """Once the sequence ends without a stop sequence: every token still waiting."""
        rest, self._waiting = tuple(self._waiting), []
        return rest
