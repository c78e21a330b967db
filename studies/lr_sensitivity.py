r"""How sensitive full-batch gradient descent is to its learning rate: the least-squares threshold
against the exact curvature, the three phases of a network (lazy, catapult, divergence), the edge
of stability, and the final loss over four decades of :math:`\eta`.

Runs are recognised by their configuration, not by sub-grid names:

* **Least squares** -- linear models (``widths = []``, identity, ``mse``, full-batch ``gd``).
  The Hessian :math:`H = \frac{2}{N} X_{aug}^T X_{aug}` is constant; along eigenvector i the
  error is multiplied by :math:`1 - \eta\lambda_i` each step, so GD converges iff
  :math:`\eta < 2/\lambda_{max}` (:func:`studies.theory.ls_threshold`, on the data rebuilt by
  :func:`studies.runner.make_data`). Measured by bisection on the grid's :math:`\eta` axes (every
  sub-grid on the same data is pooled, so a dense linear axis refines a wide geometric one): the
  last stable and the first unstable eta bracket the threshold, and the prediction is tested to
  the grid's resolution, half the bracket. Inside the bracket the tail growth rate of the loss
  differences (:func:`tail_growth`, :math:`2\ln|1-\eta\lambda_{max}|` near the threshold) is
  interpolated through 0 as a refinement, held to the same tolerance. Just above
  :math:`2/\lambda_{max}` the loss grows slowly, so divergence is *loss growth*, not only the
  engine's blow-up flag (:func:`classify`). "A stable least-squares run's loss is monotone" and
  "the compiled probe equals lambda_max of the exact Hessian" are identities: engine checks
  (appendix; their real tests are in ``tests/test_study_lr_sensitivity.py``).
* **MLPs** -- every other ``mse`` run; :math:`\lambda_0` is the sharpness (top Hessian
  eigenvalue) at initialisation, from the compiled probe at step 0, and :math:`x = \eta\lambda_0/2`.
  Three phases (Lewkowycz et al. 2020): for :math:`x < 1` training is *lazy*: no run diverges
  (prediction ``lazy_phase_stable``, per model and seed on the long runs) and the loss decreases
  at every step (``lazy_no_spike``, run by run: the linearised loss is quadratic with every
  :math:`|1 - \eta\lambda_i| < 1`, the least-squares identity); for :math:`1 < x` up to a maximum
  the loss first spikes, then the sharpness falls below :math:`2/\eta` and training converges
  (the *catapult*: ``catapult_signature``, run by run); above it, divergence. The constants of the
  maximum (:math:`4/\lambda_0` in their two-layer linear model, about :math:`12/\lambda_0` for wide
  ReLU nets) are wide-network results; the measured ratio :math:`\eta_{max}/(2/\lambda_0)` is an
  observation (``catapult_ratio``). The spike can last only a few steps, so the signature is
  measured on runs that record every step (``record_every = 1``: the short ``mlp_early`` and
  ``mlp_wide_early`` windows, same seeds and so the same initial weights as the long runs); their
  stability is taken from the long run of the same configuration when the grid has one.
* **Edge of stability** (Cohen et al. 2021; Damian et al. 2022): once the sharpness reaches
  :math:`2/\eta` it hovers at or just above it, self-stabilising its overshoots. The statistic is
  the mean of :math:`\lambda\eta/2` over the last probes (step >= ``LAST_PROBES_FROM`` of the
  run, at least ``EDGE_MIN_PROBES`` of them) of every stable run that reached the edge (a probe
  after step 0 with :math:`\lambda\eta/2 \ge 1`), with its standard error and its spread over
  runs. The prediction is made for smooth activations without batch norm; ReLU networks (the
  probe sees the almost-everywhere Hessian, not the curvature on the kinks) and batch-norm
  networks (scale-invariant in the weights feeding a batch norm: the weight norm grows and the
  effective step shrinks, Lyu et al. 2022) are analysed apart, as observations.

Why some statements differ from SCIENCE.md, as the code and the data show them better:

* **The spike** is a rise of the loss over its running minimum, not "max_t L_t > L_0": in the
  first steps the rest of the residual converges (at rate :math:`|1 - \eta\lambda_i| < 1`), so the
  growing top mode is caught by the catapult at a loss that may lie below :math:`L_0`; the rise
  is what the lazy phase forbids at any width (the share above :math:`L_0` is reported beside).
* **The catapult is predicted for wide networks** (every hidden layer at least ``WIDE_FACTOR``
  times the number of samples) and counted beyond the boundary's blur: Lewkowycz et al.'s
  :math:`\lambda_0` is the top eigenvalue of the tangent kernel (the Gauss-Newton part of the
  Hessian); the probe measures the Hessian, which adds the residual term
  :math:`\sum_i r_i \nabla^2 f_i`, of order :math:`1/\sqrt{width}`, that decays with the
  residual in the first steps. The sharpness therefore moves before the top mode has grown (in
  their model by :math:`\eta f_t^2 (\eta\lambda_t - 4)/n` per step), and a run just above
  :math:`x = 1` can leave the sharp region without a spike. The move is measured, not assumed:
  the largest relative move d of the sharpness over the window among the lazy runs of the same
  model above x = 1/2; runs with :math:`1/(1 + d) < x < 1/(1 - d)` may cross :math:`2/\eta`
  either way within the window: they are at the boundary, reported and not counted (for the
  lazy prediction too).
  Narrow (16-unit) networks, where d reaches about 0.3, are an observation (``catapult_narrow``).
* **"The final sharpness < 2/eta"** is read at the end of the catapult window (the last probe of
  the every-step run), within the hover band of one probe at the edge (the pooled spread of the
  single last probes of the edge statistic): a network that has left the sharp region sharpens
  again (progressive sharpening) and ends at the edge, so the sharpness after a long run
  measures the edge of stability, not the catapult.
* **"At or just above 1"** (Cohen et al.'s words) is tested as a lower bound of two standard
  errors below 1 and an upper bound of the spread over runs (the hover band: no theory gives the
  size of the overshoot).

What the full preset finds where a prediction fails: ``edge_of_stability`` over all smooth
networks without batch norm has a mean just below 1 (by a few standard errors) because the
sigmoid networks, after reaching the edge, leave it as their loss stalls on a plateau (their mean
over the last probes is below 1, their spread wide), while the tanh networks hover at the edge,
just above 1, within the hover band: the edge of stability is held only while progressive
sharpening lasts (Damian et al. 2022's self-stabilisation is a constraint, active only while the
unconstrained sharpness would rise). The numbers are in the claim's note, by activation.

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
from .rows import bracket, data_label, of_kind, slug
from .runner import make_data

NAME = "lr-sensitivity"
TITLE = "Learning-rate sensitivity: thresholds, the catapult and the edge of stability"
SUMMARY = ("The least-squares divergence threshold against 2/lambda_max of the exact Hessian, the "
           "three phases of a network against 2/lambda_0 (lazy, catapult, divergence) run by run, "
           "the edge of stability as the mean of sharpness * eta / 2 over the last probes, and the "
           "final loss against the learning rate over four decades.")

# outcome of a run
RISE_FLOOR = 1e-9        # a loss rise counts when above this fraction of the loss (rounding below)
OSC_MIN_SHARE = 0.02     # oscillating: the loss rises on at least this share of recorded intervals
DIFF_FLOOR = 1e-12       # tail growth: loss differences below this fraction of the loss are rounding
# the compiled sharpness probe against lambda_max of the exact least-squares Hessian: the probe's
# power iteration stops when its Rayleigh quotient changes by < 1e-6 relative per product, which
# leaves an error up to ~1e-6 / (1 - lambda_2/lambda_1): 1e-4 allows a gap ratio up to 0.99
PROBE_RTOL = 1e-4
# edge of stability: the last probes are those at or after this fraction of the run's steps
LAST_PROBES_FROM = 0.7
# wide networks (the catapult prediction): every hidden layer at least this many times the number
# of samples, the over-parameterised regime where the tangent kernel barely moves in the lazy phase
WIDE_FACTOR = 8
# the mean over the last probes needs at least this many of them (a short window has one)
EDGE_MIN_PROBES = 3
# a run reached the edge when a probe after step 0 had sharpness * eta / 2 at or above this
EDGE_REACHED = 1.0
# activations whose Hessian is the curvature gradient descent sees (no kinks)
SMOOTH = ("tanh", "sigmoid", "softplus", "identity")
# oscillation against the edge (observation): probed sharpness below this fraction of 2/eta
EDGE_BELOW = 0.8
# U-shape (observation): ties at the loss floor, etas whose median final loss is within this
# fraction of the best
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


def largest_rise(loss):
    r"""The largest rise of the loss over its running minimum, :math:`\max_t L_t / \min_{s \le t} L_s`
    (1 for a loss that never rises; ``inf`` once it turns non-finite after finite values): the
    height of the catapult's spike, measured from wherever the loss had come down to."""
    L = np.asarray(loss, dtype=np.float64)
    if L.size == 0:
        return 1.0
    L = np.where(np.isfinite(L), L, np.inf)
    run_min = np.minimum.accumulate(L)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = L / run_min
    ratio = ratio[np.isfinite(run_min)]
    return float(np.nanmax(ratio)) if ratio.size else np.inf


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


