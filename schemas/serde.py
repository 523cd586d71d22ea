"""Load driftwire's Avro contracts and encode/decode them in three wire formats.

Formats, chosen per topic:

- ``"confluent"``: Confluent Schema Registry framing, magic byte ``0x00`` + 4-byte
  big-endian schema id + Avro binary. Interoperable with confluent-kafka's
  ``AvroSerializer``/``AvroDeserializer``. The writer schema is looked up by id
  (a ``SchemaRegistryClient`` or a plain ``{schema_id: schema}`` mapping) and
  resolved against driftwire's reader schema, so evolved schemas decode.
- ``"avro"``: schemaless Avro binary; the writer schema is the shipped schema or
  the one configured with ``writer_schema=``.
- ``"json"``: one UTF-8 JSON object per message, plain JSON (no Avro union
  tagging), validated against the Avro schema; missing fields with a default get
  the default. Non-finite doubles are written as the ``NaN``/``Infinity`` tokens
  Python's json module and Jackson (ALLOW_NON_NUMERIC_NUMBERS) read.

Timestamps: decoded records carry ``timestamp-millis`` fields as ``int``
milliseconds, never ``datetime`` (the engine works in int ms and a round trip is
exact). Encoding accepts either.

Beyond the Avro types, the .avsc files carry contract attributes that the serde
enforces on decode and encode: ``driftwire.nonEmpty`` (string), ``driftwire.minimum``
/ ``driftwire.maximum`` (numbers) and ``driftwire.finite`` (doubles: no NaN/inf).
Every failure is a :class:`~driftwire.schemas.errors.DecodeError` or
:class:`~driftwire.schemas.errors.EncodeError` with a readable reason.

>>> codec = Codec("OutcomeEvent", "json")
>>> outcome = {"model_id": "fraud", "prediction_id": "p1", "event_time": 1_700_000_000_000,
...            "value": 1.0}
>>> codec.decode(codec.encode(outcome)) == {**outcome, "label": None}
True
>>> codec.decode(b'{"model_id": "fraud", "event_time": 0}', topic="outcomes", partition=0,
...              offset=7)
Traceback (most recent call last):
...
driftwire.schemas.errors.DecodeError: outcomes[0]@7: missing required field 'prediction_id'
"""

from __future__ import annotations

import datetime
import functools
import io
import json
import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, Protocol

import fastavro
from driftwire.schemas.errors import DecodeError, EncodeError
from fastavro.read import SchemaResolutionError
from fastavro.validation import ValidationError, validate

Format = Literal["confluent", "avro", "json"]
FORMATS: tuple[str, ...] = ("confluent", "avro", "json")
MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")
_TIME_LOGICAL_TYPES = frozenset(
    {
        "timestamp-millis",
        "timestamp-micros",
        "local-timestamp-millis",
        "local-timestamp-micros",
        "time-millis",
        "time-micros",
        "date",
    }
)

# A check looks at one decoded record and returns a reason when it breaks the contract.
Check = Callable[[Mapping[str, Any]], str | None]


class RegistryClient(Protocol):
    """The part of confluent_kafka's ``SchemaRegistryClient`` the serde uses."""

    def get_schema(self, schema_id: int) -> Any: ...

    def register_schema(self, subject_name: str, schema: Any) -> int: ...


Registry = RegistryClient | Mapping[int, Any]


@dataclass(frozen=True, slots=True)
class AvroSchema:
    """One Avro contract, parsed once: ``parsed`` to write, ``reader`` to read.

    ``reader`` is the same schema with time logical types removed, so decoding
    yields int milliseconds instead of datetimes (the binary encoding is identical).
    """

    name: str
    text: str
    parsed: dict
    reader: dict
    checks: tuple[Check, ...]
    required: tuple[str, ...]
    # Type checks for the spots where fastavro's writer coerces instead of failing.
    strict_types: tuple[Check, ...] = ()


def schema_names() -> list[str]:
    """Names of the .avsc contracts shipped in the package, e.g. ``["DriftAlert", ...]``."""
    files = resources.files("driftwire.schemas").iterdir()
    return sorted(f.name.removesuffix(".avsc") for f in files if f.name.endswith(".avsc"))


