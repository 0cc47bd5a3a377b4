"""Errors that reach clients: each knows its HTTP status; writers give it each API's shape."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HeylookError(Exception):
    status = 500
    kind = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        # HTTP headers the error response carries (Retry-After, say).
        self.headers: dict[str, str] = {}
        if status is not None:
            self.status = status


class InvalidRequest(HeylookError):
    status = 400
    kind = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    """A prompt longer than the model's context. Each API words it as its own server does
    (protocols.errors), since clients act on those words: Codex compacts on OpenAI's code
    context_length_exceeded, Claude Code on Anthropic's "prompt is too long: N tokens > M maximum".
    An upstream may not say the numbers: then they are None and `message` is what it said."""

    code = "context_length_exceeded"

    def __init__(
        self,
        prompt_tokens: int | None,
        context_length: int | None,
        model: str,
        *,
        param: str | None = None,
        message: str | None = None,
    ) -> None:
        if message is None:
            # Ollama's words first (its clients look for them), then the numbers.
            message = (
                f"the input length exceeds the context length: the prompt is {prompt_tokens} tokens; "
                f"{model!r} has a context of {context_length} tokens"
            )
        super().__init__(message, param=param)
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length
        self.model = model


class Unauthorized(HeylookError):
    status = 401
    kind = "authentication_error"
    code = "invalid_api_key"


class Forbidden(HeylookError):
    status = 403
    kind = "permission_error"
    code = "forbidden"


class RequestTimedOut(HeylookError):
    status = 408
    kind = "invalid_request_error"
    code = "request_timeout"


class UnsupportedMediaType(HeylookError):
    status = 415
    kind = "invalid_request_error"
    code = "unsupported_media_type"


class NotImplementedYet(HeylookError):
    """A route of the API heylook knows, but does not serve yet."""

    status = 501
    kind = "invalid_request_error"
    code = "not_implemented"


class ModelNotFound(HeylookError):
    status = 404
    kind = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        if close:
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?"
        elif known:
            hint = f"; known models: {', '.join(known)}"
        else:
            hint = "; no models are configured"
        super().__init__(f"model {name!r} not found{hint}", param="model")
        self.name = name
        self.suggestions = close


class ModelLoadFailed(HeylookError):
    status = 500
    code = "model_load_failed"


class RequestTooLarge(HeylookError):
    status = 413
    kind = "invalid_request_error"
    code = "request_too_large"


class ServerBusy(HeylookError):
    """Too many requests waiting already: come back in `retry_after` seconds."""

    status = 503
    code = "server_busy"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.headers["Retry-After"] = str(retry_after)


class InsufficientMemory(HeylookError):
    """A model that does not fit: 503 with Retry-After when models in use hold the memory it needs
    (it may fit once they finish), 500 when it cannot fit even with nothing else loaded."""

    code = "insufficient_memory"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message, status=503 if retry_after else 500)
        if retry_after:
            self.headers["Retry-After"] = str(retry_after)


class LoadTimedOut(HeylookError):
    status = 504
    code = "load_timed_out"


class UpstreamError(HeylookError):
    """A remote provider could not serve: unreachable, timed out, refused our token, has no such
    model, or is overloaded. `status` is what heylook answers; Retry-After is passed on."""

    code = "upstream_error"

    def __init__(self, message: str, *, status: int = 502, retry_after: int | None = None) -> None:
        super().__init__(message, status=status)
        if retry_after is not None:
            self.headers["Retry-After"] = str(retry_after)


class MissingToken(UpstreamError):
    code = "missing_token"

    def __init__(self, message: str) -> None:
        super().__init__(message, status=503)


class GenerationFailed(HeylookError):
    status = 500
    code = "generation_failed"
