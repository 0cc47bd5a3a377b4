"""Generation flags for `create`, `run` and `chat`, made from the settings table (heylook.options):
a row with a flag is a flag of each, with its help, type and older spellings."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Annotated, Any

import cyclopts

from heylook import options
from heylook.options import Setting

_TYPES: dict[str, Any] = {
    "number": float | None,
    "integer": int | None,
    "boolean": bool | None,
    "stops": list[str] | None,
}


def flag_rows(*, api: options.Api | None = None) -> tuple[Setting, ...]:
    """The settings with a flag; with `api`, only those that API can carry (a server is talked
    to through its OpenAI API, so `run` and `chat` offer only what that API takes)."""
    return tuple(row for row in options.SETTINGS if row.flag and (api is None or row.key(api)))


def flag_class(
    name: str, doc: str, rows: Iterable[Setting], extra: Iterable[tuple[str, Any, Any]] = ()
) -> type:
    """A dataclass of one optional field per row (named as the setting), which cyclopts spreads into
    flags (`name="*"`): --FLAG and its older spellings. `extra`: (name, annotation, default) first."""
    fields: list[tuple[str, Any, Any]] = list(extra)
    for row in rows:
        assert row.flag is not None
        names = [f"--{flag}" for flag in (row.flag, *row.flag_also)]
        # Built at run time from the row: mypy cannot see through it, cyclopts reads it as written.
        annotation = Annotated[_TYPES[row.kind], cyclopts.Parameter(name=names, help=row.help)]  # type: ignore[valid-type,name-defined]
        fields.append((row.name, annotation, dataclasses.field(default=None)))
    made = dataclasses.make_dataclass(name, fields, namespace={"__doc__": doc})
    made.__module__ = __name__
    spread: type = cyclopts.Parameter(name="*")(made)
    return spread


def stated(flags: Any, rows: Iterable[Setting]) -> dict[str, Any]:
    """The settings the flags set, by setting name (lists of stops as tuples)."""
    values = {row.name: getattr(flags, row.name) for row in rows}
    return {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in values.items()
        if value is not None and value != []
    }


def parse_flag_value(row: Setting, text: str, current: Any) -> Any:
    """A value typed after `/set NAME` in a chat; "default" (or nothing) unsets it. Stops add up."""
    if row.kind == "stops":
        return [*(current or []), text] if text else None
    if text.lower() in ("", "default", "none"):
        return None
    if row.kind == "boolean":
        if text.lower() not in ("on", "off", "true", "false", "1", "0"):
            raise ValueError(text)
        return text.lower() in ("on", "true", "1")
    return int(text) if row.kind == "integer" else float(text)


def find_flag(name: str, rows: Iterable[Setting]) -> Setting | None:
    """The row a name typed in a chat means: its setting name or any of its flags, - or _."""
    wanted = name.replace("-", "_")
    for row in rows:
        if wanted in (row.name, *(f.replace("-", "_") for f in (row.flag or "", *row.flag_also))):
            return row
    return None
