"""Writing a graph to a file (or stdout) in the format its name asks for."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx

from ferry import errors
from ferry.viz.dot import render, to_dot
from ferry.viz.drain import drain_data, drain_dot
from ferry.viz.export import graph_data

#: file suffix -> format
FORMATS = {".dot": "dot", ".gv": "dot", ".json": "json", ".svg": "svg", ".png": "png"}


def format_for(path: str | Path | None, fmt: str | None = None) -> str:
    """The output format: ``fmt`` if given, else from the file's suffix; DOT on stdout."""
    if fmt:
        if fmt not in set(FORMATS.values()):
            raise errors.ConfigError(f"unknown format {fmt!r}; one of dot, json, svg, png")
        return fmt
    if path is None or str(path) == "-":
        return "dot"
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise errors.ConfigError(
            f"cannot tell the format of {str(path)!r}: name it .svg, .png, .dot or .json "
            "(or pass --format)"
        )
    return FORMATS[suffix]


def graph_bytes(g: nx.DiGraph, fmt: str) -> bytes:
    """The graph (a migration's, or a drain's: :mod:`ferry.viz.drain`) in ``fmt``: dot and json
    need nothing, svg and png need Graphviz's ``dot``."""
    drain = g.graph.get("kind") == "drain"
    if fmt == "json":
        data = drain_data(g) if drain else graph_data(g)
        return (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode()
    text = drain_dot(g) if drain else to_dot(g)
    if fmt == "dot":
        return text.encode()
    return render(text, fmt)


def write_graph(g: nx.DiGraph, path: str | Path, fmt: str | None = None) -> str:
    """Write ``g`` to ``path``; returns the format used."""
    fmt = format_for(path, fmt)
    data = graph_bytes(g, fmt)  # render first: a missing Graphviz leaves no empty file behind
    Path(path).write_bytes(data)
    return fmt
