"""Self-contained HTML: the offline `dvc plots` template, the report page, Chromium checks.

Nothing here loads from the internet. The `dvc plots` template inlines the vega,
vega-lite and vega-embed builds from ``node_modules`` (``npm install`` puts them there),
and the report embeds its figures as base64 PNGs, so both pages open on an air-gapped
machine. ``python -m cxrlab.report.html OUT.html`` writes the plots template.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cxrlab.core.errors import ConfigError
from cxrlab.core.utils import atomic_path

VEGA_BUILDS = (
    "vega/build/vega.min.js",
    "vega-lite/build/vega-lite.min.js",
    "vega-embed/build/vega-embed.min.js",
)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; }
td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
"""


def write_plots_template(path: str | Path, node_modules: str | Path = "node_modules") -> Path:
    """Write an HTML template for ``dvc plots show/diff --html-template`` that works offline.

    Args:
        path: Where the template goes.
        node_modules: The folder ``npm install`` filled (vega 5, vega-lite 5, vega-embed 6).

    Raises:
        ConfigError: If a vega build is missing (``npm install`` has not run).
    """
    scripts = []
    for rel in VEGA_BUILDS:
        build = Path(node_modules) / rel
        if not build.is_file():
            raise ConfigError(f"{build} not found: run `npm install` in the repository root.")
        # `</script` inside the code would end the tag early.
        code = build.read_text(encoding="utf-8").replace("</script", "<\\/script")
        scripts.append(f"<script>{code}</script>")
    page = (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>cxrlab plots</title>\n'
        + "\n".join(scripts)
        + "\n<style>table { border-spacing: 15px; }</style>\n</head>\n<body>\n{plot_divs}\n"
        "</body>\n</html>\n"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return Path(path)


@dataclass
class Section:
    """One part of the report: a heading, metric tables, and figures."""

    title: str
    tables: dict[str, dict[str, dict[str, float]]]
    figures: Sequence[tuple[str, Path]]


def _table(rows: dict[str, dict[str, float]]) -> str:
    columns = list(dict.fromkeys(k for row in rows.values() for k in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["", *columns])
    body = []
    for name, row in rows.items():
        cells = "".join(f"<td>{_fmt(row.get(c))}</td>" for c in columns)
        body.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else html.escape(str(value))


def _figure(caption: str, path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    alt = html.escape(caption)
    return (
        f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
        f"<figcaption>{alt} <code>{html.escape(str(path))}</code></figcaption></figure>"
    )


def report_page(title: str, intro: str, sections: Sequence[Section], summary: dict) -> str:
    """A self-contained HTML page: tables, base64 figures, and the summary JSON at the end."""
    parts = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>"]
    for s in sections:
        parts.append(f'<h2 id="{html.escape(s.title.lower().replace(" ", "-"))}">')
        parts.append(f"{html.escape(s.title)}</h2>")
        for caption, rows in s.tables.items():
            parts.append(f"<h3>{html.escape(caption)}</h3>{_table(rows)}")
        parts.extend(_figure(caption, path) for caption, path in s.figures)
    dump = html.escape(json.dumps(summary, indent=1))
    parts.append(f"<details><summary>pipeline_summary.json</summary><pre>{dump}</pre></details>")
    return (
        f'<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}'
        f"</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body>\n</html>\n"
    )


def find_chromium() -> str | None:
    """The headless Chromium binary on PATH (Debian's ``chromium``), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


def render_in_chromium(
    page: str | Path, screenshot: str | Path, width: int = 1280, height: int = 2400
) -> str:
    """Open ``page`` in headless Chromium, save a PNG screenshot, return the rendered DOM.

    Scripts get 10 s of virtual time, enough for vega to draw. Network access is not
    needed and not used: the pages are self-contained.

    Raises:
        ConfigError: If no Chromium is installed.
    """
    binary = find_chromium()
    if binary is None:
        raise ConfigError("chromium not found: `apt-get install chromium` (Debian/Ubuntu).")
    url = Path(page).resolve().as_uri()
    flags = [
        binary,
        "--headless",
        "--no-sandbox",  # root in containers and CI
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        "--virtual-time-budget=10000",
    ]
    subprocess.run(
        [*flags, f"--screenshot={Path(screenshot).resolve()}", url],
        check=True,
        capture_output=True,
        timeout=120,
    )
    dom = subprocess.run(
        [*flags, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=120
    )
    return dom.stdout


if __name__ == "__main__":
    out = write_plots_template(sys.argv[1] if len(sys.argv) > 1 else "build/plots_template.html")
    print(f"wrote {out}: use it with `dvc plots show --html-template {out}`")
