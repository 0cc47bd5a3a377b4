"""Where a request is served. Each provider is one module with a class that can start a generation
for an alias, list the models it offers, and say how it is doing; adding one is a module plus an
entry here. `backends.Backends` picks the provider for each alias and walks fallback chains."""

from __future__ import annotations

# provider name -> "module:class", imported when first used, so models.yaml can be checked against
# the names without importing any provider.
# (The names are models.yaml's: heylook.registry.aliases.PROVIDERS lists the same.)
KINDS = {
    "local": "heylook.providers.local:LocalProvider",
    "huggingface": "heylook.providers.huggingface:HuggingFaceProvider",
    "openai": "heylook.providers.openai_compatible:OpenAICompatibleProvider",
}
