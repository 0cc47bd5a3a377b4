"""A batch's lines, as pure functions: the input file read and checked line by line, as OpenAI's
validation does (every bad line listed, with its number and the field), and the output and error
files' lines written in OpenAI's shape."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

# The routes a batch may name, as OpenAI's Batch API takes them.
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
# Bad lines listed in a failed batch's errors; the rest are counted in the last entry.
MAX_LISTED_ERRORS = 100


@dataclass(frozen=True)
class Line:
    number: int  # 1-based, as OpenAI numbers them
    custom_id: str
    body: dict[str, Any]


def read_lines(data: bytes, endpoint: str, max_lines: int) -> tuple[list[Line], list[dict[str, Any]]]:
    """The requests of an input file, and its errors (OpenAI's BatchError objects: code, message,
    param, line); any error fails the whole batch, as OpenAI's does."""
    lines: list[Line] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return [], [_error("invalid_file", "the input file is not UTF-8 text", None, None)]
    raw_lines = [(n, raw) for n, raw in enumerate(text.splitlines(), start=1) if raw.strip()]
    if not raw_lines:
        return [], [_error("empty_file", "the input file holds no requests", None, None)]
    if len(raw_lines) > max_lines:
        message = f"the input file holds {len(raw_lines)} requests; a batch takes at most {max_lines}"
        return [], [_error("too_many_requests", message, None, None)]
    for number, raw in raw_lines:
        problem = _check(raw, endpoint, seen)
        if isinstance(problem, Line):
            lines.append(Line(number, problem.custom_id, problem.body))
            seen.add(problem.custom_id)
        else:
            code, message, param = problem
            errors.append(_error(code, message, param, number))
    if len(errors) > MAX_LISTED_ERRORS:
        more = len(errors) - MAX_LISTED_ERRORS
        errors = [
            *errors[:MAX_LISTED_ERRORS],
            _error("too_many_errors", f"and {more} more bad lines", None, None),
        ]
    return lines, errors


def _check(raw: str, endpoint: str, seen: set[str]) -> Line | tuple[str, str, str | None]:
    try:
        request = json.loads(raw)
    except json.JSONDecodeError as error:
        return "invalid_json", f"the line is not JSON: {error.msg}", None
    if not isinstance(request, dict):
        return "invalid_request", "the line must be a JSON object", None
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
    if not isinstance(body, dict):
        return "invalid_request", "'body' must be a JSON object", "body"
    return Line(0, custom_id, body)


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


def jsonl(results: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results).encode()
