"""Keys and values of earlier requests, kept so a later request that starts with the same tokens
evaluates only the rest of its prompt.

A chat client resends the whole conversation every turn, and agents resend their long system
prompt and tool list with every call: the cache turns those into a copy instead of a forward pass.
Each entry is one finished (or preempted) sequence's tokens and its cache, one row; a lookup finds
the entry sharing the longest prefix with a prompt, whichever API the request came through. An
entry that another one extends is dropped (a conversation's turn 3 covers its turn 2), and the
least recently used go first when the engine needs the memory for running sequences, or when
the entries' buffers pass the cache's own bound in bytes (`--prefix-cache-mb`). Both count what the
entries' buffers really hold, their spare room included, not just their tokens: an idle server's
prefix cache once held twice its token count, up to the model's whole KV pool (6 GB for the demo).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from heylook.settings import DEFAULT_PREFIX_CACHE_BYTES

# Shorter prefixes are not worth a copy of the cache: a forward pass over them costs about as much.
MIN_PREFIX_TOKENS = 16
MAX_ENTRIES = 256  # the lookup compares a prompt with every entry
# A hit this close to an entry's end takes the entry over (the sequence continues it, as a chat's
# next turn does) rather than copying it; a shorter one (a shared system prompt) copies.
TAKE_WITHIN = 64


@dataclass
class Entry:
    tokens: torch.Tensor  # 1-D, on the CPU: what the cache holds, in order
    # Each layer's keys and values, (1, heads, columns, dim): the tokens' in the first `length`
    # columns, room to grow into after them.
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    nbytes: int = 0  # what its buffers hold (set by PrefixCache.add)
    columns: int = 0  # tokens its buffers have room for, the spare room included

    @property
    def length(self) -> int:
        return int(self.tokens.shape[0])


@dataclass(frozen=True)
class Hit:
    entry: Entry
    length: int  # how many leading tokens of the prompt the entry holds

    @property
    def continues(self) -> bool:
        """The prompt goes on from (nearly) the end of the entry: it may take the entry over."""
        return self.length >= self.entry.length - TAKE_WITHIN


class PrefixCache:
    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = DEFAULT_PREFIX_CACHE_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, Entry] = OrderedDict()  # least recently used first
        self._next_key = 0
        self.tokens_held = 0  # the entries' tokens
        self.columns_held = 0  # the tokens their buffers have room for: what the KV pool counts
        self.bytes_held = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, prompt: list[int], limit: int) -> Hit | None:
        """The entry sharing the longest prefix with `prompt`, up to `limit` tokens of it; None
        under MIN_PREFIX_TOKENS. The entry becomes the most recently used."""
        if not self._entries or limit < MIN_PREFIX_TOKENS:
            return None
        wanted = torch.tensor(prompt[:limit], dtype=torch.long)
        best_key, best = -1, 0
        for key, entry in self._entries.items():
            shared = _shared_prefix(entry.tokens, wanted)
            if shared > best:
                best_key, best = key, shared
        if best < MIN_PREFIX_TOKENS:
            return None
        self._entries.move_to_end(best_key)
        return Hit(self._entries[best_key], best)

    def take(self, entry: Entry) -> None:
        """Hand an entry over to a sequence that continues it (no copy): it leaves the cache. The
        sequence leaves its own, longer, cache here when it ends, which still holds this prefix."""
        for key, held in self._entries.items():
            if held is entry:
                self._drop(key)
                return

    def add(self, tokens: list[int], layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Keep a sequence's cache (`layers` hold exactly `tokens`, and are no one else's to write)."""
        if len(tokens) < MIN_PREFIX_TOKENS:
            return
        nbytes = buffer_bytes(layers)
        if nbytes > self.max_bytes:
            return
        held = torch.tensor(tokens, dtype=torch.long)
        for key, entry in list(self._entries.items()):
            shared = _shared_prefix(entry.tokens, held)
            if shared == len(tokens):  # already held, as this or a longer sequence
                self._entries.move_to_end(key)
                return
            if shared == entry.length:  # the new one extends it
                self._drop(key)
        while len(self._entries) >= self.max_entries or self.bytes_held + nbytes > self.max_bytes:
            self.evict_oldest()
        entry = Entry(held, layers, nbytes, max(len(tokens), buffer_columns(layers)))
        self._entries[self._next_key] = entry
        self._next_key += 1
        self.tokens_held += entry.length
        self.columns_held += entry.columns
        self.bytes_held += entry.nbytes

    def evict_oldest(self) -> int:
        """Drop the least recently used entry; the columns it held (0 when empty)."""
        if not self._entries:
            return 0
        key = next(iter(self._entries))
        return self._drop(key)

    def clear(self) -> None:
        self._entries.clear()
        self.tokens_held = self.columns_held = self.bytes_held = 0

    def _drop(self, key: int) -> int:
        entry = self._entries.pop(key)
        self.tokens_held -= entry.length
        self.columns_held -= entry.columns
        self.bytes_held -= entry.nbytes
        return entry.columns


def _shared_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many leading tokens `a` and `b` have in common."""
    n = min(a.shape[0], b.shape[0])
    if n == 0:
        return 0
    differ = (a[:n] != b[:n]).nonzero()
    return int(differ[0]) if differ.numel() else n


def buffer_bytes(layers: Iterable[Iterable[torch.Tensor]]) -> int:
    """The bytes these keys and values keep alive: their whole storages (a view keeps its base's),
    each counted once."""
    storages = {}
    for pair in layers:
        for tensor in pair:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def buffer_columns(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """How many tokens the first layer's key storage has room for (every layer is alike)."""
    if not layers:
        return 0
    keys = layers[0][0]
    per_column = keys.shape[0] * keys.shape[1] * keys.shape[3] * keys.element_size()
    return keys.untyped_storage().nbytes() // per_column if per_column else 0