def runs_table(data):
    """One row per training: configuration, outcome, tail growth, the largest recorded loss and
    its step, the sharpness at initialisation (probe at step 0), the last probed sharpness, the
    largest probed sharpness * eta / 2 after step 0 and its mean over the last probes (step >=
    ``LAST_PROBES_FROM`` * steps)."""
    rows = data[data["layer"] == 1]
    has_sharp = "sharpness" in rows.columns
    out = []
    for pid, g in rows.groupby("point", sort=True):
        p = g.iloc[0]
        L = g["loss"].to_numpy(dtype=np.float64)
        lr, steps = float(p["lr"]), int(p["steps"])
        outcome, rises = classify(L, p["diverged"], float(p["final_loss"]))
        lam0 = lam_end = edge_max = edge_last = edge_last_sq = np.nan
        step_end, n_last = -1, 0
        if has_sharp:
            sh = g[["step", "sharpness"]].dropna()
            if len(sh) and sh["step"].iloc[0] == 0:
                lam0 = float(sh["sharpness"].iloc[0])
            later = sh[sh["step"] > 0]
            if len(later):
                lam_end = float(later["sharpness"].iloc[-1])
                step_end = int(later["step"].iloc[-1])
                edge_max = float(later["sharpness"].max() * lr / 2)
                last = later[later["step"] >= LAST_PROBES_FROM * steps]
                n_last = len(last)
                if len(last):
                    edge_last = float(last["sharpness"].mean() * lr / 2)
                    edge_last_sq = float(((last["sharpness"] * lr / 2) ** 2).mean())
        with np.errstate(invalid="ignore"):
            finite = np.where(np.isfinite(L), L, np.inf)
        k = int(np.argmax(finite))
        out.append({
            "point": int(pid), "grid": p["grid"], "data": p["data"],
            "data_key": json.dumps([p["data"], json.loads(p["data_args"])], sort_keys=True),
            "data_label": data_label(p), "widths": p["widths"],
            "activation": p["activation"], "batchnorm": bool(p["batchnorm"]),
            "loss_fn": p["loss_fn"], "optimizer": p["optimizer"], "batch_size": str(p["batch_size"]),
            "model": model_label(p["widths"], p["activation"], bool(p["batchnorm"])),
            "lr": lr, "seed": int(p["seed"]), "steps": steps, "record_every": int(p["record_every"]),
            "loss0": float(L[0]), "final_loss": float(p["final_loss"]),
            "loss_max": float(finite[k]), "step_loss_max": int(g["step"].iloc[k]), "rise_max": largest_rise(L),
            "min_width": min(int(v) for v in str(p["widths"]).split("-")) if p["widths"] != "linear" else 0,
            "diverged_flag": bool(p["diverged"]), "outcome": outcome, "rise_share": rises,
            "tail_growth": tail_growth(L), "lam0": lam0, "lam_end": lam_end, "step_end": step_end,
            "edge0": lam0 * lr / 2, "edge_end": lam_end * lr / 2, "edge_max": edge_max,
            "edge_last": edge_last, "edge_last_sq": edge_last_sq, "n_last": n_last})
    r = pd.DataFrame(out)
    r["stable"] = r["outcome"] != "diverged"
    # the spike of the catapult: the loss rises above its running minimum (rounding excepted);
    # above L_0 as well, the wide-network form
    r["spike"] = r["rise_max"] > 1 + RISE_FLOOR
    r["spike_above_l0"] = r["loss_max"] > r["loss0"] * (1 + RISE_FLOOR)
    return r


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


