"""BENCHMARKS.md's generated block, made from one ``edge-avatar bench --json`` document.

Why this module exists: the figures people read must be the ones the
benchmarks printed, on the machine they name, and re-making them must be one
command, not an afternoon of copying::

    edge-avatar bench --out all.json --markdown BENCHMARKS.md     # run everything, then write the block
    edge-avatar bench --from all.json --markdown BENCHMARKS.md    # the block from a saved run

Only the text between ``BEGIN`` and ``END`` is rewritten (the block is put
after the file's introduction the first time); the hand-written analysis
around it -- what changed, why, what was tried -- stays as it is. Each
benchmark becomes a table of its scalar figures (nested keys joined with dots,
long per-item lists left in the JSON) under a line of its targets, met or not.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

BEGIN = "<!-- edge-avatar bench --markdown: generated from one bench JSON; do not edit by hand -->"
END = "<!-- end of the generated block -->"
MAX_ROWS_PER_BENCHMARK = 60
MAX_DEPTH = 4
MAX_INLINE_LIST = 8
MAX_TEXT_CHARS = 100


class BenchmarkFileError(ValueError):
    """A bench JSON or a BENCHMARKS file that cannot be used; the message names the file and what is wrong."""


def load_results(path: str | Path) -> dict[str, Any]:
    """A saved ``edge-avatar bench --json`` document, checked for the fields the block needs."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BenchmarkFileError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    except json.JSONDecodeError as exc:
        raise BenchmarkFileError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), dict) \
            or not isinstance(data.get("machine"), dict):
        raise BenchmarkFileError(f"{path}: not an `edge-avatar bench --json` document "
                                 "(expected an object with 'machine' and 'benchmarks')")
    return data


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS - 3] + "..."


def figures(result: dict[str, Any], prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """(dotted key, formatted value) for every scalar of a benchmark's result, targets excluded."""
    rows: list[tuple[str, str]] = []
    for key, value in result.items():
        if depth == 0 and key in ("targets", "targets_met"):
            continue
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            if depth < MAX_DEPTH:
                rows += figures(value, path, depth + 1)
        elif isinstance(value, list):
            if len(value) <= MAX_INLINE_LIST and all(isinstance(v, (int, float, str)) for v in value):
                rows.append((path, ", ".join(_format(v) for v in value)))
        elif value is not None:
            rows.append((path, _format(value)))
    return rows


def targets(result: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(met, not met): the boolean verdicts of a result's ``targets`` / ``targets_met``, by name."""
    met, missed = [], []
    for key in ("targets", "targets_met"):
        for name, verdict in (result.get(key) or {}).items():
            if isinstance(verdict, bool):
                (met if verdict else missed).append(name)
    return met, missed


def render(results: dict[str, Any], source: str = "") -> str:
    """The generated block (markers included) for one bench document."""
    m = results.get("machine", {})
    when = results.get("generated_utc", "date not recorded")
    lines = [BEGIN, "",
             "## Generated: every benchmark of one `edge-avatar bench --json` run", "",
             f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory_gib', '?')} GiB, "
             f"{m.get('machine', '?')}, Python {m.get('python', '?')}, edge-avatar {m.get('edge_avatar', '?')}. "
             f"Run {when}{', quick mode' if results.get('quick') else ''}"
             f"{f'; from `{source}`' if source else ''}. The sections after this block say what the "
             "figures mean and how they came to be.", ""]
    for name, result in results.get("benchmarks", {}).items():
        lines += [f"### {name}", ""]
        if not isinstance(result, dict):
            lines += [f"(no result: {_format(result)})", ""]
            continue
        met, missed = targets(result)
        if met or missed:
            verdict = []
            if met:
                verdict.append("met: " + ", ".join(f"`{t}`" for t in met))
            if missed:
                verdict.append("**not met**: " + ", ".join(f"`{t}`" for t in missed))
            lines += ["Targets " + "; ".join(verdict) + ".", ""]
        rows = figures(result)
        lines += ["| figure | value |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in rows[:MAX_ROWS_PER_BENCHMARK]]
        if len(rows) > MAX_ROWS_PER_BENCHMARK:
            lines.append(f"| ... | {len(rows) - MAX_ROWS_PER_BENCHMARK} more figures in the JSON |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines) + "\n"


def update_file(path: str | Path, block: str) -> None:
    """Put ``block`` into the Markdown file at ``path``: over the old block, else before its second heading."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    begin, end = text.find(BEGIN), text.find(END)
    if (begin < 0) != (end < 0) or (begin >= 0 and end < begin):
        raise BenchmarkFileError(f"{path}: one of the generated block's markers is missing or they are out of "
                                 f"order; expected {BEGIN!r} ... {END!r}, or neither")
    if begin >= 0:
        tail = text[end + len(END):]
        text = text[:begin] + block.rstrip("\n") + ("\n" + tail.lstrip("\n") if tail.strip() else "\n")
    else:
        second = text.find("\n## ")
        if second < 0:
            text = text.rstrip("\n") + "\n\n" + block
        else:
            text = text[:second + 1] + block + "\n" + text[second + 1:]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
