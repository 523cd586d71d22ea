"""Monitor configuration: one YAML file, validated into typed dataclasses.

Every section has defaults chosen so that a model with 20 features and 10,000-event windows
raises at most about one false alarm per 1,000 stationary windows (see `DriftConfig`). An
invalid file raises :class:`ConfigError` listing *all* problems, each as
``FILE: models[0].window.size: expected ..., got ...``.

Top-level sections owned by the Kafka side (`kafka`, `topics`, `worker`, `backtest`) are
ignored here; `driftwire.streams` validates them.

>>> cfg = parse_config({"models": [{"id": "fraud", "numeric": ["amount"],
...                                  "window": {"size": "10m", "min_count": 100}}]})
>>> m = cfg.models[0]
>>> m.window.size, m.window.hop, m.drift.correction
(600000, 600000, 'bh')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from driftwire.detectors.alerts import AlertPolicy
from pydantic import BeforeValidator, ConfigDict, TypeAdapter, ValidationError, with_config

try:  # issue 4 (concept drift) lands in parallel; without it `concept` stays a plain mapping
    from driftwire.detectors.concept import ConceptConfig
except ImportError:  # pragma: no cover - only while concept.py is absent
    ConceptConfig = dict  # type: ignore[misc,assignment]

#: Sections of the file that belong to `driftwire.streams`, not to the engine.
STREAMS_SECTIONS = frozenset({"kafka", "topics", "worker", "backtest"})

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration(value: Any) -> Any:
    """'10m', '30s', '1h', '500ms', '2d' or an int of milliseconds -> int milliseconds."""
    if isinstance(value, bool):
        raise ValueError("a duration like '10m' or milliseconds")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError("a duration like '10m', '30s', '1h' or an int of milliseconds")
        return int(float(match.group(1)) * _UNITS_MS[match.group(2)])
    return value  # let pydantic report the type error


Duration = Annotated[int, BeforeValidator(parse_duration)]
_STRICT = ConfigDict(extra="forbid")


@with_config(_STRICT)
@dataclass(frozen=True)
class WindowConfig:
    """Event-time windows. `hop` < `size` makes hopping windows (size must be a multiple of hop).

    A window closes when the watermark passes ``end + allowed_lateness``. A tumbling window
    with fewer than `min_count` events is not tested: its counts are carried into the next
    window, which is then tested over the combined span (hopping windows are simply skipped,
    the next one overlaps them anyway).
    """

    size: Duration = 600_000
    hop: Duration | None = None
    type: Literal["tumbling", "hopping"] = "tumbling"
    allowed_lateness: Duration = 0
    min_count: int = 500

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ValueError("size must be > 0")
        hop = self.size if self.hop is None else self.hop
        object.__setattr__(self, "hop", hop)
        if hop <= 0 or hop > self.size or self.size % hop:
            raise ValueError(f"hop must divide size and be in (0, size], got hop={hop}")
        if self.type == "tumbling" and hop != self.size:
            raise ValueError("a tumbling window has hop == size; use type: hopping")
        if self.allowed_lateness < 0 or self.min_count < 0:
            raise ValueError("allowed_lateness and min_count must be >= 0")

    @property
    def panes_per_window(self) -> int:
        return self.size // int(self.hop or self.size)


@with_config(_STRICT)
@dataclass(frozen=True)
class ReferenceConfig:
    """Where the baseline comes from: `file` (past events), `first_n` (backtests), `profile`
    (a built profile file) or `topic` (the latest profile of the model on the references
    topic); `profile` and `topic` sources are read by driftwire.streams."""

    source: Literal["file", "first_n", "profile", "topic"] = "first_n"
    path: str | None = None
    format: Literal["auto", "parquet", "csv", "jsonl", "avro"] = "auto"
    first_n: int = 20_000
    topic: str | None = None
    start: str | int | None = None
    end: str | int | None = None
    bins: int = 64

    def __post_init__(self) -> None:
        if self.source in ("file", "profile") and not self.path:
            raise ValueError(f"source {self.source!r} needs a path")
        if not 2 <= self.bins <= 1024 or self.first_n < 1:
            raise ValueError("bins must be in [2, 1024] and first_n >= 1")


@with_config(_STRICT)
@dataclass(frozen=True)
class PredictionConfig:
    """Which prediction columns to watch: the score (numeric), the label (class) or both."""

    score: bool = True
    label: bool = False


# Why these defaults: with 10,000-event windows against a 20,000-event reference, the binned
# KS p-value is conservative (the binned statistic is a max over a subset of the points the
# exact one uses), so alpha=1e-4 after Benjamini-Hochberg bounds false alarms to ~1e-4 per
# window per model (0.1 per 1,000 windows), while a 0.25 sd mean shift gives D ~ 0.1 against a
# critical D ~ 0.03. The effect-size floors stop huge windows (1M events) alarming on
# differences nobody would act on (evidently#50).
@with_config(_STRICT)
@dataclass(frozen=True)
class DriftConfig:
    numeric_test: Literal["ks", "psi", "js", "wasserstein"] = "ks"
    categorical_test: Literal["chi2", "psi", "js"] = "chi2"
    alpha: float = 1e-4
    correction: Literal["bh", "bonferroni", "none"] = "bh"
    thresholds: dict[str, float] = field(
        default_factory=lambda: {"psi": 0.2, "js": 0.1, "wasserstein": 0.1}
    )
    min_effect: dict[str, float] = field(default_factory=lambda: {"ks": 0.02, "psi": 0.01})
    critical: dict[str, float] = field(
        default_factory=lambda: {"psi": 0.25, "ks": 0.15, "js": 0.2, "wasserstein": 0.25}
    )
    psi_epsilon: float = 1e-4
    wasserstein_scale: Literal["std", "iqr"] = "std"

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError("alpha must be in (0, 1)")
        known = {"ks", "psi", "js", "wasserstein", "chi2"}
        for name in (*self.thresholds, *self.min_effect, *self.critical):
            if name not in known:
                raise ValueError(f"unknown statistic {name!r}, expected one of {sorted(known)}")


# The gradual detectors see the probit of each window's p-value (N(0, 1) with no drift); the
# calibration of delta/threshold is explained in gradual.py.
@with_config(_STRICT)
@dataclass(frozen=True)
class GradualConfig:
    detector: Literal["page_hinkley", "adwin", "none"] = "page_hinkley"
    threshold: float = 15.0
    delta: float = 0.5
    adwin_delta: float = 1e-5
    min_windows: int = 10


@with_config(_STRICT)
@dataclass(frozen=True)
class QualityConfig:
    """Per-window data-quality limits, as rates in [0, 1].

    `missing_increase` is the allowed rise of the missing rate over the reference's own rate;
    the others are absolute limits (under no drift the out-of-range rate is ~2/n_reference).
    """

    missing_increase: float = 0.05
    out_of_range: float = 0.01
    unseen: float = 0.01
    nonfinite: float = 0.001
    critical_factor: float = 3.0


@with_config(_STRICT)
@dataclass(frozen=True)
class SegmentConfig:
    """Per-segment monitors keyed by one tag (e.g. country); segments beyond the cap share
    the `__other__` bucket; a segment window needs `min_count` events before it may alert."""

    key: str
    max_segments: int = 20
    min_count: int = 1_000


# Production signals beyond distributions (issue 8). Each section is optional on a model:
# absent means the detector is off, so adding driftwire to a model changes no alerts until
# it is asked for.
@with_config(_STRICT)
@dataclass(frozen=True)
class VolumeConfig:
    """Events per window against what is expected, and silence.

    Expected count: the hour-of-week median once `seasonal_weeks` weeks of history exist for
    that hour, else the reference rate (count / event-time span of the reference), else the
    mean of the first `warmup_windows` windows. A window breaches when its count is below
    `drop_factor` x expected (or above `spike_factor` x) *and* a Poisson tail at `alpha` says
    so (small windows do not flap) *and* it is also off the median of the last `history`
    normal windows. `silence_after`: a model with no event for that long (measured against
    the watermark, which advances with the other models' traffic) raises `silence`; None
    turns silence off.
    """

    drop_factor: float = 0.5
    spike_factor: float = 2.0
    alpha: float = 1e-3
    history: int = 12
    warmup_windows: int = 3
    seasonal_weeks: int = 2
    silence_after: Duration | None = None

    def __post_init__(self) -> None:
        if not 0 < self.drop_factor < 1 < self.spike_factor:
            raise ValueError("need 0 < drop_factor < 1 < spike_factor")
        if not 0 < self.alpha < 1 or self.history < 1 or self.warmup_windows < 1:
            raise ValueError("alpha must be in (0, 1); history and warmup_windows >= 1")
        if self.seasonal_weeks < 1 or (self.silence_after is not None and self.silence_after <= 0):
            raise ValueError("seasonal_weeks must be >= 1 and silence_after > 0")


_QUANTILE_NAMES = ("p50", "p95", "p99")


@with_config(_STRICT)
@dataclass(frozen=True)
class LatencyConfig:
    """Per-window inference-latency checks (events need `latency_ms`).

    `slo_ms`: quantile name ('p50', 'p95', 'p99') -> limit in ms; a window above it breaches.
    Shift: `shift_quantile` must grow by `shift_factor` over the reference *and* the share of
    the window above the reference's quantile bucket must be significant at `alpha`
    (one-sided binomial test). Without latencies in the reference, the first
    `warmup_windows` windows become the latency reference.
    """

    slo_ms: dict[str, float] = field(default_factory=dict)
    shift_quantile: Literal["p50", "p95", "p99"] = "p99"
    shift_factor: float = 1.5
    alpha: float = 1e-4
    min_count: int = 200
    warmup_windows: int = 3

    def __post_init__(self) -> None:
        for name in self.slo_ms:
            if name not in _QUANTILE_NAMES:
                raise ValueError(f"unknown quantile {name!r}, expected one of {_QUANTILE_NAMES}")
        if self.shift_factor <= 1 or not 0 < self.alpha < 1 or self.min_count < 1:
            raise ValueError("shift_factor must be > 1, alpha in (0, 1), min_count >= 1")


@with_config(_STRICT)
@dataclass(frozen=True)
class VersionsConfig:
    """Monitors keyed by (model, version). A new version starts against the model's reference
    (or, with `warmup_reference`, a reference built from its first `warmup_events`); a
    version with no event for `retire_after` is retired. Roll-outs and retirements are
    `lifecycle` events on the alerts topic."""

    retire_after: Duration = 3_600_000
    warmup_reference: bool = False
    warmup_events: int = 5_000
    max_versions: int = 8

    def __post_init__(self) -> None:
        if self.retire_after <= 0 or self.warmup_events < 1 or self.max_versions < 1:
            raise ValueError("retire_after, warmup_events and max_versions must be > 0")


@with_config(_STRICT)
@dataclass(frozen=True)
class ShadowConfig:
    """This model is a challenger running in shadow of `champion` (another model id) on the
    same prediction ids. Per window their scores are compared (binned KS, as for prediction
    drift) and, once labels arrive, which of the two did better on each joined event (exact
    McNemar / sign test on the events where they differ). `min_effect`: the smallest KS
    distance, or the smallest net share of events one model wins, worth an alert.
    """

    champion: str
    alpha: float = 1e-4
    min_effect: float = 0.05
    min_count: int = 200
    bins: int = 32
    label_ttl: Duration = 86_400_000  # how long paired predictions wait for their outcome

    def __post_init__(self) -> None:
        if not self.champion or not 0 < self.alpha < 1 or self.min_count < 1 or self.bins < 2:
            raise ValueError("champion must be set, alpha in (0, 1), min_count >= 1, bins >= 2")


@with_config(_STRICT)
@dataclass(frozen=True)
class ModelConfig:
    id: str
    numeric: list[str] | Literal["infer"] = "infer"
    categorical: list[str] | Literal["infer"] = "infer"
    prediction: PredictionConfig = field(default_factory=PredictionConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    gradual: GradualConfig = field(default_factory=GradualConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    alerts: AlertPolicy = field(default_factory=AlertPolicy)
    segments: SegmentConfig | None = None
    concept: ConceptConfig | None = None
    volume: VolumeConfig | None = None
    latency: LatencyConfig | None = None
    versions: VersionsConfig | None = None
    shadow: ShadowConfig | None = None

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("id must not be empty")
        if isinstance(self.numeric, list) and isinstance(self.categorical, list):
            both = set(self.numeric) & set(self.categorical)
            if both:
                raise ValueError(f"features both numeric and categorical: {sorted(both)}")


@with_config(_STRICT)
@dataclass(frozen=True)
class EngineConfig:
    models: list[ModelConfig]

    def __post_init__(self) -> None:
        ids = [m.id for m in self.models]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate model ids: {dupes}")

    def model(self, model_id: str) -> ModelConfig:
        for m in self.models:
            if m.id == model_id:
                return m
        raise KeyError(model_id)


class ConfigError(ValueError):
    """An invalid config; `problems` lists every one as 'FILE: location: what was expected'."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


_ADAPTER = TypeAdapter(EngineConfig)


def _location(loc: tuple[Any, ...]) -> str:
    """('models', 0, 'window', 'size') -> 'models[0].window.size'; drops union-branch tags."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier():
            out += f".{part}" if out else part
    return out or "(top level)"


def _problems(error: ValidationError) -> list[str]:
    grouped: dict[str, list[str]] = {}
    got: dict[str, str] = {}
    for item in error.errors():
        where = _location(item["loc"])
        msg = str(item["msg"]).removeprefix("Value error, ").removeprefix("Input should be ")
        grouped.setdefault(where, [])
        if msg not in grouped[where]:
            grouped[where].append(msg)
        got[where] = repr(item.get("input"))[:80]
    return [f"{w}: expected {' or '.join(m)}, got {got[w]}" for w, m in grouped.items()]


def parse_config(raw: Any, source: str = "<config>") -> EngineConfig:
    """Validate an already-parsed mapping (e.g. from YAML)."""
    if not isinstance(raw, dict):
        raise ConfigError(source, [f"(top level): expected a mapping, got {type(raw).__name__}"])
    engine_part = {k: v for k, v in raw.items() if k not in STREAMS_SECTIONS}
    try:
        return _ADAPTER.validate_python(engine_part)
    except ValidationError as err:
        raise ConfigError(source, _problems(err)) from None


def load_config(path: str | Path) -> EngineConfig:
    """Read and validate a YAML config file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(str(path), [f"cannot read file: {err.strerror}"]) from None
    except yaml.YAMLError as err:
        raise ConfigError(str(path), [f"invalid YAML: {err}"]) from None
    return parse_config(raw, str(path))
