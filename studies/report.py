"""Reports: claims (theory beside measurement), figures and tables, written as
``DIR/claims.json``, ``DIR/report.md``, ``DIR/report.html`` (standalone: figures embedded) and
``DIR/figures/*.png``; and ``index.html`` in the directory above, linking every run there.
"""
import base64
import datetime
import html
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


@dataclass
class Claim:
    """One claim: what theory predicts, what the grid measured, and the verdict.

    ``passed`` is decided by the study from the numbers (``tolerance`` says how); ``note``
    explains a failure or the method in a sentence.
    """

    id: str
    statement: str
    predicted: object
    measured: object
    tolerance: str
    passed: bool
    note: str = ""

    @property
    def verdict(self):
        return "pass" if self.passed else "fail"


def _num(v):
    """JSON-safe value (NaN and inf become strings; NumPy scalars become Python numbers)."""
    if hasattr(v, "item") and not isinstance(v, (list, dict)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_num(x) for x in v]
    return v


def _cell(v):
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return v


def _shown(df):
    """``df`` with its float columns (and missing values anywhere) as the text shown."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype.kind == "f" or out[c].dtype == object or out[c].isna().any():
            out[c] = [_cell(v) for v in out[c].tolist()]
    return out


def fmt(v):
    """Short human form of a predicted or measured value."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v)


@dataclass
class Report:
    """A study's report under construction; :meth:`write` puts it on disk."""

    out: Path
    title: str
    intro: str = ""
    meta: dict = field(default_factory=dict)
    claims: list = field(default_factory=list)
    blocks: list = field(default_factory=list)   # ("h", text) | ("p", text) | ("fig", name, caption) | ("table", df, caption)

    def __post_init__(self):
        self.out = Path(self.out)
        (self.out / "figures").mkdir(parents=True, exist_ok=True)

    def claim(self, id, statement, predicted, measured, tolerance, passed, note=""):
        c = Claim(id, statement, _num(predicted), _num(measured), tolerance, bool(passed), note)
        self.claims.append(c)
        return c

    def heading(self, text):
        self.blocks.append(("h", text))

    def text(self, text):
        self.blocks.append(("p", text))

    def figure(self, name, fig, caption):
        """Save ``fig`` as ``figures/<name>.png`` and close it."""
        fig.savefig(self.out / "figures" / f"{name}.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        self.blocks.append(("fig", name, caption))

    def table(self, df, caption):
        """Add a table; its numbers are shown to 4 significant digits and a missing value
        (NaN, None) as "n/a", so that no table shows a bare NaN."""
        self.blocks.append(("table", _shown(df), caption))

    # ----------------------------------------------------------------------------------------
    def write(self):
        n_pass = sum(c.passed for c in self.claims)
        (self.out / "claims.json").write_text(json.dumps(
            {"title": self.title, **self.meta, "passed": n_pass, "total": len(self.claims),
             "claims": [{**asdict(c), "verdict": c.verdict} for c in self.claims]}, indent=2))
        (self.out / "report.md").write_text(self._markdown())
        (self.out / "report.html").write_text(self._html())
        return self.out / "report.html"

    def _claims_frame(self):
        return pd.DataFrame([{"claim": c.statement, "predicted": fmt(c.predicted),
                              "measured": fmt(c.measured), "tolerance": c.tolerance,
                              "verdict": c.verdict.upper(), "note": c.note} for c in self.claims])

    def _markdown(self):
        lines = [f"# {self.title}", ""]
        if self.intro:
            lines += [self.intro, ""]
        lines += [f"- {k}: {v}" for k, v in self.meta.items()] + [""]
        lines += [f"## Claims ({sum(c.passed for c in self.claims)} of {len(self.claims)} pass)", ""]
        if self.claims:
            lines += [self._claims_frame().to_markdown(index=False), ""]
        else:
            lines += ["This grid states no claims.", ""]
        for b in self.blocks:
            if b[0] == "h":
                lines += [f"## {b[1]}", ""]
            elif b[0] == "p":
                lines += [b[1], ""]
            elif b[0] == "fig":
                lines += [f"![{b[2]}](figures/{b[1]}.png)", "", f"*{b[2]}*", ""]
            else:
                lines += [f"**{b[2]}**", "", b[1].to_markdown(index=False, floatfmt=".4g"), ""]
        return "\n".join(lines)

    def _html(self):
        e = html.escape
        parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(self.title)}</title>",
                 f"<style>{CSS}</style></head><body>", f"<h1>{e(self.title)}</h1>"]
        if self.intro:
            parts.append(f"<p>{e(self.intro)}</p>")
        parts.append("<ul class='meta'>" + "".join(f"<li><b>{e(str(k))}</b>: {e(str(v))}</li>"
                                                   for k, v in self.meta.items()) + "</ul>")
        n_pass = sum(c.passed for c in self.claims)
        parts.append(f"<h2>Claims: {n_pass} of {len(self.claims)} pass</h2>")
        if self.claims:
            rows = "".join(
                f"<tr class='{c.verdict}'><td>{e(c.statement)}</td><td>{e(fmt(c.predicted))}</td>"
                f"<td>{e(fmt(c.measured))}</td><td>{e(c.tolerance)}</td>"
                f"<td class='v'>{c.verdict.upper()}</td><td>{e(c.note)}</td></tr>" for c in self.claims)
            parts.append("<table class='claims'><tr><th>claim</th><th>predicted</th><th>measured</th>"
                         f"<th>tolerance</th><th>verdict</th><th>note</th></tr>{rows}</table>")
        else:
            parts.append("<p>This grid states no claims.</p>")
        for b in self.blocks:
            if b[0] == "h":
                parts.append(f"<h2>{e(b[1])}</h2>")
            elif b[0] == "p":
                parts.append(f"<p>{e(b[1])}</p>")
            elif b[0] == "fig":
                data = base64.b64encode((self.out / "figures" / f"{b[1]}.png").read_bytes()).decode()
                parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{e(b[2])}'>"
                             f"<figcaption>{e(b[2])}</figcaption></figure>")
            else:
                parts.append(f"<p><b>{e(b[2])}</b></p>"
                             + b[1].to_html(index=False, float_format=lambda x: f"{x:.4g}", border=0))
        parts.append("</body></html>")
        return "\n".join(parts)


CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
tr.pass td.v { color: #1a7f37; font-weight: bold; }
tr.fail td.v { color: #cf222e; font-weight: bold; }
tr.fail { background: #fff5f5; }
figure { margin: 1.5em 0; } img { max-width: 100%; }
figcaption { color: #555; font-size: 0.9em; }
ul.meta { color: #555; font-size: 0.9em; }
"""


def write_index(root):
    """``root/index.html``: one row per run directory below ``root`` that has a claims.json."""
    root = Path(root)
    rows = []
    for claims in sorted(root.glob("*/claims.json")):
        try:
            info = json.loads(claims.read_text())
        except (OSError, ValueError):
            continue
        d = claims.parent
        when = datetime.datetime.fromtimestamp(claims.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        rows.append(f"<tr><td><a href='{html.escape(d.name)}/report.html'>{html.escape(d.name)}</a></td>"
                    f"<td>{html.escape(info.get('title', ''))}</td>"
                    f"<td>{info.get('passed', 0)} / {info.get('total', 0)}</td>"
                    f"<td>{html.escape(str(info.get('trainings', '')))}</td><td>{when}</td></tr>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>simcore studies</title>"
            f"<style>{CSS}</style></head><body><h1>simcore study reports</h1>"
            "<table><tr><th>run</th><th>study</th><th>claims passing</th><th>trainings</th>"
            f"<th>written</th></tr>{''.join(rows)}</table></body></html>")
    path = root / "index.html"
    path.write_text(page)
    return path
