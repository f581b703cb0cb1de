"""The marshmallow base every service's schemas build on: money, time, personal data, 422 bodies.

Schemas validate and convert at the edges only (HTTP, RPC, event payloads); inside, code works
with `Decimal` and aware UTC `datetime`s. The fields here fix the project's wire conventions once:

- `Money`: euros as a JSON string with at most two decimal places (`"12.50"`), or an integer;
  never a float, never NaN/Infinity, negative only when the field says so. Loads a `Decimal`
  quantized to cents, dumps `"12.50"`; the rules are `shared.money.parse_money`/`format_money`.
- `UtcDateTime`: an RFC 3339 timestamp with an offset (a naive one is refused, never guessed);
  loads an aware UTC `datetime`, dumps the log's one textual form (`shared.clock.format_ts`).
- `LocalDate`: a calendar date, `YYYY-MM-DD` and nothing else.
- Both take only dates in the plausible range, `EARLIEST_DATE` to `LATEST_DATE` (1900-01-01 to
  2199-12-31; an instant within those days in any time zone, `EARLIEST_INSTANT` to
  `LATEST_INSTANT` in UTC): 0001 or 9999 is a typo, and Bologna's day arithmetic
  (`end_of_day`, a window, 80 days after a claim) must never leave Python's calendar (`?as_of=
  9999-12-31` was an OverflowError). A stored payload dumps as stored, whatever its date.
- `Personal(field)`: marks personal data. `shared.crypto` finds these fields by introspecting the
  schema and seals them per person before they enter an event (crypto-shredding); a personal
  field loads and dumps `ERASED` unchanged, so an erased event still passes its own schema.

`Schema` refuses unknown keys; `invalid_input(error)` turns marshmallow's `ValidationError` into
the chassis' `InvalidInput` (422, `{"error", "message", "fields"}`).
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import marshmallow as ma
from marshmallow import ValidationError, fields

from shared.clock import UTC, format_ts
from shared.errors import InvalidInput
from shared.money import JsonFraction, format_money, parse_money

__all__ = [
    "EARLIEST_DATE",
    "EARLIEST_INSTANT",
    "ERASED",
    "JsonFraction",  # shared.money's, for the HTTP edge, which reads JSON numbers with it
    "LATEST_DATE",
    "LATEST_INSTANT",
    "LocalDate",
    "Money",
    "Personal",
    "Schema",
    "UtcDateTime",
    "ValidationError",
    "error_body",
    "invalid_input",
    "is_personal",
    "load_input",
    "map_personal",
    "personal_paths",
]

# What a personal value reads as once its person's key is gone (ARCHITECTURE.md, "Personal data").
ERASED = "[erased]"
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})?",
    re.ASCII,
)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
# Wide enough for a birth date and for a document kept years after the programme's last payment
# (2021-2027, eligible to 2029); narrow enough that a day's arithmetic stays in the calendar.
EARLIEST_DATE = dt.date(1900, 1, 1)
LATEST_DATE = dt.date(2199, 12, 31)
# An instant may be a day either side in UTC: those days begin and end at other UTC times in other
# zones (Bologna's 1900-01-01 began on 31 December in UTC), and a window's end is the instant
# that ends its last day.
EARLIEST_INSTANT = dt.datetime.combine(EARLIEST_DATE - dt.timedelta(days=1), dt.time(), UTC)
LATEST_INSTANT = dt.datetime.combine(LATEST_DATE + dt.timedelta(days=2), dt.time(), UTC)
_OUT_OF_RANGE = f"Outside the plausible range, {EARLIEST_DATE} to {LATEST_DATE}."
_INSTANT_OUT_OF_RANGE = (
    f"Outside the plausible range, {EARLIEST_DATE} to {LATEST_DATE} (in any time zone)."
)


def _plausible(day: dt.date) -> bool:
    return EARLIEST_DATE <= day <= LATEST_DATE


# -- money ---------------------------------------------------------------------------------------


class Money(fields.Field[decimal.Decimal]):
    """Euros: loads a `Decimal` quantized to cents from `"12.50"` or `12`; dumps `"12.50"`."""

    default_error_messages = {"invalid": "{reason}."}

    def __init__(self, *, allow_negative: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.allow_negative = allow_negative

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> decimal.Decimal:
        try:
            return parse_money(value, allow_negative=self.allow_negative)
        except ValueError as error:
            raise self.make_error("invalid", reason=_capitalised(str(error))) from error

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):  # a stored payload (e.g. through a public schema): check it
            value = parse_money(value, allow_negative=True)
        return format_money(value)


# -- time ----------------------------------------------------------------------------------------


class UtcDateTime(fields.Field[dt.datetime]):
    """An instant: RFC 3339 with an offset in, aware UTC `datetime` out, `format_ts` text on dump.

    Digits past microseconds are truncated: Python's datetime stops there, and nothing in this
    domain happens at sub-microsecond precision.
    """

    default_error_messages = {
        "invalid": 'Not an RFC 3339 timestamp: give one such as "2024-03-01T09:30:00Z".',
        "naive": (
            "A timestamp needs a UTC offset (Z or +01:00): a time without one is ambiguous "
            "and is refused."
        ),
        "range": _INSTANT_OUT_OF_RANGE,
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> dt.datetime:
        instant = self._parse(value)
        if not EARLIEST_INSTANT <= instant < LATEST_INSTANT:
            raise self.make_error("range")
        return instant

    def _parse(self, value: Any) -> dt.datetime:
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                raise self.make_error("naive")
            return self._in_utc(value)
        if not isinstance(value, str):
            raise self.make_error("invalid")
        match = _RFC3339.fullmatch(value)
        if match is None:
            raise self.make_error("invalid")
        day, clock, fraction, offset = match.groups()
        if offset is None:
            raise self.make_error("naive")
        fraction = (fraction or "")[:7]  # "." and at most six digits
        offset = "+00:00" if offset in ("Z", "z") else offset
        try:
            parsed = dt.datetime.fromisoformat(f"{day}T{clock}{fraction}{offset}")
        except ValueError as error:  # 2024-02-30, 25:00, a leap second
            raise self.make_error("invalid") from error
        return self._in_utc(parsed)

    def _in_utc(self, value: dt.datetime) -> dt.datetime:
        try:
            return value.astimezone(UTC)
        except OverflowError as error:  # 0001-01-01T00:00+01:00 is in year 0 in UTC
            raise self.make_error("range") from error

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):  # a stored payload: normalise it through the same parser
            value = self._parse(value)
        return format_ts(value)


class LocalDate(fields.Field[dt.date]):
    """A calendar date (a deadline, a birth date): exactly `YYYY-MM-DD`."""

    default_error_messages = {
        "invalid": 'Not a date: give one such as "2024-03-01".',
        "range": _OUT_OF_RANGE,
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> dt.date:
        day = self._parse(value)
        if not _plausible(day):
            raise self.make_error("range")
        return day

    def _parse(self, value: Any) -> dt.date:
        if isinstance(value, dt.datetime):  # a datetime is a date to Python; not to us
            raise self.make_error("invalid")
        if isinstance(value, dt.date):
            return value
        if not isinstance(value, str) or _DATE.fullmatch(value) is None:
            raise self.make_error("invalid")
        try:
            return dt.date.fromisoformat(value)
        except ValueError as error:
            raise self.make_error("invalid") from error

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if isinstance(value, str):  # a stored payload: check it is a date
            value = self._parse(value)
        return None if value is None else value.isoformat()


# -- personal data -------------------------------------------------------------------------------


class Personal(fields.Field[Any]):
    """Personal data (name, tax code, contacts, vulnerability): `Personal(fields.String())`.

    Validates and converts exactly as the wrapped field does; `shared.crypto` seals the dumped
    value per person before it enters an event. `ERASED` loads and dumps as itself, so a read
    model rebuilt after an erasure can still load the event through its schema.
    `metadata={"personal": True}` on any field marks it too, without the `ERASED` pass-through.
    """

    def __init__(self, inner: fields.Field[Any] | type[fields.Field[Any]], **kwargs: Any) -> None:
        metadata = {**kwargs.pop("metadata", {}), "personal": True}
        super().__init__(metadata=metadata, **kwargs)
        self.inner: fields.Field[Any] = inner() if isinstance(inner, type) else inner

    def _bind_to_schema(self, field_name: str, parent: ma.Schema | fields.Field[Any]) -> None:
        super()._bind_to_schema(field_name, parent)
        self.inner._bind_to_schema(field_name, self)

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> Any:
        if isinstance(value, str) and value == ERASED:
            return ERASED
        return self.inner.deserialize(value, attr, data, **kwargs)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        if isinstance(value, str) and value == ERASED:
            return ERASED
        return self.inner._serialize(value, attr, obj, **kwargs)


def is_personal(field: fields.Field[Any]) -> bool:
    return isinstance(field, Personal) or bool(field.metadata.get("personal"))


def _nested_schema(field: fields.Field[Any]) -> tuple[ma.Schema, bool] | None:
    """(schema, many) of a Nested field, or of a List of Nested; None for anything else."""
    if isinstance(field, fields.Nested):
        return field.schema, bool(field.many)
    if isinstance(field, fields.List) and isinstance(field.inner, fields.Nested):
        return field.inner.schema, True
    return None


def _key(name: str, field: fields.Field[Any]) -> str:
    return field.data_key or name


def personal_paths(schema: ma.Schema) -> list[str]:
    """The JSON paths of every personal field: `name`, `address.street`, `children[].name`."""
    paths: list[str] = []
    for name, field in schema.fields.items():
        key = _key(name, field)
        if is_personal(field):
            paths.append(key)
        elif isinstance(field, fields.List) and is_personal(field.inner):
            paths.append(f"{key}[]")
        elif (nested := _nested_schema(field)) is not None:
            sub, many = nested
            paths.extend(f"{key}{'[]' if many else ''}.{path}" for path in personal_paths(sub))
    return paths


def map_personal(
    schema: ma.Schema, data: Mapping[str, Any], transform: Callable[[str, Any], Any]
) -> dict[str, Any]:
    """A copy of `data` (the dumped, JSON form) with `transform(path, value)` applied to each
    personal value that is present; Nested schemas and lists of them are walked too.

    A container that should hold personal values but has another shape is an error (ValueError),
    never skipped: skipping would let plaintext into an event.
    """
    out = dict(data)
    for name, field in schema.fields.items():
        key = _key(name, field)
        value = data.get(key)
        if key not in data:
            continue
        if is_personal(field):
            out[key] = transform(key, value)
        elif isinstance(field, fields.List) and is_personal(field.inner):
            if value is not None:
                out[key] = [transform(f"{key}[]", item) for item in _as_list(key, value)]
        elif (nested := _nested_schema(field)) is not None and value is not None:
            sub, many = nested
            if not personal_paths(sub):
                continue
            if many:
                out[key] = [
                    _map_nested(sub, item, transform, f"{key}[].") for item in _as_list(key, value)
                ]
            else:
                out[key] = _map_nested(sub, value, transform, f"{key}.")
    return out


def _as_list(path: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{path!r} holds personal data and must be a list, not {value!r}")
    return value


def _map_nested(
    schema: ma.Schema, data: Any, transform: Callable[[str, Any], Any], prefix: str
) -> Any:
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise ValueError(f"{prefix[:-1]!r} holds personal data and must be an object")
    return map_personal(schema, data, lambda path, value: transform(prefix + path, value))


# -- the base schema and the 422 body ------------------------------------------------------------


class Schema(ma.Schema):
    """Base of every lavoro schema: unknown keys are refused (a typo must not pass silently).

    An input schema with `into = SomeCommand` loads an instance of that (frozen) dataclass, its
    lists as tuples, instead of a dict: a service's commands are typed from the edge inward.
    Field order is declaration order (marshmallow 4 always keeps it; `ordered` no longer exists).
    """

    into: ClassVar[Callable[..., Any] | None] = None

    class Meta:
        unknown = ma.RAISE

    @ma.post_load
    def _into(self, data: dict[str, Any], **_: Any) -> Any:
        if self.into is None:
            return data
        return self.into(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def personal_fields(self) -> list[str]:
        """The JSON paths this schema marks personal (see `personal_paths`)."""
        return personal_paths(self)


def _flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested error dict as `{"a.b.0.c": [messages]}`: one level, each field named."""
    if isinstance(messages, Mapping):
        flat: dict[str, list[str]] = {}
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            flat.update(_flatten(value, name))
        return flat
    if isinstance(messages, list | tuple):
        if all(isinstance(item, str) for item in messages):
            return {prefix or "_schema": list(messages)}
        flat = {}
        for item in messages:
            for key, value in _flatten(item, prefix).items():
                flat.setdefault(key, []).extend(value)
        return flat
    return {prefix or "_schema": [str(messages)]}


def invalid_input(error: ValidationError) -> InvalidInput:
    """The chassis' 422 error for a marshmallow `ValidationError`, naming every refused field."""
    flat = _flatten(error.messages)
    summary = "; ".join(f"{name}: {' '.join(texts)}" for name, texts in flat.items())
    return InvalidInput(f"invalid input: {summary}", fields=flat)


def error_body(error: ValidationError) -> dict[str, Any]:
    """`{"error": "invalid_input", "message": ..., "fields": {field: [messages]}}`."""
    return invalid_input(error).to_body()


def load_input(schema: ma.Schema, data: Any) -> Any:
    """`schema.load(data)`, raising `InvalidInput` (422) instead of `ValidationError`."""
    try:
        return schema.load(data)
    except ValidationError as error:
        raise invalid_input(error) from error


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]
