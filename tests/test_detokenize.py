from __future__ import annotations

import pytest

from heylook.engine.detokenize import IncrementalDetokenizer

TEXTS = [
    "The capital of France is Paris.",
    "héllo wörld, café naïve",
    "日本語のテキスト 🙂🚀",
    "  leading spaces and\nnew lines\n\n",
]


@pytest.mark.parametrize("text", TEXTS)
def test_pushed_text_equals_full_decode(tiny_tokenizer, text: str) -> None:
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tiny_tokenizer)
    pieces = [detok.push(i) for i in ids]
    pieces.append(detok.flush())
    assert "".join(pieces) == tiny_tokenizer.decode(ids, skip_special_tokens=True) == text
    assert not any("\ufffd" in p for p in pieces)


def test_multibyte_characters_split_across_tokens_are_held(tiny_tokenizer) -> None:
    ids = tiny_tokenizer("🙂", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1, "the test needs a character spread over several tokens"
    detok = IncrementalDetokenizer(tiny_tokenizer)
    assert [detok.push(i) for i in ids] == [""] * (len(ids) - 1) + ["🙂"]


def test_special_tokens_are_skipped(tiny_tokenizer) -> None:
    detok = IncrementalDetokenizer(tiny_tokenizer)
    eos = tiny_tokenizer.eos_token_id
    text = "".join(detok.push(i) for i in [*tiny_tokenizer("ok", add_special_tokens=False)["input_ids"], eos])
    assert text == "ok"


def test_an_incomplete_character_at_the_end_is_flushed(tiny_tokenizer) -> None:
    ids = tiny_tokenizer("🙂", add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tiny_tokenizer)
    assert detok.push(ids[0]) == ""
    assert detok.flush() == tiny_tokenizer.decode(ids[:1])