def ls_measured_threshold(by_eta):
    r"""The threshold measured on the pooled eta axes: ``(lo, hi, monotone, mid, cross)``.

    Bisection: lo the last stable eta, hi the first unstable one (:func:`bracket`), mid their
    midpoint, known to within the resolution :math:`(hi - lo)/2`. Refinement: the tail growth
    rates at lo and hi (medians over seeds) interpolated linearly through 0, ``cross`` (NaN
    where they do not change sign)."""
    lo, hi, monotone = bracket(by_eta["lr"], by_eta["stable"])
    mid = cross = np.nan
    if np.isfinite(lo) and np.isfinite(hi):
        mid = (lo + hi) / 2
        g_lo = float(by_eta.loc[by_eta["lr"] == lo, "growth"].iloc[0])
        g_hi = float(by_eta.loc[by_eta["lr"] == hi, "growth"].iloc[0])
        if np.isfinite(g_lo) and np.isfinite(g_hi) and g_lo < 0 <= g_hi:
            cross = lo - g_lo * (hi - lo) / (g_hi - g_lo)
    return lo, hi, monotone, mid, cross


def analyse_least_squares(r, report):
    """The least-squares prediction, checks and figure, per data set; returns per-model summaries."""
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
        lo, hi, monotone, mid, cross = ls_measured_threshold(by_eta)
        half = (hi - lo) / 2
        report.heading(f"Least squares on {label}")
        report.text(
            f"Exact Hessian (2/N) X_aug^T X_aug of the data: lambda_min = {lmin:.4g}, lambda_max = "
            f"{lmax:.4g}; predicted threshold 2/lambda_max = {eta_c:.5g}. Measured on the pooled eta "
            f"axes ({len(by_eta)} etas, {len(group)} runs): the largest eta whose runs (and those of "
            f"every smaller eta) decrease the loss, {lo:.5g}, and the next one, {hi:.5g}; between "
            "them the growth rate per step of the loss differences, ln|L_(t+1) - L_t| fitted on the "
            "tail (2 ln|1 - eta lambda_max| near the threshold), is interpolated through 0.")
        fig_name = slug(label)
        ok = bool(monotone and np.isfinite(half) and abs(mid - eta_c) <= half
                  and np.isfinite(cross) and abs(cross - eta_c) <= half)
        report.prediction(
            f"ls_threshold[{label}]",
            "Least squares: gradient descent converges iff eta < 2/lambda_max of the exact Hessian; "
            "the threshold measured by bisection on the eta axes (and refined by interpolating the "
            "loss differences' growth rate through 0) equals 2/lambda_max",
            predicted=eta_c, measured={"bisection": mid, "interpolated": cross},
            tolerance=(f"the grid's resolution: half the bracket [{lo:.4g}, {hi:.4g}], "
                       f"{half / eta_c:.2%} of 2/lambda_max; stability monotone in eta"
                       if np.isfinite(half) else "the eta axes must cross the threshold"),
            passed=ok, assumes="a linear model, MSE, full-batch GD: the loss is quadratic",
            figure=f"ls_threshold_{fig_name}",
            note=(f"bisection {mid / eta_c - 1:+.2g}, interpolation {cross / eta_c - 1:+.2g} relative"
                  + ("" if monotone else "; stability is not monotone in eta")
                  if np.isfinite(mid) else "the eta axes do not cross the threshold"))
        probed = group["lam0"].dropna()
        if len(probed):
            err = float(np.max(np.abs(probed / lmax - 1)))
            report.check(
                f"ls_sharpness_probe[{label}]",
                "The compiled sharpness probe at initialisation equals lambda_max of the exact "
                "least-squares Hessian (the loss is quadratic: the Hessian does not depend on the weights)",
                expected=lmax, measured=float(probed.median()), passed=err <= PROBE_RTOL,
                note=f"worst relative error {err:.2g} over {len(probed)} runs (allowed {PROBE_RTOL:g})")
        stable = group[group["stable"]]
        osc = float((stable["outcome"] == "oscillating").mean()) if len(stable) else np.nan
        report.check(
            f"ls_loss_monotone[{label}]",
            "Least squares: a stable run's loss never rises, L_t - L* = sum_i lambda_i/2 c_i^2 "
            "(1 - eta lambda_i)^(2t) decreases whenever every |1 - eta lambda_i| < 1 (even where the "
            "weights oscillate, eta > 1/lambda_max)",
            expected=0.0, measured=osc, passed=bool(len(stable)) and osc == 0.0,
            note=f"share of oscillating runs among {len(stable)} stable runs, "
                 f"{int((stable['lr'] > 1 / lmax).sum())} of them with eta > 1/lambda_max")
        _ls_figure(report, label, group, lmin, lmax, eta_c, cross)
        summaries.append(_summary_row("least squares", label, group, by_eta, lo, hi, eta_c, lmax))
    return summaries


def _ls_figure(report, label, group, lmin, lmax, eta_c, cross):
    fig_name = slug(label)
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
    report.figure(f"ls_threshold_{fig_name}", fig,
                  f"Least squares on {label}, near the threshold: the measured growth rate per step of "
                  "the loss differences on the tail of each run (points) against the theory, "
                  "2 ln max_i |1 - eta lambda_i| (line: the slowest eigen-direction dominates the tail); the growth rate crosses 0 at "
                  "the measured threshold (dotted), beside 2/lambda_max of the exact Hessian (dashed).")


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

_LAZY_ASSUMES = ("full-batch GD on MSE, the loss locally quadratic at initialisation with top "
                 "curvature lambda_0 (Lewkowycz et al. 2020's lazy phase)")


def _is_mlp(r):
    return ~_is_ls(r) & (r["loss_fn"] == "mse") & (r["optimizer"] == "gd") & (r["batch_size"] == "full")


def long_runs(m):
    """The runs of each (data, model) with its largest number of steps: thresholds, the edge of
    stability and the final loss are read on them."""
    top = m.groupby(["data_key", "model"])["steps"].transform("max")
    return m[m["steps"] == top]


def window_runs(m):
    """The runs that record every step (a spike of a few steps shows), with ``stable_long``: the
    outcome of the longest run of the same data, model, seed and eta when the grid has one with
    more steps, else their own."""
    w = m[m["record_every"] == 1].copy()
    if w.empty:
        w["stable_long"] = pd.Series(dtype=bool)
        return w
    # two geometric axes can give the same eta up to the last bits: match on 10 digits
    m = m.assign(lr_key=[float(f"{v:.10g}") for v in m["lr"]])
    w["lr_key"] = [float(f"{v:.10g}") for v in w["lr"]]
    keys = ["data_key", "model", "seed", "lr_key"]
    longest = (m.sort_values("steps").drop_duplicates(keys, keep="last")
               .set_index(keys)[["steps", "stable"]].add_suffix("_long"))
    j = w.join(longest, on=keys)
    w["stable_long"] = np.where(j["steps_long"] > j["steps"], j["stable_long"], j["stable"]).astype(bool)
    return w


