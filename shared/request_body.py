"""A command's body at the HTTP edge: read whole (a Content-Length or chunks), never over the
configured size, JSON only, and nothing in it that could break what comes after it.

    body = read_body(request, limit)         # bytes; PayloadTooLarge (413) past `limit`
    check_media_type(request, body)          # UnsupportedMediaType (415) unless application/json
    value = parse_json(body)                 # 400 naming `body`, 422 naming each bad member

What `parse_json` refuses, and why each would otherwise have been a 500 or a silent difference
between the two stores:

- not JSON, `NaN`/`Infinity` (not JSON either), nesting deeper than `MAX_DEPTH` (a 200,000-deep
  array made Python's parser raise RecursionError): 400, naming `body`;
- a number beyond ±(2**53 − 1) or with more than `MAX_PLACES` decimal places: JSON numbers are
  doubles to most readers (RFC 7493, I-JSON; RFC 8785 hashes them as doubles), a 5,000-digit
  integer made Python raise ValueError, and `1e999999999` would be a billion digits written out;
- a string (a value or a member name) with a lone surrogate (`"\\ud800"`: not Unicode, so it
  cannot be canonicalised or stored) or a NUL (PostgreSQL refuses it in text, SQLite keeps it):
  422, naming the member by its dotted path (`applicant.person.name`, `criteria.0.name`).

A body that is empty, or only whitespace, is a command with nothing to say: `{}`, whatever its
Content-Type. `digest(body)` is what a command id is bound to (shared.web).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Request

from shared.errors import InvalidInput, LavoroError, PayloadTooLarge, UnsupportedMediaType
from shared.money import JsonFraction

JSON_TYPE = "application/json"
MAX_DEPTH = 32  # objects and arrays inside one another; the deepest command body has 4
MAX_SAFE_INTEGER = 2**53 - 1
MAX_PLACES = 20
_MAX_INTEGER_DIGITS = len(str(MAX_SAFE_INTEGER))
_UTF8 = frozenset({"utf-8", "utf8"})
_NUMBER_RULE = (
    f"Numbers must lie within ±{MAX_SAFE_INTEGER} (2^53 - 1) with at most {MAX_PLACES} decimal "
    "places: others are not exact in JSON."
)


def read_body(request: Request, limit: int) -> bytes:
    """The whole body, chunked or not; PayloadTooLarge if it is longer than `limit` bytes."""
    environ = request.environ
    if "eventlet.input" in environ and environ["eventlet.input"] is environ.get("wsgi.input"):
        # eventlet's input ends a body itself (at its Content-Length, at the last chunk, at once
        # when it has neither): say so, or werkzeug reads a body without Content-Length as empty.
        environ["wsgi.input_terminated"] = True
    # One byte over the limit is read, so that a body of exactly `limit` bytes is told apart
    # from a longer one (werkzeug stops a stream at its maximum without saying so).
    request.max_content_length = limit + 1
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge as exc:  # a Content-Length over it: nothing is read
        raise _too_large(limit) from exc
    if len(raw) > limit:
        raise _too_large(limit)
    return raw


def _too_large(limit: int) -> PayloadTooLarge:
    reason = f"at most {limit} bytes"
    return PayloadTooLarge(f"request body is over {limit} bytes", fields={"body": [reason]})


def is_empty(body: bytes) -> bool:
    return not body.strip()


def check_media_type(request: Request, body: bytes) -> None:
    """A body with something in it must say it is JSON, in UTF-8 (415 otherwise)."""
    if is_empty(body):
        return
    if request.mimetype != JSON_TYPE:
        sent = request.headers.get("Content-Type")
        reason = f"must be {JSON_TYPE}" + (f", not {sent}" if sent else " (none was sent)")
        raise UnsupportedMediaType(
            f"Content-Type header: {reason}", fields={"Content-Type": [reason]}
        )
    charset = request.mimetype_params.get("charset")
    if charset is not None and charset.lower() not in _UTF8:
        reason = f"JSON is UTF-8, not {charset}"
        raise UnsupportedMediaType(
            f"Content-Type header: {reason}", fields={"Content-Type": [reason]}
        )


def digest(body: bytes) -> str:
    """SHA-256 of the body's bytes (an empty body and one of whitespace are the same)."""
    return hashlib.sha256(b"" if is_empty(body) else body).hexdigest()


class _Refused:
    """A number the parser met and refuses; reported with the member's path after parsing."""

    __slots__ = ()


_REFUSED = _Refused()


def _integer(text: str) -> int | _Refused:
    # Before int(): Python refuses to convert more than 4,300 digits, with a ValueError.
    if len(text.lstrip("-")) > _MAX_INTEGER_DIGITS:
        return _REFUSED
    value = int(text)
    return value if abs(value) <= MAX_SAFE_INTEGER else _REFUSED


def _fraction(text: str) -> JsonFraction | _Refused:
    value = JsonFraction(text)
    exponent = value.as_tuple().exponent
    # copy_abs and the comparison are exact: abs() would round, and overflow, in the context.
    if not isinstance(exponent, int) or -exponent > MAX_PLACES:
        return _REFUSED
    return _REFUSED if value.copy_abs() > MAX_SAFE_INTEGER else value


def _constant(text: str) -> Any:
    raise ValueError(f"{text} is not a JSON value")


def _bad_body(message: str) -> LavoroError:
    return LavoroError(f"request body is {message}", fields={"body": [message]})


def parse_json(body: bytes) -> Any:
    """The JSON value of a body (`{}` if it is empty); see the module docstring for what is
    refused. Numbers with a fraction are `JsonFraction`s (exact, and refused as money)."""
    if is_empty(body):
        return {}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad_body(f"not valid JSON: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        value = json.loads(
            text, parse_int=_integer, parse_float=_fraction, parse_constant=_constant
        )
    except RecursionError as exc:
        raise _bad_body(f"nested deeper than {MAX_DEPTH} levels") from exc
    except ValueError as exc:  # JSONDecodeError, or NaN / Infinity
        raise _bad_body(f"not valid JSON: {exc}") from exc
    problems = _problems(value)
    if problems:
        summary = "; ".join(f"{name}: {' '.join(texts)}" for name, texts in problems.items())
        raise InvalidInput(f"invalid input: {summary}", fields=problems)
    return value


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "Contains a NUL character (\\u0000), which no text may hold."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "Contains a lone surrogate (such as \\ud800): not Unicode text."
    return None


def _name(key: str) -> str:
    """A member name fit to be named in the answer (escaped if it is itself the problem)."""
    return key if _string_problem(key) is None else json.dumps(key)[1:-1]


def _problems(value: Any) -> dict[str, list[str]]:
    """Each bad member of a parsed body by dotted path; without recursion, so that depth is
    counted rather than suffered. Too deep is a 400 for the whole body."""
    found: dict[str, list[str]] = {}
    stack: list[tuple[str, Any, int]] = [("", value, 0)]
    while stack:
        path, item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise _bad_body(f"nested deeper than {MAX_DEPTH} levels")
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                name = f"{path}.{_name(str(key))}" if path else _name(str(key))
                if isinstance(key, str) and (problem := _string_problem(key)) is not None:
                    found.setdefault(name, []).append(f"Member name: {problem}")
                stack.append((name, child, depth + 1))
        elif isinstance(item, str):
            if (problem := _string_problem(item)) is not None:
                found.setdefault(path or "body", []).append(problem)
        elif item is _REFUSED:
            found.setdefault(path or "body", []).append(_NUMBER_RULE)
    return dict(sorted(found.items()))
