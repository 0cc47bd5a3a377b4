"""Typed reads of JSON request fields; a wrong value raises InvalidRequest naming the field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from heylook.errors import InvalidRequest
from heylook.types import SamplingOptions

MAX_STOP_SEQUENCES = 16


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidRequest(f"request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"request body must be a JSON object, not {json_type(body)}")
    return body


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _wrong_type(param: str, expected: str, value: object) -> InvalidRequest:
    return InvalidRequest(f"'{param}' must be {expected}, not {json_type(value)}", param=param)


def _read_typed(body: Mapping[str, Any], key: str, param: str | None, kind: type, expected: str) -> Any:
    value = body.get(key)
    if value is not None and not isinstance(value, kind):
        raise _wrong_type(param or key, expected, value)
    return value


def read_str(
    body: Mapping[str, Any], key: str, *, param: str | None = None, required: bool = False
) -> str | None:
    value = _read_typed(body, key, param, str, "a string")
    if value is None and required:
        raise InvalidRequest(f"'{param or key}' is required", param=param or key)
    return value


def read_bool(body: Mapping[str, Any], key: str, *, param: str | None = None) -> bool | None:
    return _read_typed(body, key, param, bool, "a boolean")


def read_int(
    body: Mapping[str, Any], key: str, *, param: str | None = None, minimum: int | None = None
) -> int | None:
    param = param or key
    value = body.get(key)
    if value is None:
        return None
    # JSON clients often send 5.0 for 5; a bool is never a number here.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(param, "an integer", value)
    if minimum is not None and value < minimum:
        raise InvalidRequest(f"'{param}' must be at least {minimum}, got {value}", param=param)
    return value


def read_number(
    body: Mapping[str, Any],
    key: str,
    *,
    param: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float | None:
    param = param or key
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong_type(param, "a number", value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = (
            f"between {minimum} and {maximum}"
            if minimum is not None and maximum is not None
            else f"at least {minimum}"
            if minimum is not None
            else f"at most {maximum}"
        )
        raise InvalidRequest(f"'{param}' must be {bounds}, got {value}", param=param)
    return float(value)


def read_stop(body: Mapping[str, Any], key: str, *, param: str | None = None) -> tuple[str, ...] | None:
    """A stop sequence or a list of them, as both APIs accept."""
    param = param or key
    value = body.get(key)
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise _wrong_type(param, "a string or an array of strings", value)
    if len(items) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(f"'{param}' may hold at most {MAX_STOP_SEQUENCES} sequences", param=param)
    if any(s == "" for s in items):
        raise InvalidRequest(f"'{param}' must not contain an empty string", param=param)
    return tuple(items)


def read_object(body: Mapping[str, Any], key: str, *, param: str | None = None) -> dict[str, Any] | None:
    return _read_typed(body, key, param, dict, "an object")


def read_sampling(body: Mapping[str, Any]) -> SamplingOptions:
    """The sampling controls both APIs and models.yaml spell the same way (OpenAI's names, and the
    extras vLLM and others accept): temperature, top_p, top_k, min_p, typical_p, the penalties,
    seed, stop, ignore_eos."""
    repetition_penalty = read_number(body, "repetition_penalty", minimum=0.0)
    if repetition_penalty == 0.0:
        raise InvalidRequest(
            "'repetition_penalty' must be greater than 0 (1 turns it off)", param="repetition_penalty"
        )
    top_k = read_int(body, "top_k", minimum=-1)
    return SamplingOptions(
        temperature=read_number(body, "temperature", minimum=0.0),
        top_p=read_number(body, "top_p", minimum=0.0, maximum=1.0),
        top_k=max(top_k, 0) if top_k is not None else None,  # -1 and 0 both turn it off
        min_p=read_number(body, "min_p", minimum=0.0, maximum=1.0),
        typical_p=read_number(body, "typical_p", minimum=0.0, maximum=1.0),
        repetition_penalty=repetition_penalty,
        presence_penalty=read_number(body, "presence_penalty", minimum=-2.0, maximum=2.0),
        frequency_penalty=read_number(body, "frequency_penalty", minimum=-2.0, maximum=2.0),
        seed=read_int(body, "seed"),
        stop=read_stop(body, "stop"),
        ignore_eos=read_bool(body, "ignore_eos"),
    )