@functools.cache
def load_schema(name: str) -> AvroSchema:
    """Load a shipped contract by name (``"FeatureEvent"`` or ``"FeatureEvent.avsc"``).

    Cached per process; treat the result as read-only.
    """
    filename = name if name.endswith(".avsc") else f"{name}.avsc"
    path = resources.files("driftwire.schemas").joinpath(filename)
    if not path.is_file():
        raise LookupError(f"no schema {name!r}; shipped schemas: {', '.join(schema_names())}")
    return parse_schema_text(path.read_text(encoding="utf-8"))


def parse_schema_text(text: str | Mapping[str, Any]) -> AvroSchema:
    """Parse an Avro schema given as JSON text or an already-loaded JSON object."""
    raw = json.loads(text) if isinstance(text, str) else dict(text)
    # Stripped like confluent-kafka's AvroSerializer does, so both register the same string.
    source = text.strip() if isinstance(text, str) else json.dumps(raw)
    parsed = fastavro.parse_schema(raw)
    reader = fastavro.parse_schema(_strip_time_logical_types(raw))
    required = tuple(f["name"] for f in raw.get("fields", ()) if "default" not in f)
    checks = _compile_checks(raw)
    strict = _compile_strict_types(raw, (), parsed["name"])
    return AvroSchema(parsed["name"], source, parsed, reader, checks, required, strict)


def as_schema(schema: str | Mapping[str, Any] | AvroSchema) -> AvroSchema:
    """Accept a shipped name, JSON text, a JSON object or an :class:`AvroSchema`."""
    if isinstance(schema, AvroSchema):
        return schema
    if isinstance(schema, str) and not schema.lstrip().startswith("{"):
        return load_schema(schema)
    return parse_schema_text(schema)


