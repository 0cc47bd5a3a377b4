"""Generating: the engine that steps sequences on a model (continuous batching), its KV cache,
sampler, stop sequences, detokenizer, grammar constraints and CPU kernels."""