def threshold_cases(m):
    """Per (data, model, seed) of the long runs: lambda_0, 2/lambda_0, the bracket of the
    measured threshold, eta_max (geometric mean of the bracket) and its ratio to 2/lambda_0."""
    cases = []
    for (key, model), group in m.groupby(["data_key", "model"], sort=False):
        label = group["data_label"].iloc[0]
        for seed, s in group.groupby("seed"):
            lo, hi, monotone = bracket(s["lr"], s["stable"])
            lam0 = float(s["lam0"].median())
            cases.append({"data": label, "model": model, "seed": int(seed),
                          "batchnorm": bool(s["batchnorm"].iloc[0]), "lambda0": lam0,
                          "predicted": 2 / lam0 if lam0 > 0 else np.nan, "lo": lo, "hi": hi,
                          "monotone": monotone, "measured": np.sqrt(lo * hi)})
    c = pd.DataFrame(cases)
    c["ratio"] = c["measured"] / c["predicted"]
    c["ratio_hi"] = c["hi"] / c["predicted"]
    return c


def analyse_mlps(r, report):
    """The three phases against 2/lambda_0, the edge of stability and the catapult signature."""
    m_all = r[_is_mlp(r)]
    if m_all.empty:
        return [], pd.DataFrame()
    m = long_runs(m_all)
    summaries = []
    for (key, model), group in m.groupby(["data_key", "model"], sort=False):
        by_eta = _by_eta(group)
        lo, hi, _ = bracket(by_eta["lr"], by_eta["stable"])
        lam0 = float(group["lam0"].median())
        summaries.append(_summary_row(model, group["data_label"].iloc[0], group, by_eta, lo, hi,
                                      2 / lam0, lam0))
    c = threshold_cases(m)
    report.heading("MLPs: three phases against the sharpness at initialisation")
    report.text(
        "Per model and seed: lambda_0 is the sharpness (largest Hessian eigenvalue of the training "
        "loss) at initialisation, from the compiled probe at step 0; the measured threshold eta_max is the "
        "geometric mean of the last stable eta (it and every smaller eta decrease the loss without "
        "diverging) and the next eta of the grid. Below 2/lambda_0 training is lazy; between 2/lambda_0 "
        "and eta_max the loss spikes, the network leaves the sharp region and converges (catapult); "
        "above eta_max it diverges (Lewkowycz et al. 2020).")
    ok = c.dropna(subset=["predicted", "hi"])
    below = ok[ok["hi"] < ok["predicted"]]
    report.prediction(
        "lazy_phase_stable",
        "MLPs: no (model, seed) diverges at an eta below 2/lambda_0 (the smallest unstable eta of "
        "every case lies above 2/lambda_0)",
        predicted=1.0, measured=float(ok["ratio_hi"].min()) if len(ok) else np.nan,
        tolerance=f"smallest unstable eta / (2/lambda_0) >= 1 in every one of {len(ok)} cases "
                  "(resolution: the grid's eta step)",
        passed=bool(len(ok)) and below.empty, assumes=_LAZY_ASSUMES, figure="threshold_vs_prediction",
        note=f"{len(below)} of {len(ok)} cases below; " + "; ".join(
            f"{row.model} seed {row.seed}: {row.ratio_hi:.3g}" for row in below.itertuples())[:300])
    per_model = ok.groupby("model")["ratio"].median()
    q = ok["ratio"].quantile([0.0, 0.5, 1.0]).to_numpy() if len(ok) else np.full(3, np.nan)
    report.observation(
        "catapult_ratio",
        "MLPs: the measured maximum eta_max over 2/lambda_0 (Lewkowycz et al. 2020 give 2 in their "
        "wide two-layer linear model and about 6 for wide ReLU nets; these 16-unit networks are "
        "outside those assumptions, so no verdict)",
        measured={k: float(v) for k, v in per_model.items()}, figure="threshold_vs_prediction",
        note=f"median ratio per model; over all {len(ok)} cases min {q[0]:.3g}, median {q[1]:.3g}, "
             f"max {q[2]:.3g}")
    report.table(c[["data", "model", "seed", "lambda0", "predicted", "lo", "hi", "measured", "ratio"]]
                 .rename(columns={"predicted": "2/lambda0", "lo": "last stable eta",
                                  "hi": "first unstable eta", "measured": "eta_max",
                                  "ratio": "eta_max/(2/lambda0)"}),
                 "Measured threshold against 2/lambda_0 per model and seed")
    hover = _edge_claims(m, report)
    _catapult_claims(window_runs(m_all), hover, report)
    return summaries, c


def edge_statistic(runs):
    """The edge-of-stability statistic over ``runs``: the stable runs that reached the edge (a
    probe after step 0 with sharpness * eta / 2 >= ``EDGE_REACHED``) and have at least
    ``EDGE_MIN_PROBES`` last probes;
    returns ``(selected runs, mean, standard error, spread, probe spread)`` of their
    ``edge_last``, the mean of sharpness * eta / 2 over the last probes (spread: the standard
    deviation of the runs' means; probe spread: that of the single last probes, pooled, the
    band in which one probe of a run at the edge falls)."""
    s = runs[runs["stable"] & (runs["edge_max"] >= EDGE_REACHED) & (runs["n_last"] >= EDGE_MIN_PROBES)]
    v = s["edge_last"].to_numpy()
    if len(v) < 2:
        return s, (float(v.mean()) if len(v) else np.nan), np.nan, np.nan, np.nan
    sd = float(v.std(ddof=1))
    probe_sd = float(np.sqrt(max(s["edge_last_sq"].mean() - v.mean() ** 2, 0.0)))
    return s, float(v.mean()), sd / np.sqrt(len(v)), sd, probe_sd


def edge_holds(mean, se, sd):
    """"At or just above 1": no lower than two standard errors below 1, no higher than the
    spread over runs (the hover band) above it."""
    return bool(np.isfinite(mean) and np.isfinite(se) and mean >= 1 - 2 * se and mean <= 1 + sd)


def _edge_groups(m):
    smooth = m["activation"].isin(SMOOTH)
    return [("smooth activations, no batch norm", smooth & ~m["batchnorm"]),
            ("relu-like, no batch norm", ~smooth & ~m["batchnorm"]),
            ("batch norm", m["batchnorm"])]


