"""Reports keep SCIENCE.md's three kinds of statement apart: predictions are counted and
summarised at the top with their headline figures, engine checks go to an appendix, observations
carry no verdict; and every value reads as text a person wrote, not a Python repr."""
import json
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest

from studies.report import Report, fmt, write_index


def _fig():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    return fig


@pytest.fixture
def report(tmp_path):
    r = Report(tmp_path / "run", "A study", intro="intro", meta={"trainings": 12})
    r.prediction("rate", "The growth rate per layer is 1/2 ln lambda_BN", 0.1916,
                 np.float64(0.198), "2 standard errors (0.01)", True,
                 assumes="wide layers, large batches", figure="rate_fig", note="12 networks")
    r.prediction("threshold", "GD diverges above 2/lambda_max", {"relu": 1.0, "tanh": 2.0},
                 {"relu": 1.01, "tanh": np.float32(2.5)}, "grid step 2%", False,
                 assumes="full-batch GD")
    r.check("sums", "Batch norm's backward sums vanish", 0.0, 1e-17, True)
    r.check("bound", "Accuracy >= 1 - L / ln 2", ">= 0", -0.1, False, note="broken engine")
    r.observation("share", "Share of oscillating runs", {"eta 0.1": 0.0, "eta 1": 0.25},
                  figure="share_fig")
    r.heading("Details")
    r.figure("rate_fig", _fig(), "Rate: theory line over the measured points")
    r.figure("share_fig", _fig(), "Share of oscillating runs against eta")
    r.figure("other", _fig(), "Another figure")
    return r


def test_claims_json_counts_predictions_only(report):
    report.write()
    info = json.loads((report.out / "claims.json").read_text())
    assert (info["passed"], info["total"]) == (1, 2)
    assert info["checks"] == {"passed": 1, "total": 2}
    assert info["observations"] == 1
    by_id = {c["id"]: c for c in info["claims"]}
    assert [c["kind"] for c in info["claims"]] == ["prediction", "prediction", "check", "check",
                                                   "observation"]
    assert by_id["rate"]["verdict"] == "holds" and by_id["threshold"]["verdict"] == "fails"
    assert by_id["sums"]["verdict"] == "ok" and by_id["bound"]["verdict"] == "fail"
    assert by_id["share"]["verdict"] == "observed" and by_id["share"]["passed"] is None
    assert by_id["rate"]["measured"] == pytest.approx(0.198)       # NumPy scalars -> JSON numbers
    assert by_id["threshold"]["measured"]["tanh"] == pytest.approx(2.5)
    assert by_id["rate"]["assumes"] == "wide layers, large batches"
    assert report.headline() == "1 of 2 predictions hold, 1 of 2 engine checks ok"
    assert info["figures"] == {"rate_fig": "Rate: theory line over the measured points",
                               "share_fig": "Share of oscillating runs against eta", "other": "Another figure"}


def test_summary_comes_first_with_numbers_side_by_side(report):
    report.write()
    md = (report.out / "report.md").read_text()
    summary = md.index("## Summary: 1 of 2 predictions hold")
    assert summary < md.index("## Details") < md.index("## Predictions: the full record") < md.index("## Appendix")
    assert ("**HOLDS**: The growth rate per layer is 1/2 ln lambda_BN -- predicted 0.1916, "
            "measured 0.198") in md
    assert "**FAILS**: GD diverges above 2/lambda_max -- predicted relu: 1; tanh: 2, measured relu: 1.01; tanh: 2.5" in md
    assert "*tolerance: 2 standard errors (0.01); assumes: wide layers, large batches*" in md
    # the headline figure sits under the summary, once; other figures stay in the body
    assert md.count("figures/rate_fig.png") == 1
    assert md.index("figures/rate_fig.png") < md.index("## Details")
    assert md.index("figures/other.png") > md.index("## Details")
    appendix = md[md.index("## Appendix"):]
    assert "Batch norm's backward sums vanish" in appendix and "2 engine checks" not in md[:summary]
    assert "1 of 2 ok" in appendix


def test_no_python_reprs_in_the_rendered_report(report):
    report.write()
    md = (report.out / "report.md").read_text()
    html = (report.out / "report.html").read_text()
    for text in (md, html):
        assert "{'" not in text and "np.float" not in text
    assert "Summary: 1 of 2 predictions hold" in html
    assert html.count("data:image/png;base64") == 3
    cells = [c.lower() for c in re.findall(r"<td[^>]*>([^<]*)</td>", html)]
    assert "holds" in cells and "fails" in cells and "ok" in cells and "observed" not in cells


def test_fmt_reads_as_text():
    assert fmt({"relu": 0.19161, "tanh": 0.0818}) == "relu: 0.1916; tanh: 0.0818"
    assert fmt([1.0, float("nan")]) == "[1, n/a]"
    assert fmt(12345) == "12,345" and fmt(True) == "True"


def test_a_prediction_names_its_assumptions(tmp_path):
    r = Report(tmp_path / "r", "t")
    with pytest.raises(ValueError, match="assumptions"):
        r.prediction("x", "s", 1, 1, "exact", True, assumes="")


def test_ids_are_unique_and_headline_figures_exist(tmp_path):
    r = Report(tmp_path / "r", "t")
    r.check("x", "s", 0, 0, True)
    with pytest.raises(ValueError, match="already used"):
        r.observation("x", "s", 1)
    r.prediction("y", "s", 1, 1, "exact", True, assumes="a", figure="nowhere")
    with pytest.raises(ValueError, match="y -> nowhere"):
        r.write()
    r.figure("f", _fig(), "c")
    with pytest.raises(ValueError, match="already in this report"):
        r.figure("f", _fig(), "c")


def test_missing_runs_fail_the_prediction_by_name(tmp_path):
    r = Report(tmp_path / "r", "t")
    c = r.missing("m", "s", "runs on data set 'xor'", assumes="a")
    assert c.passed is False and "runs on data set 'xor'" in c.note


def test_missing_runs_of_a_check_or_an_observation(tmp_path):
    """One path for every kind of claim: a check fails, an observation records nothing; both
    measure "no runs" and name what the grid lacks. A prediction still needs its assumptions."""
    r = Report(tmp_path / "r", "t")
    c = r.missing("c", "s", "batch-norm networks", kind="check")
    o = r.missing("o", "s", "digits runs", kind="observation")
    assert (c.kind, c.passed, c.measured) == ("check", False, "no runs")
    assert (o.kind, o.passed, o.measured) == ("observation", None, "no runs")
    assert "the grid has no batch-norm networks" in c.note and "digits runs" in o.note
    assert r.counts() == {"predictions": (0, 0), "checks": (0, 1), "observations": 1}
    with pytest.raises(ValueError, match="assumptions"):
        r.missing("p", "s", "runs")
    with pytest.raises(ValueError, match="kind must be"):
        r.missing("q", "s", "runs", kind="claim")


def test_a_report_without_predictions_says_so(tmp_path):
    r = Report(tmp_path / "r", "t")
    r.observation("o", "what the data show", 3)
    r.write()
    md = (r.out / "report.md").read_text()
    assert "This grid states no predictions." in md and "## Observations" in md
    assert json.loads((r.out / "claims.json").read_text())["total"] == 0


def test_the_index_counts_predictions(report):
    report.write()
    page = write_index(report.out.parent).read_text()
    assert "predictions holding" in page and "1 of 2" in page
