"""Champion / challenger: a shadow model scoring the same prediction ids as the live one.

Per event-time window, the predictions of both models are paired by prediction id and
compared with the statistics of prediction drift: binned KS on the scores (bins from the
champion's score quantiles) and chi-square on the predicted labels. Once outcomes arrive,
each joined pair says which model did better on that very event (classifier: right vs
wrong; regressor or score-only: the smaller absolute error); an exact McNemar / sign test on
the events where they differ says whether one is significantly better. Every verdict is a
``shadow_divergence`` alert of the challenger's model id, with the champion in the evidence.

The worker routes the champion's feature batches to `observe_champion` of every challenger
configured with ``shadow: {champion: <id>}`` (see :func:`challengers_of`).

>>> import numpy as np
>>> from driftwire.detectors.config import ModelConfig, ShadowConfig, WindowConfig
>>> from driftwire.detectors.batch import FeatureBatch
>>> cfg = ModelConfig(id="fraud-v2", window=WindowConfig(size=10_000),
...                   shadow=ShadowConfig(champion="fraud-v1"))
>>> cmp = ShadowComparator(cfg)
>>> rng = np.random.default_rng(0)
>>> ids, t = np.arange(5_000).astype(str).astype(object), np.arange(5_000, dtype=np.int64)
>>> score = rng.random(5_000)
>>> cmp.observe_champion(FeatureBatch("fraud-v1", ids, t, score=score))
>>> cmp.observe_challenger(FeatureBatch("fraud-v2", ids, t, score=np.sqrt(score)))
>>> [(a.kind.value, a.detector, a.status.value) for a in cmp.advance(10_000)]
[('shadow_divergence', 'ks', 'firing')]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from driftwire.detectors.alerts import (
    Alert,
    AlertKind,
    AlertLifecycle,
    Evidence,
    Severity,
    Verdict,
)
from driftwire.detectors.batch import FeatureBatch, OutcomeBatch
from driftwire.detectors.config import ModelConfig, ShadowConfig
from driftwire.detectors.profile import LABEL_COLUMN, SCORE_COLUMN
from driftwire.detectors.stats import chi2, ks
from driftwire.detectors.windows import WindowClock, pane_starts
from scipy.stats import binomtest

log = logging.getLogger(__name__)


def challengers_of(models: Iterable[ModelConfig]) -> dict[str, list[str]]:
    """Champion id -> ids of the challengers shadowing it (for routing in the worker)."""
    out: dict[str, list[str]] = {}
    for m in models:
        if m.shadow is not None:
            out.setdefault(m.shadow.champion, []).append(m.id)
    return out


@dataclass
class _Side:
    """One model's predictions of one pane (or carried over from the last close)."""

    ids: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)

    def add(self, batch: FeatureBatch) -> None:
        n = len(batch)
        self.ids.append(batch.prediction_id.astype(str))
        self.scores.append(batch.score if batch.score is not None else np.full(n, np.nan))
        self.labels.append(batch.label if batch.label is not None else np.full(n, None, object))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.ids:
            return np.zeros(0, str), np.zeros(0), np.zeros(0, object)
        return (np.concatenate(self.ids), np.concatenate(self.scores),
                np.concatenate(self.labels))  # fmt: skip


@dataclass
class _Pairs:
    """Paired predictions waiting for their outcomes (sorted by id for searchsorted)."""

    ids: np.ndarray
    champion_score: np.ndarray
    challenger_score: np.ndarray
    champion_label: np.ndarray
    challenger_label: np.ndarray
    expires: np.ndarray  # event time after which the pair is dropped


@dataclass
class ShadowCounters:
    paired: int = 0
    unpaired_dropped: int = 0
    outcomes_joined: int = 0
    outcomes_unmatched: int = 0
    pairs_expired: int = 0