def _edge_claims(m, report):
    """The edge-of-stability prediction (smooth, no batch norm) and its observations; returns
    the hover band of one probe (the pooled spread of the single last probes) of the predicted
    group, NaN without one."""
    report.heading("Edge of stability")
    tracked = m[np.isfinite(m["edge_end"])]
    if tracked.empty:
        report.text("No sharpness was tracked during training (track_sharpness with probe_every).")
        return np.nan
    report.text(
        "Sharpness probed every probe_every steps of full-batch training, as sharpness * eta / 2: "
        "1 is the edge where the top direction stops being stable for a quadratic. Progressive "
        "sharpening drives it up towards 1 and training hovers there (Cohen et al. 2021), its "
        "overshoots self-stabilising (Damian et al. 2022). Statistic: per stable run that reached "
        f"the edge (a probe after step 0 at >= {EDGE_REACHED:g}), the mean of sharpness * eta / 2 over "
        f"its probes at or after {LAST_PROBES_FROM:.0%} of the steps; then its mean, standard error "
        "and spread over runs. Predicted for smooth activations without batch norm; relu-like units "
        "(the probe sees the almost-everywhere Hessian, not the curvature on the kinks) and "
        "batch-norm networks (scale-invariant weights: the effective step shrinks as their norm "
        "grows) are reported apart.")
    hover = np.nan
    rows = []
    for title, mask in _edge_groups(tracked):
        s, mean, se, sd, probe_sd = edge_statistic(tracked[mask])
        rows.append({"group": title, "runs reached": len(s), "mean": mean, "standard error": se,
                     "spread (sd)": sd, "probe spread": probe_sd,
                     "min": float(s["edge_last"].min()) if len(s) else np.nan,
                     "max": float(s["edge_last"].max()) if len(s) else np.nan})
        measured = {"mean": mean, "standard error": se, "spread": sd, "runs": len(s)}
        if title.startswith("smooth"):
            hover = probe_sd
            if len(s) < 2:
                report.missing("edge_of_stability", "Smooth activations without batch norm: the "
                               "sharpness hovers at or just above 2/eta once it reached it",
                               "stable runs of smooth networks without batch norm that reached the "
                               "edge (two at least)", assumes=_EDGE_ASSUMES)
                continue
            report.prediction(
                "edge_of_stability",
                "Smooth activations without batch norm: once the sharpness reached 2/eta it hovers at "
                "or just above it: the mean over runs of sharpness * eta / 2 over the last probes is "
                "about 1",
                predicted=1.0, measured=measured,
                tolerance="1 - 2 standard errors <= mean <= 1 + the spread over runs (the hover band)",
                passed=edge_holds(mean, se, sd), assumes=_EDGE_ASSUMES, figure="edge_statistic",
                note=(f"{len(s)} runs; mean - 1 = {mean - 1:+.3g} = {(mean - 1) / se:+.2g} standard errors; "
                      f"range {rows[-1]['min']:.3g} .. {rows[-1]['max']:.3g}; by activation: "
                      + "; ".join(f"{a} {g.mean():.4g} +- {g.std(ddof=1) / np.sqrt(len(g)):.2g} ({len(g)} runs)"
                                  for a, g in s.groupby("activation")["edge_last"] if len(g) > 1)
                      + ("" if edge_holds(mean, se, sd) else ". " + _EDGE_FINDING))[:900])
        else:
            report.observation(
                "edge_of_stability_" + ("relu" if title.startswith("relu") else "batchnorm"),
                f"{title[0].upper() + title[1:]}: the mean over runs of sharpness * eta / 2 over the "
                "last probes of the stable runs that reached the edge",
                measured=measured, figure="edge_statistic",
                note=(f"range {rows[-1]['min']:.3g} .. {rows[-1]['max']:.3g}" if len(s) else "no such runs"))
    report.table(pd.DataFrame(rows), "Edge-of-stability statistic by group: the mean of sharpness * "
                 "eta / 2 over the last probes of the stable runs that reached the edge")
    # progressive sharpening: lazy runs whose sharpness grew
    lazy = tracked[tracked["stable"] & (tracked["edge0"] < 1)]
    grew = {title: float((lazy[mask]["lam_end"] > lazy[mask]["lam0"]).mean())
            for title, mask in _edge_groups(lazy) if mask.any()}
    report.observation(
        "progressive_sharpening",
        "Lazy runs (eta < 2/lambda_0): the share whose sharpness grew during training (final probe "
        "above lambda_0), and the share that sharpened up to the edge",
        measured=grew,
        note="reached the edge: " + "; ".join(
            f"{title}: {float((lazy[mask]['edge_max'] >= EDGE_REACHED).mean()):.0%}"
            for title, mask in _edge_groups(lazy) if mask.any()))
    probed = tracked[tracked["stable"] & np.isfinite(tracked["edge_max"])]
    below = probed[probed["edge_max"] < EDGE_BELOW]
    edge = probed[probed["edge_max"] >= EDGE_REACHED]
    report.observation(
        "oscillation_at_the_edge",
        f"Stable runs whose probed sharpness stayed below {EDGE_BELOW:g} x 2/eta, and runs that reached "
        "the edge: the share of oscillating runs (the loss rose on >= "
        f"{OSC_MIN_SHARE:.0%} of the recorded intervals)",
        measured={"below the edge": float((below["outcome"] == "oscillating").mean()) if len(below) else np.nan,
                  "at the edge": float((edge["outcome"] == "oscillating").mean()) if len(edge) else np.nan},
        figure="outcomes_vs_eta", note=f"{len(below)} runs below, {len(edge)} at the edge; probes are sparse")
    figure_edge_statistic(tracked, report)
    return hover


# why the edge statistic can fall below 1: the finding, as the literature explains it
_EDGE_FINDING = (
    "Runs below 1 reached the edge, then left it. Self-stabilisation (Damian et al. 2022) holds the "
    "sharpness at 2/eta only while progressive sharpening pushes it up (gradient descent follows "
    "projected gradient descent on {S <= 2/eta}); where the sharpening stops the constraint is "
    "inactive and the sharpness settles below 2/eta. Consistent with this, the runs that left the "
    "edge are the ones whose loss stalls on a plateau (compare the final losses by activation in "
    "the final-loss figure); the theory gives no number for when sharpening stops")

_EDGE_ASSUMES = ("full-batch GD on MSE, a twice-differentiable loss (smooth activations), no "
                 "scale invariance (no batch norm), sharpness probed at the iterates")


_CATAPULT_ASSUMES = ("full-batch GD on MSE from a random initialisation, smooth activations, no batch "
                     "norm, wide hidden layers (the phase boundaries are sharp in the wide limit: "
                     "Lewkowycz et al. 2020)")


