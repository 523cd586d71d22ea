"""Reference profiles: the baseline each window is compared with.

Per numeric feature: quantile bin edges (default 64 bins, ties removed), the reference's own
counts in those bins, min/max, moments, quartiles, missing and non-finite rates. Per
categorical feature: the categories and their counts. The same for the prediction (score
and/or label). Versioned by a content-derived id and a created-at time; serialised with the
`ReferenceProfile` Avro schema.

>>> import numpy as np
>>> from driftwire.detectors.batch import FeatureBatch
>>> from driftwire.detectors.config import ModelConfig
>>> rng = np.random.default_rng(1)
>>> n = 10_000
>>> batch = FeatureBatch(model_id="m", prediction_id=np.arange(n).astype(object),
...                      event_time=np.arange(n, dtype=np.int64),
...                      numeric={"x": rng.normal(size=n)},
...                      categorical={"c": rng.choice(np.array(["a", "b"], dtype=object), n)},
...                      score=rng.random(n))
>>> ref = ReferenceProfile.from_batch(batch, ModelConfig(id="m"))
>>> len(ref.numeric["x"].edges), ref.categorical["c"].categories.tolist(), ref.created_at
(65, ['a', 'b'], 9999)
>>> ReferenceProfile.from_bytes(ref.to_bytes()).reference_id == ref.reference_id
True
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
from driftwire.detectors.batch import FeatureBatch
from driftwire.detectors.config import ModelConfig
from driftwire.detectors.latency import LatencySketch
from driftwire.detectors.profile import (
    LABEL_COLUMN,
    SCORE_COLUMN,
    bin_numeric,
    count_categories,
    load_avro_schema,
)

log = logging.getLogger(__name__)

#: A "categorical" with more distinct values than this is an id, not a category: the rarest
#: values beyond it are left out of the reference and count as unseen.
MAX_CATEGORIES = 1_000
_RESERVED = {"model_id", "model_version", "prediction_id", "event_time", "score", "label"}


@dataclass(frozen=True)
class NumericReference:
    name: str
    edges: np.ndarray  # float64, inner bin edges; the last is just above the reference max
    counts: np.ndarray  # int64, len(edges) + 1: below-min, inner bins, above-max
    missing: int
    nonfinite: int
    mean: float
    std: float
    min: float
    max: float
    q25: float
    q50: float
    q75: float

    @property
    def count(self) -> int:
        """Finite values."""
        return int(self.counts.sum())

    @property
    def missing_rate(self) -> float:
        total = self.count + self.missing + self.nonfinite
        return self.missing / total if total else 0.0

    @classmethod
    def from_values(cls, name: str, values: np.ndarray, bins: int) -> NumericReference:
        values = np.asarray(values, dtype=np.float64)
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            log.warning("reference for %r has no finite value; it will not be tested", name)
            finite_edges = np.array([0.0, 1.0])
        else:
            finite_edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)))
            if len(finite_edges) == 1:  # a constant: one bin holding it
                finite_edges = np.append(finite_edges, finite_edges[0])
            # the top edge moves just above the max so the max itself is in range
            finite_edges[-1] = np.nextafter(finite_edges[-1], np.inf)
        counts, _, missing, nonfinite = bin_numeric(values, finite_edges)
        stats = _moments(finite)
        return cls(name, finite_edges, counts, missing, nonfinite, **stats)

    def to_record(self) -> dict[str, Any]:
        rec = {k: getattr(self, k) for k in ("name", "missing", "nonfinite")}
        rec |= {k: float(getattr(self, k)) for k in _MOMENT_KEYS}
        return rec | {"edges": self.edges.tolist(), "counts": self.counts.tolist()}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> NumericReference:
        rec = dict(rec)
        rec["edges"] = np.array(rec["edges"], dtype=np.float64)
        rec["counts"] = np.array(rec["counts"], dtype=np.int64)
        return cls(**rec)


_MOMENT_KEYS = ("mean", "std", "min", "max", "q25", "q50", "q75")


def _moments(finite: np.ndarray) -> dict[str, float]:
    if len(finite) == 0:
        return dict.fromkeys(_MOMENT_KEYS, float("nan"))
    q25, q50, q75 = np.quantile(finite, [0.25, 0.5, 0.75])
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "q25": float(q25),
        "q50": float(q50),
        "q75": float(q75),
    }


@dataclass(frozen=True)
class CategoricalReference:
    name: str
    categories: np.ndarray  # str, sorted
    counts: np.ndarray  # int64, len(categories) + 1: the last is the unseen bucket
    missing: int

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    @property
    def missing_rate(self) -> float:
        total = self.count + self.missing
        return self.missing / total if total else 0.0

    @classmethod
    def from_values(cls, name: str, values: np.ndarray) -> CategoricalReference:
        seen = Counter(
            v if isinstance(v, str) else str(v) for v in values.tolist() if v is not None
        )
        kept = sorted(c for c, _ in seen.most_common(MAX_CATEGORIES))
        if len(seen) > MAX_CATEGORIES:
            log.warning(
                "%r has %d categories; keeping the %d most frequent",
                name,
                len(seen),
                MAX_CATEGORIES,
            )
        categories = np.array(kept, dtype=str) if kept else np.array([], dtype=str)
        counts, missing = count_categories(values, {c: i for i, c in enumerate(kept)})
        return cls(name, categories, counts, missing)

    def to_record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "categories": self.categories.tolist(),
            "counts": self.counts.tolist(),
            "missing": self.missing,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> CategoricalReference:
        return cls(
            name=rec["name"],
            categories=np.array(rec["categories"], dtype=str),
            counts=np.array(rec["counts"], dtype=np.int64),
            missing=rec["missing"],
        )


@dataclass(frozen=True)
class ReferenceProfile:
    """The baseline of one model; `numeric`/`categorical` keep the configured feature order."""

    reference_id: str
    model_id: str
    created_at: int  # epoch ms: latest event time of the data, or as given
    count: int
    numeric: dict[str, NumericReference] = field(default_factory=dict)
    categorical: dict[str, CategoricalReference] = field(default_factory=dict)
    score: NumericReference | None = None
    label: CategoricalReference | None = None
    # event-time span of the data (0: unknown) for the reference event rate, and latencies;
    # both stay out of the content hash while empty so existing reference ids do not change
    time_span_ms: int = 0
    latency: LatencySketch = field(default_factory=LatencySketch)

    @property
    def event_rate(self) -> float | None:
        """Events per millisecond of event time in the reference, None when unknown."""
        return self.count / self.time_span_ms if self.time_span_ms > 0 else None

    @classmethod
    def from_batch(
        cls,
        batch: FeatureBatch,
        cfg_model: ModelConfig,
        reference_id: str | None = None,
        created_at: int | None = None,
    ) -> ReferenceProfile:
        """Reference from columns (e.g. the first N events, or a file already read)."""
        bins = cfg_model.reference.bins
        numeric_names = list(batch.numeric) if cfg_model.numeric == "infer" else cfg_model.numeric
        categorical_names = (
            list(batch.categorical) if cfg_model.categorical == "infer" else cfg_model.categorical
        )
        missing = [f for f in numeric_names if f not in batch.numeric] + [
            f for f in categorical_names if f not in batch.categorical
        ]
        if missing:
            raise ValueError(f"reference data lacks configured features {missing}")
        numeric = {
            f: NumericReference.from_values(f, batch.numeric[f], bins) for f in numeric_names
        }
        categorical = {
            f: CategoricalReference.from_values(f, batch.categorical[f]) for f in categorical_names
        }
        score = label = None
        if cfg_model.prediction.score:
            if batch.score is None:
                raise ValueError("prediction.score is watched but the reference has no score")
            score = NumericReference.from_values(SCORE_COLUMN, batch.score, bins)
        if cfg_model.prediction.label:
            if batch.label is None:
                raise ValueError("prediction.label is watched but the reference has no label")
            label = CategoricalReference.from_values(LABEL_COLUMN, batch.label)
        if created_at is None:
            created_at = int(batch.event_time.max()) if len(batch) else 0
        span = int(batch.event_time.max() - batch.event_time.min()) if len(batch) > 1 else 0
        latency = (
            LatencySketch.from_values(batch.latency_ms)
            if batch.latency_ms is not None
            else LatencySketch()
        )
        body = (len(batch), numeric, categorical, score, label, span, latency)
        ref = cls("", cfg_model.id, created_at, *body)
        rid = reference_id or f"{cfg_model.id}-{ref.content_hash()[:16]}"
        return cls(rid, cfg_model.id, created_at, *body)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        cfg_model: ModelConfig,
        reference_id: str | None = None,
        created_at: int | None = None,
    ) -> ReferenceProfile:
        """Reference from a Parquet, CSV, JSONL or Avro container file.

        Rows may be flat (one column per feature, plus optional `score`, `label`,
        `event_time`) or `FeatureEvent`-shaped (nested `numeric` / `categorical` /
        `prediction` maps)."""
        batch = read_feature_file(path, cfg_model)
        return cls.from_batch(batch, cfg_model, reference_id, created_at)

    def content_hash(self) -> str:
        return hashlib.sha256(json.dumps(self._body(), sort_keys=True).encode()).hexdigest()

    def _body(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "numeric": [n.to_record() for n in self.numeric.values()],
            "categorical": [c.to_record() for c in self.categorical.values()],
            "score": self.score.to_record() if self.score else None,
            "label": self.label.to_record() if self.label else None,
        } | self._extras()

    def _extras(self) -> dict[str, Any]:
        if not self.latency.count:
            return {}
        index, counts = self.latency.to_sparse()
        return {"latency_index": index, "latency_counts": counts}

    def to_record(self) -> dict[str, Any]:
        head = {"reference_id": self.reference_id, "model_id": self.model_id}
        times = {"created_at": self.created_at, "time_span_ms": self.time_span_ms}
        return head | times | self._body()

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> ReferenceProfile:
        return cls(
            reference_id=rec["reference_id"],
            model_id=rec["model_id"],
            created_at=rec["created_at"],
            count=rec["count"],
            numeric={r["name"]: NumericReference.from_record(r) for r in rec["numeric"]},
            categorical={
                r["name"]: CategoricalReference.from_record(r) for r in rec["categorical"]
            },
            score=NumericReference.from_record(rec["score"]) if rec["score"] else None,
            label=CategoricalReference.from_record(rec["label"]) if rec["label"] else None,
            time_span_ms=rec.get("time_span_ms", 0),
            latency=LatencySketch.from_sparse(
                rec.get("latency_index", []), rec.get("latency_counts", [])
            ),
        )

    def to_bytes(self) -> bytes:
        """Schemaless Avro, `ReferenceProfile` schema."""
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, load_avro_schema("ReferenceProfile"), self.to_record())
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ReferenceProfile:
        schema = load_avro_schema("ReferenceProfile")
        return cls.from_record(fastavro.schemaless_reader(io.BytesIO(data), schema, None))


FILE_FORMAT_BY_SUFFIX = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".avro": "avro",
}


def read_feature_file(path: str | Path, cfg_model: ModelConfig) -> FeatureBatch:
    """Read a reference file into columns; the format comes from config or the suffix."""
    path = Path(path)
    fmt = cfg_model.reference.format
    if fmt == "auto":
        fmt = FILE_FORMAT_BY_SUFFIX.get(path.suffix.lower(), "")
        if not fmt:
            raise ValueError(f"{path}: cannot tell the format from the suffix; set format")
    rows = _read_rows(path, fmt)
    if not rows:
        raise ValueError(f"{path}: no rows")
    if "numeric" in rows[0] or "categorical" in rows[0]:
        recs = [
            {"model_id": cfg_model.id, "prediction_id": str(i), "event_time": 0} | r
            for i, r in enumerate(rows)
        ]
        return FeatureBatch.from_records(recs)
    return _flat_rows_to_batch(rows, cfg_model)


def _read_rows(path: Path, fmt: str) -> list[dict[str, Any]]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if fmt == "csv":
        import pyarrow.csv as pacsv

        return pacsv.read_csv(path).to_pylist()
    if fmt == "avro":
        with path.open("rb") as fo:
            return list(fastavro.reader(fo))
    with path.open() as fo:
        return [json.loads(line) for line in fo if line.strip()]


def _flat_rows_to_batch(rows: list[dict[str, Any]], cfg_model: ModelConfig) -> FeatureBatch:
    names = [k for k in rows[0] if k not in _RESERVED]
    if cfg_model.numeric == "infer":
        numeric = [k for k in names if _is_number(rows, k)]
    else:
        numeric = cfg_model.numeric
    if cfg_model.categorical == "infer":
        categorical = [k for k in names if k not in numeric]
    else:
        categorical = cfg_model.categorical

    def num(key: str) -> np.ndarray:
        return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])

    def cat(key: str) -> np.ndarray:
        return np.array([None if r.get(key) is None else str(r[key]) for r in rows], dtype=object)

    n = len(rows)
    has_time = "event_time" in rows[0]
    return FeatureBatch(
        model_id=cfg_model.id,
        prediction_id=np.array(
            [str(r.get("prediction_id", i)) for i, r in enumerate(rows)], dtype=object
        ),
        event_time=num("event_time").astype(np.int64) if has_time else np.zeros(n, np.int64),
        numeric={k: num(k) for k in numeric},
        categorical={k: cat(k) for k in categorical},
        score=num("score") if "score" in rows[0] else None,
        label=cat("label") if "label" in rows[0] else None,
    )


def _is_number(rows: list[dict[str, Any]], key: str) -> bool:
    values = [r.get(key) for r in rows[:1000] if r.get(key) is not None]
    return bool(values) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    )
