"""Chat turns beyond plain text: how each model family's template writes tool calls and reasoning,
rendering conversations with tools through the template, constraining replies to the family's
syntax, and reading calls and reasoning back out of the text the model writes."""