def catapult_table(w, hover):
    """The window runs with their phase by x = eta lambda_0 / 2 ("lazy" below 1, "catapult" above
    it and stable over the long run, "divergent" above it otherwise; "boundary" for the runs
    within the lazy runs' sharpness drift of x = 1), whether the network is wide
    (every hidden layer at least ``WIDE_FACTOR`` times the number of samples), and the signature:
    a spike (the loss rises over its running minimum) and the sharpness at the window's end below
    2/eta, within the hover band ``hover`` of one probe at the edge (0 where NaN)."""
    w = w[np.isfinite(w["edge0"])].copy()
    band = 0.0 if not np.isfinite(hover) else float(hover)
    n = {k: len(make_data(*json.loads(k))[0]) for k in w["data_key"].unique()}
    w["n_samples"] = w["data_key"].map(n)
    w["wide"] = w["min_width"] >= WIDE_FACTOR * w["n_samples"]
    w["phase"] = np.where(w["edge0"] < 1, "lazy", np.where(w["stable_long"], "catapult", "divergent"))
    # the boundary's finite-width blur: the sharpness moves over the window as in the lazy runs of
    # the same model; the largest relative move among those above x = 1/2 (nearest the boundary)
    # is the drift d, and a run with 1/(1 + d) < x < 1/(1 - d) may cross 2/eta either way within
    # the window: it is at the boundary, reported and not counted (lazy or catapult)
    lazy = w[(w["phase"] == "lazy") & (w["edge0"] >= 0.5) & np.isfinite(w["lam_end"])]
    move = (1 - lazy["lam_end"] / lazy["lam0"]).abs().groupby([lazy["data_key"], lazy["model"]]).max()
    w["drift"] = [float(move.get((k, mm), 0.0)) for k, mm in zip(w["data_key"], w["model"])]
    w["x_lo"] = 1 / (1 + w["drift"])
    w["x_sure"] = 1 / (1 - w["drift"].clip(upper=0.99))
    w.loc[(w["phase"] == "catapult") & (w["edge0"] < w["x_sure"]), "phase"] = "boundary"
    w.loc[(w["phase"] == "lazy") & (w["edge0"] > w["x_lo"]), "phase"] = "boundary"
    w["sharp_fell"] = w["edge_end"] < 1 + band
    w["signature"] = w["spike"] & w["sharp_fell"]
    return w


_LAZY_STATEMENT = ("Lazy runs (eta < 2/lambda_0; smooth activations, no batch norm): the loss decreases "
                   "at every step (no spike), run by run")
_CATAPULT_STATEMENT = ("Catapult runs (2/lambda_0 < eta < eta_max; wide smooth networks, no batch norm): "
                       "the loss spikes early and the sharpness then falls below 2/eta, run by run")


def _catapult_shares(lazy, cat):
    return {"lazy runs without a spike": float((~lazy["spike"]).mean()) if len(lazy) else np.nan,
            "catapult runs with a spike": float(cat["spike"].mean()) if len(cat) else np.nan,
            "catapult runs above L_0": float(cat["spike_above_l0"].mean()) if len(cat) else np.nan,
            "catapult runs whose sharpness fell below 2/eta": float(cat["sharp_fell"].mean())
            if len(cat) else np.nan,
            "catapult runs with both": float(cat["signature"].mean()) if len(cat) else np.nan}


def _misses_note(cat, band):
    """Where the catapult runs that miss the signature lie, in x = eta lambda_0 / 2."""
    miss = cat[~cat["signature"]]
    if miss.empty:
        return f"every one of {len(cat)} catapult runs shows it"
    no_spike = cat[~cat["spike"]]
    high = cat[~cat["sharp_fell"]]
    return (f"{len(miss)} of {len(cat)} runs miss the signature; without a spike: {len(no_spike)}"
            + (" at x = " + ", ".join(f"{v:.3g}" for v in sorted(no_spike["edge0"]))[:160]
               + f" (every run above x = {no_spike['edge0'].max():.3g} spikes)" if len(no_spike) else "")
            + f"; sharpness above 2/eta + {band:.3g} at the window's end: {len(high)}"
            + (" at sharpness * eta / 2 = " + ", ".join(f"{v:.3g}" for v in sorted(high["edge_end"]))[:160]
               if len(high) else ""))


def _catapult_claims(w, hover, report):
    """``lazy_no_spike`` for smooth activations without batch norm, ``catapult_signature`` for the
    wide ones among them (the hover band of one probe from the edge-of-stability statistic);
    narrow, relu-like and batch-norm networks as observations."""
    report.heading("The catapult, run by run")
    what = ("MLP runs of smooth activations without batch norm recording every step (record_every = 1) "
            "with the sharpness probed at step 0 (track_sharpness)")
    if w.empty or not np.isfinite(w["edge0"]).any():
        report.missing("lazy_no_spike", _LAZY_STATEMENT, what, assumes=_LAZY_ASSUMES)
        report.missing("catapult_signature", _CATAPULT_STATEMENT, "wide " + what, assumes=_CATAPULT_ASSUMES)
        return
    t = catapult_table(w, hover)
    band = 0.0 if not np.isfinite(hover) else float(hover)
    window = int(t["steps"].max())
    report.text(
        f"Runs that record every step ({len(t)}, {window} steps or fewer), each placed by x = eta lambda_0 / 2: "
        "lazy below 1, catapult above 1 when the run (or its long twin of the same configuration) "
        "stays stable. The spike: the loss rises over its running minimum (above rounding); in the "
        "lazy phase the linearised loss is quadratic with every |1 - eta lambda_i| < 1, so it "
        "decreases at every step. Signature of the catapult: a spike, and the sharpness at the "
        f"window's end below 2/eta, within the hover band of one probe at the edge ({band:.3g}, from "
        "the edge-of-stability statistic). The catapult is predicted for wide networks (every hidden "
        f"layer at least {WIDE_FACTOR} times the number of samples), where the phase boundary is "
        "sharp; narrow, relu-like and batch-norm networks are reported apart (observations).")
    smooth = t["activation"].isin(SMOOTH) & ~t["batchnorm"]
    lazy_all = t[smooth & (t["phase"] == "lazy")]
    below_edge = smooth & (t["phase"] == "boundary") & (t["edge0"] < 1)
    if lazy_all.empty:
        report.missing("lazy_no_spike", _LAZY_STATEMENT, "lazy runs (eta < 2/lambda_0) of " + what,
                       assumes=_LAZY_ASSUMES)
    else:
        spiked = lazy_all[lazy_all["spike"]]
        report.prediction(
            "lazy_no_spike", _LAZY_STATEMENT, predicted=1.0,
            measured=float((~lazy_all["spike"]).mean()),
            tolerance=f"every one of {len(lazy_all)} runs with x = eta lambda_0 / 2 below the boundary's "
                      f"blur 1/(1 + d), d the lazy runs' sharpness drift (a rise counts above "
                      f"{RISE_FLOOR:g} relative)",
            passed=spiked.empty, assumes=_LAZY_ASSUMES, figure="catapult_signature",
            note=f"{len(spiked)} of {len(lazy_all)} rose; at the boundary (not counted): "
                 f"{int(below_edge.sum())} runs, {int(t.loc[below_edge, 'spike'].sum())} of them rose" + (
                "; x = eta lambda_0 / 2 of those: " + ", ".join(f"{v:.3g}" for v in spiked["edge0"])[:200]
                if len(spiked) else ""))
    groups = [("catapult_signature", smooth & t["wide"], "wide smooth networks without batch norm"),
              ("catapult_narrow", smooth & ~t["wide"], "narrow smooth networks without batch norm"),
              ("catapult_relu", ~t["activation"].isin(SMOOTH) & ~t["batchnorm"],
               "relu-like networks without batch norm"),
              ("catapult_batchnorm", t["batchnorm"], "batch-norm networks")]
    for cid, mask, title in groups:
        g = t[mask]
        lazy, cat = g[g["phase"] == "lazy"], g[g["phase"] == "catapult"]
        shares = _catapult_shares(lazy, cat)
        if cid != "catapult_signature":
            if len(g):
                report.observation(
                    cid, f"{title[0].upper() + title[1:]}: the lazy and catapult signatures run by run "
                    "(outside the prediction's assumptions)", measured=shares, figure="catapult_signature",
                    note=f"{len(lazy)} lazy, {len(cat)} catapult runs beyond the boundary's blur "
                    f"(drift up to {g['drift'].max():.2g}), {int((g['phase'] == 'boundary').sum())} at "
                    "the boundary; " + _misses_note(cat, band)
                    + (". " + _CATAPULT_FINDING if cid == "catapult_narrow" and (~cat["signature"]).any()
                       else ""))
            continue
        if cat.empty:
            report.missing("catapult_signature", _CATAPULT_STATEMENT,
                           "stable catapult runs (eta > 2/lambda_0) of wide " + what, assumes=_CATAPULT_ASSUMES)
            continue
        edge_runs = g[g["phase"] == "boundary"]
        report.prediction(
            "catapult_signature", _CATAPULT_STATEMENT, predicted=1.0,
            measured={"spike": shares["catapult runs with a spike"],
                      "sharpness below 2/eta": shares["catapult runs whose sharpness fell below 2/eta"],
                      "both": shares["catapult runs with both"]},
            tolerance=f"every one of {len(cat)} runs with x = eta lambda_0 / 2 beyond the boundary's "
                      f"blur 1/(1 - d), d the sharpness drift of the lazy runs (largest "
                      f"{g['drift'].max():.2g}); sharpness at the end of the {window}-step window below "
                      f"2/eta within the hover band {band:.3g} of one probe at the edge",
            passed=bool(cat["signature"].all()), assumes=_CATAPULT_ASSUMES, figure="catapult_signature",
            note=(_misses_note(cat, band) + f"; above L_0 as well: {shares['catapult runs above L_0']:.0%}; "
                  f"{len(edge_runs)} runs at the boundary (not counted), "
                  f"{int(edge_runs['signature'].sum())} of them with the signature")[:900])
    figure_catapult(t, band, report)


