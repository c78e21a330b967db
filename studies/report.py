"""Reports: claims (theory beside measurement), figures and tables, written as
``DIR/claims.json`` (the counts, every claim, and each figure's caption under ``figures``),
``DIR/report.md``, ``DIR/report.html`` (standalone: figures embedded) and ``DIR/figures/*.png``;
and ``index.html`` in the directory above, linking every run there.
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


KINDS = ("prediction", "check", "observation")


@dataclass
class Claim:
    """One statement of a report, of one of three kinds (SCIENCE.md keeps them apart):

    * ``prediction``: a number or curve theory gives before the grid runs, beside what the grid
      measured; ``passed`` is decided by the study from the numbers, ``tolerance`` says how (from
      the measurement's own uncertainty), ``assumes`` names the theory's assumptions in one line
      and ``figure`` the headline figure that draws theory over the measured points. Only
      predictions are counted as science.
    * ``check``: a theorem or identity any correct implementation satisfies (an engine check,
      listed in the report's appendix, never counted).
    * ``observation``: what the data show where no theory gives a number: no verdict
      (``passed`` is None).
    """

    id: str
    kind: str
    statement: str
    predicted: object
    measured: object
    tolerance: str
    passed: object
    note: str = ""
    assumes: str = ""
    figure: str = ""

    @property
    def verdict(self):
        if self.passed is None:
            return "observed"
        if self.kind == "check":
            return "ok" if self.passed else "fail"
        return "holds" if self.passed else "fails"


def _num(v):
    """JSON-safe value (NaN and inf become strings; NumPy scalars become Python numbers)."""
    if hasattr(v, "item") and not isinstance(v, (list, dict)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_num(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _num(x) for k, x in v.items()}
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
    if isinstance(v, dict):
        return "; ".join(f"{k}: {fmt(x)}" for k, x in v.items())
    return str(v)


@dataclass
class Report:
    """A study's report under construction; :meth:`~studies.report.Report.write` puts it on disk."""

    out: Path
    title: str
    intro: str = ""
    meta: dict = field(default_factory=dict)
    claims: list = field(default_factory=list)
    blocks: list = field(default_factory=list)   # ("h", text) | ("p", text) | ("fig", name, caption) | ("table", df, caption)

    def __post_init__(self):
        self.out = Path(self.out)
        (self.out / "figures").mkdir(parents=True, exist_ok=True)

    def _add(self, c):
        if not c.id or any(o.id == c.id for o in self.claims):
            raise ValueError(f"claim id {c.id!r} is empty or already used in this report")
        self.claims.append(c)
        return c

    def prediction(self, id, statement, predicted, measured, tolerance, passed, *, assumes,
                   figure="", note=""):
        """A prediction: theory's value beside the measured one; ``passed`` from the numbers
        within ``tolerance``; ``assumes``: the theory's assumptions in one line; ``figure``: the
        name of the headline figure (added with :meth:`figure`, before or after) that draws the
        theory over the measured points."""
        if not assumes:
            raise ValueError(f"prediction {id!r}: name the theory's assumptions (assumes=...)")
        return self._add(Claim(id, "prediction", statement, _num(predicted), _num(measured),
                               tolerance, bool(passed), note, assumes, figure))

    def check(self, id, statement, expected, measured, passed, note=""):
        """An engine check (a theorem or identity): listed in the appendix, not counted."""
        return self._add(Claim(id, "check", statement, _num(expected), _num(measured), "",
                               bool(passed), note))

    def observation(self, id, statement, measured, figure="", note=""):
        """What the data show where no theory gives a number: no verdict."""
        return self._add(Claim(id, "observation", statement, None, _num(measured), "", None,
                               note, "", figure))

    def missing(self, id, statement, what, *, kind="prediction", assumes=""):
        """A claim the grid cannot test because it has no runs of the kind ``what`` names: a
        prediction (``assumes`` required, as for :meth:`prediction`) or an engine check fails,
        an observation records nothing; each measures "no runs" and says what to add."""
        note = f"the grid has no {what}; add them to " + ("observe this" if kind == "observation" else "test this")
        if kind == "prediction":
            return self.prediction(id, statement, "runs present", "no runs", "-", False,
                                   assumes=assumes, note=note)
        if kind == "check":
            return self.check(id, statement, "runs present", "no runs", False, note=note)
        if kind == "observation":
            return self.observation(id, statement, "no runs", note=note)
        raise ValueError(f"kind must be 'prediction', 'check' or 'observation', got {kind!r}")

    def of_kind(self, kind):
        return [c for c in self.claims if c.kind == kind]

    @property
    def predictions(self):
        return self.of_kind("prediction")

    def counts(self):
        """``{"predictions": (holding, total), "checks": (ok, total), "observations": n}``."""
        p, c = self.predictions, self.of_kind("check")
        return {"predictions": (sum(x.passed for x in p), len(p)),
                "checks": (sum(x.passed for x in c), len(c)),
                "observations": len(self.of_kind("observation"))}

    def headline(self):
        """One line: how many predictions hold (and engine checks), for the CLI and the index."""
        n = self.counts()
        (hp, tp), (hc, tc) = n["predictions"], n["checks"]
        return (f"{hp} of {tp} predictions hold" + (f", {hc} of {tc} engine checks ok" if tc else ""))

    def heading(self, text):
        self.blocks.append(("h", text))

    def text(self, text):
        self.blocks.append(("p", text))

    def figure(self, name, fig, caption):
        """Save ``fig`` as ``figures/<name>.png`` and close it."""
        if any(b[0] == "fig" and b[1] == name for b in self.blocks):
            raise ValueError(f"figure {name!r} is already in this report")
        fig.savefig(self.out / "figures" / f"{name}.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        self.blocks.append(("fig", name, caption))

    def table(self, df, caption):
        """Add a table; its numbers are shown to 4 significant digits and a missing value
        (NaN, None) as "n/a", so that no table shows a bare NaN."""
        self.blocks.append(("table", _shown(df), caption))

    # ----------------------------------------------------------------------------------------
    def _check_figures(self):
        names = {b[1] for b in self.blocks if b[0] == "fig"}
        bad = [f"{c.id} -> {c.figure}" for c in self.claims if c.figure and c.figure not in names]
        if bad:
            raise ValueError(f"headline figures that the report does not have: {', '.join(bad)}")

    def write(self):
        """Write ``claims.json``, ``report.md`` and ``report.html`` (the figures were saved as they
        were added); returns the path of ``report.html``. Raises ValueError if a claim names a
        headline figure the report does not have."""
        self._check_figures()
        n = self.counts()
        (hp, tp), (hc, tc) = n["predictions"], n["checks"]
        (self.out / "claims.json").write_text(json.dumps(
            {"title": self.title, **self.meta, "passed": hp, "total": tp,
             "checks": {"passed": hc, "total": tc}, "observations": n["observations"],
             "claims": [{**asdict(c), "verdict": c.verdict} for c in self.claims],
             "figures": self._captions()}, indent=2))
        (self.out / "report.md").write_text(self._markdown())
        (self.out / "report.html").write_text(self._html())
        return self.out / "report.html"

    def _summary_lines(self):
        """One line per prediction: verdict, statement, predicted against measured."""
        out = []
        for c in self.predictions:
            mark = "HOLDS" if c.passed else "FAILS"
            out.append((c, f"{mark}: {c.statement} -- predicted {fmt(c.predicted)}, measured "
                           f"{fmt(c.measured)}"))
        return out

    def _headline_figures(self):
        seen = []
        for c in self.predictions:
            if c.figure and c.figure not in seen:
                seen.append(c.figure)
        return seen

    def _frame(self, kind):
        rows = []
        for c in self.of_kind(kind):
            r = {"id": c.id} if kind == "prediction" else {"id": c.id, "statement": c.statement}
            if kind != "observation":
                r["predicted" if kind == "prediction" else "expected"] = fmt(c.predicted)
            r["measured"] = fmt(c.measured)
            if kind == "prediction":
                r["tolerance"] = c.tolerance
            if kind != "observation":
                r["verdict"] = c.verdict.upper()
            r["note"] = c.note
            rows.append(r)
        return pd.DataFrame(rows)

    def _captions(self):
        return {b[1]: b[2] for b in self.blocks if b[0] == "fig"}

    def _markdown(self):
        lines = [f"# {self.title}", ""]
        if self.intro:
            lines += [self.intro, ""]
        lines += [f"- {k}: {v}" for k, v in self.meta.items()] + [""]
        hp, tp = self.counts()["predictions"]
        lines += [f"## Summary: {hp} of {tp} predictions hold", ""]
        if tp:
            for c, line in self._summary_lines():
                lines += [f"- **{line.split(':', 1)[0]}**:{line.split(':', 1)[1]}",
                          f"  *tolerance: {c.tolerance}; assumes: {c.assumes}*"]
            lines += [""]
        else:
            lines += ["This grid states no predictions.", ""]
        heads = self._headline_figures()
        caps = self._captions()
        for name in heads:
            lines += [f"![{name}](figures/{name}.png)", "", f"*{caps[name]}*", ""]
        for b in self.blocks:
            if b[0] == "h":
                lines += [f"## {b[1]}", ""]
            elif b[0] == "p":
                lines += [b[1], ""]
            elif b[0] == "fig":
                if b[1] not in heads:
                    lines += [f"![{b[1]}](figures/{b[1]}.png)", "", f"*{b[2]}*", ""]
            else:
                lines += [f"**{b[2]}**", "", b[1].to_markdown(index=False, floatfmt=".4g"), ""]
        if tp:
            lines += ["## Predictions: the full record", "", self._frame("prediction").to_markdown(index=False), ""]
        if self.of_kind("observation"):
            lines += ["## Observations", "", self._frame("observation").to_markdown(index=False), ""]
        if self.of_kind("check"):
            hc, tc = self.counts()["checks"]
            lines += [f"## Appendix: engine checks ({hc} of {tc} ok; theorems and identities, "
                      "not counted as predictions)", "",
                      self._frame("check").to_markdown(index=False), ""]
        return "\n".join(lines)

    def _img(self, name, caption):
        e = html.escape
        data = base64.b64encode((self.out / "figures" / f"{name}.png").read_bytes()).decode()
        return (f"<figure><img src='data:image/png;base64,{data}' alt='{e(caption)}'>"
                f"<figcaption>{e(caption)}</figcaption></figure>")

    def _html_table(self, kind):
        e = html.escape
        df = self._frame(kind)
        shown = [c for c in df.columns if c != "id" or kind == "prediction"]
        head = "".join(f"<th>{e(c)}</th>" for c in shown)
        rows = []
        for c, (_, r) in zip(self.of_kind(kind), df.iterrows()):
            cells = "".join(f"<td class='v'>{e(str(r[k]))}</td>" if k == "verdict"
                            else f"<td>{e(str(r[k]))}</td>" for k in shown)
            cls = "" if c.passed is None else ("pass" if c.passed else "fail")
            rows.append(f"<tr class='{cls}' id='{e(c.id)}'>{cells}</tr>")
        return f"<table class='claims'><tr>{head}</tr>{''.join(rows)}</table>"

    def _html(self):
        e = html.escape
        parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(self.title)}</title>",
                 f"<style>{CSS}</style></head><body>", f"<h1>{e(self.title)}</h1>"]
        if self.intro:
            parts.append(f"<p>{e(self.intro)}</p>")
        parts.append("<ul class='meta'>" + "".join(f"<li><b>{e(str(k))}</b>: {e(str(v))}</li>"
                                                   for k, v in self.meta.items()) + "</ul>")
        hp, tp = self.counts()["predictions"]
        parts.append(f"<h2>Summary: {hp} of {tp} predictions hold</h2>")
        if tp:
            items = []
            for c, line in self._summary_lines():
                mark, rest = line.split(":", 1)
                items.append(f"<li class='{'pass' if c.passed else 'fail'}'><b class='v'>{e(mark)}</b>:"
                             f"{e(rest)}<br><span class='assumes'>tolerance: {e(c.tolerance)}; "
                             f"assumes: {e(c.assumes)}</span></li>")
            parts.append(f"<ul class='summary'>{''.join(items)}</ul>")
        else:
            parts.append("<p>This grid states no predictions.</p>")
        heads = self._headline_figures()
        caps = self._captions()
        parts += [self._img(name, caps[name]) for name in heads]
        for b in self.blocks:
            if b[0] == "h":
                parts.append(f"<h2>{e(b[1])}</h2>")
            elif b[0] == "p":
                parts.append(f"<p>{e(b[1])}</p>")
            elif b[0] == "fig":
                if b[1] not in heads:
                    parts.append(self._img(b[1], b[2]))
            else:
                parts.append(f"<p><b>{e(b[2])}</b></p>"
                             + b[1].to_html(index=False, float_format=lambda x: f"{x:.4g}", border=0))
        if tp:
            parts += ["<h2>Predictions: the full record</h2>", self._html_table("prediction")]
        if self.of_kind("observation"):
            parts += ["<h2>Observations</h2>", self._html_table("observation")]
        if self.of_kind("check"):
            hc, tc = self.counts()["checks"]
            parts += [f"<h2>Appendix: engine checks ({hc} of {tc} ok)</h2>",
                      "<p>Theorems and identities that any correct implementation satisfies; they "
                      "are tested in the test suite and not counted as predictions.</p>",
                      self._html_table("check")]
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
ul.summary li { margin: 0.3em 0; } ul.summary li.pass b.v { color: #1a7f37; }
ul.summary li.fail b.v { color: #cf222e; } span.assumes { color: #666; font-size: 0.85em; }
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
                    f"<td>{info.get('passed', 0)} of {info.get('total', 0)}</td>"
                    f"<td>{html.escape(str(info.get('trainings', '')))}</td><td>{when}</td></tr>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>simcore studies</title>"
            f"<style>{CSS}</style></head><body><h1>simcore study reports</h1>"
            "<table><tr><th>run</th><th>study</th><th>predictions holding</th><th>trainings</th>"
            f"<th>written</th></tr>{''.join(rows)}</table></body></html>")
    path = root / "index.html"
    path.write_text(page)
    return path