class Codec:
    """Encode/decode one contract in one wire format.

    Args:
        schema: the reader contract (shipped name, JSON text/object or AvroSchema).
        fmt: ``"confluent"``, ``"avro"`` or ``"json"``.
        registry: for ``"confluent"``: a ``SchemaRegistryClient`` or ``{schema_id: schema}``.
        schema_id: id written by :meth:`encode` in confluent framing.
        subject: registry subject to register the schema under on first encode when
            no ``schema_id`` is given (confluent's default is ``"<topic>-value"``).
        writer_schema: for ``"avro"``: the schema producers write with, if not ``schema``.

    >>> codec = Codec("FeatureEvent", "avro")
    >>> event = {"model_id": "m", "prediction_id": "p", "event_time": 0,
    ...          "numeric": {"amount": 12.5, "age": None}}
    >>> codec.decode(codec.encode(event))["numeric"]
    {'amount': 12.5, 'age': None}
    """

    def __init__(
        self,
        schema: str | Mapping[str, Any] | AvroSchema,
        fmt: Format = "avro",
        *,
        registry: Registry | None = None,
        schema_id: int | None = None,
        subject: str | None = None,
        writer_schema: str | Mapping[str, Any] | AvroSchema | None = None,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
        if fmt == "confluent" and registry is None:
            raise ValueError("the confluent format needs a registry (client or {id: schema})")
        self.schema = as_schema(schema)
        self.fmt = fmt
        self.registry = registry
        self.schema_id = schema_id
        self.subject = subject
        self.writer = as_schema(writer_schema) if writer_schema is not None else self.schema
        # Writer schemas seen per registry id: (writer read-view, reader or None if identical).
        self._by_id: dict[int, tuple[dict, dict | None]] = {}
        self._avro_reader = _reader_for(self.writer.reader, self.schema.reader)
        self._decode_body = {
            "confluent": self._decode_confluent,
            "avro": self._decode_avro,
            "json": self._decode_json,
        }[fmt]

    # -- decoding ---------------------------------------------------------------------------

    def decode(
        self,
        data: bytes | None,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> dict:
        """Decode and validate one message; raises :class:`DecodeError` on any bad input."""
        try:
            if not data:
                raise _Invalid("empty message (a tombstone?)")
            record = self._decode_body(data)
            self._check(record)
            return record
        except _Invalid as exc:
            raise DecodeError(
                exc.reason,
                topic=topic,
                partition=partition,
                offset=offset,
                schema=self.schema.name,
                raw=bytes(data) if data is not None else None,
            ) from exc.__cause__

    def decode_many(
        self,
        messages: Iterable[bytes | None],
        *,
        topic: str | None = None,
        partition: int | None = None,
        offsets: Sequence[int] | None = None,
    ) -> tuple[list[dict], list[DecodeError]]:
        """Decode a batch without raising: good records in order, and one error per bad message.

        Each error carries ``index`` (position in ``messages``), its offset when
        ``offsets`` is given and the original bytes in ``raw``, for the dead-letter topic.
        Registry outages are not data errors: they propagate so the caller retries.
        """
        records: list[dict] = []
        errors: list[DecodeError] = []
        for i, data in enumerate(messages):
            offset = offsets[i] if offsets is not None else None
            try:
                records.append(self.decode(data, topic=topic, partition=partition, offset=offset))
            except DecodeError as err:
                err.index = i
                errors.append(err)
        return records, errors

    def _decode_avro(self, data: bytes) -> dict:
        return _read_avro(data, 0, self.writer.reader, self._avro_reader)

    def _decode_confluent(self, data: bytes) -> dict:
        if data[0] != MAGIC_BYTE:
            raise _Invalid(_magic_reason(data[0]))
        if len(data) < _HEADER.size:
            raise _Invalid(f"message of {len(data)} bytes is shorter than the 5-byte header")
        schema_id = _HEADER.unpack_from(data)[1]
        writer, reader = self._writer_for_id(schema_id)
        return _read_avro(data, _HEADER.size, writer, reader)

    def _decode_json(self, data: bytes) -> dict:
        try:
            obj = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _Invalid(f"not valid UTF-8 JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise _Invalid(f"expected a JSON object, got {type(obj).__name__}")
        missing = [name for name in self.schema.required if name not in obj]
        if missing:
            plural = "s" if len(missing) > 1 else ""
            raise _Invalid(f"missing required field{plural} {', '.join(map(repr, missing))}")
        _check_types(obj, self.schema)
        # Write then read the binary form: fills defaults and gives doubles as float, exactly
        # as the Avro formats would. fastavro's validator only runs when the writer fails (to
        # say why): it is 4x slower than the write and read together.
        return _canonical(obj, self.schema)

    def _writer_for_id(self, schema_id: int) -> tuple[dict, dict | None]:
        cached = self._by_id.get(schema_id)
        if cached is None:
            writer = _lookup(self.registry, schema_id)
            cached = (writer.reader, _reader_for(writer.reader, self.schema.reader))
            self._by_id[schema_id] = cached
        return cached

    def _check(self, record: Mapping[str, Any]) -> None:
        for check in self.schema.checks:
            reason = check(record)
            if reason:
                raise _Invalid(reason)

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Validate and encode one record; raises :class:`EncodeError` with the reason."""
        schema = self.writer if self.fmt == "avro" else self.schema
        try:
            self._check(record)
            _check_types(record, schema)
            if self.fmt == "json":
                canonical = _canonical(record, schema)
                return json.dumps(canonical, ensure_ascii=False, separators=(",", ":")).encode()
            body = _write_avro(record, schema)
        except _Invalid as exc:
            raise EncodeError(exc.reason, schema=schema.name) from exc.__cause__
        if self.fmt == "confluent":
            return _HEADER.pack(MAGIC_BYTE, self._own_schema_id()) + body
        return body

    def _own_schema_id(self) -> int:
        if self.schema_id is None:
            if self.subject is None or isinstance(self.registry, Mapping):
                raise EncodeError(
                    "confluent encoding needs schema_id=, or a registry client and subject=",
                    schema=self.schema.name,
                )
            from confluent_kafka.schema_registry import Schema  # only when registering

            self.schema_id = self.registry.register_schema(
                self.subject, Schema(self.schema.text, "AVRO")
            )
        return self.schema_id


class _Invalid(Exception):
    """Internal: a reason without context; Codec adds topic/offset and the public type."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _read_avro(data: bytes, start: int, writer: dict, reader: dict | None) -> dict:
    buf = io.BytesIO(data)
    buf.seek(start)
    try:
        record = fastavro.schemaless_reader(buf, writer, reader)
    except SchemaResolutionError as exc:
        raise _Invalid(
            f"writer schema {writer['name']} cannot be read as {(reader or writer)['name']}: {exc}"
        ) from exc
    except Exception as exc:  # fastavro raises EOFError, IndexError, UnicodeError, ...
        raise _Invalid(f"malformed Avro for {writer['name']}: {_describe(exc)}") from exc
    extra = len(data) - buf.tell()
    if extra:
        raise _Invalid(
            f"{extra} bytes left after a complete {writer['name']} record (wrong schema?)"
        )
    return record


def _write_avro(record: Mapping[str, Any], schema: AvroSchema) -> bytes:
    buf = io.BytesIO()
    try:
        fastavro.schemaless_writer(buf, schema.parsed, record)
    except Exception as exc:  # the writer's messages are terse: ask the validator why
        _validate(record, schema)
        raise _Invalid(f"cannot encode {schema.name}: {_describe(exc)}") from exc
    return buf.getvalue()


def _canonical(record: Mapping[str, Any], schema: AvroSchema) -> dict:
    return _read_avro(_write_avro(record, schema), 0, schema.reader, None)


def _validate(record: Any, schema: AvroSchema) -> None:
    if not isinstance(record, Mapping):
        raise _Invalid(f"expected a record (mapping), got {type(record).__name__}")
    try:
        validate(record, schema.parsed, raise_errors=True)
    except ValidationError as exc:
        problems = "; ".join(_short_type_error(e) for e in exc.errors)
        raise _Invalid(f"wrong type: {problems}") from exc


def _check_types(record: Any, schema: AvroSchema) -> None:
    if not isinstance(record, Mapping):
        raise _Invalid(f"expected a record (mapping), got {type(record).__name__}")
    for check in schema.strict_types:
        reason = check(record)
        if reason:
            raise _Invalid(reason)


def _short_type_error(error: Any) -> str:
    # fastavro says "io.driftwire.X.field is <v> of type <class 'str'> expected {...schema...}";
    # keep it, but drop the namespace so the field path reads plainly.
    return str(error).replace("io.driftwire.", "")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _magic_reason(first: int) -> str:
    hint = {
        0x7B: ": is this JSON on an Avro topic?",
        0x01: ": Confluent schema-GUID framing (magic 0x01) is not supported",
    }.get(first, ": is this schemaless Avro, or not Confluent-framed?")
    return f"wrong magic byte 0x{first:02x} (expected 0x00{hint})"


def _lookup(registry: Registry | None, schema_id: int) -> AvroSchema:
    """Writer schema for a registry id; an unknown id is a DecodeError, an outage is not."""
    if isinstance(registry, Mapping):
        if schema_id not in registry:
            raise _Invalid(f"unknown schema id {schema_id} (not in the configured schemas)")
        return as_schema(registry[schema_id])
    try:
        found = registry.get_schema(schema_id)  # type: ignore[union-attr]
    except Exception as exc:
        if getattr(exc, "http_status_code", None) == 404:
            raise _Invalid(f"unknown schema id {schema_id} (registry: not found)") from exc
        raise
    if getattr(found, "schema_type", "AVRO") not in ("AVRO", None):
        raise _Invalid(f"schema id {schema_id} is {found.schema_type}, not AVRO")
    return parse_schema_text(found.schema_str)


def _reader_for(writer: dict, reader: dict) -> dict | None:
    """None when no resolution is needed, which keeps fastavro on its fast path."""
    return None if writer == reader else reader


def _strip_time_logical_types(node: Any) -> Any:
    if isinstance(node, list):
        return [_strip_time_logical_types(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strip_time_logical_types(v) for k, v in node.items()}
    if out.get("logicalType") in _TIME_LOGICAL_TYPES and out.get("type") in ("int", "long"):
        del out["logicalType"]
    return out


# -- contract checks compiled from the .avsc attributes ---------------------------------------


def _compile_checks(schema: Mapping[str, Any], path: tuple[str, ...] = ()) -> tuple[Check, ...]:
    checks: list[Check] = []
    for field in schema.get("fields", ()):
        field_path = (*path, field["name"])
        checks.extend(_field_checks(field, field_path))
        nested = _nested_record(field["type"])
        if nested is not None:
            checks.extend(_compile_checks(nested, field_path))
    return tuple(checks)


def _nested_record(avro_type: Any) -> Mapping[str, Any] | None:
    branches = avro_type if isinstance(avro_type, list) else [avro_type]
    for branch in branches:
        if isinstance(branch, dict) and branch.get("type") == "record":
            return branch
    return None


def _field_checks(field: Mapping[str, Any], path: tuple[str, ...]) -> list[Check]:
    name = ".".join(path)
    checks: list[Check] = []
    if field.get("driftwire.nonEmpty"):
        checks.append(_make_check(path, lambda v: v == "", f"{name} must not be empty"))
    if "driftwire.minimum" in field:
        low = field["driftwire.minimum"]
        checks.append(_bound_check(path, lambda v: v < low, f"{name} is below {low}"))
    if "driftwire.maximum" in field:
        high = field["driftwire.maximum"]
        checks.append(_bound_check(path, lambda v: v > high, f"{name} is above {high}"))
    if field.get("driftwire.finite"):
        checks.append(_finite_check(path, name))
    return checks


def _get(record: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _make_check(path: tuple[str, ...], bad: Callable[[Any], bool], reason: str) -> Check:
    def check(record: Mapping[str, Any]) -> str | None:
        return reason if bad(_get(record, path)) else None

    return check


def _bound_check(path: tuple[str, ...], bad: Callable[[Any], bool], reason: str) -> Check:
    def check(record: Mapping[str, Any]) -> str | None:
        value = _get(record, path)
        # Only numbers are range-checked; other types are the type validator's business.
        if isinstance(value, int | float) and not isinstance(value, bool) and bad(value):
            return f"{reason} ({value})"
        return None

    return check


def _finite_check(path: tuple[str, ...], name: str) -> Check:
    def check(record: Mapping[str, Any]) -> str | None:
        value = _get(record, path)
        if isinstance(value, Mapping):
            values: Iterable[Any] = value.values()
        elif isinstance(value, list | tuple):
            values = value
        else:
            values = (value,)
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                return f"{name} must be finite, got {v}"
        return None

    return check


# -- strict scalar types ------------------------------------------------------------------------
# fastavro's writer truncates 1.5 to 1 in a long, and takes True as 1 in a long or a double.
# Unions are safe (the writer validates each branch strictly); plain fields, and arrays and
# maps of them, are checked here.

_STRICT: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: type(v) is int,
    "long": lambda v: type(v) is int,
    "float": lambda v: type(v) is float or type(v) is int,
    "double": lambda v: type(v) is float or type(v) is int,
    "boolean": lambda v: type(v) is bool,
    # Time fields also take datetimes on encode; fastavro's logical writer converts those.
    "time": lambda v: type(v) is int or isinstance(v, datetime.date | datetime.time),
}


def _compile_strict_types(schema: Mapping[str, Any], path: tuple[str, ...], name: str) -> tuple:
    checks: list[Check] = []
    for field in schema.get("fields", ()):
        field_path = (*path, field["name"])
        avro_type = field["type"]
        if isinstance(avro_type, dict) and avro_type.get("type") == "record":
            checks.extend(_compile_strict_types(avro_type, field_path, name))
            continue
        container, scalar = _container_of(avro_type)
        if isinstance(scalar, str) and scalar in _STRICT:
            kind = "time" if _is_time(avro_type) else scalar
            checks.append(_strict_check(field_path, container, kind, name))
    return tuple(checks)


def _container_of(avro_type: Any) -> tuple[str | None, Any]:
    if isinstance(avro_type, dict):
        if avro_type.get("type") == "array":
            return "array", _scalar(avro_type["items"])
        if avro_type.get("type") == "map":
            return "map", _scalar(avro_type["values"])
    return None, _scalar(avro_type)


def _scalar(avro_type: Any) -> Any:
    return avro_type.get("type") if isinstance(avro_type, dict) else avro_type


def _is_time(avro_type: Any) -> bool:
    return isinstance(avro_type, dict) and avro_type.get("logicalType") in _TIME_LOGICAL_TYPES


def _strict_check(path: tuple[str, ...], container: str | None, scalar: str, name: str) -> Check:
    ok = _STRICT[scalar]
    where = ".".join((name.removeprefix("io.driftwire."), *path))

    def check(record: Mapping[str, Any]) -> str | None:
        value = _get(record, path)
        if value is None:  # absent: the writer fills the default or fails on a required field
            return None
        if container is None:
            values: Iterable[Any] = (value,)
        elif container == "map" and isinstance(value, Mapping):
            values = value.values()
        elif container == "array" and isinstance(value, list | tuple):
            values = value
        else:
            return None  # the writer rejects a wrong container itself
        for v in values:
            if not ok(v):
                expected = "an integer" if scalar == "time" else scalar
                return f"wrong type: {where} is {v!r} ({type(v).__name__}), expected {expected}"
        return None

    return check
