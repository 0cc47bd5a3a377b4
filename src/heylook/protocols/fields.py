"""Typed reads of JSON request fields; a wrong value raises InvalidRequest naming the field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from heylook.errors import InvalidRequest
from heylook.wire.fields import json_type

# Deep enough for any real request (JSON schemas of tools included), far from Python's stack limit.
MAX_JSON_DEPTH = 64


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A request body: a JSON object, nested at most MAX_JSON_DEPTH deep, with no NaN or Infinity
    (not JSON, though Python reads them) and no lone surrogate in any string (it cannot be encoded,
    so it would fail wherever the text goes next)."""
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidRequest(f"request body is not valid JSON: {error}") from None
    except RecursionError:
        raise InvalidRequest(f"request body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"request body must be a JSON object, not {json_type(body)}")
    _check_tree(body)
    return body


def _refuse_constant(name: str) -> Any:
    raise InvalidRequest(f"request body is not valid JSON: {name} is not a JSON number")


def _check_tree(body: dict[str, Any]) -> None:
    """Depth and strings, walked without recursion (a deep body must not exhaust the stack)."""
    pending: list[tuple[Any, str, int]] = [(body, "", 1)]
    while pending:
        value, where, depth = pending.pop()
        if isinstance(value, str):
            _check_text(value, where or "body")
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise InvalidRequest(
                f"request body is nested deeper than {MAX_JSON_DEPTH} levels", param=where or None
            )
        if isinstance(value, dict):
            for key, item in value.items():
                # The path names the field in errors: a key that is no text is shown escaped.
                shown = key.encode("utf-8", "backslashreplace").decode("utf-8")
                path = f"{where}.{shown}" if where else shown
                _check_text(key, path)
                pending.append((item, path, depth + 1))
        else:
            pending.extend((item, f"{where}[{index}]", depth + 1) for index, item in enumerate(value))


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            f"'{where}' holds a lone surrogate (an unpaired \\ud800-\\udfff escape), which is not text",
            param=where,
        ) from None


def _wrong_type(param: str, expected: str, value: object) -> InvalidRequest:
    return InvalidRequest(f"'{param}' must be {expected}, not {json_type(value)}", param=param)


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


# A JSON schema, as text, may be this long: grammars compile in time proportional to their schema,
# and a 200,000-value enum or a megabyte-long const took over 90 s. Real schemas are a few KiB.
MAX_SCHEMA_BYTES = 64 * 1024


def schema_text(schema: dict[str, Any], param: str) -> str:
    """A JSON schema as the JSON text grammars compile, within MAX_SCHEMA_BYTES."""
    text = json.dumps(schema, ensure_ascii=False)
    if len(text.encode()) > MAX_SCHEMA_BYTES:
        raise InvalidRequest(f"'{param}' is larger than {MAX_SCHEMA_BYTES // 1024} KiB of JSON", param=param)
    return text
