"""The detection engine: one `Monitor` per model. Columns in, alerts out, time from a watermark.

Two stages, so one model's traffic can span partitions and workers:
``profile(batch)`` (pure, per partition) -> `WindowProfile` per pane touched, and
``add_profiles(profiles)`` (per model) merges them into the open panes.
``advance(watermark)`` closes due windows, runs the tests and the alert lifecycle.
``update_features(batch)`` is both stages at once.

>>> import numpy as np
>>> from driftwire.detectors.config import ModelConfig, WindowConfig
>>> from driftwire.detectors.generators import StreamSpec, Shift, generate, take_events
>>> spec = StreamSpec(n_numeric=4, n_categorical=1, rate=1000.0, seed=3)
>>> cfg = ModelConfig(id="demo", window=WindowConfig(size=10_000, min_count=100))
>>> ref = ReferenceProfile.from_batch(take_events(spec, 20_000), cfg)
>>> mon = Monitor(cfg, ref)
>>> drift = [Shift(features=("x3",), start_ms=60_000, magnitude=1.0)]
>>> alerts = []
>>> for batch in generate(spec, 120_000, drifts=drift, start_ms=0):
...     alerts += mon.update_features(batch)
...     alerts += mon.advance(int(batch.event_time.max()))
>>> sorted({(a.detector, a.feature, a.window_start) for a in alerts if a.status == "firing"})
[('ks', 'x3', 60000), ('page_hinkley', 'x3', 90000)]
"""

from __future__ import annotations

import itertools
import json
import logging
import pickle
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from driftwire.detectors.alerts import (
    Alert,
    AlertKind,
    AlertLifecycle,
    Evidence,
    Severity,
    Status,
    Verdict,
    alert_from_verdict,
)
from driftwire.detectors.batch import FeatureBatch, OutcomeBatch
from driftwire.detectors.config import ModelConfig
from driftwire.detectors.gradual import GradualDetector
from driftwire.detectors.latency import LatencyDetector
from driftwire.detectors.profile import LABEL_COLUMN, SCORE_COLUMN, ProfileLayout, WindowProfile
from driftwire.detectors.quality import quality_checks
from driftwire.detectors.reference import ReferenceProfile
from driftwire.detectors.stats import (
    chi2,
    correct,
    js,
    ks,
    probabilities,
    probit,
    psi,
    wasserstein_flat,
)
from driftwire.detectors.volume import SilenceDetector, VolumeDetector
from driftwire.detectors.windows import NO_WATERMARK, WindowClock, pane_starts

log = logging.getLogger(__name__)

OTHER_SEGMENT = "__other__"
SNAPSHOT_MAGIC = b"DWMON"
SNAPSHOT_VERSION = 1
_PREDICTION_COLUMNS = {SCORE_COLUMN, LABEL_COLUMN}


@dataclass
class MonitorCounters:
    """Counts for metrics; all monotone."""

    events: int = 0
    late_accepted: int = 0  # behind the watermark, window still open: counted in it
    late_dropped: int = 0  # every window of theirs had closed: not counted, only here
    profiles_merged: int = 0
    windows_closed: int = 0
    windows_tested: int = 0
    windows_skipped_min_count: int = 0
    segment_windows_skipped_min_count: int = 0
    watermark_regressions: int = 0
    reference_switches: int = 0
    windows_skipped_reference: int = 0  # straddled a reference switch
    reference_mismatch: int = 0  # events profiled against another reference than due
    alerts_by_kind: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _ColumnStats:
    """All statistics of one window, one entry per column of the layout."""

    ks_d: np.ndarray
    ks_p: np.ndarray
    psi_num: np.ndarray
    js_num: np.ndarray
    wasserstein: np.ndarray
    chi2_stat: np.ndarray
    chi2_p: np.ndarray
    psi_cat: np.ndarray
    js_cat: np.ndarray


