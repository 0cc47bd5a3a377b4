"""The `openai` provider: any server with an OpenAI-compatible API (vLLM, TGI, llama.cpp's server,
another heylook), at the alias's base_url, with the token in the alias's token_env if it needs one."""

from __future__ import annotations

from heylook.providers.remote import RemoteProvider


class OpenAICompatibleProvider(RemoteProvider):
    name = "openai"
