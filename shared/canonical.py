"""Canonical JSON (RFC 8785, JCS) for hashing, with a fast path that gives the same bytes.

`json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)` produces exactly the JCS
bytes when every object key is ASCII (Python then sorts keys as JCS does, by UTF-16 code unit),
there is no float (JCS formats numbers the ECMAScript way), every integer is within ±2**53 (JCS
numbers are doubles) and every string is valid Unicode. `canonical()` checks those conditions and
takes `rfc8785` otherwise, so the hash never depends on which path ran; a hypothesis test holds
the two paths equal.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

_SAFE_INT = 2**53 - 1
_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def _fast_path_ok(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return True
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not key.isascii() or not _fast_path_ok(item):
                return False
        return True
    if kind is list or kind is tuple:
        return all(_fast_path_ok(item) for item in value)
    if kind is int:
        return -_SAFE_INT <= value <= _SAFE_INT
    return value is None or kind is bool


def canonical(value: Any) -> str:
    """The JCS text of `value` (a str; encode as UTF-8 for hashing)."""
    if _fast_path_ok(value):
        text = _dumps(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: let rfc8785 decide what it makes of it
            pass
        else:
            return text
    return rfc8785.dumps(value).decode("utf-8")


def canonical_slow(value: Any) -> str:
    """Always through rfc8785: the reference the fast path is tested against."""
    return rfc8785.dumps(value).decode("utf-8")
