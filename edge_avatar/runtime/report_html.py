"""``report.html``: the run's report as pictures a person would look at, next to ``report.json``.

Why this module exists: the JSON is for machines and tests; a reviewer (the
hospital's IT, the robot maker, us) wants to see at a glance where each
answer's time went, whether the mouth kept up with the voice, and which
stage eats the tick. Everything is drawn as inline SVG by the few helpers
below, so the file is self-contained (no scripts, no network, no plotting
package) and opens in any browser, also offline on a kiosk.

Plots: per-turn latency breakdown (end-of-turn wait, answering, speech to
the first sample), the A/V offset per turn against the +-40 ms target with
the whole run's correlation curve, mouth opening measured from the video's
pixels over the speech envelope, and stage timings p50/p95 against the tick
budget. The visitor's words appear only when the report has them (that is,
when ``privacy.log_transcripts`` allowed them into the JSON).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Sequence

import numpy as np

AV_TARGET_MS = 40.0
COLOURS = {"wait": "#8fa9c9", "answer": "#e0a458", "speech": "#6fb07f", "p50": "#4c78a8", "p95": "#f58518",
           "mouth": "#c0392b", "envelope": "#7f8c8d", "offset": "#2c3e50", "band": "#d5f5e3"}


class Svg:
    """A tiny SVG canvas with a plot area and data->pixel mapping."""

    def __init__(self, width: int, height: int, x_range: tuple[float, float], y_range: tuple[float, float],
                 margin: tuple[int, int, int, int] = (40, 20, 30, 60)):   # top, right, bottom, left
        self.width, self.height = width, height
        self.top, self.right, self.bottom, self.left = margin
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range
        if self.x1 == self.x0:
            self.x1 = self.x0 + 1.0
        if self.y1 == self.y0:
            self.y1 = self.y0 + 1.0
        self.parts: list[str] = []

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * (self.width - self.left - self.right)

    def py(self, y: float) -> float:
        return self.height - self.bottom - (y - self.y0) / (self.y1 - self.y0) * (self.height - self.top - self.bottom)

    def add(self, element: str) -> None:
        self.parts.append(element)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: str, title: str = "") -> None:
        ax, bx = sorted((self.px(x0), self.px(x1)))
        ay, by = sorted((self.py(y0), self.py(y1)))
        tip = f"<title>{html.escape(title)}</title>" if title else ""
        self.add(f'<rect x="{ax:.1f}" y="{ay:.1f}" width="{max(bx - ax, 0.5):.1f}" height="{max(by - ay, 0.5):.1f}" '
                 f'fill="{fill}">{tip}</rect>')

    def line(self, xs: Sequence[float], ys: Sequence[float], stroke: str, width: float = 1.5) -> None:
        points = " ".join(f"{self.px(x):.1f},{self.py(y):.1f}" for x, y in zip(xs, ys) if np.isfinite(y))
        if points:
            self.add(f'<polyline points="{points}" fill="none" stroke="{stroke}" stroke-width="{width}"/>')

    def dot(self, x: float, y: float, fill: str, title: str = "") -> None:
        tip = f"<title>{html.escape(title)}</title>" if title else ""
        self.add(f'<circle cx="{self.px(x):.1f}" cy="{self.py(y):.1f}" r="4" fill="{fill}">{tip}</circle>')

    def text(self, x_px: float, y_px: float, value: str, anchor: str = "start", size: int = 11) -> None:
        self.add(f'<text x="{x_px:.1f}" y="{y_px:.1f}" font-size="{size}" text-anchor="{anchor}">'
                 f'{html.escape(value)}</text>')

    def axes(self, title: str, x_label: str, y_label: str, x_ticks: Sequence[float] = (),
             y_ticks: Sequence[float] = (), y_tick_labels: Sequence[str] | None = None) -> None:
        b, left = self.height - self.bottom, self.left
        self.add(f'<line x1="{left}" y1="{b}" x2="{self.width - self.right}" y2="{b}" stroke="#333"/>')
        self.add(f'<line x1="{left}" y1="{self.top}" x2="{left}" y2="{b}" stroke="#333"/>')
        self.text(self.width / 2, 18, title, "middle", 13)
        self.text(self.width / 2, self.height - 4, x_label, "middle")
        self.add(f'<text x="12" y="{self.height / 2:.0f}" font-size="11" text-anchor="middle" '
                 f'transform="rotate(-90 12 {self.height / 2:.0f})">{html.escape(y_label)}</text>')
        for x in x_ticks:
            self.text(self.px(x), b + 14, f"{x:g}", "middle", 10)
        for i, y in enumerate(y_ticks):
            label = y_tick_labels[i] if y_tick_labels is not None else f"{y:g}"
            self.text(left - 4, self.py(y) + 4, label, "end", 10)

    def svg(self) -> str:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
                f'font-family="sans-serif">{"".join(self.parts)}</svg>')


def _ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** np.floor(np.log10(raw))
    for mult in (1, 2, 5, 10):
        if raw <= mult * step:
            step *= mult
            break
    start = np.ceil(lo / step) * step
    return [round(float(v), 6) for v in np.arange(start, hi + step * 1e-6, step)]


def latency_breakdown(turns: list[dict[str, Any]]) -> str:
    """Stacked bars per answered turn: end-of-turn wait, answering, speech to the first sample."""
    rows = []
    for t in turns:
        if t.get("response_latency_ms") is None or t.get("end_of_speech_s") is None:
            continue
        wait = float(t.get("end_of_turn_wait_ms") or 0.0)
        answer = float(t.get("reply_compute_ms") or 0.0)
        speech = max(0.0, float(t["response_latency_ms"]) - wait - answer)
        rows.append((t["turn_id"], wait, answer, speech, float(t["response_latency_ms"])))
    if not rows:
        return "<p>No answered turns.</p>"
    x_max = max(r[4] for r in rows) * 1.1
    height = 70 + 34 * len(rows)
    c = Svg(760, height, (0.0, x_max), (0.0, float(len(rows))), margin=(40, 20, 36, 70))
    for i, (turn_id, wait, answer, speech, total) in enumerate(rows):
        y0, y1 = len(rows) - i - 0.8, len(rows) - i - 0.2
        c.rect(0, y0, wait, y1, COLOURS["wait"], f"end-of-turn wait {wait:.0f} ms")
        c.rect(wait, y0, wait + answer, y1, COLOURS["answer"], f"answering {answer:.0f} ms")
        c.rect(wait + answer, y0, total, y1, COLOURS["speech"], f"speech to first sample {speech:.0f} ms")
        c.text(c.px(total) + 4, c.py((y0 + y1) / 2) + 4, f"{total:.0f} ms")
        c.text(c.left - 6, c.py((y0 + y1) / 2) + 4, f"turn {turn_id}", "end")
    c.axes("Response latency per turn (end of the visitor's speech to the first reply sample)", "ms",
           "", _ticks(0, x_max))
    legend = " ".join(f'<span style="background:{COLOURS[k]};padding:0 8px">&nbsp;</span> {label}'
                      for k, label in (("wait", "end-of-turn wait"), ("answer", "answering (ASR final, brain)"),
                                       ("speech", "speech synthesis to first sample")))
    return c.svg() + f"<p class='legend'>{legend}</p>"


def av_offset_plot(turns: list[dict[str, Any]], lip_sync: dict[str, Any] | None) -> str:
    """A/V offset per turn over the run's time, with the +-40 ms target band; and the correlation curve."""
    if not lip_sync or "overall" not in lip_sync:
        reason = (lip_sync or {}).get("error", "not measured")
        return f"<p>A/V offset not measured: {html.escape(str(reason))}</p>"
    points = [(float(t["first_audio_s"]), float(t["av_offset_ms"])) for t in turns
              if t.get("av_offset_ms") is not None and t.get("first_audio_s") is not None]
    duration = max([p[0] for p in points] + [1.0]) * 1.1
    limit = max([AV_TARGET_MS * 2] + [abs(p[1]) * 1.2 for p in points])
    c = Svg(380, 260, (0.0, duration), (-limit, limit))
    c.rect(0, -AV_TARGET_MS, duration, AV_TARGET_MS, COLOURS["band"], "target: within 40 ms")
    c.line([0, duration], [0, 0], "#999", 1)
    for x, y in points:
        c.dot(x, y, COLOURS["offset"], f"{y:+.0f} ms at {x:.1f} s")
    c.axes("A/V offset per turn (+ = mouth late)", "time of the turn's first reply sample, s", "ms",
           _ticks(0, duration, 5), _ticks(-limit, limit, 6))
    overall = lip_sync["overall"]
    lags, corr = overall["lags_ms"], overall["correlations"]
    d = Svg(380, 260, (min(lags), max(lags)), (min(-0.2, min(corr)), 1.0))
    d.line([-AV_TARGET_MS, -AV_TARGET_MS], [-1, 1], COLOURS["band"], 2)
    d.line([AV_TARGET_MS, AV_TARGET_MS], [-1, 1], COLOURS["band"], 2)
    d.line(lags, corr, COLOURS["offset"])
    d.dot(overall["av_offset_ms"], overall["correlation"], COLOURS["mouth"],
          f"best {overall['av_offset_ms']:+.0f} ms, r={overall['correlation']:.2f}")
    d.axes(f"Whole run: best offset {overall['av_offset_ms']:+.0f} ms (r = {overall['correlation']:.2f})",
           "lag, ms", "correlation", _ticks(min(lags), max(lags), 4), _ticks(min(-0.2, min(corr)), 1.0, 4))
    return c.svg() + d.svg()


