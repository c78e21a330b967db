r"""How sensitive full-batch gradient descent is to its learning rate: the U-shape of the final
loss over four decades of :math:`\eta`, the divergence threshold against the curvature, and the
edge of stability.

Runs are recognised by their configuration, not by sub-grid names:

* **Least squares** -- linear models (``widths = []``, identity, ``mse``, full-batch ``gd``).
  The Hessian :math:`H = \frac{2}{N} X_{aug}^T X_{aug}` is constant; along eigenvector i the
  error is multiplied by :math:`1 - \eta\lambda_i` each step, so GD converges iff
  :math:`\eta < 2/\lambda_{max}` (:func:`studies.theory.ls_threshold`, on the data rebuilt by
  :func:`studies.runner.make_data`). Measured: the threshold by bisection on the grid's
  :math:`\eta` axes (every sub-grid on the same data is pooled, so a dense linear axis refines a
  wide geometric one), refined by interpolating the tail growth rate of the loss differences
  (:func:`tail_growth`) through zero. Just above :math:`2/\lambda_{max}` the loss grows slowly,
  so divergence is *loss growth*, not only the engine's blow-up flag (:func:`classify`).
* **MLPs** -- every other ``mse`` run. The sharpness :math:`\lambda_0` of the loss Hessian at
  initialisation (the compiled probe at step 0, ``track_sharpness``) gives the local threshold
  :math:`2/\lambda_0`; beyond it the loss first grows, then the network can leave the sharp
  region and converge (the *catapult* phase, Lewkowycz et al. 2020), so the measured threshold
  is at or above :math:`2/\lambda_0`. The sharpness probed during training, reported as
  :math:`\lambda_{max}\eta/2`, rises towards 1 and hovers there (progressive sharpening and
  the edge of stability, Cohen et al. 2021).

Outcome of a run (:func:`classify`): *diverged* when the engine flagged it (loss non-finite or
above 1e6 times the initial loss) or its final loss is not below its initial loss;
*oscillating* when it did not diverge but its recorded loss rose on at least
``OSC_MIN_SHARE`` of the recorded intervals (a rise counts above ``RISE_FLOOR`` relative, so
rounding at the loss floor is not an oscillation); *converging* otherwise. Period-2
oscillations are visible in the records when ``record_every`` is odd (1, 5, ...), since
successive records then fall on alternate parities.
"""
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import theory
from .runner import make_data

NAME = "lr-sensitivity"
TITLE = "Learning-rate sensitivity: thresholds and the edge of stability"
SUMMARY = ("Final loss against the learning rate over four decades (the U-shape), the measured "
           "divergence threshold against 2/lambda_max of the exact least-squares Hessian and "
           "2/sharpness at initialisation for MLPs, the share of diverged and oscillating runs, "
           "and sharpness * eta / 2 tracked during training (edge of stability).")

# outcome of a run
RISE_FLOOR = 1e-9        # a loss rise counts when above this fraction of the loss (rounding below)
OSC_MIN_SHARE = 0.02     # oscillating: the loss rises on at least this share of recorded intervals
DIFF_FLOOR = 1e-12       # tail growth: loss differences below this fraction of the loss are rounding
# least squares: the interpolated threshold against 2/lambda_max ("within a few percent")
LS_THRESHOLD_TOL = 0.02
# the compiled sharpness probe against lambda_max of the exact least-squares Hessian: the probe's
# power iteration stops when its Rayleigh quotient changes by < 1e-6 relative per product, which
# leaves an error up to ~1e-6 / (1 - lambda_2/lambda_1): 1e-4 allows a gap ratio up to 0.99
PROBE_RTOL = 1e-4
# catapult range (Lewkowycz et al. 2020): beyond 2/lambda_0 wide nets trained with MSE can still
# converge up to eta_max ~ 4/lambda_0 (their uv model) and empirically ~12/lambda_0 (ReLU nets);
# the measured threshold over 2/lambda_0 is predicted in [1, 6]
CATAPULT_RATIO = (1.0, 6.0)
CATAPULT_SHARE = 0.9     # share of (model, seed) cases that must fall in the catapult range
# edge of stability: final sharpness * eta / 2 at the largest stable eta of each (model, seed);
# Cohen et al. 2021 find it hovering at, or slightly above, 1 under MSE
EOS_RANGE = (0.8, 1.2)
EOS_SHARE = 0.75
# activations whose Hessian is the curvature gradient descent sees (no kinks)
SMOOTH = ("tanh", "sigmoid", "softplus", "identity")
EOS_CEILING = 1.25       # no stable run may end with sharpness far above 2/eta
# oscillation as an edge effect: stable runs whose probed sharpness stayed below this fraction
# of 2/eta should decrease the loss monotonically (descent lemma); probes are sparse, so a share
# up to OSC_BELOW_MAX is allowed; runs that reached the edge should mostly oscillate
EDGE_BELOW = 0.8
OSC_BELOW_MAX = 0.1
OSC_AT_EDGE_MIN = 0.5
# U-shape: the smallest eta's final loss is at least this many times the best one
U_FACTOR = 2.0
# ties at the loss floor: etas whose median final loss is within this fraction of the best
TIE_RTOL = 1e-6

_DATA_KEYS = ["data"]