class WindowTester:
    """Turns one closed window's profile into verdicts (drift, prediction drift, quality)."""

    def __init__(self, config: ModelConfig, reference: ReferenceProfile, layout: ProfileLayout):
        self.config = config
        self.layout = layout
        nums = list(reference.numeric.values()) + ([reference.score] if reference.score else [])
        cats = list(reference.categorical.values()) + ([reference.label] if reference.label else [])
        self.num_refs, self.cat_refs = nums, cats
        self.ref_bins = np.concatenate([n.counts for n in nums]) if nums else np.zeros(0, int)
        self.ref_cats = np.concatenate([c.counts for c in cats]) if cats else np.zeros(0, int)
        self.ref_missing = np.array([r.missing_rate for r in nums + cats])
        scale = [
            (n.q75 - n.q25) if config.drift.wasserstein_scale == "iqr" else n.std for n in nums
        ]
        self.w_scale = np.array([s if np.isfinite(s) and s > 0 else 1.0 for s in scale])
        # bin boundaries per numeric column, outer ones filled in per window
        self.positions = (
            np.concatenate([np.concatenate([e[:1], e, e[-1:]]) for e in layout.edges])
            if nums
            else np.zeros(0)
        )
        self.bin_labels = [_bin_labels(e) for e in layout.edges]

    def stats(self, prof: WindowProfile) -> _ColumnStats:
        lay, eps = self.layout, self.config.drift.psi_epsilon
        boff, coff = lay.bin_offsets, lay.category_offsets
        empty = np.zeros(0)
        if len(lay.numeric):
            d, p = ks(self.ref_bins, prof.bins, boff)
            psi_n, js_n = (
                psi(self.ref_bins, prof.bins, boff, eps),
                js(self.ref_bins, prof.bins, boff),
            )
            w = self._wasserstein(prof)
        else:
            d = p = psi_n = js_n = w = empty
        if len(lay.categorical):
            c2, cp = chi2(self.ref_cats, prof.categories, coff)
            psi_c = psi(self.ref_cats, prof.categories, coff, eps)
            js_c = js(self.ref_cats, prof.categories, coff)
        else:
            c2 = cp = psi_c = js_c = empty
        return _ColumnStats(d, p, psi_n, js_n, w, c2, cp, psi_c, js_c)

    def _wasserstein(self, prof: WindowProfile) -> np.ndarray:
        """All numeric columns at once; outer bins reach the window's own min/max."""
        lay = self.layout
        pos = self.positions.copy()
        starts = lay.bin_offsets[:-1] + np.arange(len(lay.numeric))
        ends = lay.bin_offsets[1:] + np.arange(len(lay.numeric))
        pos[starts] = np.fmin(prof.mins, pos[starts + 1])
        pos[ends] = np.fmax(prof.maxs, pos[ends - 1])
        dist = wasserstein_flat(pos, self.ref_bins, prof.bins, lay.bin_offsets)
        return np.where(prof.finite_counts(lay) > 0, dist / self.w_scale, 0.0)

    def verdicts(self, prof: WindowProfile, segment: str | None) -> tuple[list[Verdict], Any]:
        """Drift + quality verdicts, and the raw p-values per column for the gradual stage."""
        st = self.stats(prof)
        lay = self.layout
        n_num = len(lay.numeric)
        finite = prof.finite_counts(lay) if n_num else np.zeros(0, int)
        present = (
            np.add.reduceat(prof.categories, lay.category_offsets[:-1])
            if len(lay.categorical)
            else np.zeros(0, int)
        )
        has_data = np.concatenate([finite > 0, present > 0]) & np.concatenate(
            [[r.count > 0 for r in self.num_refs], [r.count > 0 for r in self.cat_refs]]
        ).astype(bool)
        raw_p = np.concatenate([st.ks_p, st.chi2_p])
        columns = lay.numeric + lay.categorical
        out: list[Verdict] = []
        for prediction in (False, True):
            family = np.array(
                [
                    has_data[i] and ((c in _PREDICTION_COLUMNS) == prediction)
                    for i, c in enumerate(columns)
                ],
                dtype=bool,
            )
            adjusted = np.ones(len(columns))
            adjusted[family] = correct(raw_p[family], self.config.drift.correction)
            for i in np.flatnonzero(family):
                out.append(self._drift_verdict(prof, st, i, adjusted[i], segment))
        out.extend(self._quality_verdicts(prof, segment))
        return out, np.where(has_data, raw_p, np.nan)

    def _drift_verdict(
        self, prof: WindowProfile, st: _ColumnStats, i: int, p_adj: float, segment: str | None
    ) -> Verdict:
        cfg = self.config.drift
        n_num = len(self.layout.numeric)
        numeric = i < n_num
        if numeric:
            values = {
                "ks": st.ks_d[i],
                "psi": st.psi_num[i],
                "js": st.js_num[i],
                "wasserstein": st.wasserstein[i],
            }
            test, name = cfg.numeric_test, self.layout.numeric[i]
        else:
            j = i - n_num
            values = {"chi2": st.chi2_stat[j], "psi": st.psi_cat[j], "js": st.js_cat[j]}
            test, name = cfg.categorical_test, self.layout.categorical[i - n_num]
        floors_ok = all(values[k] >= v for k, v in cfg.min_effect.items() if k in values)
        if test in ("ks", "chi2"):
            breached, threshold, p_value = p_adj < cfg.alpha and floors_ok, cfg.alpha, p_adj
        else:
            threshold = cfg.thresholds.get(test, 0.1)
            breached, p_value = values[test] > threshold and floors_ok, None
        critical = any(values[k] >= v for k, v in cfg.critical.items() if k in values)
        kind = AlertKind.PREDICTION_DRIFT if name in _PREDICTION_COLUMNS else AlertKind.DATA_DRIFT
        return Verdict(
            kind=kind,
            detector=test,
            statistic=_STAT_NAMES[test],
            value=float(values[test]),
            threshold=float(threshold),
            breached=bool(breached),
            window_start=prof.window_start,
            window_end=prof.window_end,
            window_count=prof.count,
            feature=name,
            segment=segment,
            p_value=None if p_value is None else float(p_value),
            severity=Severity.CRITICAL if critical else Severity.WARNING,
            evidence=self._evidence(prof, i, values, p_adj),
        )

    def _evidence(
        self, prof: WindowProfile, i: int, values: dict[str, float], p_adj: float
    ) -> Evidence:
        lay = self.layout
        n_num = len(lay.numeric)
        current = {k: float(v) for k, v in values.items()} | {"p_value_adjusted": float(p_adj)}
        current["missing_rate"] = float(prof.missing[i] / prof.count) if prof.count else 0.0
        notes = {"partitions": str(len(prof.partitions))} if prof.partitions else {}
        if i < n_num:
            ref = self.num_refs[i]
            means, stds = prof.means_stds(lay)
            current |= {"mean": means[i], "std": stds[i], "min": prof.mins[i], "max": prof.maxs[i]}
            reference = {
                "mean": ref.mean,
                "std": ref.std,
                "min": ref.min,
                "max": ref.max,
                "missing_rate": ref.missing_rate,
            }
            lo, hi = lay.bin_offsets[i], lay.bin_offsets[i + 1]
            labels = self.bin_labels[i]
            notes["top_bins"] = _top_moves(labels, self.ref_bins[lo:hi], prof.bins[lo:hi])
        else:
            j = i - n_num
            ref = self.cat_refs[j]
            lo, hi = lay.category_offsets[j], lay.category_offsets[j + 1]
            cur = prof.categories[lo:hi]
            current["unseen_rate"] = float(cur[-1] / cur.sum()) if cur.sum() else 0.0
            reference = {"missing_rate": ref.missing_rate, "categories": float(len(ref.categories))}
            labels = [*ref.categories.tolist(), "<unseen>"]
            notes["top_categories"] = _top_moves(labels, self.ref_cats[lo:hi], cur)
        return Evidence(reference=_finite(reference), current=_finite(current), notes=notes)

    def _quality_verdicts(self, prof: WindowProfile, segment: str | None) -> list[Verdict]:
        checks = quality_checks(prof, self.layout, self.ref_missing, self.config.quality)
        return [
            Verdict(
                kind=AlertKind.DATA_QUALITY,
                detector=c.detector,
                statistic=c.detector,
                value=c.rate,
                threshold=c.limit,
                breached=c.breached,
                window_start=prof.window_start,
                window_end=prof.window_end,
                window_count=prof.count,
                feature=c.column,
                segment=segment,
                severity=c.severity,
            )
            for c in checks
        ]


