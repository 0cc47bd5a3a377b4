"""The Ollama translator: turns /api/chat and /api/generate bodies into the internal request the
OpenAI routes also produce, and leaves it (with the writer for Ollama's NDJSON replies) in the ASGI
scope's state for the one core generation path; /api/embed and /api/embeddings bodies likewise
become the internal embedding request. Bad requests are answered here, in Ollama's shape."""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from heylook.errors import HeylookError
from heylook.middleware.responses import send_json
from heylook.protocols import embeddings, ollama
from heylook.protocols.errors import ollama_error_body
from heylook.protocols.fields import parsed_off_loop
from heylook.types import EmbedRequest

log = logging.getLogger(__name__)

Translation = ollama.Translated | EmbedRequest

# Where the translated request goes in scope["state"]; the core route reads it from there.
TRANSLATED_KEY = "heylook.translated"
_TRANSLATORS: dict[str, Callable[[dict], Translation]] = {
    "/api/chat": ollama.parse_chat_request,
    "/api/generate": ollama.parse_generate_request,
    "/api/embed": embeddings.parse_ollama_embed,
    "/api/embeddings": embeddings.parse_ollama_embeddings,
}


class OllamaTranslator:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        translate = _TRANSLATORS.get(scope["path"]) if scope["type"] == "http" else None
        if translate is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            body = await _read_body(receive)
            if body is None:  # the client left before its request was in: nobody to answer
                return
            translated = await parsed_off_loop(body, translate)
        except HeylookError as error:
            await send_json(send, error.status, ollama_error_body(error), error.headers)
            return
        if isinstance(translated, ollama.Translated) and translated.ignored_options:
            log.debug("ignoring options heylook does not use: %s", ", ".join(translated.ignored_options))
        # The body is read: what the app receives from here on says whether the client is still there.
        state = {**scope.get("state", {}), TRANSLATED_KEY: translated}
        await self.app({**scope, "state": state}, receive, send)


def translated_request(scope: Scope) -> Translation | None:
    """What this middleware made of an Ollama request, for the core route."""
    return scope.get("state", {}).get(TRANSLATED_KEY)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body; None if the client disconnected first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