def mouth_plot(opening: np.ndarray | None, envelope: np.ndarray | None, fps: float) -> str:
    """Mouth opening measured from the video's pixels over the speech envelope, the whole run."""
    if opening is None or envelope is None or len(opening) == 0:
        return ""
    t = np.arange(len(opening)) / fps
    top = float(np.nanmax(opening)) if np.isfinite(opening).any() else 1.0
    env = envelope / max(float(envelope.max()), 1e-9) * top
    c = Svg(1120, 240, (0.0, float(t[-1]) if len(t) > 1 else 1.0), (0.0, top * 1.05))
    c.line(t, env, COLOURS["envelope"], 1)
    c.line(t, opening, COLOURS["mouth"], 1.2)
    c.axes("Mouth opening from the rendered pixels (red) over the speech envelope (grey)", "s",
           "inner-lip gap / face height", _ticks(0, float(t[-1]) if len(t) else 1.0, 12), _ticks(0, top, 4))
    return c.svg()


def stage_plot(stages: dict[str, Any], tick_rate_hz: float) -> str:
    """p50 and p95 per stage against the tick budget."""
    names = [n for n, s in stages.items() if s.get("count")]
    if not names:
        return ""
    budget = 1000.0 / tick_rate_hz if tick_rate_hz else 0.0
    y_max = max([budget * 1.1] + [float(stages[n]["p95"]) * 1.1 for n in names])
    c = Svg(520, 260, (0.0, float(len(names))), (0.0, y_max))
    for i, name in enumerate(names):
        c.rect(i + 0.15, 0, i + 0.5, float(stages[name]["p50"]), COLOURS["p50"], f"{name} p50 {stages[name]['p50']} ms")
        c.rect(i + 0.5, 0, i + 0.85, float(stages[name]["p95"]), COLOURS["p95"], f"{name} p95 {stages[name]['p95']} ms")
        c.text(c.px(i + 0.5), c.height - c.bottom + 14, name, "middle", 10)
    if budget:
        c.line([0, len(names)], [budget, budget], "#c0392b", 1)
        c.text(c.px(len(names)) - 2, c.py(budget) - 4, f"tick budget {budget:.1f} ms", "end", 10)
    c.axes("Stage timings per tick (blue p50, orange p95)", "", "ms", (), _ticks(0, y_max, 5))
    return c.svg()


