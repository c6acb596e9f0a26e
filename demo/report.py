"""The demo's report: OUT/report.html and OUT/report.md, the same content, figures beside them.

The HTML page is static (no script, no external resource): it opens from the file system in any
browser, and its images are the PNGs the steps wrote, referenced by relative path.
"""

from __future__ import annotations

import html
from pathlib import Path

from edgedepth.common import write_text_atomic
from edgedepth.demo.result import DemoResult, Step

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
pre { background: #f5f5f5; padding: .6em; font-size: 12px; white-space: pre-wrap; overflow-wrap: anywhere; }
code.command { display: block; background: #eef3fb; padding: .5em; white-space: pre-wrap; font-size: 12px;
  overflow-wrap: anywhere; }
code { overflow-wrap: anywhere; } .reused { color: #357; }
table { border-collapse: collapse; } td, th { padding: .2em .8em; border-bottom: 1px solid #ddd; }
td.num { text-align: right; } figure { margin: 0; } img { max-width: 100%; border: 1px solid #ccc; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 1em; }
figure.wide { margin: 1em 0; }
figcaption { font-size: 13px; color: #555; } .skipped { color: #a60; }
"""


def _timing_rows(result: DemoResult) -> list[tuple[str, str, str]]:
    rows = [(s.title, s.status, f"{s.seconds:.1f}") for s in result.steps]
    return rows + [("total", "", f"{result.seconds:.1f}")]


def _settings_text(result: DemoResult) -> str:
    s = result.settings
    if s.bin_width is None or s.min_depth is None or s.max_depth is None:
        bins = "bias bins over the data's depth range"
    else:
        source = f" ({s.depth_source})" if s.depth_source else ""
        bins = f"bias bins of {s.bin_width:g} m over {s.min_depth:g}-{s.max_depth:g} m{source}"
    text = f"{bins}; student trained at {s.train_size[1]}x{s.train_size[0]}"
    if s.quick:
        text += (f" for {s.epochs} x {s.iters_per_epoch} steps (--quick: the short path; only "
                 f"{', '.join(s.variants)} exported and timed)")  # fmt: skip
    return text + "."


def _reused_text(result: DemoResult) -> str:
    reused = [s.title for s in result.steps if s.status == "reused"]
    if not reused:
        return ""
    return (f"Reused from an earlier run with the same inputs and settings ({len(reused)} steps): "
            f"{', '.join(reused)}. Their seconds are this run's (none); `edgedepth demo --fresh` redoes them.")  # fmt: skip


def _overview(result: DemoResult) -> Step | None:
    return next((s for s in result.steps if s.key == "overview" and s.figures), None)


def to_html(result: DemoResult) -> str:
    """The report as one static HTML page."""
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>edgedepth demo report</title>',
        f"<style>{STYLE}</style></head><body>",
        "<h1>edgedepth demo: labels to edge model</h1>",
        f"<p><b>Data:</b> {e(result.data)}.</p>",
        f"<p><b>Settings:</b> {e(_settings_text(result))}</p>",
    ]
    if _reused_text(result):
        out.append(f'<p class="reused">{e(_reused_text(result))}</p>')
    overview = _overview(result)
    if overview is not None:
        figure = overview.figures[0]
        out.append(f'<figure class="wide"><img src="{e(figure.path)}" alt="{e(figure.caption)}">'
                   f"<figcaption>{e(figure.caption)}</figcaption></figure>")  # fmt: skip
    out.append("<h2>Time per stage</h2><table><tr><th>stage</th><th>status</th><th>seconds</th></tr>")
    out += [
        f'<tr><td>{e(a)}</td><td>{e(b)}</td><td class="num">{c}</td></tr>' for a, b, c in _timing_rows(result)
    ]
    out.append("</table>")
    for step in result.steps:
        if step.key == "overview":
            continue
        out.append(f'<h2 id="{e(step.key)}">{e(step.title)}</h2>')
        if step.status == "skipped":
            out.append(f'<p class="skipped">Skipped: {e(step.text)}</p>')
            continue
        when = "reused, made earlier by" if step.status == "reused" else f"{step.seconds:.1f} s"
        out.append(f'<p>Command ({when}):</p><code class="command">{e(step.command)}</code>')
        if step.text:
            out.append(f"<pre>{e(step.text)}</pre>")
        grid = len(step.figures) > 1  # several: side by side; one: the full width
        if grid:
            out.append('<div class="figures">')
        for figure in step.figures:
            out.append(
                f'<figure><img src="{e(figure.path)}" alt="{e(figure.caption)}"><figcaption>{e(figure.caption)} '
                f"&mdash; made by <code>{e(figure.command)}</code></figcaption></figure>"
            )
        if grid:
            out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def to_markdown(result: DemoResult) -> str:
    """The same report as Markdown (figures as relative image links)."""
    out = [
        "# edgedepth demo: labels to edge model",
        "",
        f"**Data:** {result.data}.",
        "",
        f"**Settings:** {_settings_text(result)}",
        "",
    ]
    if _reused_text(result):
        out += [_reused_text(result), ""]
    overview = _overview(result)
    if overview is not None:
        out += [f"![{overview.figures[0].caption}]({overview.figures[0].path})", ""]
    out += ["## Time per stage", "", "| stage | status | seconds |", "|---|---|---:|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in _timing_rows(result)]
    for step in result.steps:
        if step.key == "overview":
            continue
        out += ["", f"## {step.title}", ""]
        if step.status == "skipped":
            out.append(f"Skipped: {step.text}")
            continue
        when = "reused, made earlier by" if step.status == "reused" else f"{step.seconds:.1f} s"
        out += [f"Command ({when}):", "", "```", step.command, "```"]
        if step.text:
            out += ["", "```", step.text, "```"]
        for figure in step.figures:
            out += [
                "",
                f"![{figure.caption}]({figure.path})",
                "",
                f"*{figure.caption}*, made by `{figure.command}`",
            ]
    return "\n".join(out) + "\n"


def write_reports(result: DemoResult) -> tuple[Path, Path]:
    """Write OUT/report.html and OUT/report.md atomically; returns both paths."""
    html_path = write_text_atomic(result.out_dir / "report.html", to_html(result))
    md_path = write_text_atomic(result.out_dir / "report.md", to_markdown(result))
    return html_path, md_path


__all__ = ["to_html", "to_markdown", "write_reports"]
