"""Typed reads of JSON request fields; a wrong value raises InvalidRequest naming the field."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from heylook import options as settings_table
from heylook.errors import InvalidRequest
from heylook.options import MAX_STOP_LENGTH, MAX_STOP_SEQUENCES, Api, Setting
from heylook.types import SamplingOptions

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
    if not math.isfinite(value):
        raise InvalidRequest(f"'{param}' must be a finite number, not {value}", param=param)
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
    if any(len(s) > MAX_STOP_LENGTH for s in items):
        raise InvalidRequest(f"'{param}' sequences may be at most {MAX_STOP_LENGTH} characters", param=param)
    return tuple(items)


# A JSON schema, as text, may be this long: grammars compile in time proportional to their schema,
# and a 200,000-value enum or a megabyte-long const took over 90 s. Real schemas are a few KiB.
MAX_SCHEMA_BYTES = 64 * 1024


def schema_text(schema: dict[str, Any], param: str) -> str:
    """A JSON schema as the JSON text grammars compile, within MAX_SCHEMA_BYTES."""
    text = json.dumps(schema, ensure_ascii=False)
    if len(text.encode()) > MAX_SCHEMA_BYTES:
        raise InvalidRequest(f"'{param}' is larger than {MAX_SCHEMA_BYTES // 1024} KiB of JSON", param=param)
    return text


def read_object(body: Mapping[str, Any], key: str, *, param: str | None = None) -> dict[str, Any] | None:
    return _read_typed(body, key, param, dict, "an object")


def read_settings(body: Mapping[str, Any], api: Api, *, prefix: str = "") -> SamplingOptions:
    """The generation settings a body states, read by the table in heylook.options under the
    names `api` gives them (`prefix` names where the body sits, e.g. "options."): each checked
    for its type and bounds, a wrong one a 400 naming the field."""
    values: dict[str, Any] = {}
    for row in settings_table.SETTINGS:  # read when called: a row added is a setting read
        key = row.key(api)
        if key is None:
            continue
        keys = (*row.openai_also, key) if api == "openai" else (key,)
        found = next((k for k in keys if body.get(k) is not None), None)
        if found is not None:
            values[row.name] = _read_setting(body, found, row, api, prefix + found)
    return SamplingOptions(**values)


def _read_setting(body: Mapping[str, Any], key: str, row: Setting, api: Api, param: str) -> Any:
    low, high = row.bounds(api)
    if row.kind == "number":
        value: Any = read_number(body, key, param=param, minimum=low, maximum=high)
    elif row.kind == "integer":
        value = read_int(body, key, param=param, minimum=None if low is None else int(low))
        if high is not None and value > high:
            raise InvalidRequest(f"'{param}' must be at most {high:g}, got {value}", param=param)
    elif row.kind == "boolean":
        value = read_bool(body, key, param=param)
    else:
        value = read_stop(body, key, param=param)
    if row.above_minimum and value == low:
        raise InvalidRequest(f"'{param}' must be above {low:g}", param=param)
    if row.normalize is not None:
        try:
            value = row.normalize(value, api)
        except ValueError as error:
            raise InvalidRequest(f"'{param}' {error}", param=param) from None
    return value
