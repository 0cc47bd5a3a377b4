"""Speculative decoding by prompt lookup: guess the next tokens by finding the latest tokens earlier
in the sequence and taking what followed them there.

Replies quote their prompts (code edits, retrieved passages, JSON echoing the input, a list being
continued), and a single decoding stream reads every weight once per token whatever the number of
tokens a pass takes: a pass over the guessed tokens checks them all for about the price of one.
The engine picks each position's token from the verifying pass as it would have picked it
decoding one at a time, and keeps the guesses only as far as they agree, so the output is what
decoding without guesses gives (and a seeded sampler draws the same numbers in the same order).
"""

from __future__ import annotations

import torch

MAX_NGRAM = 4  # the longest run of latest tokens looked for
MIN_NGRAM = 2  # a single token matches too often to predict anything
WINDOW = 8192  # how far back to look
FIRST_DRAFT = 4  # tokens guessed at first; doubled while guesses hold, cut when they fail
MAX_DRAFT = 16


def prompt_lookup(tokens: list[int], count: int) -> list[int]:
    """Up to `count` tokens that followed the latest earlier occurrence of the sequence's last
    MAX_NGRAM..MIN_NGRAM tokens (the longest that occurs); [] when none does."""
    if count < 1 or len(tokens) <= MIN_NGRAM:
        return []
    seen = torch.tensor(tokens[-WINDOW:], dtype=torch.long)
    for size in range(min(MAX_NGRAM, len(seen) - 1), MIN_NGRAM - 1, -1):
        # Every earlier run of `size` tokens (none may end at the last token: that is the run itself).
        runs = seen[:-1].unfold(0, size, 1)
        hits = (runs == seen[-size:]).all(dim=1).nonzero()
        if hits.numel():
            start = int(hits[-1]) + size
            return seen[start : start + count].tolist()
    return []


def next_draft_length(drafted: int, accepted: int) -> int:
    """How many to guess next time: more while every guess holds, fewer when they fail."""
    if accepted == drafted:
        return min(MAX_DRAFT, drafted * 2)
    return max(1, accepted + 1)
