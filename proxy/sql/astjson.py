"""The AST as JSON-ready data, for `pgkeep parse --json` and for humans reading tests.

Every node becomes an object with "node" (the class name) and its fields; tuples become
lists. The values are the statement's own (unredacted): callers that log must use the
redacted formatter instead.
"""
from __future__ import annotations

from dataclasses import fields, is_dataclass

__all__ = ["to_json"]


def to_json(node):
    if isinstance(node, tuple):
        return [to_json(x) for x in node]
    if is_dataclass(node) and not isinstance(node, type):
        out = {"node": type(node).__name__}
        for f in fields(node):
            out[f.name] = to_json(getattr(node, f.name))
        return out
    return node
