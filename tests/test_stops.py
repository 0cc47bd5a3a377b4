from __future__ import annotations

import pytest

from heylook.engine.stops import StopMatcher


@pytest.mark.parametrize(
    ("stops", "pieces", "shown", "stopped"),
    [
        ((), ["a", "b"], "ab", False),
        (("END",), ["hello ", "world"], "hello world", False),
        (("END",), ["hello E", "N", "D more"], "hello ", True),  # spans three chunks
        (("END",), ["abcEN"], "abcEN", False),  # held back, then released by flush
        (("END",), ["xEND"], "x", True),
        (("END",), ["END"], "", True),
        (("ab", "b"), ["xab"], "x", True),  # the earliest stop wins
        (("bc", "abcd"), ["ab", "cd"], "", True),  # "abcd" starts first, at 0
        (("\n\n",), ["line\n", "\nnext"], "line", True),
        (("aab",), ["a", "a", "a", "b"], "a", True),  # overlapping prefix
        (("aab",), ["a", "a", "a", "c"], "aaac", False),
        (("Paris",), ["The capital is ", "Par", "is."], "The capital is ", True),
    ],
)
def test_stop_matching(stops, pieces, shown, stopped) -> None:
    matcher = StopMatcher(stops)
    out = "".join(matcher.feed(piece) for piece in pieces)
    if not matcher.stopped:
        out += matcher.flush()
    assert out == shown
    assert matcher.stopped is stopped


def test_nothing_is_shown_after_a_stop() -> None:
    matcher = StopMatcher(("x",))
    assert matcher.feed("axb") == "a"
    assert matcher.feed("more") == ""
    assert matcher.flush() == ""


def test_held_text_is_released_once_it_cannot_be_a_stop() -> None:
    matcher = StopMatcher(("STOP",))
    assert matcher.feed("ST") == ""
    assert matcher.feed("ay") == "STay"
