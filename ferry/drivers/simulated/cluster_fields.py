"""The field kinds of the simulated cluster's TOML file (see :mod:`.cluster`): one check per
kind of value, and the readers of an array of tables and of one table against its fields.

A check returns the typed value or raises :class:`Invalid`; :func:`record` turns that into a
:class:`~ferry.errors.ConfigError` naming the file (through the caller's ``fail``) and the place.
"""

from __future__ import annotations

import math
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

from ferry.errors import ConfigError


class Invalid(Exception):
    """One field's problem; :func:`record` turns it into a ConfigError with file and place."""


def integer(minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"must be an integer, not {show(value)}")
        if value < minimum:
            raise Invalid(f"must be >= {minimum}, not {value}")
        return value

    return check


def number(
    minimum: float, *, strict: bool = False, below: float | None = None
) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(f"must be a number, not {show(value)}")
        as_float = float(value)
        if not math.isfinite(as_float):
            raise Invalid(f"must be a finite number, not {value}")
        if as_float < minimum or (strict and as_float == minimum):
            raise Invalid(f"must be {'>' if strict else '>='} {minimum:g}, not {value}")
        if below is not None and as_float >= below:
            raise Invalid(f"must be < {below:g}, not {value}")
        return as_float

    return check


def string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"must be a non-empty string, not {show(value)}")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string, not {show(value)}")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, not {show(value)}")
    return value


def labels(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise Invalid("must be a table of strings")
    return dict(value)


def numa_cells(value: Any) -> int | list[dict[str, Any]]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise Invalid(f"must be >= 1, not {value}")
        return value
    if not isinstance(value, list) or not value:
        raise Invalid("must be a number of cells or an array of { cpus, memory_mb } tables")
    cells = []
    for k, cell in enumerate(value):
        if not isinstance(cell, dict) or set(cell) != {"cpus", "memory_mb"}:
            raise Invalid(f"cell {k} must be a table with exactly cpus and memory_mb")
        cpus = pcpus(cell["cpus"])
        cells.append({"id": k, "cpus": cpus, "memory_mb": integer(0)(cell["memory_mb"])})
    return cells


def pcpus(value: Any) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in value
    ):
        raise Invalid("must be an array of pCPU ids (integers >= 0)")
    if len(set(value)) != len(value):
        raise Invalid("lists a pCPU twice")
    return list(value)


def choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options:
            raise Invalid(f"must be one of {', '.join(options)}, not {show(value)}")
        return str(value)

    return check


def uuid_text(value: Any) -> str:
    text = string(value)
    try:
        return str(uuidlib.UUID(text))
    except ValueError:
        raise Invalid(f"is not a UUID: {text!r}") from None


def show(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


#: the default of a key that must be given
REQUIRED = object()

#: key -> (check turning the raw value into the typed one, or ``list``; default or REQUIRED)
Fields = dict[str, tuple[Callable[[Any], Any], Any]]


def tables(
    data: dict[str, Any], key: str, fail: Callable[[str, str], ConfigError]
) -> list[tuple[dict[str, Any], str]]:
    """The array of tables ``data[key]`` (none when absent), each with where it is
    (``hosts[0] ('compute-1')``) for messages."""
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise fail(key, f"must be an array of tables ([[{key}]])")
    return [
        (t, f"{key}[{i}]" + (f" ({t['name']!r})" if isinstance(t.get("name"), str) else ""))
        for i, t in enumerate(value)
    ]


def record(
    table: dict[str, Any],
    fields: Fields,
    where: str,
    fail: Callable[[str, str], ConfigError],
) -> dict[str, Any]:
    """One table read against its ``fields``: every key known, required ones given, each value
    checked; defaults (copied) for the rest."""
    for key in table:
        if key not in fields:
            raise fail(where, f"unknown key {key!r} (expected {', '.join(fields)})")
    values: dict[str, Any] = {}
    for key, (check, default) in fields.items():
        if key not in table:
            if default is REQUIRED:
                raise fail(where, f"missing required key {key!r}")
            values[key] = default.copy() if isinstance(default, dict | list) else default
            continue
        raw = table[key]
        if check is list:
            if not isinstance(raw, list):
                raise fail(f"{where}.{key}", f"must be an array, not {show(raw)}")
            values[key] = list(raw)
            continue
        try:
            values[key] = check(raw)
        except Invalid as exc:
            raise fail(f"{where}.{key}", str(exc)) from None
    return values


def sub_records(
    items: list[Any],
    fields: Fields,
    where: str,
    fail: Callable[[str, str], ConfigError],
) -> list[dict[str, Any]]:
    """An array of tables (volumes, VIFs) read with :func:`record`; their ``id`` unique."""
    out: list[dict[str, Any]] = []
    ids: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise fail(f"{where}[{i}]", f"must be a table, not {show(item)}")
        values = record(item, fields, f"{where}[{i}]", fail)
        if values["id"] in ids:
            raise fail(f"{where}[{i}]", f"duplicate id {values['id']!r}")
        ids.add(values["id"])
        out.append(values)
    return out