_STAT_NAMES = {
    "ks": "ks_d",
    "chi2": "chi2",
    "psi": "psi",
    "js": "js_divergence",
    "wasserstein": "wasserstein_norm",
}


def _finite(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if np.isfinite(v)}


def _bin_labels(edges: np.ndarray) -> list[str]:
    inner = [f"[{a:.4g}, {b:.4g})" for a, b in itertools.pairwise(edges)]
    return [f"< {edges[0]:.4g}", *inner, f">= {edges[-1]:.4g}"]


def _top_moves(labels: list[str], ref: np.ndarray, cur: np.ndarray, top: int = 3) -> str:
    """The buckets whose share moved most, as 'label: ref 1.6% cur 3.1%; ...'."""
    p, q = probabilities(ref), probabilities(cur)
    order = np.argsort(-np.abs(q - p), kind="stable")[:top]
    return "; ".join(f"{labels[k]}: ref {p[k]:.1%} cur {q[k]:.1%}" for k in order)


class Monitor:
    """Drift, prediction-drift, data-quality and gradual-drift detection for one model."""

    def __init__(
        self, config: ModelConfig, reference: ReferenceProfile, model_version: str | None = None
    ) -> None:
        self.config = config
        self.reference = reference
        self.model_version = model_version
        self.layout_ = ProfileLayout.from_reference(reference)
        win = config.window
        self.clock_ = WindowClock(win.size, int(win.hop or win.size), win.allowed_lateness)
        self.panes_: dict[tuple[int, str], WindowProfile] = {}
        self.carry_: WindowProfile | None = None
        self.segments_: list[str] = []
        self.lifecycle_ = AlertLifecycle(
            config.alerts, config.id, reference.reference_id, model_version
        )
        self.gradual_: dict[str, GradualDetector] = {}
        self.counters_ = MonitorCounters()
        self.concept_ = self._concept_tracker()
        self.shadow_ = _shadow_comparator(config)
        self.tester_ = WindowTester(config, reference, self.layout_)
        self.__dict__.update(_signal_detectors(config, reference))
        self.switches_: list[tuple[int, ReferenceProfile]] = []  # pending, see `rebase`
        self.layouts_: dict[str, ProfileLayout] = {}  # of the pending references
        self.switched_at_ = NO_WATERMARK

    def _concept_tracker(self) -> Any:
        if self.config.concept is None:
            return None
        from driftwire.detectors.concept import ConceptTracker

        return ConceptTracker(
            self.config.concept,
            self.config.id,
            self.config.window.size,
            self.config.alerts,
            self.reference.reference_id,
        )

    # -- stage 1 -------------------------------------------------------------------------

    def profile(self, batch: FeatureBatch, partition: int | None = None) -> list[WindowProfile]:
        """Pure: one profile per pane touched (and per segment when segments are on)."""
        if len(batch) == 0:
            return []
        hop = self.clock_.hop
        panes = pane_starts(batch.event_time, hop)
        if panes[0] == panes[-1] and panes.min() == panes.max():
            groups = [(int(panes[0]), batch)]
        else:
            groups = [(int(p), batch.take(panes == p)) for p in np.unique(panes)]
        out: list[WindowProfile] = []
        for start, rows in groups:
            out.extend(self._profile_pane(rows, start, start + hop, partition))
        return out

    def _profile_pane(
        self, rows: FeatureBatch, start: int, end: int, partition: int | None
    ) -> list[WindowProfile]:
        seg_cfg = self.config.segments
        layout = self._layout(start)
        if seg_cfg is None or rows.segment is None:
            return [WindowProfile.from_batch(layout, rows, start, end, None, partition)]
        tags = rows.segment.tolist()
        counts = Counter(t for t in tags if t is not None)
        kept = sorted(counts, key=lambda t: (-counts[t], str(t)))[: seg_cfg.max_segments]
        code_of = {t: k for k, t in enumerate(kept)}
        codes = np.array([code_of.get(t, -1 if t is not None else -2) for t in tags])
        names = [*(str(t) for t in kept), OTHER_SEGMENT, None]
        parts = []
        for code, name in zip([*range(len(kept)), -1, -2], names, strict=True):
            idx = np.flatnonzero(codes == code)
            if len(idx):
                sub = rows.take(idx)
                parts.append(WindowProfile.from_batch(layout, sub, start, end, name, partition))
        total = parts[0].relabel(start, end, None)
        for p in parts[1:]:
            total = total.merge(p.relabel(start, end, None))
        return [total, *(p for p in parts if p.segment is not None)]

    # -- stage 2 -------------------------------------------------------------------------

    def add_profiles(self, profiles: list[WindowProfile]) -> list[Alert]:
        """Merge stage-1 profiles into the open panes; late ones are counted, not merged."""
        for prof in profiles:
            if prof.reference_id != self.reference_for(prof.window_start):
                self._mismatch(prof)
                continue
            overall = prof.segment is None
            if overall and self.silence_ is not None and prof.count:
                # any event is a sign of life, even one too late to be counted in a window
                self.silence_.observe(max(prof.last_event_time, prof.window_start))
            if not self.clock_.accepts(prof.window_start):
                if overall:
                    self.counters_.late_dropped += prof.count
                continue
            if overall:
                self.counters_.events += prof.count
                if prof.window_end <= self.clock_.watermark_:
                    self.counters_.late_accepted += prof.count
            segment = None if overall else self._admit(prof.segment)
            if segment is not None and segment != prof.segment:
                prof = prof.relabel(prof.window_start, prof.window_end, segment)
            key = (prof.window_start, segment or "")
            have = self.panes_.get(key)
            self.panes_[key] = prof if have is None else have.merge(prof)
            self.counters_.profiles_merged += 1
        return []

    def _admit(self, segment: str | None) -> str:
        if segment in self.segments_:
            return str(segment)
        cap = self.config.segments.max_segments if self.config.segments else 0
        if segment != OTHER_SEGMENT and len(self.segments_) < cap:
            self.segments_.append(str(segment))
            return str(segment)
        return OTHER_SEGMENT

    def update_features(self, batch: FeatureBatch) -> list[Alert]:
        alerts = self.add_profiles(self.profile(batch))
        if self.concept_ is not None:
            self.concept_.observe_predictions(batch)
        return alerts

    def update_outcomes(self, batch: OutcomeBatch) -> list[Alert]:
        if self.concept_ is not None:
            self.concept_.observe_outcomes(batch)
        if self.shadow_ is not None:
            self.shadow_.observe_outcomes(batch)
        return []

    def observe_joined_pane(
        self,
        predictions: FeatureBatch | None,
        outcomes: OutcomeBatch | None,
        champion: FeatureBatch | None = None,
    ) -> list[Alert]:
        """Stage 2's row path: a pane's predictions (to the label join and, for a challenger,
        the shadow comparison), its champion's predictions, then its outcomes. Profiles
        already went through `add_profiles`, so the predictions are not counted again."""
        if predictions is not None and len(predictions):
            if self.concept_ is not None:
                self.concept_.observe_predictions(predictions)
            if self.shadow_ is not None:
                self.shadow_.observe_challenger(predictions)
        if champion is not None and len(champion) and self.shadow_ is not None:
            self.shadow_.observe_champion(champion)
        if outcomes is not None and len(outcomes):
            return self.update_outcomes(outcomes)
        return []

    # -- reference changes ---------------------------------------------------------------

    def rebase(self, reference: ReferenceProfile, switch_ms: int) -> bool:
        """Compare the windows starting at or after `switch_ms` (a pane start) with
        `reference`; False when it is the latest scheduled one, or `switch_ms` is not after
        the last switch.

        Windows straddling the switch are skipped (their panes were profiled against two
        references). Detector state tied to the old baseline (gradual, volume, latency)
        starts fresh; alert hysteresis carries over, so a drift the new reference absorbs
        resolves. The switch itself is a `lifecycle` alert when the first window at or
        after `switch_ms` closes.
        """
        layout = ProfileLayout.from_reference(reference)
        if (layout.numeric, layout.categorical) != (self.layout_.numeric, self.layout_.categorical):
            raise ValueError(
                f"model {self.config.id}: reference {reference.reference_id} has columns "
                f"{layout.numeric + layout.categorical}, the monitor "
                f"{self.layout_.numeric + self.layout_.categorical}"
            )
        if switch_ms % self.clock_.hop:
            raise ValueError(f"switch time {switch_ms} is not a multiple of the window hop")
        latest = self.switches_[-1][1] if self.switches_ else self.reference
        if reference.reference_id == latest.reference_id or switch_ms <= self.last_switch_ms:
            return False  # scheduled already (a roll-back to an older profile is a new switch)
        self.switches_.append((int(switch_ms), reference))
        self.layouts_[reference.reference_id] = layout
        return True

    def _layout(self, pane_start: int) -> ProfileLayout:
        """The layout of the reference a pane is profiled against."""
        if not self.switches_ or pane_start < self.switches_[0][0]:
            return self.layout_
        return self.layouts_[self.reference_for(pane_start)]

    @property
    def last_switch_ms(self) -> int:
        """Time of the last switch, scheduled or done."""
        return self.switches_[-1][0] if self.switches_ else self.switched_at_

    def reference_for(self, pane_start: int) -> str:
        """Id of the reference a pane must have been profiled against."""
        ref = self.reference
        for start, later in self.switches_:
            if pane_start >= start:
                ref = later
        return ref.reference_id

    def _mismatch(self, prof: WindowProfile) -> None:
        self.counters_.reference_mismatch += prof.count
        log.warning(
            "model %s: pane %d profiled against reference %s, expected %s: dropped "
            "(a worker learned of a reference change after its switch time)",
            self.config.id,
            prof.window_start,
            prof.reference_id,
            self.reference_for(prof.window_start),
        )

    def _straddles(self, start: int) -> bool:
        end = start + self.clock_.size
        return any(start < t < end for t in [self.switched_at_, *map(_first, self.switches_)])

    def _switch_until(self, start: int) -> list[Alert]:
        alerts = []
        while self.switches_ and self.switches_[0][0] <= start:
            switch_ms, reference = self.switches_.pop(0)
            alerts.append(self._switch(switch_ms, reference))
        return alerts

    def _switch(self, switch_ms: int, reference: ReferenceProfile) -> Alert:
        previous = self.reference.reference_id
        self.reference, self.switched_at_ = reference, switch_ms
        self.layout_ = self.layouts_[reference.reference_id]  # kept: it may come back
        self.tester_ = WindowTester(self.config, reference, self.layout_)
        self.lifecycle_.reference_id = reference.reference_id
        if self.concept_ is not None:
            self.concept_.lifecycle.reference_id = reference.reference_id
        fresh = _signal_detectors(self.config, reference)
        self.volume_, self.latency_ = fresh["volume_"], fresh["latency_"]
        self.gradual_, self.carry_ = {}, None
        self.counters_.reference_switches += 1
        log.info("model %s: reference %s -> %s", self.config.id, previous, reference.reference_id)
        verdict = Verdict(
            kind=AlertKind.LIFECYCLE,
            detector="reference",
            statistic="reference_count",
            value=float(reference.count),
            threshold=0.0,
            breached=True,
            window_start=switch_ms,
            window_end=switch_ms,
            window_count=0,
            feature=reference.reference_id,
            severity=Severity.INFO,
            evidence=Evidence(notes={"event": "reference_changed", "previous": previous}),
        )
        return self._direct(verdict)

    # -- closing windows -----------------------------------------------------------------

    def advance(self, watermark_ms: int) -> list[Alert]:
        """Close every window whose end + allowed lateness the watermark has passed."""
        if watermark_ms < self.clock_.watermark_:
            self.counters_.watermark_regressions += 1
        due = self.clock_.advance(int(watermark_ms), {p for p, _ in self.panes_})
        alerts: list[Alert] = []
        for start in due:
            alerts.extend(self._switch_until(start))
            if self._straddles(start):
                self.counters_.windows_skipped_reference += 1
                continue
            alerts.extend(self._close(start))
        for key in [k for k in self.panes_ if self.clock_.pane_expired(k[0])]:
            del self.panes_[key]
        if self.concept_ is not None:
            alerts.extend(self.concept_.advance(int(watermark_ms)))
        if self.shadow_ is not None:
            alerts.extend(self.shadow_.advance(int(watermark_ms)))
        if self.silence_ is not None and watermark_ms >= self.clock_.watermark_:
            alerts.extend(self._direct(v) for v in self.silence_.check(int(watermark_ms)))
        for a in alerts:
            self.counters_.alerts_by_kind[a.kind.value] = (
                self.counters_.alerts_by_kind.get(a.kind.value, 0) + 1
            )
        return alerts

    def _window(self, start: int, segment: str) -> WindowProfile | None:
        end = start + self.clock_.size
        merged: WindowProfile | None = None
        for pane in range(start, end, self.clock_.hop):
            prof = self.panes_.get((pane, segment))
            if prof is None:
                continue
            prof = prof.relabel(start, end, prof.segment)
            merged = prof if merged is None else merged.merge(prof)
        return merged

    def _close(self, start: int) -> list[Alert]:
        self.counters_.windows_closed += 1
        prof = self._window(start, "")
        if prof is None:
            return []
        signals = self._signal_verdicts(prof, None)  # on the window's own traffic, no carry
        if self.carry_ is not None:  # tumbling windows under min_count were carried forward
            carried, self.carry_ = self.carry_, None
            span = (carried.window_start, prof.window_end)
            prof = carried.relabel(*span, None).merge(prof.relabel(*span, None))
        if prof.count < self.config.window.min_count:
            self.counters_.windows_skipped_min_count += 1
            if self.clock_.hop == self.clock_.size:
                self.carry_ = prof
            return self._observe(signals)
        self.counters_.windows_tested += 1
        verdicts, raw_p = self.tester_.verdicts(prof, None)
        verdicts.extend(signals)
        verdicts.extend(self._gradual(prof, raw_p))
        verdicts.extend(self._segment_verdicts(start))
        return self._observe(verdicts)

    def _observe(self, verdicts: list[Verdict]) -> list[Alert]:
        alerts = [
            a for v in sorted(verdicts, key=_verdict_order) for a in self.lifecycle_.observe(v)
        ]
        return sorted(alerts, key=_alert_order)

    def _signal_verdicts(self, prof: WindowProfile, segment: str | None) -> list[Verdict]:
        """Volume and latency of one window (of one segment, volume only)."""
        out: list[Verdict] = []
        start, end = prof.window_start, prof.window_end
        if self.volume_ is not None:
            det = self.volume_ if segment is None else self._segment_volume(segment)
            out.append(det.update(prof.count, start, end, segment))
        if self.latency_ is not None and segment is None:
            out.extend(self.latency_.update(prof.latency, start, end))
        return out

    def _segment_volume(self, segment: str) -> VolumeDetector:
        det = self.segment_volume_.get(segment)
        if det is None:  # a segment's share of the reference rate is unknown: warm up
            det = self.segment_volume_[segment] = VolumeDetector(self.config.volume)
        return det

    def _direct(self, verdict: Verdict) -> Alert:
        """Silence has its own state machine (it fires between windows): no hysteresis."""
        status = Status.FIRING if verdict.breached else Status.RESOLVED
        return alert_from_verdict(
            verdict, status, self.config.id, self.reference.reference_id, self.model_version
        )

    def _segment_verdicts(self, start: int) -> list[Verdict]:
        seg_cfg = self.config.segments
        if seg_cfg is None:
            return []
        out: list[Verdict] = []
        for segment in [*self.segments_, OTHER_SEGMENT]:
            prof = self._window(start, segment)
            if prof is None:
                continue
            out.extend(self._signal_verdicts(prof, segment))
            if prof.count < seg_cfg.min_count:
                self.counters_.segment_windows_skipped_min_count += 1
                continue
            out.extend(self.tester_.verdicts(prof, segment)[0])
        return out

    def _gradual(self, prof: WindowProfile, raw_p: np.ndarray) -> list[Verdict]:
        cfg = self.config.gradual
        if cfg.detector == "none":
            return []
        columns = self.layout_.numeric + self.layout_.categorical
        scores = probit(np.nan_to_num(raw_p, nan=1.0))
        out = []
        for i, name in enumerate(columns):
            if not np.isfinite(raw_p[i]):
                continue
            det = self.gradual_.get(name)
            if det is None:
                det = self.gradual_[name] = GradualDetector(cfg)
            detected = det.update(scores[i])
            value = det.statistic if cfg.detector == "page_hinkley" else float(scores[i])
            kind = (
                AlertKind.PREDICTION_DRIFT if name in _PREDICTION_COLUMNS else AlertKind.DATA_DRIFT
            )
            out.append(
                Verdict(
                    kind=kind,
                    detector=cfg.detector,
                    statistic="probit_p_cusum" if cfg.detector == "page_hinkley" else "probit_p",
                    value=float(value),
                    threshold=float(cfg.threshold),
                    breached=detected,
                    window_start=prof.window_start,
                    window_end=prof.window_end,
                    window_count=prof.count,
                    feature=name,
                    evidence=Evidence(
                        current={"score": float(scores[i])},
                        notes={"windows_seen": str(det.windows_seen_)},
                    ),
                )
            )
        return out

    # -- state -----------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state (River detectors included), versioned; see `restore`."""
        body = pickle.dumps(self.__dict__, protocol=pickle.HIGHEST_PROTOCOL)
        return SNAPSHOT_MAGIC + struct.pack(">H", SNAPSHOT_VERSION) + body

    @classmethod
    def restore(cls, data: bytes) -> Monitor:
        if data[: len(SNAPSHOT_MAGIC)] != SNAPSHOT_MAGIC:
            raise ValueError("not a driftwire monitor snapshot")
        (version,) = struct.unpack(">H", data[len(SNAPSHOT_MAGIC) : len(SNAPSHOT_MAGIC) + 2])
        if version != SNAPSHOT_VERSION:
            raise ValueError(
                f"monitor snapshot format {version} is not supported (this build reads "
                f"{SNAPSHOT_VERSION}); rebuild the state by replaying from the reference"
            )
        mon = cls.__new__(cls)
        state = pickle.loads(data[len(SNAPSHOT_MAGIC) + 2 :])
        if "volume_" not in state:  # a snapshot from before issue 8: signals start fresh
            state |= _signal_detectors(state["config"], state["reference"])
        if "shadow_" not in state:  # a snapshot from before the worker wired shadows
            state["shadow_"] = _shadow_comparator(state["config"])
        state.setdefault("switches_", [])  # a snapshot from before reference changes
        state.setdefault("switched_at_", NO_WATERMARK)
        state.setdefault("layouts_", {})
        mon.__dict__.update(state)
        return mon

    def describe(self) -> str:
        return json.dumps(
            {
                "model": self.config.id,
                "reference": self.reference.reference_id,
                "open_panes": len(self.panes_),
                "segments": self.segments_,
            }
        )