class ShadowComparator:
    """Compares a challenger (the configured model) with its champion, window by window."""

    def __init__(self, config: ModelConfig, score_edges: np.ndarray | None = None) -> None:
        if config.shadow is None:
            raise ValueError(f"model {config.id} has no shadow section")
        self.config = config
        self.shadow: ShadowConfig = config.shadow
        win = config.window
        self.clock_ = WindowClock(win.size, win.size, win.allowed_lateness)
        self.score_edges = score_edges
        self.panes_: dict[int, tuple[_Side, _Side]] = {}
        self.carry_: tuple[_Side, _Side] = (_Side(), _Side())
        self.pending_: _Pairs | None = None
        self.outcomes_: dict[int, list[OutcomeBatch]] = {}
        self.lifecycle_ = AlertLifecycle(config.alerts, config.id, f"shadow:{self.shadow.champion}")
        self.counters_ = ShadowCounters()

    # -- in ------------------------------------------------------------------------------

    def observe_champion(self, batch: FeatureBatch) -> None:
        self._observe(batch, 0)

    def observe_challenger(self, batch: FeatureBatch) -> None:
        self._observe(batch, 1)

    def observe_outcomes(self, batch: OutcomeBatch) -> None:
        for pane in np.unique(pane_starts(batch.event_time, self.clock_.hop)).tolist():
            if self.clock_.accepts(pane):
                rows = batch.take(pane_starts(batch.event_time, self.clock_.hop) == pane)
                self.outcomes_.setdefault(pane, []).append(rows)

    def _observe(self, batch: FeatureBatch, side: int) -> None:
        if len(batch) == 0:
            return
        panes = pane_starts(batch.event_time, self.clock_.hop)
        for pane in np.unique(panes).tolist():
            if not self.clock_.accepts(pane):
                continue  # late: its window was already compared
            rows = batch if panes[0] == panes[-1] == pane else batch.take(panes == pane)
            self.panes_.setdefault(pane, (_Side(), _Side()))[side].add(rows)

    # -- time ----------------------------------------------------------------------------

    def advance(self, watermark_ms: int) -> list[Alert]:
        """Close due windows: score/label comparison, then the outcome joins of the window."""
        due = self.clock_.advance(int(watermark_ms), set(self.panes_) | set(self.outcomes_))
        verdicts: list[Verdict] = []
        for start in due:
            verdicts.extend(self._compare(start))
            verdicts.extend(self._performance(start))
        self._expire(int(watermark_ms))
        return [a for v in verdicts for a in self.lifecycle_.observe(v)]

    def _compare(self, start: int) -> list[Verdict]:
        sides = self.panes_.pop(start, (_Side(), _Side()))
        carried = [sum(len(x) for x in c.ids) for c in self.carry_]
        champ, chall = (self._with_carry(sides[k], self.carry_[k]) for k in (0, 1))
        ids, ci, hi = np.intersect1d(champ[0], chall[0], assume_unique=False, return_indices=True)
        self.carry_ = (self._leftover(champ, ci, carried[0]), self._leftover(chall, hi, carried[1]))
        self.counters_.paired += len(ids)
        if len(ids) == 0:
            return []
        expires = np.full(len(ids), start + self.clock_.size + self.shadow.label_ttl)
        pairs = _Pairs(ids, champ[1][ci], chall[1][hi], champ[2][ci], chall[2][hi], expires)
        self._remember(pairs)
        if len(ids) < self.shadow.min_count:
            return []
        end = start + self.clock_.size
        out = []
        finite = np.isfinite(pairs.champion_score) & np.isfinite(pairs.challenger_score)
        if finite.sum() >= self.shadow.min_count:
            out.append(self._score_verdict(pairs, finite, start, end))
        has_labels = np.array([x is not None for x in pairs.champion_label.tolist()])
        if has_labels.sum() >= self.shadow.min_count:
            out.append(self._label_verdict(pairs, has_labels, start, end))
        return out

    def _with_carry(self, side: _Side, carry: _Side) -> tuple[np.ndarray, ...]:
        both = _Side(carry.ids + side.ids, carry.scores + side.scores, carry.labels + side.labels)
        return both.arrays()

    def _leftover(self, arrays: tuple[np.ndarray, ...], paired: np.ndarray, carried: int) -> _Side:
        """Unpaired predictions wait one more window (the other model may score a little
        later, across a window boundary); those already carried once are dropped."""
        keep = np.ones(len(arrays[0]), bool)
        keep[paired] = False
        self.counters_.unpaired_dropped += int(keep[:carried].sum())
        keep[:carried] = False
        return _Side([arrays[0][keep]], [arrays[1][keep]], [arrays[2][keep]])

    def _score_verdict(self, pairs: _Pairs, finite: np.ndarray, start: int, end: int) -> Verdict:
        a, b = pairs.champion_score[finite], pairs.challenger_score[finite]
        edges = self.score_edges
        if edges is None:  # champion's own quantiles: each bin holds ~1/bins of its scores
            edges = np.unique(np.quantile(a, np.linspace(0, 1, self.shadow.bins + 1)[1:-1]))
        ref = np.bincount(np.searchsorted(edges, a, side="right"), minlength=len(edges) + 1)
        cur = np.bincount(np.searchsorted(edges, b, side="right"), minlength=len(edges) + 1)
        d, p = ks(ref, cur)
        d, p = float(d[0]), float(p[0])
        breached = p < self.shadow.alpha and d >= self.shadow.min_effect
        return self._verdict(
            "ks", "ks_d", SCORE_COLUMN, d, breached, p, start, end, len(a),
            Evidence(reference={"mean": float(a.mean()), "std": float(a.std())},
                     current={"mean": float(b.mean()), "std": float(b.std()),
                              "mean_abs_diff": float(np.abs(a - b).mean())},
                     notes={"champion": self.shadow.champion}),
        )  # fmt: skip

    def _label_verdict(self, pairs: _Pairs, mask: np.ndarray, start: int, end: int) -> Verdict:
        a = pairs.champion_label[mask].astype(str)
        b = pairs.challenger_label[mask].astype(str)
        classes, codes = np.unique(np.concatenate([a, b]), return_inverse=True)
        k = len(classes)
        ref = np.bincount(codes[: len(a)], minlength=k)
        cur = np.bincount(codes[len(a) :], minlength=k)
        stat, p = chi2(ref, cur)
        agree = float((a == b).mean())
        return self._verdict(
            "chi2", "chi2", LABEL_COLUMN, float(stat[0]), float(p[0]) < self.shadow.alpha,
            float(p[0]), start, end, len(a),
            Evidence(current={"agreement": agree}, notes={"champion": self.shadow.champion}),
        )  # fmt: skip

    # -- outcomes ------------------------------------------------------------------------

    def _remember(self, pairs: _Pairs) -> None:
        old = self.pending_
        if old is not None:
            pairs = _Pairs(*(np.concatenate([getattr(old, f), getattr(pairs, f)])
                             for f in _Pairs.__dataclass_fields__))  # fmt: skip
        order = np.argsort(pairs.ids, kind="stable")
        self.pending_ = _Pairs(*(getattr(pairs, f)[order] for f in _Pairs.__dataclass_fields__))

    def _expire(self, watermark: int) -> None:
        pend = self.pending_
        if pend is None:
            return
        live = pend.expires > watermark
        if not live.all():
            self.counters_.pairs_expired += int((~live).sum())
            self.pending_ = _Pairs(*(getattr(pend, f)[live] for f in _Pairs.__dataclass_fields__))

    def _performance(self, start: int) -> list[Verdict]:
        batches = self.outcomes_.pop(start, [])
        pend = self.pending_
        if not batches or pend is None or len(pend.ids) == 0:
            return []
        ids = np.concatenate([b.prediction_id for b in batches]).astype(str)
        labels = np.concatenate([b.label for b in batches])
        pos = np.clip(np.searchsorted(pend.ids, ids), 0, len(pend.ids) - 1)
        hit = pend.ids[pos] == ids
        self.counters_.outcomes_joined += int(hit.sum())
        self.counters_.outcomes_unmatched += int((~hit).sum())
        pos, labels = pos[hit], labels[hit]
        champ_wins, chall_wins = _wins(pend, pos, labels)
        joined = len(pos)
        keep = np.ones(len(pend.ids), bool)
        keep[pos] = False  # an outcome is used once
        self.pending_ = _Pairs(*(getattr(pend, f)[keep] for f in _Pairs.__dataclass_fields__))
        if joined < self.shadow.min_count:
            return []
        b, c = int(champ_wins.sum()), int(chall_wins.sum())
        p = binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
        net = (c - b) / joined  # > 0: the challenger is better
        breached = p < self.shadow.alpha and abs(net) >= self.shadow.min_effect
        return [
            self._verdict(
                "mcnemar", "net_win_share", "performance", net, breached, float(p), start,
                start + self.clock_.size, joined,
                Evidence(current={"champion_wins": b, "challenger_wins": c,
                                  "joined": joined},
                         notes={"champion": self.shadow.champion,
                                "better": "challenger" if net > 0 else "champion"}),
            )
        ]  # fmt: skip

    def _verdict(
        self,
        detector: str,
        statistic: str,
        feature: str,
        value: float,
        breached: bool,
        p_value: float,
        start: int,
        end: int,
        count: int,
        evidence: Evidence,
    ) -> Verdict:
        threshold = self.shadow.alpha
        return Verdict(
            kind=AlertKind.SHADOW_DIVERGENCE,
            detector=detector,
            statistic=statistic,
            value=float(value) if math.isfinite(value) else 0.0,
            threshold=float(threshold),
            breached=bool(breached),
            window_start=start,
            window_end=end,
            window_count=count,
            feature=feature,
            p_value=p_value,
            severity=Severity.WARNING,
            evidence=evidence,
        )


def _wins(pend: _Pairs, pos: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per joined event: did the champion do better, did the challenger?"""
    champ_label, chall_label = pend.champion_label[pos], pend.challenger_label[pos]
    has_labels = np.array([x is not None for x in champ_label.tolist()], dtype=bool)
    numeric = labels.dtype.kind == "f"
    if has_labels.all() and not numeric:
        truth = labels.astype(str)
        right_a, right_b = champ_label.astype(str) == truth, chall_label.astype(str) == truth
        return right_a & ~right_b, right_b & ~right_a
    truth = labels.astype(np.float64)  # regression target, or 0/1 for a scored classifier
    err_a = np.abs(pend.champion_score[pos] - truth)
    err_b = np.abs(pend.challenger_score[pos] - truth)
    return err_a < err_b, err_b < err_a
