"""Point driftwire at topics that already exist: map their records onto `FeatureEvent`.

A :class:`FieldMapping` names, for each driftwire field, a dotted path into the
user's decoded record (JSON or Avro). Features come either from one sub-object
(``numeric="features.numeric"``: every key becomes a feature) or from a list of
paths (``numeric=("amount", "basket.items")``: the path is the feature name).

>>> mapping = FieldMapping(fixed_model_id="fraud", prediction_id="request.id", event_time="ts",
...                        time_unit="s", numeric=("amount",), categorical=("country",),
...                        score="out.p")
>>> event = mapping.apply({"request": {"id": "r-1"}, "ts": 1700000000.5, "amount": 12,
...                        "country": "FR", "out": {"p": 0.93}})
>>> event["event_time"], event["numeric"], event["categorical"], event["prediction"]["score"]
(1700000000500, {'amount': 12.0}, {'country': 'FR'}, 0.93)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from driftwire.schemas.errors import DecodeError
from driftwire.schemas.serde import load_schema

TimeUnit = Literal["ms", "s", "us", "ns", "iso"]
_MS_PER_UNIT = {"ms": 1, "s": 1000}
_UNITS_PER_MS = {"us": 1000, "ns": 1_000_000}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_MISSING = object()


@dataclass(frozen=True)
class FieldMapping:
    """Where each `FeatureEvent` field lives in a user's record (dotted paths).

    ``fixed_model_id`` replaces ``model_id`` for topics that carry a single model.
    ``numeric``/``categorical``: a path to a sub-object (str) or a tuple of paths.
    ``segments``: segment name -> path. Optional paths (``model_version``, ``score``,
    ``label``, ``latency_ms``) may be None; a configured path that is absent in a record yields a
    missing value for features and prediction, and a :class:`DecodeError` for the ids
    and the event time.
    """

    model_id: str = "model_id"
    fixed_model_id: str | None = None
    model_version: str | None = None
    prediction_id: str = "prediction_id"
    event_time: str = "event_time"
    time_unit: TimeUnit = "ms"
    numeric: str | tuple[str, ...] | None = "numeric"
    categorical: str | tuple[str, ...] | None = "categorical"
    score: str | None = None
    label: str | None = None
    segments: Mapping[str, str] = field(default_factory=dict)
    latency_ms: str | None = None

    def __post_init__(self) -> None:
        if self.time_unit not in (*_MS_PER_UNIT, *_UNITS_PER_MS, "iso"):
            raise ValueError(f"time_unit must be one of ms, s, us, ns, iso; got {self.time_unit!r}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FieldMapping:
        """Build from a config section (e.g. YAML); lists become tuples, unknown keys fail."""
        known = {f.name for f in fields(cls)}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"unknown field mapping keys: {', '.join(sorted(unknown))}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
        return cls(**values)

    def apply(
        self,
        record: Mapping[str, Any],
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> dict[str, Any]:
        """The `FeatureEvent` record for one user record; raises DecodeError naming the path.

        The result is checked against the FeatureEvent contract (non-empty ids, time range).
        """
        try:
            event = self._build(record)
            for check in load_schema("FeatureEvent").checks:
                reason = check(event)
                if reason:
                    raise DecodeError(reason)
        except DecodeError as err:
            err.topic, err.partition, err.offset = topic, partition, offset
            err.schema = "FeatureEvent"
            raise
        return event

    def _build(self, record: Mapping[str, Any]) -> dict[str, Any]:
        model_id = self.fixed_model_id or _text(_required(record, self.model_id), self.model_id)
        version = _get(record, self.model_version) if self.model_version else None
        return {
            "model_id": model_id,
            "model_version": "" if version in (None, _MISSING) else str(version),
            "prediction_id": _text(_required(record, self.prediction_id), self.prediction_id),
            "event_time": self._event_time(_required(record, self.event_time)),
            "numeric": _features(record, self.numeric, _number),
            "categorical": _features(record, self.categorical, _category),
            "prediction": {
                "score": _optional(record, self.score, _number),
                "label": _optional(record, self.label, _category),
            },
            "segments": {
                name: _text(_required(record, path), path) for name, path in self.segments.items()
            },
            "latency_ms": _optional(record, self.latency_ms, _number),
        }

    def _event_time(self, value: Any) -> int:
        if self.time_unit == "iso":
            return _iso_to_ms(value, self.event_time)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DecodeError(f"{self.event_time!r} is {value!r}, expected a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise DecodeError(f"{self.event_time!r} is {value}, expected a finite time")
        return _to_ms(value, self.time_unit)


def _get(record: Any, path: str) -> Any:
    value = record
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _required(record: Mapping[str, Any], path: str) -> Any:
    value = _get(record, path)
    if value is _MISSING or value is None:
        raise DecodeError(f"missing field {path!r}")
    return value


def _optional(record: Mapping[str, Any], path: str | None, convert) -> Any:
    if path is None:
        return None
    value = _get(record, path)
    return None if value is _MISSING or value is None else convert(value, path)


def _text(value: Any, path: str) -> str:
    if isinstance(value, Mapping | list):
        raise DecodeError(f"{path!r} is a {type(value).__name__}, expected a string")
    return str(value)


def _number(value: Any, path: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(f"{path!r} is {value!r}, expected a number")
    return float(value)


def _category(value: Any, path: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return _text(value, path)


def _features(record: Mapping[str, Any], source: str | tuple[str, ...] | None, convert) -> dict:
    if source is None:
        return {}
    if isinstance(source, str):
        block = _get(record, source)
        if block is _MISSING or block is None:
            return {}
        if not isinstance(block, Mapping):
            raise DecodeError(f"{source!r} is {type(block).__name__}, expected an object")
        return {str(k): convert(v, f"{source}.{k}") for k, v in block.items()}
    return {path: _optional(record, path, convert) for path in source}


def _iso_to_ms(value: Any, path: str) -> int:
    if not isinstance(value, str):
        raise DecodeError(f"{path!r} is {value!r}, expected an ISO-8601 time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise DecodeError(f"{path!r} is {value!r}, not an ISO-8601 time") from exc
    if parsed.tzinfo is None:  # naive times are taken as UTC, the only safe guess for logs
        parsed = parsed.replace(tzinfo=UTC)
    return (parsed - _EPOCH) // _ONE_MS


def _to_ms(value: int | float, unit: str) -> int:
    # Integers stay exact; floats (e.g. epoch seconds with a fraction) round to the nearest ms.
    if unit in _UNITS_PER_MS:
        per_ms = _UNITS_PER_MS[unit]
        return value // per_ms if isinstance(value, int) else math.floor(value / per_ms)
    factor = _MS_PER_UNIT[unit]
    return value * factor if isinstance(value, int) else round(value * factor)