# why the signature can fail on narrow networks: the finding, as the literature explains it
_CATAPULT_FINDING = (
    "Near the phase boundary a narrow network can leave the sharp region without a spike: the "
    "probe's Hessian adds to the tangent kernel's curvature a residual term of order "
    "1/sqrt(width) that decays with the residual in the first steps (in Lewkowycz et al.'s "
    "two-layer model the curvature moves per step by eta f_t^2 (eta lambda_t - 4) / n), so at 16 "
    "units the sharpness falls below 2/eta before the top mode has grown; the boundary is sharp "
    "only as the width grows.")


# --------------------------------------------------------------------------------------------
# final loss against eta (observations: no theory gives these numbers)

def u_shape_observations(summary, report):
    report.heading("Final loss against eta")
    s = summary.dropna(subset=["best_eta"])
    if s.empty:
        return
    report.observation(
        "optimal_eta",
        "Per model: the eta with the lowest median final loss among the stable etas (least squares: "
        "the upper end of the etas reaching the loss floor), as a fraction of the last stable eta",
        measured={row.model: float(row.best_band_hi / row.threshold_lo) for row in s.itertuples()},
        figure="final_loss_vs_eta",
        note="; ".join(f"{row.model}: best {row.best_eta:.3g}, loss {row.best_final_loss:.3g} against "
                       f"{row.final_loss_smallest_eta:.3g} at {row.smallest_eta:.3g}" for row in s.itertuples())[:600])
    report.observation(
        "stable_band",
        "Per model: the width in decades of the stable band on the grid (smallest eta to the last "
        "stable one)", measured={row.model: float(row.stable_decades) for row in s.itertuples()},
        figure="final_loss_vs_eta")
    report.observation(
        "outcome_shares",
        "Per model: the share of diverged and of oscillating runs over the eta axis",
        measured={f"{row.model} diverged": float(row.diverged_share) for row in s.itertuples()}
        | {f"{row.model} oscillating": float(row.oscillating_share) for row in s.itertuples()},
        figure="outcomes_vs_eta")


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


