"""Convert the engine's :class:`~driftwire.detectors.alerts.Alert` to and from `DriftAlert` records.

The engine is imported inside the functions, so ``driftwire.schemas`` stays importable
(and light) for producers that never touch alerts.

>>> from driftwire.detectors.alerts import Alert, AlertKind, Severity, Status
>>> from driftwire.schemas.serde import Codec
>>> alert = Alert(alert_id="a1", model_id="fraud", kind=AlertKind.DATA_DRIFT, detector="psi",
...               status=Status.FIRING, severity=Severity.WARNING, statistic="psi", value=0.31,
...               threshold=0.2, window_start=0, window_end=60_000, window_count=1200,
...               reference_id="ref-1", feature="amount")
>>> codec = Codec("DriftAlert", "avro")
>>> alert_from_record(codec.decode(codec.encode(alert_to_record(alert)))) == alert
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from driftwire.schemas.errors import DecodeError

if TYPE_CHECKING:
    from driftwire.detectors.alerts import Alert


def alert_to_record(alert: Alert) -> dict[str, Any]:
    """The `DriftAlert` record for an alert: enums become their string values."""
    record = {f.name: getattr(alert, f.name) for f in fields(alert)}
    for name in ("kind", "status", "severity"):
        record[name] = str(record[name].value)
    evidence = alert.evidence
    record["evidence"] = {
        "reference": dict(evidence.reference),
        "current": dict(evidence.current),
        "notes": dict(evidence.notes),
    }
    return record


def alert_from_record(record: Mapping[str, Any]) -> Alert:
    """The alert for a decoded `DriftAlert` record.

    Raises :class:`DecodeError` when kind, status or severity is a value this version
    of driftwire does not know (newer producers may add kinds).
    """
    from driftwire.detectors.alerts import Alert, AlertKind, Evidence, Severity, Status

    values = dict(record)
    for name, enum in (("kind", AlertKind), ("status", Status), ("severity", Severity)):
        try:
            values[name] = enum(values[name])
        except ValueError as exc:
            known = ", ".join(e.value for e in enum)
            raise DecodeError(
                f"unknown alert {name} {values[name]!r} (this driftwire knows: {known})",
                schema="DriftAlert",
            ) from exc
    evidence = values.get("evidence") or {}
    values["evidence"] = Evidence(
        reference=dict(evidence.get("reference", {})),
        current=dict(evidence.get("current", {})),
        notes=dict(evidence.get("notes", {})),
    )
    known_fields = {f.name for f in fields(Alert)}
    # Fields added to the schema later are ignored here rather than breaking old readers.
    return Alert(**{k: v for k, v in values.items() if k in known_fields})