def _cell(value: Any) -> str:
    return "" if value is None else html.escape(str(value))


def turn_table(turns: list[dict[str, Any]]) -> str:
    has_user = any("user_text" in t for t in turns)
    head = ["turn", "kind"] + (["visitor said"] if has_user else []) + \
        ["reply", "tier", "latency ms", "wait ms", "A/V offset ms", "interrupted"]
    rows = []
    for t in turns:
        cells = [t.get("turn_id"), t.get("kind")] + ([t.get("user_text", "")] if has_user else []) + \
            [t.get("reply_text"), t.get("tier"), t.get("response_latency_ms"), t.get("end_of_turn_wait_ms"),
             t.get("av_offset_ms"), "yes" if t.get("interrupted") else ""]
        rows.append("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in cells) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>")


def render_report_html(report: dict[str, Any], opening: np.ndarray | None = None,
                       envelope: np.ndarray | None = None, fps: float = 30.0) -> str:
    turns = report.get("turns", [])
    frames = report.get("frames", {})
    latency = report.get("response_latency_ms", {})
    av = report.get("av_offset_ms", {})
    memory = report.get("memory_mb", {})
    headline = [
        ("frames", f"{frames.get('rendered')} rendered, {frames.get('dropped')} dropped "
                   f"({frames.get('dropped_pct')} %), {frames.get('fps')} fps"),
        ("response latency", f"p50 {latency.get('p50')} ms, p95 {latency.get('p95')} ms over "
                             f"{latency.get('count', 0)} turns"),
        ("A/V offset", f"p50 {av.get('p50')} ms, max {av.get('max')} ms over {av.get('count', 0)} turns"),
        ("peak memory", f"{memory.get('peak_rss')} MB"),
        ("board / backend", f"{report.get('board')} / {report.get('backend')}"),
    ]
    tick_rate = float(report.get("tick_rate_hz") or 30.0)
    body = [
        "<h1>edge-avatar run report</h1>",
        "<table class='head'>" + "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>"
                                         for k, v in headline) + "</table>",
        "<h2>Turns</h2>", turn_table(turns),
        "<h2>Where each answer's time went</h2>", latency_breakdown(turns),
        "<h2>Lip sync</h2>", av_offset_plot(turns, report.get("lip_sync")),
        mouth_plot(opening, envelope, fps),
        "<h2>Stage timings</h2>", stage_plot(report.get("stages_ms", {}), tick_rate),
        f"<p class='foot'>edge-avatar {html.escape(str(report.get('edge_avatar_version')))}, "
        f"report v{report.get('report_version')}. The numbers are in report.json.</p>",
    ]
    style = ("body{font-family:sans-serif;margin:24px;max-width:1160px}table{border-collapse:collapse;"
             "margin:8px 0}td,th{border:1px solid #ddd;padding:3px 6px;font-size:13px;text-align:left;"
             "vertical-align:top}.legend{font-size:12px}.foot{color:#777;font-size:12px}svg{margin:4px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>edge-avatar report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def write_report_html(report: dict[str, Any], path: str | Path, opening: np.ndarray | None = None,
                      envelope: np.ndarray | None = None, fps: float = 30.0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(render_report_html(report, opening, envelope, fps), encoding="utf-8")
    tmp.replace(path)
    return path