def figure_catapult(t, band, report):
    """The catapult run by run: the spike (max_t L_t / L_0) and the sharpness at the window's end
    against x = eta lambda_0 / 2, with theory's phase boundary x = 1."""
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.6))
    marks = {"lazy": ("o", "tab:green"), "boundary": ("D", "tab:gray"), "catapult": ("s", "tab:orange"),
             "divergent": ("x", "tab:red")}
    for bn, fill in ((False, True), (True, False)):
        g = t[t["batchnorm"] == bn]
        for phase, (mk, col) in marks.items():
            s = g[g["phase"] == phase]
            if s.empty:
                continue
            kw = dict(marker=mk, s=16, color=col, label=f"{phase}{' (BN)' if bn else ''}",
                      alpha=0.8, zorder=3)
            if not fill and mk != "x":
                kw.update(facecolors="none", edgecolors=col, color=None)
            ratio = np.clip(s["rise_max"], 1.0, 1e6)
            axes[0].scatter(s["edge0"], ratio, **kw)
            if phase != "divergent":
                axes[1].scatter(s["edge0"], s["edge_end"], **kw)
    # the runs of the prediction (wide, smooth, no batch norm) ringed
    pred = t[t["wide"] & t["activation"].isin(SMOOTH) & ~t["batchnorm"] & (t["phase"] != "divergent")]
    if len(pred):
        axes[0].scatter(pred["edge0"], np.clip(pred["rise_max"], 1.0, 1e6), s=60, facecolors="none",
                        edgecolors="k", lw=0.8, label="wide (the prediction's runs)", zorder=4)
        axes[1].scatter(pred["edge0"], pred["edge_end"], s=60, facecolors="none", edgecolors="k",
                        lw=0.8, label="wide (the prediction's runs)", zorder=4)
    for ax in axes:
        ax.axvline(1.0, color="k", ls="--", lw=1, label=r"theory: $\eta = 2/\lambda_0$")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(r"$x = \eta\lambda_0/2$ (log scale)")
    axes[0].axhline(1.0, color="k", lw=0.6, label="theory: 1 (no rise) for x < 1")
    axes[0].fill_between([1, max(2.0, float(t["edge0"].max()) * 1.2)], 1, 1e6, color="tab:orange",
                         alpha=0.08, label="theory: a spike for x > 1")
    axes[0].set_ylim(0.9, None)
    axes[0].set_ylabel(r"largest rise $\max_t L_t / \min_{s \leq t} L_s$ (log; clipped at $10^6$)")
    axes[0].set_title("the spike: only beyond 2/lambda_0", fontsize=9)
    xs = np.geomspace(max(float(t["edge0"].min()), 1e-3), 1.0, 50)
    axes[1].plot(xs, xs, "k-", lw=1, label=r"lazy: $\lambda = \lambda_0$")
    axes[1].fill_between([1, max(2.0, float(t["edge0"].max()) * 1.2)], 1e-3, 1 + band,
                         color="tab:orange", alpha=0.12, label=f"catapult: below 2/eta (+ hover {band:.2g})")
    axes[1].set_ylim(max(1e-3, float(t["edge_end"].min()) / 2), float(np.nanmax(t["edge_end"])) * 2)
    axes[1].set_ylabel(r"sharpness $\times\ \eta/2$ at the window's end (log scale)")
    axes[1].set_title("the sharpness after the window", fontsize=9)
    for ax in axes:
        ax.legend(fontsize=6.5, loc="upper left")
    report.figure("catapult_signature", fig,
                  "The catapult run by run (runs recording every step; filled: no batch norm, open: "
                  "batch norm; ringed: the wide networks the prediction is made for; grey diamonds: "
                  "within the boundary's measured blur, not counted). Left: the largest rise of the loss over its running minimum against x = "
                  "eta lambda_0 / 2; theory: none in the lazy phase (x < 1, the loss decreases at every "
                  "step), a spike in the catapult phase (x > 1, shaded; predicted for wide networks). Right: sharpness * eta / 2 at the window's end; theory: unchanged in the "
                  "lazy phase (diagonal), below 1 (the edge) after a catapult (shaded).")


def figure_edge_statistic(tracked, report):
    """Each stable run that reached the edge: the mean of sharpness * eta / 2 over its last probes
    against eta, by group, with the predicted 1 and each group's mean and standard error."""
    groups = [(t, mask) for t, mask in _edge_groups(tracked) if mask.any()]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.4 * len(groups) + 0.5, 3.9), squeeze=False)
    for ax, (title, mask) in zip(axes[0], groups):
        s, mean, se, sd, _ = edge_statistic(tracked[mask])
        for i, (mm, g) in enumerate(s.groupby("model")):
            ax.scatter(g["lr"], g["edge_last"], s=14, color=_COLORS[i % len(_COLORS)], label=mm, zorder=3)
        ax.axhline(1.0, color="k", ls="--", lw=1, label="theory: 1 (2/eta)")
        if np.isfinite(sd):
            ax.axhspan(1.0, 1.0 + sd, color="tab:gray", alpha=0.15, label=f"hover band (spread {sd:.2g})")
        if np.isfinite(se):
            ax.axhspan(mean - se, mean + se, color="tab:blue", alpha=0.3, label=f"mean {mean:.3f} +- SE")
        ax.set_xscale("log")
        ax.set_xlabel(r"learning rate $\eta$ (log scale)")
        ax.set_title(f"{title} ({len(s)} runs)", fontsize=9)
        ax.legend(fontsize=6, loc="upper left")
    axes[0][0].set_ylabel(r"mean of sharpness $\times\ \eta/2$ over the last probes")
    report.figure("edge_statistic", fig,
                  "The edge of stability: for every stable run that reached the edge, the mean of "
                  f"sharpness * eta / 2 over its probes at or after {LAST_PROBES_FROM:.0%} of the steps "
                  "(points), against the prediction 1 (dashed) with the hover band above it (grey) and "
                  "the group's mean +- one standard error (blue). The prediction is made for smooth "
                  "activations without batch norm; the other panels are observations.")


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
    ax.fill_between(xs, lo, xs, color="tab:red", alpha=0.08, label="excluded by the lazy phase")
    ax.plot(xs, xs, "k-", lw=1, label="measured = 2/lambda_0 (lazy-phase bound)")
    ax.plot(xs, 2 * xs, "k:", lw=1, label="4/lambda_0 (wide two-layer linear net)")
    ax.plot(xs, 6 * xs, "k-.", lw=1, label="12/lambda_0 (wide ReLU nets)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(r"predicted lower bound $2/\lambda_0$ (log scale)")
    ax.set_ylabel(r"measured divergence threshold $\eta_{max}$ (log scale)")
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    report.figure("threshold_vs_prediction", fig,
                  "Measured divergence threshold eta_max (geometric mean of the last stable and first "
                  "unstable eta; bars: the bracket) against 2/lambda_0 per model and seed: the lazy "
                  "phase predicts every point on or above the diagonal; the wide-network constants of "
                  "the catapult's end (dotted, dash-dotted) are drawn for reference. The star is least "
                  "squares against 2/lambda_max of its exact Hessian.")


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
        if g.empty:                                   # no stable probed run of this seed
            ax.set_title(f"{mm} (seed {seed0}: no stable run)", fontsize=8)
            continue
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
    """The lr-sensitivity study's statements, figures and tables (see the module docstring)."""
    data = of_kind(data, "mlp")
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
    # the final-loss figures and tables: least squares pooled, MLPs on their long runs
    shown = pd.concat([r[_is_ls(r)], long_runs(r[_is_mlp(r)])]) if _is_mlp(r).any() else r[_is_ls(r)]
    summary = pd.DataFrame(ls_rows + mlp_rows)
    if len(summary):
        u_shape_observations(summary, report)
        report.table(summary[["model", "runs", "predicted_threshold", "threshold_lo", "threshold_hi",
                              "ratio_to_prediction", "best_eta", "best_final_loss", "stable_decades",
                              "diverged_share", "oscillating_share"]],
                     "Per model (pooled over seeds): predicted threshold (2/lambda_max or 2/lambda_0), "
                     "the measured bracket, the best eta and its median final loss, the width of the "
                     "stable band on the grid in decades, shares of diverged and oscillating runs")
        figure_final_loss(shown, summary, report)
    figure_threshold(ls_rows, cases, report)
    if "sharpness" in data.columns:
        figure_edge(data, shown, report)
    figure_outcomes(shown, report)
