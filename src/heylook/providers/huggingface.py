"""The `huggingface` provider: Hugging Face Inference Providers, through the router's
OpenAI-compatible API. Model ids may carry the router's suffixes: `:sambanova` (a provider),
`:fastest`, `:cheapest`, `:preferred`."""

from __future__ import annotations

import logging
import os
import time

import openai

from heylook.errors import MissingToken
from heylook.metrics import Metrics
from heylook.providers.base import ProviderHealth
from heylook.providers.remote import RemoteGeneration, RemoteProvider
from heylook.registry.aliases import Alias
from heylook.types import Embeddings, EmbedRequest, GenerationRequest, RemoteModel

log = logging.getLogger(__name__)

ROUTER_URL = "https://router.huggingface.co/v1"
# HEYLOOK_HF_ROUTER points heylook at another router (a proxy, or a test server).
ROUTER_ENV = "HEYLOOK_HF_ROUTER"
TOKEN_VARIABLES = ("HF_TOKEN", "HF_API_KEY")
CATALOG_TTL = 600.0
# Offered when the router's own list cannot be had (no token, no network): well-known chat models
# the router serves. Marked as heylook's list wherever it is shown.
CURATED = (
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.3-70B-Instruct",
    "Qwen/Qwen2.5-72B-Instruct",
    "Qwen/Qwen2.5-Coder-32B-Instruct",
    "deepseek-ai/DeepSeek-V3",
    "deepseek-ai/DeepSeek-R1",
    "google/gemma-2-9b-it",
    "mistralai/Mistral-7B-Instruct-v0.3",
    "openai/gpt-oss-120b",
)
NO_TOKEN = "no Hugging Face token: set HF_TOKEN (or HF_API_KEY), or log in with `hf auth login`"


class HuggingFaceProvider(RemoteProvider):
    name = "huggingface"

    def __init__(
        self, base_url: str | None = None, token_env: str | None = None, metrics: Metrics | None = None
    ):
        super().__init__(base_url or os.environ.get(ROUTER_ENV) or ROUTER_URL, token_env, metrics)
        self._catalog: tuple[float, list[RemoteModel]] | None = None

    def token(self) -> str | None:
        """The alias's own variable if it names one; else HF_TOKEN, HF_API_KEY, then the token
        huggingface_hub stored at login."""
        if self.token_env:
            return os.environ.get(self.token_env)
        for variable in TOKEN_VARIABLES:
            if os.environ.get(variable):
                return os.environ[variable]
        from huggingface_hub import get_token

        return get_token()

    def _token_hint(self) -> str:
        return (
            f"set {self.token_env} to a valid token"
            if self.token_env
            else NO_TOKEN.replace("no Hugging", "a Hugging")
        )

    async def start(self, alias: Alias, request: GenerationRequest) -> RemoteGeneration:
        self._need_token(alias)
        return await super().start(alias, request)

    async def embed(self, alias: Alias, request: EmbedRequest) -> Embeddings:
        self._need_token(alias)
        return await super().embed(alias, request)

    def _need_token(self, alias: Alias) -> None:
        """MissingToken (a 503 saying where to put one) before asking the router without a token."""
        if not self.token():
            missing = f"{self.token_env} is not set" if self.token_env else NO_TOKEN
            raise MissingToken(f"{alias.name!r} runs on Hugging Face Inference Providers: {missing}")

    async def list_models(self) -> list[RemoteModel]:
        """The router's chat models with their providers' details (status, context length, pricing,
        tools), cached for CATALOG_TTL; heylook's curated list, so marked, when it cannot be had."""
        now = time.monotonic()
        if self._catalog and now - self._catalog[0] < CATALOG_TTL:
            return self._catalog[1]
        try:
            page = await self._client(10.0).models.list()
            models = [
                RemoteModel(
                    m.id,
                    getattr(m, "owned_by", None) or "huggingface",
                    list(getattr(m, "providers", None) or []),
                )
                async for m in page
            ]
        except openai.APIError as error:
            log.info("the Hugging Face router's model list is out of reach (%s); offering heylook's list",
                     type(error).__name__)  # fmt: skip
            models = [RemoteModel(name, name.split("/")[0], fallback_list=True) for name in CURATED]
        self._catalog = (now, models)
        return models

    async def health(self) -> ProviderHealth:
        if not self.token():
            return ProviderHealth(self.name, "missing token", NO_TOKEN, self.base_url)
        return await super().health()
