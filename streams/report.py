"""Backtest reports: a terminal summary (rich), a JSON file and a self-contained HTML page.

The HTML page draws its plots as inline SVG generated here, with no script or font fetched
from anywhere, so it opens offline: per-feature drift statistic over time with its threshold,
firing (red) and resolved (green) alert markers and the known change points (grey dashes);
and per model, the performance over time with the label coverage.

A few lines of inline script only measure the drawn plots after layout and record the count
in ``<body data-plots-rendered=...>``, which the headless-browser test reads.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from driftwire.detectors.scoring import ChangePoint, Score
from driftwire.schemas.records import alert_to_record
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from driftwire.detectors.alerts import Alert
    from driftwire.streams.backtest import BacktestResult, VerdictSeries

MAX_POINTS = 1500  # per plotted line; more is invisible at this width and bloats the file
MAX_ALERT_ROWS = 1000


# --------------------------------------------------------------------------- JSON


def _finite(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def score_table(scores: Iterable[Score]) -> list[dict[str, Any]]:
    return [s.summary() for s in scores]


def to_json(result: BacktestResult) -> dict[str, Any]:
    """Everything in the report as plain JSON values (non-finite numbers become null)."""
    card = result.card
    return {
        "source": result.source,
        "models": result.models,
        "start_ms": result.start_ms,
        "end_ms": result.end_ms,
        "events": result.events,
        "seconds": result.seconds,
        "events_per_second": result.events_per_second,
        "settings": result.settings,
        "alerts": [_json_alert(a) for a in result.alerts],
        "windows": len(result.windows),
        "truth": [_json_change(c) for c in result.truth],
        "scores": score_table(card.scores()) if card else [],
        "detections": [
            {
                **_json_change(d.change),
                "found": d.found,
                "detected_at": d.detected_at,
                "delay_ms": d.delay_ms,
                "delay_events": d.delay_events,
                "alert_id": d.alert_id,
            }
            for d in (card.detector.detections if card else [])
        ],
        "sweep": [
            {"setting": row.setting, **{k: _finite(v) for k, v in row.score.summary().items()}}
            for row in result.sweep
        ],
        "series": [
            {
                "model": s.model,
                "kind": s.kind,
                "detector": s.detector,
                "statistic": s.statistic,
                "feature": s.feature,
                "segment": s.segment,
                "window_end": s.window_end,
                "value": [_finite(v) for v in s.value],
                "threshold": [_finite(v) for v in s.threshold],
                "breached": s.breached,
                "p_value": [None if v is None else _finite(v) for v in s.p_value],
            }
            for s in result.series
        ],
        "performance": [
            {
                "model": p.model,
                "metric": p.metric,
                "window_start": p.window_start,
                "value": [_finite(v) for v in p.value],
                "coverage": p.coverage,
                "count": p.count,
            }
            for p in result.performance
        ],
    }


def _json_alert(alert: Any) -> dict[str, Any]:
    record = alert_to_record(alert)
    return {k: _finite(v) for k, v in record.items()}


def _json_change(change: ChangePoint) -> dict[str, Any]:
    return {
        "model": change.model,
        "at": change.at,
        "kind": change.kind,
        "feature": change.feature,
        "label": change.label,
    }


def write_json(result: BacktestResult, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_json(result), indent=1, allow_nan=False))


# --------------------------------------------------------------------------- terminal


def print_summary(result: BacktestResult, console: Console | None = None) -> None:
    console = console or Console()
    console.print(
        f"[bold]backtest[/bold] {result.source}: {result.events:,} events in "
        f"{result.seconds:.2f} s ({result.events_per_second:,.0f} events/s), "
        f"{len(result.windows):,} windows, {len(result.alerts):,} alert events"
    )
    if result.alerts:
        table = Table(title="alerts (firing)")
        for col in ("window end", "model", "kind", "detector", "feature", "value", "threshold"):
            table.add_column(col)
        firing = [a for a in result.alerts if str(a.status) == "firing"]
        for a in firing[:30]:
            table.add_row(
                fmt_time(a.window_end), a.model_id, str(a.kind), a.detector, a.feature or "-",
                f"{a.value:.4g}", f"{a.threshold:.4g}",
            )  # fmt: skip
        if len(firing) > 30:
            table.caption = f"... and {len(firing) - 30} more"
        console.print(table)
    if result.card is not None:
        console.print(_scores_table("scores vs baselines", result.card.scores()))
        det = Table(title="change points")
        for col in ("model", "at", "change", "found", "delay", "delay (events)"):
            det.add_column(col)
        for d in result.card.detector.detections:
            det.add_row(
                d.change.model, fmt_time(d.change.at), d.change.label or d.change.feature or "-",
                "[green]found[/green]" if d.found else "[red]missed[/red]",
                fmt_duration(d.delay_ms), "-" if d.delay_events is None else f"{d.delay_events:,}",
            )  # fmt: skip
        console.print(det)
    if result.sweep:
        rows = [row.score for row in result.sweep]
        table = _scores_table("threshold sweep", rows, [row.setting for row in result.sweep])
        console.print(table)


def _scores_table(title: str, scores: Sequence[Score], labels: Sequence[str] = ()) -> Table:
    table = Table(title=title)
    for col in ("setting", "found", "missed", "mean delay", "mean delay (events)"):
        table.add_column(col)
    for col in ("false alarms", "per 1,000 windows", "MTBFA"):
        table.add_column(col)
    for i, s in enumerate(scores):
        fa_rate = s.false_alarms_per_1000_windows
        table.add_row(
            labels[i] if labels else s.name, str(s.found), str(s.missed),
            fmt_duration(s.mean_delay_ms),
            "-" if s.mean_delay_events is None else f"{s.mean_delay_events:,.0f}",
            str(s.false_alarms), "-" if fa_rate is None else f"{fa_rate:.1f}",
            fmt_duration(s.mtbfa_ms),
        )  # fmt: skip
    return table


def fmt_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    if math.isinf(ms):
        return "∞"
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if abs(ms) >= size:
            return f"{ms / size:.1f}{unit}"
    return f"{ms:.0f}ms"


# --------------------------------------------------------------------------- SVG plots


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    color: str
    dashed: bool = False


@dataclass(frozen=True, slots=True)
class Marker:
    x: float
    y: float
    color: str
    title: str


def _thin(xs: Sequence[float], ys: Sequence[float | None]) -> list[tuple[float, float | None]]:
    """At most MAX_POINTS points, keeping each bucket's extreme so spikes stay visible."""
    points = list(zip(xs, ys, strict=True))
    if len(points) <= MAX_POINTS:
        return points
    step = math.ceil(len(points) / MAX_POINTS)
    kept = []
    for i in range(0, len(points), step):
        bucket = [p for p in points[i : i + step] if p[1] is not None]
        kept.append(max(bucket, key=lambda p: abs(p[1] or 0.0)) if bucket else points[i])
    return kept


