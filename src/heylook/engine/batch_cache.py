"""The running batch's key/value cache: one row per sequence, left-padded to a common length.

A sequence joins with the cache of its own prompt evaluation and leaves by having its row dropped,
both between two forward passes. Rows are aligned on the right (the newest token of every row in
the last column) so one decode step appends one column for all; the attention mask hides each
row's padding and explicit position ids give every row its own positions, so a row computes what
it would compute alone.

Keys and values grow in place (GrowingLayer): transformers' DynamicLayer copies a layer's whole
cache on every step to append one column, which costs more the longer the context gets.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from heylook.engine.prefix_cache import buffer_bytes

# Spare columns a GrowingLayer allocates beyond what it holds: a full copy only every this many tokens.
GROWTH_COLUMNS = 256


class GrowingLayer(DynamicLayer):
    """A DynamicLayer that appends into spare room instead of concatenating.

    `keys` and `values` are views of the first columns of larger buffers; a step writes its new
    column into the room after them. When the room runs out the buffers are reallocated with
    GROWTH_COLUMNS more. Whoever assigns `keys` and `values` directly (BatchCache, when rows join
    or leave) hands over new tensors, which the next update copies into fresh buffers.
    """

    _key_room: torch.Tensor | None = None
    _value_room: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._key_room = self._value_room = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        held = self.get_seq_length()
        length = held + key_states.shape[-2]
        key_room, value_room = self.room_for(length, key_states, value_states)
        key_room[:, :, held:length].copy_(key_states)
        value_room[:, :, held:length].copy_(value_states)
        self.hold(length)
        return _tensor(self.keys), _tensor(self.values)

    def room_for(
        self, length: int, key_like: torch.Tensor, value_like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Buffers of at least `length` columns whose first columns are this layer's keys and
        values (reallocated, with GROWTH_COLUMNS more, when they are not); `key_like` and
        `value_like` give the rows, heads and head size of new buffers."""
        key_room, value_room = self._key_room, self._value_room
        if (
            key_room is None
            or value_room is None
            or not _is_view_of(_tensor(self.keys), key_room)
            or length > key_room.shape[-2]
        ):
            held = self.get_seq_length()
            key_room, value_room = self._reallocate(key_like, value_like, held, length + GROWTH_COLUMNS)
        return key_room, value_room

    def hold(self, length: int) -> None:
        """The layer holds the first `length` columns of its buffers (written by whoever called
        `room_for`)."""
        assert self._key_room is not None and self._value_room is not None
        self.keys = self._key_room[:, :, :length]
        self.values = self._value_room[:, :, :length]

    def _reallocate(
        self, key_states: torch.Tensor, value_states: torch.Tensor, held: int, columns: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        key_room = key_states.new_empty((*key_states.shape[:2], columns, key_states.shape[3]))
        value_room = value_states.new_empty((*value_states.shape[:2], columns, value_states.shape[3]))
        if held:
            key_room[:, :, :held].copy_(_tensor(self.keys))
            value_room[:, :, :held].copy_(_tensor(self.values))
        self._key_room, self._value_room = key_room, value_room
        return key_room, value_room


def _is_view_of(tensor: torch.Tensor, buffer: torch.Tensor) -> bool:
    """`tensor` is what the last update handed out: the leading columns of `buffer`, all its rows."""
    return tensor.data_ptr() == buffer.data_ptr() and tensor.shape[0] == buffer.shape[0]


def new_cache(config) -> DynamicCache:
    """A DynamicCache for this model whose full-attention layers grow in place."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    if cache.layer_class_to_replicate is DynamicLayer:
        cache.layer_class_to_replicate = GrowingLayer
    return cache


def cache_holding(
    config, buffers: list[tuple[torch.Tensor, torch.Tensor]], length: int, *, adopt: bool
) -> DynamicCache:
    """A growing cache holding the first `length` positions of these keys and values (one row
    each). Adopting them, it writes its next tokens into them, after `length`, while they have
    room (no copy of what they hold: they must be no one else's); otherwise it only reads them,
    and its first update copies them into room of its own."""
    cache = new_cache(config)
    for layer, (keys, values) in zip(_layers(cache), buffers, strict=True):
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values = keys[:, :, :length], values[:, :, :length]
        if adopt:
            layer._key_room, layer._value_room = keys, values
    return cache


def cache_layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's keys and values, as the prefix cache keeps them: a growing layer's whole
    buffers (its tokens first, then its spare room), so a later sequence can take them over."""
    kept = []
    for layer in _layers(cache):
        keys, values = _tensor(layer.keys), _tensor(layer.values)
        rooms = getattr(layer, "_key_room", None), getattr(layer, "_value_room", None)
        if rooms[0] is not None and rooms[1] is not None and _is_view_of(keys, rooms[0]):
            keys, values = rooms[0], rooms[1]
        kept.append((keys, values))
    return kept


def held_bytes(caches: list[DynamicCache]) -> int:
    """The bytes these caches' keys and values keep alive, spare room included, each storage once
    (a sequence's own cache may be a batch's too)."""
    held = (
        [layer.keys, layer.values, getattr(layer, "_key_room", None), getattr(layer, "_value_room", None)]
        for cache in caches
        for layer in _layers(cache)
    )
    return buffer_bytes([t for t in tensors if isinstance(t, torch.Tensor)] for tensors in held)


def truncate_cache(cache: DynamicCache, length: int) -> None:
    """Keep the first `length` positions of every layer; a growing layer keeps its room, so its
    next update writes over what was cut."""
    for layer in _layers(cache):
        layer.keys = _tensor(layer.keys)[:, :, :length]
        layer.values = _tensor(layer.values)[:, :, :length]


def can_batch(cache: DynamicCache) -> bool:
    """Rows of this cache can be padded, joined and dropped: every layer keeps all its positions.

    Sliding-window and linear-attention layers keep a rolling or folded state that padding would
    corrupt; models with them run their sequences one at a time.
    """
    return bool(cache.layers) and all(type(layer) in (DynamicLayer, GrowingLayer) for layer in cache.layers)


class BatchCache:
    """Keys and values of the sequences that decode together, with their padding mask and positions."""

    def __init__(self, config) -> None:
        self._config = config
        self.clear()

    def clear(self) -> None:
        self.cache = new_cache(self._config)
        self.mask = torch.zeros((0, 0), dtype=torch.long)  # (rows, length): 1 where a real token is
        self.positions: list[int] = []  # the position each row's next token takes

    @property
    def rows(self) -> int:
        return len(self.positions)

    @property
    def length(self) -> int:
        return self.mask.shape[1]

    def add(self, cache: DynamicCache, length: int) -> None:
        """Append a row holding `cache`, one sequence's evaluated prompt of `length` tokens."""
        if self.rows == 0:
            self.cache = cache
            self.mask = torch.ones((1, length), dtype=torch.long, device=_device(cache))
            self.positions = [length]
            return
        width = max(self.length, length)
        for mine, theirs in zip(_layers(self.cache), _layers(cache), strict=True):
            keys = _joined([_tensor(mine.keys), _tensor(theirs.keys)], width)
            values = _joined([_tensor(mine.values), _tensor(theirs.values)], width)
            _hold(mine, keys, values, width)
        row = torch.ones((1, length), dtype=torch.long, device=self.mask.device)
        self.mask = torch.cat([_pad_left(self.mask, width), _pad_left(row, width)])
        self.positions.append(length)

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows, in this order; columns no kept row uses are dropped."""
        if not rows:
            self.clear()
            return
        if rows == list(range(self.rows)):
            return
        index = torch.tensor(rows, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        used = mask.any(dim=0).nonzero()
        start = int(used[0]) if used.numel() else mask.shape[1]
        width = mask.shape[1] - start
        for layer in _layers(self.cache):
            keys = _joined([_tensor(layer.keys)[row : row + 1, :, start:] for row in rows], width)
            values = _joined([_tensor(layer.values)[row : row + 1, :, start:] for row in rows], width)
            _hold(layer, keys, values, width)
        self.mask = mask[:, start:]
        self.positions = [self.positions[row] for row in rows]

    def row_layers(self, row: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A copy of one row's keys and values without its padding (its `positions[row]` tokens),
        in buffers with GROWTH_COLUMNS of room after them, as a sequence's own cache has."""
        start, held = self.length - self.positions[row], self.positions[row]
        copies = []
        for layer in _layers(self.cache):
            pair = []
            for tensor in (_tensor(layer.keys), _tensor(layer.values)):
                buffer = tensor.new_empty((1, tensor.shape[1], held + GROWTH_COLUMNS, tensor.shape[3]))
                buffer[:, :, :held].copy_(tensor[row : row + 1, :, start:])
                pair.append(buffer)
            copies.append((pair[0], pair[1]))
        return copies

    def sole_row_buffers(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """The batch's own keys and values when it holds one row without padding (its tokens
        first, then its room), else None. For a caller that clears the batch next: handing them
        over costs nothing, where `row_layers` copies (~0.1 s for 2,000 tokens of the demo model,
        which a chat's next turn would wait for)."""
        if self.rows != 1 or self.positions[0] != self.length:
            return None
        return cache_layers(self.cache)

    def step_inputs(self, tokens: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention mask and position ids for a forward pass of `tokens` new tokens per row."""
        mask = torch.cat([self.mask, self.mask.new_ones((self.rows, tokens))], dim=1)
        positions = torch.tensor(self.positions, device=self.mask.device).unsqueeze(1)
        return mask, positions + torch.arange(tokens, device=self.mask.device)

    def stepped(self, mask: torch.Tensor) -> None:
        """Record the forward pass that `step_inputs` prepared: every row is that many tokens longer."""
        added = mask.shape[1] - self.length
        self.mask = mask
        self.positions = [position + added for position in self.positions]

    def truncate(self, length: int) -> None:
        """Keep only the first `length` positions of a batch of one row (the tokens of a guess
        that failed go). The layers keep their room, so the next step writes over what is cut."""
        assert self.rows == 1 and self.positions[0] == self.length, "one row, without padding"
        truncate_cache(self.cache, length)
        self.mask = self.mask[:, :length]
        self.positions = [length]


def _joined(parts: list[torch.Tensor], width: int) -> torch.Tensor:
    """The parts' rows, one after the other, each left-padded with zeros to `width` columns, in
    one buffer with GROWTH_COLUMNS of room after them. Written once in place: concatenating padded
    copies took 4.4 s to join a 4,000-token row to 8 short ones (30 layers), this takes ~0.2 s."""
    first = parts[0]
    rows = sum(part.shape[0] for part in parts)
    buffer = first.new_empty((rows, first.shape[1], width + GROWTH_COLUMNS, first.shape[3]))
    row = 0
    for part in parts:
        pad = width - part.shape[-2]
        block = buffer[row : row + part.shape[0]]
        block[:, :, :pad].zero_()  # padding is masked, but must not be NaN: 0 x NaN is NaN
        block[:, :, pad:width].copy_(part)
        row += part.shape[0]
    return buffer


def _hold(layer: Any, keys: torch.Tensor, values: torch.Tensor, width: int) -> None:
    """The layer holds the first `width` columns of these buffers; a growing one writes its next
    columns into the rest."""
    layer.keys, layer.values = keys[:, :, :width], values[:, :, :width]
    if isinstance(layer, GrowingLayer):
        layer._key_room, layer._value_room = keys, values


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad the sequence dimension (-2 for keys and values, -1 for the mask) on the left to `width`."""
    dim = -1 if tensor.dim() == 2 else -2
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _device(cache: DynamicCache) -> torch.device:
    return _layers(cache)[0].keys.device


def _layers(cache: DynamicCache) -> list[Any]:
    """The cache's layers, each with `keys` and `values` (the only kind batching takes: can_batch)."""
    return list(cache.layers)


def _tensor(value: torch.Tensor | None) -> torch.Tensor:
    assert value is not None, "an initialised layer holds its keys and values"
    return value
