"""A thinking budget: counts one sequence's reasoning tokens and, once the budget is spent, has the
engine write the close marker in place of what the model would sample."""

from __future__ import annotations

from collections import deque

from heylook.types import ThinkingBudget


class ThinkingCut:
    """Follows a sequence's text to see where its reasoning opens (in the prompt, or with the open
    marker written) and closes. Every token written inside the reasoning counts; at the budget,
    `forced` gives the cut's tokens one by one, and after them the model goes on as it likes. Only
    the first reasoning section is budgeted; one the model closes itself is left alone."""

    def __init__(self, budget: ThinkingBudget) -> None:
        self._budget = budget
        self.inside = budget.inside
        self.spent = 0  # tokens written inside the reasoning
        self.over = False  # closed (by the model, or by the cut): nothing more to watch
        self._tail = ""  # recent text, long enough to hold a marker split across tokens
        self._cut: deque[int] = deque()
        self._cutting = False

    def forced(self) -> int | None:
        """The token to write next instead of sampling, or None to sample."""
        if not self._cutting and self.inside and not self.over and self.spent >= self._budget.tokens:
            self._cutting = True
            self._cut.extend(self._budget.cut)
        return self._cut.popleft() if self._cut else None

    def wrote(self, text: str) -> None:
        """A token was written (sampled or forced) and this is the text it brought."""
        if self.over:
            return
        if self._cutting:
            self.over = not self._cut
            return
        marker = self._budget.close if self.inside else self._budget.open
        if self.inside:
            self.spent += 1
        self._tail += text
        found = self._tail.find(marker)
        if found < 0:
            self._tail = self._tail[-len(marker) :]
        elif self.inside:
            self.over = True
        else:
            # The open marker's own token is not reasoning; text after it in the same token is.
            self.inside = True
            self._tail = self._tail[found + len(marker) :]
