"""Typed reads of JSON request fields; a wrong value raises InvalidRequest naming the field."""

from __future__ import annotations

import contextlib
import gc
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import anyio.to_thread

from heylook.errors import InvalidRequest
from heylook.wire.fields import json_type

T = TypeVar("T")

# Deep enough for any real request (JSON schemas of tools included), far from Python's stack limit.
MAX_JSON_DEPTH = 64
# A body past this size is parsed and read in a worker thread, not on the event loop: parsing a
# 16 MB one takes seconds. A smaller one is parsed in place: a thread's hop costs ~50-100 us.
INLINE_BODY_BYTES = 256 * 1024


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


async def parsed_off_loop(raw: bytes, parse: Callable[[dict[str, Any]], T]) -> T:
    """`parse(parse_json_object(raw))`: inline for a small body (a thread's hop would cost more
    than parsing it), in a worker thread for a large one (a 16 MB body takes seconds, which on the
    event loop would freeze every other client for as long)."""
    if len(raw) <= INLINE_BODY_BYTES:
        return parse(parse_json_object(raw))
    return await anyio.to_thread.run_sync(parsed_in_bulk, raw, parse)


def parsed_in_bulk(raw: bytes, parse: Callable[[dict[str, Any]], T]) -> T:
    """`parse(parse_json_object(raw))` for a large body (in a worker thread), with the cyclic
    garbage collector paused meanwhile: a 16 MB body makes millions of objects, and each full
    collection their growth sets off walks them all with the GIL held (0.7-1.4 s each, a dozen
    times over: the event loop stood still as long). A body's values hold no cycles; reference
    counting frees them as ever."""
    with _collector_paused():
        return parse(parse_json_object(raw))


_pauses = 0  # bodies parsed in bulk now; the collector runs again when the last is done
_pauses_lock = threading.Lock()
_collector_was_enabled = True


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    global _pauses, _collector_was_enabled
    with _pauses_lock:
        if _pauses == 0:
            _collector_was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pauses_lock:
            _pauses -= 1
            if _pauses == 0 and _collector_was_enabled:
                gc.enable()


def _refuse_constant(name: str) -> Any:
    raise InvalidRequest(f"request body is not valid JSON: {name} is not a JSON number")


def _check_tree(body: dict[str, Any]) -> None:
    """Depth and strings, walked without recursion (a deep body must not exhaust the stack) and
    in memory of its depth alone: the path to a value is spelled only for the error that names it
    (a path per value, each repeating its parents' keys, grew as key length x list length)."""
    trail: list[str | int] = []  # the keys and indices down to the container walked now
    walking: list[Iterator[tuple[str | int, Any]]] = [iter(body.items())]
    while walking:
        # Each container's iterator is kept on `walking`: a break goes down into a container
        # found, and the walk resumes past it once that container is done.
        for part, value in walking[-1]:
            if type(part) is str and not _is_text(part):
                raise _lone_surrogate(_spelled([*trail, part]))
            kind = type(value)
            if kind is str:
                if not _is_text(value):
                    raise _lone_surrogate(_spelled([*trail, part]) or "body")
            elif kind is dict or kind is list:
                if len(walking) >= MAX_JSON_DEPTH:
                    where = _spelled([*trail, part])
                    raise InvalidRequest(
                        f"request body is nested deeper than {MAX_JSON_DEPTH} levels", param=where or None
                    )
                trail.append(part)
                walking.append(iter(value.items()) if kind is dict else enumerate(value))
                break
        else:
            walking.pop()
            if trail:
                trail.pop()


def _spelled(trail: list[str | int]) -> str:
    """("messages", 0, "content") as messages[0].content; a key that is no text is shown escaped."""
    path = ""
    for part in trail:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            shown = part.encode("utf-8", "backslashreplace").decode("utf-8")
            path = f"{path}.{shown}" if path else shown
    return path


def _is_text(text: str) -> bool:
    """No lone surrogate (it cannot be encoded, so it would fail wherever the text goes next)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _lone_surrogate(where: str) -> InvalidRequest:
    return InvalidRequest(
        f"'{where}' holds a lone surrogate (an unpaired \\ud800-\\udfff escape), which is not text",
        param=where,
    )


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