# --------------------------------------------------------------------------------------------
# per-run measurements

def tail_growth(loss):
    r"""The growth rate per record of the loss differences on the tail of a trajectory.

    Near a threshold one eigen-direction dominates: :math:`L_t - L^* \propto \rho^{2t}`, so the
    differences :math:`|L_{t+1} - L_t|` scale by :math:`\rho^2` per step too, without knowing
    :math:`L^*`. Keeps the leading run of finite differences above ``DIFF_FLOOR`` times the loss
    (below it they are rounding), and fits :math:`\ln|\Delta L|` linearly on its second half.
    Returns the slope :math:`2\ln\rho` per record (< 0: converging, > 0: growing); NaN with
    fewer than 4 usable differences.
    """
    L = np.asarray(loss, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.abs(np.diff(L))
        ok = np.isfinite(d) & (d > DIFF_FLOOR * np.abs(L[:-1]))
    bad = np.flatnonzero(~ok)
    n = bad[0] if bad.size else d.size
    if n < 4:
        return np.nan
    lo = n // 2
    return float(np.polyfit(np.arange(lo, n), np.log(d[lo:n]), 1)[0])


def classify(loss, diverged, final_loss):
    """``(outcome, rise_share)``: outcome "diverged", "oscillating" or "converging" (see the
    module docstring); rise_share the share of recorded intervals on which the loss rose."""
    L = np.asarray(loss, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        rel = np.diff(L) / np.abs(L[:-1])
    rises = float(np.mean(rel > RISE_FLOOR)) if rel.size else 0.0
    if bool(diverged) or not np.isfinite(final_loss) or not final_loss < L[0]:
        return "diverged", rises
    return ("oscillating" if rises >= OSC_MIN_SHARE else "converging"), rises


def model_label(widths, activation, batchnorm):
    if widths == "linear" and activation == "identity" and not batchnorm:
        return "least squares"
    arch = "linear" if widths == "linear" else f"[{widths.replace('-', ', ')}]"
    return f"{arch} {activation}" + (" + BN" if batchnorm else "")


def _data_cols(df):
    return [c for c in df.columns if c.startswith("data_")]


def _data_args(row, cols):
    args = {}
    for c in cols:
        v = row[c]
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        if isinstance(v, str) and v[:1] in "[{":
            v = json.loads(v)
        elif isinstance(v, np.integer):
            v = int(v)
        elif isinstance(v, np.floating):
            v = float(v)
        args[c[5:]] = v
    return args


def _data_label(name, args):
    return name + ("(" + ", ".join(f"{k}={v}" for k, v in args.items()) + ")" if args else "")


def runs_table(data):
    """One row per training: configuration, outcome, tail growth, sharpness at initialisation
    (probe at step 0), the last probed sharpness and the largest probed sharpness * eta / 2
    after step 0."""
    rows = data[data["layer"] == 1]
    has_sharp = "sharpness" in rows.columns
    dcols = _data_cols(rows)
    out = []
    for pid, g in rows.groupby("point", sort=True):
        p = g.iloc[0]
        L = g["loss"].to_numpy(dtype=np.float64)
        outcome, rises = classify(L, p["diverged"], float(p["final_loss"]))
        lam0 = lam_end = edge_max = np.nan
        step_end = -1
        if has_sharp:
            sh = g[["step", "sharpness"]].dropna()
            if len(sh) and sh["step"].iloc[0] == 0:
                lam0 = float(sh["sharpness"].iloc[0])
            later = sh[sh["step"] > 0]
            if len(later):
                lam_end = float(later["sharpness"].iloc[-1])
                step_end = int(later["step"].iloc[-1])
                edge_max = float(later["sharpness"].max() * p["lr"] / 2)
        args = _data_args(p, dcols)
        out.append({
            "point": int(pid), "grid": p["grid"], "data": p["data"],
            "data_key": json.dumps([p["data"], args], sort_keys=True),
            "data_label": _data_label(p["data"], args), "widths": p["widths"],
            "activation": p["activation"], "batchnorm": bool(p["batchnorm"]),
            "loss_fn": p["loss_fn"], "optimizer": p["optimizer"], "batch_size": str(p["batch_size"]),
            "model": model_label(p["widths"], p["activation"], bool(p["batchnorm"])),
            "lr": float(p["lr"]), "seed": int(p["seed"]), "steps": int(p["steps"]),
            "loss0": float(L[0]), "final_loss": float(p["final_loss"]),
            "diverged_flag": bool(p["diverged"]), "outcome": outcome, "rise_share": rises,
            "tail_growth": tail_growth(L), "lam0": lam0, "lam_end": lam_end, "step_end": step_end,
            "edge_end": lam_end * float(p["lr"]) / 2, "edge_max": edge_max})
    r = pd.DataFrame(out)
    r["stable"] = r["outcome"] != "diverged"
    return r


def bracket(etas, stable):
    """The measured threshold on an eta axis: ``(lo, hi, monotone)``, lo the largest eta whose
    runs and those of every smaller eta are stable, hi the next eta (the smallest with an
    unstable run above lo); monotone when no eta above hi is stable again. NaN where missing."""
    etas = np.asarray(etas, dtype=np.float64)
    stable = np.asarray(stable, dtype=bool)
    order = np.argsort(etas)
    etas, stable = etas[order], stable[order]
    if not stable[0]:
        return np.nan, float(etas[0]), not stable.any()
    if stable.all():
        return float(etas[-1]), np.nan, True
    k = int(np.argmin(stable))          # the first unstable eta
    return float(etas[k - 1]), float(etas[k]), not stable[k:].any()


def _by_eta(r):
    return (r.groupby("lr").agg(stable=("stable", "all"), final_median=("final_loss", "median"),
                                growth=("tail_growth", "median"), seeds=("seed", "size"))
            .reset_index().sort_values("lr"))


def _best_band(by_eta):
    """The etas with the lowest median final loss among stable etas (ties within TIE_RTOL)."""
    s = by_eta[by_eta["stable"] & np.isfinite(by_eta["final_median"])]
    if s.empty:
        return np.nan, np.nan, np.nan, np.nan
    best = float(s["final_median"].min())
    tie = s[s["final_median"] <= best * (1 + TIE_RTOL)]
    i = s["final_median"].idxmin()
    return float(s.loc[i, "lr"]), float(tie["lr"].min()), float(tie["lr"].max()), best


# --------------------------------------------------------------------------------------------
# least squares

def _is_ls(r):
    return ((r["model"] == "least squares") & (r["loss_fn"] == "mse") & (r["optimizer"] == "gd")
            & (r["batch_size"] == "full"))


def analyse_least_squares(r, report):
    """Claims and figures of the least-squares runs, per data set; returns per-model summaries."""
    ls = r[_is_ls(r)]
    summaries = []
    for key, group in ls.groupby("data_key", sort=False):
        name, args = json.loads(key)
        label = group["data_label"].iloc[0]
        X, y = make_data(name, args)[:2]
        n_out = 1 if np.ndim(y) == 1 else np.shape(y)[1]
        lmin, lmax = theory.ls_spectrum(X, n_out)
        eta_c = theory.ls_threshold(X, n_out)
        by_eta = _by_eta(group)
        lo, hi, monotone = bracket(by_eta["lr"], by_eta["stable"])
        # refine: the growth rate of the loss differences crosses 0 between lo and hi
        cross = np.nan
        if np.isfinite(lo) and np.isfinite(hi):
            g_lo = float(by_eta.loc[by_eta["lr"] == lo, "growth"].iloc[0])
            g_hi = float(by_eta.loc[by_eta["lr"] == hi, "growth"].iloc[0])
            if np.isfinite(g_lo) and np.isfinite(g_hi) and g_lo < 0 <= g_hi:
                cross = lo - g_lo * (hi - lo) / (g_hi - g_lo)
        report.heading(f"Least squares on {label}")
        report.text(
            f"Exact Hessian (2/N) X_aug^T X_aug of the data: lambda_min = {lmin:.4g}, lambda_max = "
            f"{lmax:.4g}; predicted threshold 2/lambda_max = {eta_c:.5g}. Measured on the pooled eta "
            f"axes ({len(by_eta)} etas, {len(group)} runs): the largest eta whose runs (and those of "
            f"every smaller eta) decrease the loss, {lo:.5g}, and the next one, {hi:.5g}; between "
            "them the growth rate per step of the loss differences, ln|L_(t+1) - L_t| fitted on the "
            "tail (2 ln|1 - eta lambda_max| near the threshold), is interpolated through 0.")
        report.claim(
            f"ls_threshold_bracket[{label}]",
            "Least squares: every eta below 2/lambda_max decreases the loss and every eta above it "
            "diverges (loss growth); the grid's last stable and first unstable eta bracket 2/lambda_max",
            predicted=eta_c, measured=[lo, hi],
            tolerance="lo < 2/lambda_max <= hi, stability monotone in eta (resolution: the grid step)",
            passed=bool(monotone and lo < eta_c <= hi),
            note=f"bracket width {(hi - lo) / eta_c:.2%} of 2/lambda_max" if np.isfinite(hi - lo)
            else "the eta axes do not cross the threshold")
        report.claim(
            f"ls_threshold[{label}]",
            "Least squares: the measured divergence threshold (bisection on the eta axes, refined by "
            "interpolating the loss differences' growth rate through 0) equals 2/lambda_max of the "
            "exact Hessian",
            predicted=eta_c, measured=cross, tolerance=f"within {LS_THRESHOLD_TOL:.0%}",
            passed=bool(np.isfinite(cross) and abs(cross / eta_c - 1) <= LS_THRESHOLD_TOL),
            note=(f"relative error {cross / eta_c - 1:+.2g}" if np.isfinite(cross) else
                  "no sign change of the growth rate between the bracketing etas"))
        probed = group["lam0"].dropna()
        if len(probed):
            err = float(np.max(np.abs(probed / lmax - 1)))
            report.claim(
                f"ls_sharpness_probe[{label}]",
                "The compiled sharpness probe at initialisation equals lambda_max of the exact "
                "least-squares Hessian (the loss is quadratic: the Hessian does not depend on the weights)",
                predicted=lmax, measured=float(probed.median()),
                tolerance=f"every run within {PROBE_RTOL:g} relative", passed=err <= PROBE_RTOL,
                note=f"worst relative error {err:.2g} over {len(probed)} runs")
        stable = group[group["stable"]]
        osc = float((stable["outcome"] == "oscillating").mean()) if len(stable) else np.nan
        report.claim(
            f"ls_no_oscillation[{label}]",
            "Least squares: a stable run's loss never rises, L_t - L* = sum_i lambda_i/2 c_i^2 "
            "(1 - eta lambda_i)^(2t) decreases whenever every |1 - eta lambda_i| < 1 (even where the "
            "weights oscillate, eta > 1/lambda_max)",
            predicted=0.0, measured=osc, tolerance="share of oscillating stable runs = 0",
            passed=bool(len(stable)) and osc == 0.0,
            note=f"{len(stable)} stable runs, {int((stable['lr'] > 1 / lmax).sum())} of them with "
                 "eta > 1/lambda_max")
        _ls_figure(report, label, group, lmin, lmax, eta_c, cross)
        summaries.append(_summary_row("least squares", label, group, by_eta, lo, hi, eta_c, lmax))
    return summaries


def _ls_figure(report, label, group, lmin, lmax, eta_c, cross):
    slug = _slug(label)
    fig, ax = plt.subplots(figsize=(7.5, 4.3))
    zoom = (group["lr"] > 0.7 * eta_c) & (group["lr"] < 1.3 * eta_c)
    z = group[zoom & np.isfinite(group["tail_growth"])]
    grid = np.linspace(0.7 * eta_c, 1.3 * eta_c, 400)
    # the slowest direction sets the tail: growth 2 ln max_i |1 - eta lambda_i| per step
    ax.plot(grid, 2 * np.log(theory.ls_contraction(grid, lmin, lmax)), "k-", lw=1.4,
            label=r"theory $2\ln\max_i|1-\eta\lambda_i|$")
    for outcome, mk, col in (("converging", "o", "tab:green"), ("diverged", "x", "tab:red")):
        s = z[z["outcome"] == outcome]
        ax.scatter(s["lr"], s["tail_growth"], marker=mk, s=22, color=col, label=f"measured, {outcome}",
                   zorder=3)
    ax.axvline(eta_c, color="tab:gray", ls="--", lw=1, label=rf"$2/\lambda_{{max}}$ = {eta_c:.4g}")
    if np.isfinite(cross):
        ax.axvline(cross, color="tab:blue", ls=":", lw=1.4, label=f"measured threshold = {cross:.4g}")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylim(max(-1.0, np.nanmin(z["tail_growth"]) - 0.05) if len(z) else -1, 0.5)
    ax.set_xlabel(r"learning rate $\eta$")
    ax.set_ylabel(r"tail growth rate of $|L_{t+1}-L_t|$ per step")
    ax.set_title(f"Least squares on {label}: the threshold", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    report.figure(f"ls_threshold_{slug}", fig,
                  f"Least squares on {label}, near the threshold: the measured growth rate per step of "
                  "the loss differences on the tail of each run (points) against the theory, "
                  "2 ln max_i |1 - eta lambda_i| (line: the slowest eigen-direction dominates the tail); the growth rate crosses 0 at "
                  "the measured threshold (dotted), beside 2/lambda_max of the exact Hessian (dashed).")


def _slug(label):
    return "".join(ch if ch.isalnum() else "_" for ch in label).strip("_")[:40]


def _summary_row(model, label, group, by_eta, lo, hi, pred, lam0):
    best, band_lo, band_hi, best_loss = _best_band(by_eta)
    smallest = by_eta.iloc[0]
    return {"model": model, "data": label, "runs": len(group),
            "lambda0_median": lam0, "predicted_threshold": pred, "threshold_lo": lo, "threshold_hi": hi,
            "ratio_to_prediction": np.sqrt(lo * hi) / pred if np.isfinite(lo * hi) else np.nan,
            "best_eta": best, "best_band_lo": band_lo, "best_band_hi": band_hi, "best_final_loss": best_loss,
            "smallest_eta": float(smallest["lr"]), "final_loss_smallest_eta": float(smallest["final_median"]),
            "stable_decades": np.log10(lo / by_eta["lr"].min()) if np.isfinite(lo) else np.nan,
            "diverged_share": float((group["outcome"] == "diverged").mean()),
            "oscillating_share": float((group["outcome"] == "oscillating").mean())}


# --------------------------------------------------------------------------------------------
# MLPs

def analyse_mlps(r, report):
    """Threshold against 2/sharpness at initialisation, the edge of stability, oscillations."""
    m = r[~_is_ls(r) & (r["loss_fn"] == "mse") & (r["optimizer"] == "gd") & (r["batch_size"] == "full")]
    if m.empty:
        return [], pd.DataFrame()
    cases = []
    summaries = []
    for (key, model), group in m.groupby(["data_key", "model"], sort=False):
        label = group["data_label"].iloc[0]
        for seed, s in group.groupby("seed"):
            lo, hi, monotone = bracket(s["lr"], s["stable"])
            lam0 = float(s["lam0"].median())
            top = s[s["lr"] == lo]
            cases.append({"data": label, "model": model, "seed": int(seed), "lambda0": lam0,
                          "predicted": 2 / lam0 if lam0 > 0 else np.nan, "lo": lo, "hi": hi,
                          "monotone": monotone, "measured": np.sqrt(lo * hi),
                          "edge_end_at_lo": float(top["edge_end"].iloc[0]) if len(top) else np.nan})
        by_eta = _by_eta(group)
        lo, hi, _ = bracket(by_eta["lr"], by_eta["stable"])
        lam0 = float(group["lam0"].median())
        summaries.append(_summary_row(model, label, group, by_eta, lo, hi, 2 / lam0, lam0))
    c = pd.DataFrame(cases)
    c["ratio"] = c["measured"] / c["predicted"]
    c["ratio_hi"] = c["hi"] / c["predicted"]
    report.heading("MLPs: threshold against the sharpness at initialisation")
    report.text(
        "Per model and seed: lambda_0 is the sharpness (largest Hessian eigenvalue of the training "
        "loss) at initialisation, from the compiled probe at step 0; the measured threshold is the "
        "geometric mean of the last stable eta (it and every smaller eta decrease the loss without "
        "diverging) and the next eta of the grid. 2/lambda_0 is a local prediction: beyond it the "
        "loss first grows along the top direction, and the network may leave the sharp region and "
        "converge (catapult phase) instead of diverging.")
    ok = c.dropna(subset=["predicted", "hi"])
    below = ok[ok["hi"] < ok["predicted"]]
    report.claim(
        "mlp_threshold_above_local",
        "MLPs: gradient descent is stable wherever it is stable locally: no (model, seed) "
        "diverges at an eta below 2/lambda_0 (the smallest unstable eta of every case lies above "
        "2/lambda_0)",
        predicted="smallest unstable eta / (2/lambda_0) >= 1 in every case",
        measured=float(ok["ratio_hi"].min()) if len(ok) else np.nan,
        tolerance="every case", passed=bool(len(ok)) and below.empty,
        note=f"{len(below)} of {len(ok)} cases below; " + "; ".join(
            f"{row.model} seed {row.seed}: {row.ratio_hi:.3g}" for row in below.itertuples())[:300])
    inside = ok["ratio"].between(*CATAPULT_RATIO)
    q = ok["ratio"].quantile([0.0, 0.25, 0.5, 0.75, 1.0]).to_numpy() if len(ok) else np.full(5, np.nan)
    per_model = ok.groupby("model")["ratio"].median()
    report.claim(
        "mlp_threshold_catapult_range",
        "MLPs: the measured threshold lies between 2/lambda_0 and the end of the catapult phase "
        "(Lewkowycz et al. 2020: eta_max about 4/lambda_0 to 12/lambda_0), i.e. threshold / "
        f"(2/lambda_0) in [{CATAPULT_RATIO[0]:g}, {CATAPULT_RATIO[1]:g}]",
        predicted=list(CATAPULT_RATIO), measured=f"min/quartiles/max {', '.join(f'{v:.3g}' for v in q)}",
        tolerance=f">= {CATAPULT_SHARE:.0%} of {len(ok)} (model, seed) cases in range",
        passed=bool(len(ok)) and float(inside.mean()) >= CATAPULT_SHARE,
        note=f"{float(inside.mean()) if len(ok) else np.nan:.0%} in range; median ratio by model: "
             + "; ".join(f"{k}: {v:.3g}" for k, v in per_model.items()))
    report.table(c[["data", "model", "seed", "lambda0", "predicted", "lo", "hi", "measured", "ratio",
                    "edge_end_at_lo"]].rename(columns={"predicted": "2/lambda0", "lo": "last stable eta",
                                                       "hi": "first unstable eta",
                                                       "measured": "measured threshold",
                                                       "ratio": "threshold/(2/lambda0)",
                                                       "edge_end_at_lo": "final sharpness*eta/2 at last stable"}),
                 "Measured threshold against 2/lambda_0 per model and seed")
    _edge_claims(m, c, report)
    return summaries, c


def _ceiling_note(tracked, top):
    """Which stable runs end above the ceiling, by model: a failure says where and how often."""
    over = tracked[tracked["edge_end"] > EOS_CEILING]
    note = (f"largest: {top['model']}, eta {top['lr']:.3g}, seed {int(top['seed'])}; "
            f"{len(over)} of {len(tracked)} stable runs above {EOS_CEILING:g}")
    if len(over):
        by = over.groupby("model").size().sort_values(ascending=False)
        note += " (" + ", ".join(f"{k}: {v}" for k, v in by.items()) + ")"
        if over["model"].str.contains("BN").mean() > 0.5:
            note += (". Most are batch-norm networks: their loss is invariant to the scale of the "
                     "weights feeding a batch norm, so gradient descent can sit above 2/eta while the "
                     "weight norm grows and the effective step shrinks (Lyu et al. 2022); the "
                     "quadratic edge does not bound them")
    return note


def _edge_claims(m, c, report):
    report.heading("Edge of stability")
    smooth = m["activation"].isin(SMOOTH)
    kinked = m[~smooth & np.isfinite(m["edge_end"]) & m["stable"]]
    m = m[smooth]
    c = c[c["model"].isin(set(m["model"]))]
    tracked = m[np.isfinite(m["edge_end"]) & m["stable"]]
    if tracked.empty:
        report.text("No sharpness was tracked during training (track_sharpness with probe_every).")
        return
    report.text(
        "Sharpness probed every probe_every steps of full-batch training, as sharpness * eta / 2: "
        "1 is the edge where the top direction stops being stable for a quadratic. Progressive "
        "sharpening drives it up towards 1 and training hovers there (Cohen et al. 2021). The "
        "claims below are about smooth activations: for relu-like units the probe measures the "
        "almost-everywhere Hessian, which misses the curvature concentrated on the kinks, so their "
        "sharpness is not the quantity that the stability of gradient descent sees."
        + (f" Measured for them: final sharpness * eta / 2 of the stable runs from "
           f"{kinked['edge_end'].min():.3g} to {kinked['edge_end'].max():.3g}, at the largest stable "
           f"eta median {kinked.loc[kinked.groupby(['model', 'seed'])['lr'].idxmax(), 'edge_end'].median():.3g}."
           if len(kinked) else ""))
    at = c.dropna(subset=["edge_end_at_lo"])
    inside = at["edge_end_at_lo"].between(*EOS_RANGE)
    report.claim(
        "edge_of_stability_reached",
        "Smooth activations: at the largest stable eta of each model and seed, the sharpness ends at the edge: final "
        "sharpness * eta / 2 close to 1 (progressive sharpening to 2/eta)",
        predicted=1.0, measured=float(at["edge_end_at_lo"].median()) if len(at) else np.nan,
        tolerance=f">= {EOS_SHARE:.0%} of cases in [{EOS_RANGE[0]:g}, {EOS_RANGE[1]:g}]",
        passed=bool(len(at)) and float(inside.mean()) >= EOS_SHARE,
        note=f"{int(inside.sum())} of {len(at)} cases in range; range of values "
             f"{at['edge_end_at_lo'].min():.3g} .. {at['edge_end_at_lo'].max():.3g}")
    top = tracked.loc[tracked["edge_end"].idxmax()]
    report.claim(
        "edge_of_stability_ceiling",
        "Smooth activations: no run that stays stable ends with its sharpness far above 2/eta: "
        "final sharpness * eta / 2 <= about 1 in every stable run",
        predicted=1.0, measured=float(top["edge_end"]), tolerance=f"max over {len(tracked)} stable runs <= {EOS_CEILING:g}",
        passed=float(top["edge_end"]) <= EOS_CEILING,
        note=_ceiling_note(tracked, top))
    probed = m[m["stable"] & np.isfinite(m["edge_max"])]
    below = probed[probed["edge_max"] < EDGE_BELOW]
    edge = probed[probed["edge_max"] >= 1.0]
    osc_b = float((below["outcome"] == "oscillating").mean()) if len(below) else np.nan
    osc_e = float((edge["outcome"] == "oscillating").mean()) if len(edge) else np.nan
    report.claim(
        "oscillation_is_an_edge_effect",
        f"Smooth activations: stable runs whose probed sharpness stayed below {EDGE_BELOW:g} x 2/eta decrease the loss "
        "monotonically (descent lemma), while runs that reached the edge (sharpness >= 2/eta at a "
        "probe) mostly oscillate",
        predicted=f"share oscillating: 0 below, > {OSC_AT_EDGE_MIN:.0%} at the edge",
        measured=[osc_b, osc_e],
        tolerance=f"below <= {OSC_BELOW_MAX:.0%} (probes are sparse), at the edge >= {OSC_AT_EDGE_MIN:.0%}",
        passed=bool(len(below) and len(edge)) and osc_b <= OSC_BELOW_MAX and osc_e >= OSC_AT_EDGE_MIN,
        note=f"{len(below)} runs below, {len(edge)} at the edge; oscillating = the loss rose on >= "
             f"{OSC_MIN_SHARE:.0%} of the recorded intervals")


# --------------------------------------------------------------------------------------------
# U-shape (every model)

def u_shape_claims(summary, report):
    report.heading("Final loss against eta")
    s = summary.dropna(subset=["best_eta"])
    if s.empty:
        return
    interior = (s["final_loss_smallest_eta"] >= U_FACTOR * s["best_final_loss"]) & (
        s["best_band_hi"] <= s["threshold_lo"])
    report.claim(
        "u_shape",
        "For every model the final loss against eta is U-shaped: the best eta lies inside the "
        f"stable band, at least {U_FACTOR:g}x lower loss than the smallest eta (too slow) and below "
        "the divergence threshold",
        predicted=f"{len(s)} of {len(s)} models", measured=f"{int(interior.sum())} of {len(s)}",
        tolerance="every model", passed=bool(interior.all()),
        note="; ".join(f"{row.model}: best {row.best_eta:.3g}, loss {row.best_final_loss:.3g} vs "
                       f"{row.final_loss_smallest_eta:.3g} at {row.smallest_eta:.3g}"
                       for row in s[~interior].itertuples())[:400])
    # the best eta sits in the decade below the threshold
    near = s["best_band_hi"] >= s["threshold_lo"] / 10
    report.claim(
        "best_eta_near_threshold",
        "The best fixed eta lies within one decade below the measured threshold (the fastest "
        "stable step is a sizeable fraction of the largest one)",
        predicted="last stable eta / 10 <= best eta <= last stable eta",
        measured=f"{int(near.sum())} of {len(s)} models; best/threshold ratios "
                 + ", ".join(f"{v:.2g}" for v in (s["best_band_hi"] / s["threshold_lo"])),
        tolerance="every model", passed=bool(near.all()),
        note="least squares: the best band is every eta reaching the loss floor L* (ties within "
             f"{TIE_RTOL:g}); its upper end is compared")


# --------------------------------------------------------------------------------------------
# figures

_COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _model_order(r):
    models = list(dict.fromkeys(r.sort_values(["batchnorm", "widths", "activation"])["model"]))
    if "least squares" in models:
        models.remove("least squares")
        models.insert(0, "least squares")
    return models


def figure_final_loss(r, summary, report):
    models = _model_order(r)
    arch_of = {mm: ("least squares" if mm == "least squares" else
                    "MLP " + model_label(w, "", False).strip())
               for mm, w in r.drop_duplicates("model")[["model", "widths"]].itertuples(index=False)}
    arch = list(dict.fromkeys(arch_of[mm] for mm in models))
    n = len(arch)
    fig, axes = plt.subplots(1, n, figsize=(4.3 * n + 0.6, 4.2), squeeze=False, sharey=True)
    colours = {mm: _COLORS[i % len(_COLORS)] for i, mm in enumerate(models)}
    ymax = np.nanmax(r.loc[r["stable"], "final_loss"]) if r["stable"].any() else 1.0
    ymin = np.nanmin(r.loc[r["stable"], "final_loss"].clip(lower=1e-12)) if r["stable"].any() else 1e-3
    for ax, a in zip(axes[0], arch):
        for mm in [mm for mm in models if arch_of[mm] == a]:
            g = r[r["model"] == mm]
            col = colours[mm]
            st = g[g["stable"]].groupby("lr")["final_loss"]
            med = st.median()
            short = mm if mm == "least squares" else mm.split("] ", 1)[-1]
            ax.plot(med.index, med.values, "-o", ms=3, color=col, label=short)
            ax.fill_between(med.index, st.min().values, st.max().values, color=col, alpha=0.15, lw=0)
            dv = g[~g["stable"]].groupby("lr").size()
            ax.plot(dv.index, np.full(len(dv), ymax * 3), "x", color=col, ms=4)
            row = summary[summary["model"] == mm]
            if len(row):
                pred = float(row["predicted_threshold"].iloc[0])
                ax.axvline(pred, color=col, ls="--", lw=1,
                           label=(r"$2/\lambda_{max}$" if mm == "least squares" else r"$2/\lambda_0$")
                           + f" = {pred:.3g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(ymin / 3, ymax * 8)
        ax.set_xlabel(r"learning rate $\eta$ (log scale)")
        ax.set_title(a, fontsize=9)
        ax.legend(fontsize=6.5, loc="lower left", ncol=2)
    axes[0][0].set_ylabel("final training loss, MSE (log scale)")
    report.figure("final_loss_vs_eta", fig,
                  "Final training loss against the learning rate: median over seeds (line) and "
                  "min-max band of the stable runs; crosses at the top: etas with a diverged run. "
                  "Dashed: the predicted threshold, 2/lambda_max of the exact Hessian for least "
                  "squares and 2/lambda_0 (median sharpness at initialisation) for each MLP.")


def figure_threshold(ls_rows, c, report):
    fig, ax = plt.subplots(figsize=(8.2, 5.2))
    if len(c):
        for i, (mm, g) in enumerate(c.groupby("model", sort=False)):
            g = g.dropna(subset=["measured", "predicted"])
            ax.errorbar(g["predicted"], g["measured"], yerr=[g["measured"] - g["lo"], g["hi"] - g["measured"]],
                        fmt="o", ms=4, color=_COLORS[i % len(_COLORS)], capsize=2, label=mm)
    for row in ls_rows:
        if np.isfinite(row["threshold_lo"]) and np.isfinite(row["threshold_hi"]):
            mid = np.sqrt(row["threshold_lo"] * row["threshold_hi"])
            ax.plot([row["predicted_threshold"]], [mid], "k*", ms=12, label="least squares (2/lambda_max)")
    vals = np.r_[c["predicted"].dropna(), c["measured"].dropna()] if len(c) else np.array([])
    vals = np.r_[vals, [row["predicted_threshold"] for row in ls_rows]]
    lo, hi = (np.nanmin(vals) / 2, np.nanmax(vals) * 2.5) if vals.size else (1e-3, 10)
    xs = np.geomspace(lo, hi, 10)
    ax.plot(xs, xs, "k-", lw=1, label="measured = predicted")
    ax.plot(xs, CATAPULT_RATIO[1] * xs, "k:", lw=1, label=f"{CATAPULT_RATIO[1]:g} x predicted (catapult end)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(r"predicted threshold $2/\lambda_0$ (log scale)")
    ax.set_ylabel(r"measured divergence threshold $\eta_c$ (log scale)")
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    report.figure("threshold_vs_prediction", fig,
                  "Measured divergence threshold (geometric mean of the last stable and first unstable "
                  "eta; bars: the bracket) against the local prediction 2/lambda_0 per model and seed; "
                  "the star is least squares against 2/lambda_max of its exact Hessian.")


def figure_edge(data, r, report):
    m = r[(r["model"] != "least squares") & np.isfinite(r["edge_end"]) & r["stable"]]
    if m.empty:
        return
    models = [mm for mm in _model_order(r) if mm in set(m["model"])]
    n = len(models)
    cols = min(4, n)
    rows_n = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.6 * cols + 0.6, 3.2 * rows_n), squeeze=False,
                             sharex=True, sharey=True)
    seed0 = int(m["seed"].min())
    sh = data[(data["layer"] == 1) & data["sharpness"].notna()][["point", "step", "sharpness", "lr"]]
    cmap = plt.get_cmap("viridis")
    for ax, mm in zip(axes.ravel(), models):
        g = m[(m["model"] == mm) & (m["seed"] == seed0)].sort_values("lr")
        etas = g["lr"].to_numpy()
        pick = g[g["lr"] >= etas.max() / 30]          # the upper part of the stable band
        pick = pick.iloc[np.unique(np.linspace(0, len(pick) - 1, min(6, len(pick))).round().astype(int))]
        for k, row in enumerate(pick.itertuples()):
            t = sh[sh["point"] == row.point]
            col = cmap(k / max(1, len(pick) - 1))
            ax.plot(t["step"], t["sharpness"] * t["lr"] / 2, "-o", ms=2, lw=1, color=col,
                    label=rf"$\eta$ = {row.lr:.3g}")
        ax.axhline(1.0, color="k", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_title(f"{mm} (seed {seed0})", fontsize=8)
        ax.legend(fontsize=6, loc="lower right")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("step")
    for ax in axes[:, 0]:
        ax.set_ylabel(r"sharpness $\times\ \eta/2$ (log scale)")
    report.figure("edge_of_stability", fig,
                  "Sharpness (largest Hessian eigenvalue of the training loss) times eta/2 during "
                  "full-batch training, for the stable etas in the upper part of each model's band "
                  "(one seed). Dashed: 1, the edge 2/eta; progressive sharpening drives the larger "
                  "etas up to it, where training hovers (edge of stability).")


def figure_outcomes(r, report):
    groups = [("least squares", r["model"] == "least squares"),
              ("MLPs without batch norm", (r["model"] != "least squares") & ~r["batchnorm"]),
              ("MLPs with batch norm", (r["model"] != "least squares") & r["batchnorm"])]
    groups = [(t, mask) for t, mask in groups if mask.any()]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.4 * len(groups) + 0.5, 3.8), squeeze=False,
                             sharey=True)
    for ax, (title, mask) in zip(axes[0], groups):
        g = r[mask]
        share = pd.crosstab(g["lr"], g["outcome"], normalize="index")
        for oc, col in (("diverged", "tab:red"), ("oscillating", "tab:orange"), ("converging", "tab:green")):
            if oc in share:
                ax.plot(share.index, share[oc], "-o", ms=3, color=col, label=oc)
        ax.set_xscale("log")
        ax.set_title(f"{title} ({len(g)} runs)", fontsize=9)
        ax.set_xlabel(r"learning rate $\eta$ (log scale)")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("share of runs")
    report.figure("outcomes_vs_eta", fig,
                  "Share of diverged (engine flag or final loss not below the initial one), "
                  f"oscillating (stable, but the loss rose on >= {OSC_MIN_SHARE:.0%} of the recorded "
                  "intervals) and monotonically converging runs at each eta, over models and seeds.")


# --------------------------------------------------------------------------------------------

def analyse(data, spec, report):
    """The lr-sensitivity study's claims, figures and tables (see the module docstring)."""
    data = data[data["kind"] == "mlp"] if "kind" in data.columns else data
    if data.empty:
        report.text("No MLP runs in this grid.")
        return
    r = runs_table(data)
    r = r[r["loss_fn"] == "mse"]
    if r.empty:
        report.text("No MSE runs in this grid: this study's theory (the least-squares Hessian, the "
                    "sharpness against 2/eta) is about full-batch gradient descent on MSE.")
        return
    report.text(
        f"{len(r)} full-batch trainings over {r['lr'].nunique()} learning rates from {r['lr'].min():.3g} "
        f"to {r['lr'].max():.3g} ({np.log10(r['lr'].max() / r['lr'].min()):.1f} decades). "
        "Each run is classified as diverged (engine flag, or final loss not below "
        f"the initial one), oscillating (the loss rose on >= {OSC_MIN_SHARE:.0%} of the recorded "
        "intervals) or converging.")
    ls_rows = analyse_least_squares(r, report)
    mlp_rows, cases = analyse_mlps(r, report)
    summary = pd.DataFrame(ls_rows + mlp_rows)
    if len(summary):
        u_shape_claims(summary, report)
        report.table(summary[["model", "runs", "predicted_threshold", "threshold_lo", "threshold_hi",
                              "ratio_to_prediction", "best_eta", "best_final_loss", "stable_decades",
                              "diverged_share", "oscillating_share"]],
                     "Per model (pooled over seeds): predicted threshold (2/lambda_max or 2/lambda_0), "
                     "the measured bracket, the best eta and its median final loss, the width of the "
                     "stable band on the grid in decades, shares of diverged and oscillating runs")
        figure_final_loss(r, summary, report)
    figure_threshold(ls_rows, cases, report)
    if "sharpness" in data.columns:
        figure_edge(data, r, report)
    figure_outcomes(r, report)