def _signal_detectors(config: ModelConfig, reference: ReferenceProfile) -> dict[str, Any]:
    """The volume / silence / latency state of a monitor (all None when not configured)."""
    volume = getattr(config, "volume", None)
    latency = getattr(config, "latency", None)
    silence_after = volume.silence_after if volume is not None else None
    return {
        "volume_": VolumeDetector(volume, reference.event_rate) if volume else None,
        "segment_volume_": {},
        "silence_": SilenceDetector(silence_after) if silence_after else None,
        "latency_": (
            LatencyDetector(latency, getattr(reference, "latency", None)) if latency else None
        ),
    }


def _shadow_comparator(config: ModelConfig) -> Any:
    """A challenger's comparison with its champion (None for other models)."""
    if getattr(config, "shadow", None) is None:
        return None
    from driftwire.detectors.shadow import ShadowComparator

    return ShadowComparator(config)


def _first(pair: tuple[int, Any]) -> int:
    return pair[0]


def _verdict_order(v: Verdict) -> tuple[Any, ...]:
    return (v.window_start, *v.key)


def _alert_order(a: Alert) -> tuple[Any, ...]:
    return (
        a.window_start,
        a.kind.value,
        a.detector,
        a.feature or "",
        a.segment or "",
        a.status.value,
    )
