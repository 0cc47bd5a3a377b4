"""Finds stop sequences in streamed text, even when one spans several chunks."""

from __future__ import annotations


class StopMatcher:
    """Feed text as it arrives; get back what is safe to show.

    Text that could still turn out to be the start of a stop sequence is held back until the next
    chunk settles it, so a stop sequence is never shown, whichever tokens it is split across.
    """

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False
        self.matched: str | None = None  # the stop sequence found (the earliest in the text)

    def feed(self, text: str) -> str:
        """The part of `held + text` that can be shown now; sets `stopped` when a stop appears."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buffer = self._held + text
        found = [(at, stop) for stop in self._stops if (at := buffer.find(stop)) >= 0]
        if found:
            first, self.matched = min(found, key=lambda hit: hit[0])
            self.stopped = True
            self._held = ""
            return buffer[:first]
        keep = self._longest_stop_prefix_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """Whatever is held back, once no more text will come."""
        held, self._held = self._held, ""
        return held

    def _longest_stop_prefix_suffix(self, buffer: str) -> int:
        """Length of the longest end of `buffer` that some stop sequence starts with."""
        best = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:length]):
                    best = length
                    break
        return best
