"""A batch's lines, as pure functions: the input file read as JSONL (lines end at "\\n" and nowhere
else) and each line's envelope checked as OpenAI's validation does (every bad line listed, with its
number and the field); and the output and error files' lines written in OpenAI's shape.

A line's `body` is kept as its JSON text, not parsed here: it is checked as the route checks a
request body (depth, lone surrogates, NaN) when the line is answered, so a bad body fails that line
alone, in the error file under its custom_id. Reading the envelope never recurses into the body:
a line nested 100,000 deep is one bad line, not a RecursionError."""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

# The routes a batch may name, as OpenAI's Batch API takes them.
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
# Bad lines listed in a failed batch's errors; the rest are counted in the last entry.
MAX_LISTED_ERRORS = 100

_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")
# Inside an object or array: a whole string (skipped, brackets in it are text) or a bracket.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


class _BadLine(ValueError):
    pass


@dataclass(frozen=True)
class Line:
    number: int  # 1-based, as OpenAI numbers them
    custom_id: str
    body: str  # the request body's JSON text, checked as a request body when answered


def read_lines(
    data: bytes | BinaryIO, endpoint: str, max_lines: int
) -> tuple[list[Line], list[dict[str, Any]]]:
    """The requests of an input file (its bytes, or the file open to read a line at a time), and
    its errors (OpenAI's BatchError objects: code, message, param, line); any error fails the whole
    batch before a line is answered, as OpenAI's does. Work and memory are bounded by `max_lines`:
    past it, reading stops."""
    lines: list[Line] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    count = 0
    for number, raw in _raw_lines(data):
        count += 1
        if count > max_lines:
            message = f"a batch takes at most {max_lines} requests; the input file holds more"
            return [], [_error("too_many_requests", message, None, None)]
        problem = _check(raw, endpoint, seen)
        if isinstance(problem, Line):
            lines.append(Line(number, problem.custom_id, problem.body))
            seen.add(problem.custom_id)
        else:
            code, message, param = problem
            errors.append(_error(code, message, param, number))
    if count == 0:
        return [], [_error("empty_file", "the input file holds no requests", None, None)]
    if len(errors) > MAX_LISTED_ERRORS:
        more = len(errors) - MAX_LISTED_ERRORS
        errors = [
            *errors[:MAX_LISTED_ERRORS],
            _error("too_many_errors", f"and {more} more bad lines", None, None),
        ]
    return lines, errors


def _raw_lines(data: bytes | BinaryIO) -> Iterator[tuple[int, bytes]]:
    """JSONL's lines: split at "\\n" only (a binary file's lines; U+2028 and the other breaks
    str.splitlines knows are text inside a string), a "\\r" before it dropped, blank lines
    skipped; one at a time."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    for number, line in enumerate(source, 1):
        raw = line.rstrip(b"\n").rstrip(b"\r")
        if raw.strip():
            yield number, raw


def _check(raw: bytes, endpoint: str, seen: set[str]) -> Line | tuple[str, str, str | None]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_json", "the line is not UTF-8 text", None
    try:
        request = envelope(text)
    except _BadLine as error:
        return "invalid_json", f"the line is not JSON: {error}", None
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return "missing_required_parameter", "'custom_id' is required, as a non-empty string", "custom_id"
    if custom_id in seen:
        return "duplicate_custom_id", f"'custom_id' {custom_id!r} is on an earlier line too", "custom_id"
    if request.get("method") != "POST":
        return "invalid_method", "'method' must be POST", "method"
    if request.get("url") != endpoint:
        return "invalid_url", f"'url' must be the batch's endpoint, {endpoint}", "url"
    body = request.get("body")
    if not isinstance(body, _Container) or body.text[:1] != "{":
        return "invalid_request", "'body' must be a JSON object", "body"
    return Line(0, custom_id, body.text)


@dataclass(frozen=True)
class _Container:
    """An object or array of the envelope, left as its text."""

    text: str


def envelope(text: str) -> dict[str, Any]:
    """A line's top-level object: scalars decoded, objects and arrays left as their text (found
    by a linear scan, never parsed here, so no depth can exhaust the stack)."""
    at = _SPACE.match(text, 0).end()  # type: ignore[union-attr]
    if text[at : at + 1] != "{":
        raise _BadLine("the line must be a JSON object")
    fields: dict[str, Any] = {}
    at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
    if text[at : at + 1] == "}":
        return _end(text, at + 1, fields)
    while True:
        if text[at : at + 1] != '"':
            raise _BadLine(f"a key was expected at column {at + 1}")
        key, at = _decode(text, at)
        at = _SPACE.match(text, at).end()  # type: ignore[union-attr]
        if text[at : at + 1] != ":":
            raise _BadLine(f"':' was expected at column {at + 1}")
        at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
        fields[key], at = _value(text, at)
        at = _SPACE.match(text, at).end()  # type: ignore[union-attr]
        if text[at : at + 1] == "}":
            return _end(text, at + 1, fields)
        if text[at : at + 1] != ",":
            raise _BadLine(f"',' or '}}' was expected at column {at + 1}")
        at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]


def _end(text: str, at: int, fields: dict[str, Any]) -> dict[str, Any]:
    if text[at:].strip(" \t\r\n"):
        raise _BadLine(f"extra data at column {at + 1}")
    return fields


def _value(text: str, at: int) -> tuple[Any, int]:
    if text[at : at + 1] not in ("{", "["):
        return _decode(text, at)
    depth = 0
    for token in _TOKEN.finditer(text, at):
        mark = token.group()
        if mark in ("{", "["):
            depth += 1
        elif mark in ("}", "]"):
            depth -= 1
            if depth == 0:
                return _Container(text[at : token.end()]), token.end()
    raise _BadLine("an object or array is not closed")


def _decode(text: str, at: int) -> tuple[Any, int]:
    """A scalar (string, number, true, false, null) at `at`."""
    try:
        return _DECODER.raw_decode(text, at)
    except json.JSONDecodeError as error:
        raise _BadLine(error.msg) from None


def _error(code: str, message: str, param: str | None, line: int | None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def result_line(custom_id: str, status: int, body: dict[str, Any]) -> dict[str, Any]:
    """One answered request: the route's reply (or its error body) and its status, as OpenAI's
    output and error files hold them."""
    failed = status >= 400
    error = body.get("error") if failed else None
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": f"req_{uuid.uuid4().hex}", "body": body},
        "error": {"code": error.get("type"), "message": error.get("message")}
        if isinstance(error, dict)
        else None,
    }


def is_failure(result: dict[str, Any]) -> bool:
    return result["response"]["status_code"] >= 400


def json_line(result: dict[str, Any]) -> bytes:
    """One result as a JSONL line. Text that is not UTF-8 (a lone surrogate in a custom_id, say)
    is written as JSON's escape, as the client sent it: no answer is ever lost to its encoding."""
    try:
        return json.dumps(result, ensure_ascii=False).encode() + b"\n"
    except UnicodeEncodeError:
        return json.dumps(result).encode() + b"\n"


def jsonl(results: list[dict[str, Any]]) -> bytes:
    return b"".join(json_line(r) for r in results)