def svg_chart(
    title: str,
    lines: Sequence[Line],
    x_range: tuple[float, float],
    markers: Sequence[Marker] = (),
    vlines: Sequence[tuple[float, str]] = (),
    y_range: tuple[float, float] | None = None,
    width: int = 620,
    height: int = 210,
) -> str:
    """A line chart as an inline SVG element (time on x, epoch ms)."""
    left, right, top, bottom = 58, 12, 24, 30
    x0, x1 = x_range
    if x1 <= x0:
        x1 = x0 + 1
    finite = [y for line in lines for y in line.ys if y is not None and math.isfinite(y)] + [
        m.y for m in markers if math.isfinite(m.y)
    ]
    lo, hi = y_range or ((min(finite), max(finite)) if finite else (0.0, 1.0))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.05 * (hi - lo)
    lo, hi = (lo, hi) if y_range else (lo - pad, hi + pad)

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        y = min(max(y, lo), hi)  # +inf statistics sit on the top edge
        return top + (hi - y) / (hi - lo) * (height - top - bottom)

    parts = [
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img">',
        f"<title>{html.escape(title)}</title>",
        f'<text x="{left}" y="15" class="ptitle">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{width - left - right}" '
        f'height="{height - top - bottom}" class="frame"/>',
    ]
    for i in range(5):
        yv = lo + (hi - lo) * i / 4
        parts.append(
            f'<text x="{left - 4}" y="{sy(yv) + 4:.1f}" class="tick" '
            f'text-anchor="end">{yv:.3g}</text>'
        )
        xv = x0 + (x1 - x0) * i / 4
        anchor = ("start", "middle", "middle", "middle", "end")[i]
        parts.append(
            f'<text x="{sx(xv):.1f}" y="{height - 10}" class="tick" text-anchor="{anchor}">'
            f"{datetime.fromtimestamp(xv / 1000, UTC).strftime('%m-%d %H:%M')}</text>"
        )
    for x, label in vlines:
        parts.append(
            f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{top}" y2="{height - bottom}" '
            f'class="change"><title>{html.escape(label)}</title></line>'
        )
    for line in lines:
        for segment in _segments(_thin(line.xs, line.ys)):
            pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in segment)
            dash = ' stroke-dasharray="5 3"' if line.dashed else ""
            parts.append(
                f'<polyline points="{pts}" fill="none" stroke="{line.color}" '
                f'stroke-width="1.4"{dash}><title>{html.escape(line.name)}</title></polyline>'
            )
    for m in markers:
        parts.append(
            f'<circle cx="{sx(m.x):.1f}" cy="{sy(m.y):.1f}" r="4" fill="{m.color}" '
            f'class="marker"><title>{html.escape(m.title)}</title></circle>'
        )
    legend_x = width - right - 8
    for i, line in enumerate(reversed(lines)):
        parts.append(
            f'<text x="{legend_x}" y="{top + 14 + 13 * i}" class="legend" text-anchor="end" '
            f'fill="{line.color}">{html.escape(line.name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _segments(points: list[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """Split a line where values are missing, so gaps show as gaps."""
    out: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None or math.isnan(y):
            if out[-1]:
                out.append([])
        else:
            out[-1].append((x, y))
    return [s for s in out if s]


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222}
h1{font-size:22px} h2{font-size:18px;margin-top:28px} h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
.found{color:#137333;font-weight:600} .missed{color:#c5221f;font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:8px}
svg.plot{background:#fff;border:1px solid #e3e3e3}
.frame{fill:none;stroke:#bbb} .tick{font-size:10px;fill:#555} .legend{font-size:11px}
.ptitle{font-size:12px;font-weight:600;fill:#222}
.change{stroke:#777;stroke-dasharray:4 3}
.meta{color:#555;font-size:13px}
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var drawn = 0;
  document.querySelectorAll('svg.plot').forEach(function (svg) {
    var lines = svg.querySelectorAll('polyline');
    var ok = lines.length > 0;
    lines.forEach(function (l) { var b = l.getBBox(); if (!(b.width > 0)) ok = false; });
    if (ok && svg.getBoundingClientRect().width > 0) drawn += 1;
  });
  document.body.setAttribute('data-plots-rendered', String(drawn));
  var total = document.querySelectorAll('svg.plot').length;
  document.body.setAttribute('data-plots-total', String(total));
});
"""


def render_html(result: BacktestResult) -> str:
    """The whole report as one HTML document, with no external resource."""
    esc = html.escape
    body = [
        f"<h1>driftwire backtest: {esc(result.source)}</h1>",
        f'<p class="meta">{fmt_time(result.start_ms)} to {fmt_time(result.end_ms)} UTC · '
        f"{result.events:,} events · {len(result.windows):,} windows · "
        f"{len(result.alerts):,} alert events · replayed at "
        f"{result.events_per_second:,.0f} events/s</p>",
    ]
    if result.settings:
        body.append(f'<p class="meta">settings: {esc(json.dumps(result.settings))}</p>')
    if result.card is not None:
        body.append("<h2>Scores against the ground truth</h2>")
        body.append(_html_scores(result.card.scores()))
        body.append(_html_detections(result))
    if result.sweep:
        body.append("<h2>Threshold sweep</h2>")
        body.append(
            _html_scores([r.score for r in result.sweep], [r.setting for r in result.sweep])
        )
    for model in result.models:
        body.append(f"<h2>Model {esc(model)}</h2>")
        body.append(_html_model_plots(result, model))
    body.append("<h2>Alert events</h2>")
    body.append(_html_alerts(result))
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>driftwire backtest {esc(result.source)}</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}"
        f"<script>{_SCRIPT}</script></body></html>"
    )


def write_html(result: BacktestResult, path: str | Path) -> None:
    Path(path).write_text(render_html(result), encoding="utf-8")


def _html_scores(scores: Sequence[Score], labels: Sequence[str] = ()) -> str:
    head = (
        "<tr><th class='l'>setting</th><th>found</th><th>missed</th><th>mean delay</th>"
        "<th>mean delay (events)</th><th>false alarms</th><th>per 1,000 windows</th>"
        "<th>MTBFA</th></tr>"
    )
    rows = []
    for i, s in enumerate(scores):
        rate = s.false_alarms_per_1000_windows
        rows.append(
            f"<tr><td class='l'>{html.escape(labels[i] if labels else s.name)}</td>"
            f"<td>{s.found}</td><td>{s.missed}</td><td>{fmt_duration(s.mean_delay_ms)}</td>"
            f"<td>{'-' if s.mean_delay_events is None else f'{s.mean_delay_events:,.0f}'}</td>"
            f"<td>{s.false_alarms}</td><td>{'-' if rate is None else f'{rate:.1f}'}</td>"
            f"<td>{fmt_duration(s.mtbfa_ms)}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _html_detections(result: BacktestResult) -> str:
    assert result.card is not None
    rows = []
    for d in result.card.detector.detections:
        c = d.change
        state = (
            "<span class='found'>found</span>" if d.found else "<span class='missed'>missed</span>"
        )
        rows.append(
            f"<tr><td class='l'>{html.escape(c.model)}</td><td>{fmt_time(c.at)}</td>"
            f"<td class='l'>{html.escape(c.label or '')}</td>"
            f"<td class='l'>{html.escape(c.kind or 'any')}</td>"
            f"<td class='l'>{html.escape(c.feature or '-')}</td><td>{state}</td>"
            f"<td>{fmt_duration(d.delay_ms)}</td>"
            f"<td>{'-' if d.delay_events is None else f'{d.delay_events:,}'}</td></tr>"
        )
    head = (
        "<tr><th class='l'>model</th><th>change at</th><th class='l'>change</th>"
        "<th class='l'>kind</th><th class='l'>feature</th><th>result</th><th>delay</th>"
        "<th>delay (events)</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _html_model_plots(result: BacktestResult, model: str) -> str:
    windows = [w for w in result.windows if w.model == model]
    x_range = (
        min((w.start for w in windows), default=result.start_ms or 0),
        max((w.end for w in windows), default=result.end_ms or 1),
    )
    changes = [c for c in result.truth if c.model == model]
    charts = []
    for perf in (p for p in result.performance if p.model == model):
        ends = perf.window_start
        charts.append(
            svg_chart(
                f"performance: {perf.metric} and label coverage",
                [
                    Line(perf.metric, ends, perf.value, "#1a73e8"),
                    Line("label coverage", ends, perf.coverage, "#e8710a", dashed=True),
                ],
                x_range,
                vlines=[(c.at, c.label or "change") for c in changes],
                y_range=(
                    0.0,
                    max(1.0, *[v for v in perf.value if v is not None and math.isfinite(v)]),
                ),
            )
        )
    alerts = [a for a in result.alerts if a.model_id == model]
    mine = [s for s in result.series if s.model == model]
    # Series that breached come first: those are the plots a reader opens the report for.
    mine.sort(key=lambda s: (not any(s.breached), s.feature or "", s.kind, s.detector))
    for s in mine:
        charts.append(_series_chart(s, alerts, changes, x_range))
    if not charts:
        return "<p class='meta'>no windows were tested for this model</p>"
    return f"<div class='plots'>{''.join(charts)}</div>"


def _neg_log10(p: float | None) -> float | None:
    if p is None or math.isnan(p):
        return None
    return -math.log10(max(p, 1e-300))


def _series_chart(
    s: VerdictSeries,
    alerts: Sequence[Alert],
    changes: Sequence[ChangePoint],
    x_range: tuple[float, float],
) -> str:
    """One detector on one feature: its statistic (or -log10 p for tests on p-values)."""
    on_p = s.tested_on_p
    title = f"{s.feature or s.kind}: {s.detector} " + (
        "(-log10 corrected p)" if on_p else f"({s.statistic})"
    )
    if s.segment:
        title += f" [{s.segment}]"
    mine = [
        a for a in alerts
        if a.detector == s.detector and a.feature == s.feature and a.segment == s.segment
        and str(a.kind) == s.kind
    ]  # fmt: skip

    def y_of(alert: Alert) -> float:
        y = _neg_log10(alert.p_value) if on_p else alert.value
        return math.inf if y is None else y

    markers = [
        Marker(
            a.window_end,
            y_of(a),
            "#d93025" if str(a.status) == "firing" else "#188038",
            f"{a.status} {fmt_time(a.window_end)} {a.statistic}={a.value:.4g}",
        )
        for a in mine
    ]
    if on_p:
        values = [_neg_log10(p) for p in s.p_value]
        thresholds = [_neg_log10(t) for t in s.threshold]
    else:
        values, thresholds = list(s.value), list(s.threshold)
    feature_changes = [c for c in changes if c.feature in (None, s.feature)]
    return svg_chart(
        title,
        [
            Line("-log10 p" if on_p else s.statistic, s.window_end, values, "#1a73e8"),
            Line("threshold", s.window_end, thresholds, "#777", dashed=True),
        ],
        x_range,
        markers=markers,
        vlines=[(c.at, c.label or "change") for c in feature_changes],
    )


def _html_alerts(result: BacktestResult) -> str:
    head = (
        "<tr><th>window end</th><th class='l'>model</th><th class='l'>status</th>"
        "<th class='l'>kind</th><th class='l'>detector</th><th class='l'>feature</th>"
        "<th>value</th><th>threshold</th><th class='l'>alert id</th></tr>"
    )
    rows = [
        f"<tr><td>{fmt_time(a.window_end)}</td><td class='l'>{html.escape(a.model_id)}</td>"
        f"<td class='l'>{a.status}</td><td class='l'>{a.kind}</td>"
        f"<td class='l'>{html.escape(a.detector)}</td>"
        f"<td class='l'>{html.escape(a.feature or '-')}</td><td>{a.value:.4g}</td>"
        f"<td>{a.threshold:.4g}</td><td class='l'>{a.alert_id[:12]}</td></tr>"
        for a in result.alerts[:MAX_ALERT_ROWS]
    ]
    more = len(result.alerts) - MAX_ALERT_ROWS
    note = f"<p class='meta'>... and {more} more in the JSON report</p>" if more > 0 else ""
    return f"<table>{head}{''.join(rows)}</table>{note}"
