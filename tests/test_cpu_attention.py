"""The CPU fast path's attention: grouped key/value heads read in place, values unchanged."""

from __future__ import annotations

import copy

import pytest
import torch

from heylook.engine import cpu_attention
from heylook.engine.batch_cache import cache_holding, cache_layers, new_cache
from heylook.models.loader import load_model
from heylook.registry.model_source import ModelSource
from heylook.types import LoadOptions


class Attention(torch.nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


def causal_mask(rows: int, queries: int, keys: int, padding: int) -> torch.Tensor:
    """Each query sees the keys up to its own position; the first row's first `padding` keys are padding."""
    mask = torch.tril(torch.ones(queries, keys, dtype=torch.bool), diagonal=keys - queries)
    mask = mask.expand(rows, 1, queries, keys).clone()
    mask[0, :, :, :padding] = False
    return mask


@pytest.mark.parametrize(
    ("rows", "heads", "groups", "queries", "keys", "padding"),
    [
        (1, 9, 3, 20, 300, 0),  # a new turn's tokens after a cached conversation (the demo model's heads)
        (1, 9, 3, 5, 40, 0),  # a speculation check
        (3, 4, 2, 7, 50, 6),  # a padded batch checking guesses
        (2, 8, 8, 4, 30, 3),  # one key/value head for all eight queries
        (1, 4, 1, 6, 20, 0),  # no grouping: transformers' own path
        (2, 6, 3, 1, 64, 5),  # one query token: transformers' own path
    ],
)
def test_grouped_attention_equals_transformers_sdpa_bit_for_bit(rows, heads, groups, queries, keys, padding):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(queries * keys)
    query = torch.randn(rows, heads, queries, 16)
    key, value = (torch.randn(rows, heads // groups, keys, 16) for _ in range(2))
    mask = causal_mask(rows, queries, keys, padding)
    module = Attention(groups)
    want, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)
    got, _ = cpu_attention.grouped_sdpa_attention(module, query, key, value, mask, scaling=0.25)
    assert got.shape == want.shape == (rows, queries, heads, 16)
    assert torch.equal(got, want)


def test_the_cpu_fast_path_switches_the_attention_and_a_cached_prefix_gives_the_same_logits(tiny_model_dir):
    """The loaded model attends through the grouped function; a chunk evaluated after a cached
    prefix gives exactly the logits transformers' SDPA gives on the same cache."""
    source = ModelSource(str(tiny_model_dir))
    fast = load_model(source, LoadOptions(), name="fast")
    plain = load_model(source, LoadOptions(fast_path=False), name="plain")
    try:
        model = fast.engine.model
        assert model.config._attn_implementation == cpu_attention.NAME
        assert plain.engine.model.config._attn_implementation == "sdpa"
        prompt = torch.tensor([list(range(5, 65))])
        logits = {}
        with torch.inference_mode():
            prefix = new_cache(model.config)
            model(input_ids=prompt[:, :48], cache=prefix, use_cache=True)
            for name in (cpu_attention.NAME, "sdpa"):
                model.set_attn_implementation(name)
                cache = cache_holding(model.config, copy.deepcopy(cache_layers(prefix)), 48, adopt=False)
                logits[name] = model(input_ids=prompt[:, 48:], cache=cache, use_cache=True).logits
        assert torch.equal(logits[cpu_attention.NAME], logits["sdpa"])
    finally:
        fast.close()
        plain.close()
