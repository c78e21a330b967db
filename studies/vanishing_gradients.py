r"""The vanishing-gradients study: per-layer gradient norms of deep MLPs against theory.

Runs are recognised by their rows (not by sub-grid names):

* **mean-field runs**: ``init = "normal"`` (weights :math:`N(0, \sigma_w^2/\text{fan\_in})`,
  ``init_scale`` = :math:`\sigma_w`, biases :math:`N(0, \sigma_b^2)`, ``bias_scale`` =
  :math:`\sigma_b`), no batch norm, **one** input (``data_n = 1``), depth >= 8, step 0. With one
  input, :math:`\partial L/\partial W_l = a_{l-1} \otimes \delta_l` exactly, so
  :math:`\|\delta_l\| = \|\partial L/\partial W_l\| / \|a_{l-1}\|` (:math:`\|a_{l-1}\|` from the
  stored ``act_mean``/``act_std`` of layer l-1), and :math:`\|\delta_l\|^2` is what
  :math:`\chi_1` multiplies per layer (Schoenholz et al. 2017). With a batch, the gradient sums
  cross-sample terms :math:`(a_s \cdot a_{s'})(\delta_s \cdot \delta_{s'})` that evolve with the
  correlation map's factor, not :math:`\chi_1`, and dividing by :math:`\|a_{l-1}\|` removes the
  forward signal's own depth trend (for bias-free relu or tanh with :math:`q^* = 0` it cancels
  :math:`\chi_1` exactly); so the mean-field comparison uses one input per network and averages
  over seeds (the weights are the random variable of mean field).
  The measured slope is :math:`-d \ln\|\delta_l\|/dl` (growth per layer moving towards the
  input), fitted over the middle layers ``fit_layers(D)``; predicted
  :math:`\ln\sqrt{\chi_1}` (``theory.log_gradient_growth``).
* **pairing runs**: everything else at step 0 with a batch (``data_n > 1``): the ratio
  :math:`R = \|\partial L/\partial W_1\| / \|\partial L/\partial W_L\|` by depth, activation,
  initialisation and batch norm.
* **training runs**: runs with ``steps > 1``: the same quantities at later recorded steps.
* **sigmoid bound**: every sigmoid network without batch norm trained with ``mse`` (identity
  output), at every recorded step and every layer l:

  .. math::
      \frac{\|\partial L/\partial W_l\|_F}{\|A_{l-1}\|_F\, \|\Delta_L\|_F}
      \le \Big(\tfrac14\Big)^{L-l} \prod_{k=l+1}^{L} \|W_k\|_F

  since :math:`\Delta_{k-1} = (\Delta_k W_k^T) \odot \sigma'(Z_{k-1})`, :math:`\sigma' \le 1/4`,
  :math:`\|W\|_2 \le \|W\|_F` and :math:`\|A^T\Delta\|_F \le \|A\|_2 \|\Delta\|_F`; here
  :math:`\Delta_L = 2R/(nk)` for MSE, so :math:`\|\Delta_L\|_F = 2\sqrt{\text{loss}/(nk)}`, and
  :math:`\|A_{l-1}\|_F^2 = n\, \text{fan\_in}\, (\text{act\_std}^2 + \text{act\_mean}^2)` (the data
  matrix X for l = 1). The right side is ``theory.sigmoid_gradient_bound(L - l, norms)`` with
  the stored Frobenius norms (an upper bound of the spectral norms the theorem uses).
"""
import functools
import math

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd

from . import runner, theory
from . import spec as specmod

NAME = "vanishing-gradients"
TITLE = "Vanishing and exploding gradients: the sigmoid bound, mean field, initialisation, batch norm"
SUMMARY = ("Per-layer gradient norms ||dL/dW_l|| of deep MLPs at initialisation and during training, "
           "by depth, activation, initialisation and batch norm; the sigmoid bound sigma' <= 1/4; the "
           "per-layer gradient growth against the mean-field ln sqrt(chi_1) and the edge of chaos.")

# Band of "no depth trend": the ratio R_D / R_2 (first-to-last layer gradient ratio at depth D
# over that of the depth-2 network of the same pairing, so the input/output boundary factors
# cancel) within one decade of 1. Over D - 2 extra layers that allows a per-layer factor
# exp(+-ln(10)/(D-2)) (about e^{+-0.13} at D = 20), i.e. |ln sqrt(chi_1)| below that: tanh with
# sigma_w^2 in roughly [0.8, 2.5] is inside, sigmoid with any of the standard inits is far out.
BAND_DECADES = 1.0
# Slope tolerance of the mean-field comparison: finite width makes E ln||delta|| drift below
# ln sqrt(E||delta||^2) by O(1/N) per layer (Jensen; for relu the per-layer factor has
# Var/E^2 = 5/N, a drift of 5/(4N)); we allow twice that, 2.5/N, plus 3 standard errors of the
# seed mean, plus the computed finite-depth term |slope(q^l trajectory) - slope(q*)|.
FINITE_WIDTH_C = 2.5
MIN_CORRELATION = 0.95
# rounding slack of the sigmoid bound (a true bound: measured/bound <= 1 up to float rounding)
BOUND_RTOL = 1e-9
MIN_DEPTH_MF = 8


# --------------------------------------------------------------------------------------------
# row selection

def _runs(rows):
    return rows.drop_duplicates("point").set_index("point", drop=False)


def meanfield_rows(data):
    m = ((data["init"] == "normal") & (~data["batchnorm"].astype(bool)) & (data["data_n"] == 1)
         & (data["depth"] >= MIN_DEPTH_MF) & (data["step"] == 0))
    return data[m]


def pairing_rows(data):
    return data[(data["data_n"] > 1) & (data["steps"] == 1) & (data["step"] == 0)]


def training_rows(data):
    return data[data["steps"] > 1]


def sigmoid_bound_rows(data):
    return data[(data["activation"] == "sigmoid") & (~data["batchnorm"].astype(bool))
                & (data["loss_fn"] == "mse")]


def _rms_act(rows):
    return np.sqrt(rows["act_std"].to_numpy() ** 2 + rows["act_mean"].to_numpy() ** 2)


def _sizes(point):
    """Layer sizes [d_in, hidden..., d_out] and the data (X, y) of a grid point (from the spec)."""
    X, y = runner.make_data(point["data"], point["data_args"])[:2]
    return runner.sizes_of(point, X, y), X, y


# --------------------------------------------------------------------------------------------
# mean field

def fit_layers(depth):
    """Layers l fitted for the slope: away from the input (q relaxing towards q*, the small
    fan-in of W_1) and from the output (fan-out 1)."""
    lo = max(3, depth // 5 + 1)
    hi = depth - max(2, depth // 10)
    return np.arange(lo, hi + 1)


@functools.lru_cache(maxsize=None)
def _pred_slope(act, sw2, sb2):
    return theory.log_gradient_growth(act, sw2, sb2)


@functools.lru_cache(maxsize=None)
def _finite_depth_slope(act, sw2, sb2, q0, depth):
    """The same least-squares slope, of the mean-field ln||delta_l|| along the finite-depth
    variance trajectory q^l (first layer's q^1 = q0) instead of q*."""
    layers = fit_layers(depth)
    qs = theory.variance_trajectory(act, sw2, sb2, q0, depth - 1)   # qs[l-1] = Var z_l
    # ln||delta_l|| - ln||delta_{l+1}|| = 1/2 ln chi_1(q^l)
    u = np.zeros(depth + 1)
    for l in range(depth - 1, 0, -1):
        c = theory.chi_1(act, sw2, sb2, q=float(min(qs[l - 1], 1e300)))
        u[l] = u[l + 1] + (0.5 * math.log(c) if c > 0 else -np.inf)
    return float(-np.polyfit(layers, u[layers], 1)[0])


def meanfield_slopes(data, points):
    """One row per mean-field network: its measured slope over ``fit_layers``."""
    rows = meanfield_rows(data)
    out = []
    for point, r in rows.groupby("point", sort=True):
        r = r.sort_values("layer")
        run = r.iloc[0]
        D = int(run["depth"])
        sizes, X, _ = _sizes(points[int(point)])
        g = r["grad_norm"].to_numpy()
        norm_a = np.empty(D)          # ||a_{l-1}|| for l = 1..D
        norm_a[0] = np.linalg.norm(X[0])
        norm_a[1:] = _rms_act(r)[:-1] * np.sqrt(np.asarray(sizes[1:-1], float))
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.log(g) - np.log(norm_a)
        layers = fit_layers(D)
        uu = u[layers - 1]
        slope = float(-np.polyfit(layers, uu, 1)[0]) if np.isfinite(uu).all() else np.nan
        sw2 = float(run["init_scale"]) ** 2
        sb2 = float(run["bias_scale"]) ** 2
        q0 = sw2 * float(X[0] @ X[0]) / X.shape[1] + sb2
        out.append({"point": point, "activation": run["activation"], "sigma_w2": sw2, "sigma_b2": sb2,
                    "depth": D, "width": sizes[1], "seed": run["seed"], "slope": slope, "q0": q0})
    return pd.DataFrame(out)


def meanfield_summary(slopes):
    """Seed means per (activation, sigma_b2, depth, sigma_w2), with theory beside them."""
    if slopes.empty:
        return slopes
    keys = ["activation", "sigma_b2", "depth", "sigma_w2"]
    s = (slopes.groupby(keys).agg(slope=("slope", "mean"), sd=("slope", "std"), seeds=("slope", "size"),
                                  width=("width", "min"), q0=("q0", "mean"))
         .reset_index())
    s["se"] = s["sd"].fillna(0.0) / np.sqrt(s["seeds"])
    s["predicted"] = [_pred_slope(a, w, b) for a, w, b in zip(s["activation"], s["sigma_w2"], s["sigma_b2"])]
    s["finite_depth"] = [_finite_depth_slope(a, w, b, round(q, 12), int(d)) for a, w, b, q, d in
                         zip(s["activation"], s["sigma_w2"], s["sigma_b2"], s["q0"], s["depth"])]
    s["error"] = s["slope"] - s["predicted"]
    s["tolerance"] = (3 * s["se"] + FINITE_WIDTH_C / s["width"]
                      + (s["finite_depth"] - s["predicted"]).abs())
    s["within"] = s["error"].abs() <= s["tolerance"]
    return s


def zero_crossing(x, y):
    """The first x where y (sorted by x) goes from < 0 to >= 0, linearly interpolated; NaN if none."""
    order = np.argsort(x)
    x, y = np.asarray(x, float)[order], np.asarray(y, float)[order]
    for i in range(len(x) - 1):
        if np.isfinite(y[i]) and np.isfinite(y[i + 1]) and y[i] < 0 <= y[i + 1]:
            return float(x[i] + (x[i + 1] - x[i]) * (0 - y[i]) / (y[i + 1] - y[i]))
    return math.nan


def crossing_interval(act, sb2, lo, hi, eps, n=241):
    """The sigma_w^2 in [lo, hi] around the critical point where the predicted slope is within
    +-eps of 0: the resolution with which a slope measured to +-eps locates the crossing."""
    crit = theory.critical_sigma_w2(act, sb2)
    grid = np.unique(np.concatenate([np.geomspace(lo, hi, n), [crit]]))
    pred = np.array([_pred_slope(act, float(w), sb2) for w in grid])
    inside = np.abs(pred) <= eps
    i = int(np.argmin(np.abs(grid - crit)))
    a = b = i
    while a > 0 and inside[a - 1]:
        a -= 1
    while b < len(grid) - 1 and inside[b + 1]:
        b += 1
    return float(grid[a]), float(grid[b]), crit


# --------------------------------------------------------------------------------------------
# pairings

def _label(run):
    if run["init"] == "normal":
        return f"normal sigma_w^2={float(run['init_scale']) ** 2:.3g}"
    return str(run["init"])


def pairing_ratios(data):
    """One row per pairing network (step 0): R = ||dL/dW_1|| / ||dL/dW_L||."""
    rows = pairing_rows(data)
    if rows.empty:
        return pd.DataFrame()
    first = rows[rows["layer"] == 1].set_index("point")["grad_norm"]
    last = rows[rows["layer"] == rows["depth"]].set_index("point")["grad_norm"]
    runs = _runs(rows)
    out = runs[["point", "activation", "init", "init_scale", "bias_scale", "batchnorm", "depth", "seed"]].copy()
    out["batchnorm"] = out["batchnorm"].astype(bool)
    out["g1"] = first.reindex(out.index).to_numpy()
    out["gL"] = last.reindex(out.index).to_numpy()
    out["ratio"] = out["g1"] / out["gL"]
    out["pairing"] = [_label(r) for _, r in out.iterrows()]
    return out.reset_index(drop=True)


def _gmean(x):
    x = np.asarray(x, float)
    return float(np.exp(np.mean(np.log(x)))) if len(x) and (x > 0).all() else math.nan


def pairing_table(ratios):
    """Geometric mean of R over seeds per (activation, pairing, batchnorm, depth), and R_D/R_2."""
    t = (ratios.groupby(["activation", "pairing", "init", "init_scale", "batchnorm", "depth"])["ratio"]
         .agg(_gmean).rename("ratio").reset_index())
    base = t[t["depth"] == t["depth"].min()].set_index(["activation", "pairing", "batchnorm"])["ratio"]
    t["relative"] = t["ratio"].to_numpy() / base.reindex(
        pd.MultiIndex.from_frame(t[["activation", "pairing", "batchnorm"]])).to_numpy()
    return t


def depth_slope(t):
    """d ln R / d depth per (activation, pairing, batchnorm): least squares over the depths."""
    out = []
    for (a, p, bn), g in t.groupby(["activation", "pairing", "batchnorm"]):
        g = g[np.isfinite(np.log(g["ratio"]))]
        s = float(np.polyfit(g["depth"], np.log(g["ratio"]), 1)[0]) if len(g) >= 2 else math.nan
        out.append({"activation": a, "pairing": p, "batchnorm": bn, "slope_per_layer": s})
    return pd.DataFrame(out)


# --------------------------------------------------------------------------------------------
# sigmoid bound

def sigmoid_bound_table(data, points):
    """Every (network, recorded step, layer) of sigmoid networks without batch norm (mse):
    the measured ratio ||dW_l|| / (||A_{l-1}||_F ||Delta_L||_F) and its bound."""
    rows = sigmoid_bound_rows(data)
    out = []
    for point, r in rows.groupby("point", sort=True):
        run = r.iloc[0]
        sizes, X, y = _sizes(points[int(point)])
        n, k = X.shape[0], sizes[-1]
        D = int(run["depth"])
        normX = float(np.linalg.norm(X))
        fan_in = np.asarray(sizes[:-1], float)
        for step, s in r.groupby("step", sort=True):
            s = s.sort_values("layer")
            if len(s) != D:
                continue
            g = s["grad_norm"].to_numpy()
            wn = s["weight_norm"].to_numpy()
            normA = np.empty(D)
            normA[0] = normX
            normA[1:] = _rms_act(s)[:-1] * np.sqrt(n * fan_in[1:])
            dL = 2.0 * math.sqrt(float(s["loss"].iloc[0]) / (n * k))
            for l in range(1, D + 1):
                denom = normA[l - 1] * dL
                meas = g[l - 1] / denom if denom > 0 else math.nan
                bound = theory.sigmoid_gradient_bound(D - l, wn[l:])
                out.append({"point": point, "step": int(step), "layer": l, "depth": D, "init": run["init"],
                            "measured": meas, "bound": bound, "layers_crossed": D - l})
    return pd.DataFrame(out)


# --------------------------------------------------------------------------------------------
# claims

def _claim_sigmoid_bound(report, data, points):
    t = sigmoid_bound_table(data, points)
    if t.empty:
        report.claim("sigmoid_bound", "sigmoid bound", "measured <= bound", "no runs", "-", False,
                     "no sigmoid networks without batch norm trained with mse in this grid")
        return t
    t = t[np.isfinite(t["measured"]) & (t["bound"] > 0)]
    q = t["measured"] / t["bound"]
    worst = float(q.max())
    deep = t[t["layers_crossed"] >= 1]
    report.claim(
        "sigmoid_bound",
        "Sigmoid bound (sigma' <= 1/4): for every sigmoid network without batch norm (mse), every "
        "recorded step and every layer l, ||dL/dW_l||_F / (||A_{l-1}||_F ||dL/dz_L||_F) <= "
        "(1/4)^(L-l) prod_{k>l} ||W_k||_F",
        "max measured/bound <= 1", round(worst, 6), f"measured/bound <= 1 + {BOUND_RTOL:g} (rounding)",
        worst <= 1 + BOUND_RTOL,
        f"{len(t)} comparisons ({t['point'].nunique()} networks, steps {t['step'].min()}-{t['step'].max()}); "
        f"max measured/bound over layers crossing >= 1 sigmoid layer: "
        f"{float((deep['measured'] / deep['bound']).max()) if len(deep) else math.nan:.3g}, median: "
        f"{float((deep['measured'] / deep['bound']).median()) if len(deep) else math.nan:.3g} "
        "(Frobenius norms of W bound the spectral norms the theorem uses, so the bound is loose)")
    return t


def _claims_meanfield(report, summ):
    if summ.empty:
        report.claim("mf_slope", "mean-field slope", "ln sqrt(chi_1)", "no runs", "-", False,
                     "no single-input normal-init runs in this grid")
        return {}
    r = float(np.corrcoef(summ["slope"], summ["predicted"])[0, 1]) if len(summ) > 2 else math.nan
    max_err = float(summ["error"].abs().max())
    n_in = int(summ["within"].sum())
    worst = summ.loc[summ["error"].abs().idxmax()]
    report.claim(
        "mf_slope",
        "Mean field: the measured per-layer slope of ln||delta_l|| (fit over the middle layers at "
        "initialisation, averaged over seeds) equals ln sqrt(chi_1) over the sigma_w^2 x depth sweep",
        f"r >= {MIN_CORRELATION}, |error| <= tolerance at every point",
        {"correlation": round(r, 4), "max_abs_error": round(max_err, 4),
         "points_within": f"{n_in}/{len(summ)}"},
        f"per point: 3 SE + {FINITE_WIDTH_C}/width + |finite-depth - q* prediction|",
        (r >= MIN_CORRELATION) and n_in == len(summ),
        f"largest error {worst['error']:+.4f} (tolerance {worst['tolerance']:.4f}) at {worst['activation']} "
        f"sigma_w^2={worst['sigma_w2']:.3g}, sigma_b^2={worst['sigma_b2']:.3g}, depth {int(worst['depth'])}")
    crossings = {}
    for (act, sb2), g in summ.groupby(["activation", "sigma_b2"]):
        D = int(g["depth"].max())
        gd = g[g["depth"] == D]
        cross = zero_crossing(gd["sigma_w2"], gd["slope"])
        eps = FINITE_WIDTH_C / float(gd["width"].min()) + 3 * float(gd["se"].mean())
        lo, hi, crit = crossing_interval(act, sb2, float(gd["sigma_w2"].min()), float(gd["sigma_w2"].max()), eps)
        fd = zero_crossing(gd["sigma_w2"], gd["finite_depth"])
        crossings[(act, sb2)] = (cross, crit, lo, hi)
        report.claim(
            f"mf_crossing_{act}_sb2_{sb2:g}",
            f"Order-to-chaos crossing, {act}, sigma_b^2 = {sb2:g}: the sigma_w^2 where the measured "
            f"slope crosses 0 (depth {D}, interpolated) sits at the predicted critical sigma_w^2 (chi_1 = 1)",
            round(crit, 4), round(cross, 4) if np.isfinite(cross) else "no crossing",
            f"within [{lo:.3g}, {hi:.3g}]: where |predicted slope| <= {eps:.3f} (slope resolution)",
            bool(np.isfinite(cross) and lo <= cross <= hi),
            f"finite-depth mean-field crossing (q^l trajectory instead of q*): "
            f"{fd:.3g}; sweep {gd['sigma_w2'].min():.3g}-{gd['sigma_w2'].max():.3g} in {len(gd)} values")
    return crossings


def _claims_pairings(report, table, slopes):
    if table.empty:
        for cid in ("pair_tanh_glorot", "pair_relu_he", "pair_sigmoid_uniform", "bn_flattens_vanishing",
                    "bn_flat_everywhere"):
            report.claim(cid, cid, "-", "no runs", "-", False, "no pairing runs in this grid")
        return
    D = int(table["depth"].max())
    lo, hi = 10.0 ** -BAND_DECADES, 10.0 ** BAND_DECADES
    band = f"R_{D}/R_2 in [{lo:g}, {hi:g}]"
    no_bn = table[(~table["batchnorm"]) & (table["depth"] == D)].set_index(["activation", "pairing"])
    for act, init, inside, text in (("tanh", "glorot", True, "Glorot keeps tanh roughly stable across depth"),
                                    ("relu", "he", True, "He keeps relu stable across depth"),
                                    ("sigmoid", "uniform", False,
                                     "small uniform U[+-1/sqrt(fan_in)] collapses sigmoid")):
        key = (act, init)
        if key not in no_bn.index:
            report.claim(f"pair_{act}_{init}", text, band, "no runs", "-", False, "pairing not in this grid")
            continue
        rel = float(no_bn.loc[key, "relative"])
        ok = lo <= rel <= hi
        note = (f"R = ||dL/dW_1||/||dL/dW_L||, geometric mean over seeds, no batch norm: "
                f"R_{D} = {no_bn.loc[key, 'ratio']:.3g}, relative to depth 2: {rel:.3g}")
        if act == "relu":
            note += ("; with zero biases a relu net is positively homogeneous, so R does not depend on the "
                     "weight scale at all (every relu init is flat in R; the scale sets the absolute size)")
        report.claim(f"pair_{act}_{init}", f"{text}: at depth {D}, R relative to depth 2 is "
                     f"{'inside' if inside else 'below'} the band", band if inside else f"R_{D}/R_2 < {lo:g}",
                     round(rel, 6) if rel > 1e-4 else float(f"{rel:.3g}"),
                     f"one decade either side of 1 over {D - 2} extra layers", ok if inside else rel < lo, note)

    # batch norm: depth dependence = d ln R / d depth, with and without
    sl = slopes.pivot_table(index=["activation", "pairing"], columns="batchnorm", values="slope_per_layer")
    if True not in sl.columns or False not in sl.columns:
        report.claim("bn_flattens_vanishing", "batch norm flattens", "-", "no batch-norm pairs", "-", False,
                     "the grid has no pairing both with and without batch norm")
        return
    sl = sl.dropna()
    rel = table[table["depth"] == D].pivot_table(index=["activation", "pairing"], columns="batchnorm",
                                                  values="relative").reindex(sl.index)
    vanishing = rel[False] < lo
    limit = math.log(10.0) * BAND_DECADES / (D - 2)
    v = sl[vanishing]
    ok_v = bool(len(v)) and bool((v[True].abs() <= limit).all())
    report.claim(
        "bn_flattens_vanishing",
        "Batch norm flattens the depth dependence of the pairings that vanish without it: "
        "|d ln R/d depth| with batch norm within the band's per-layer rate",
        f"|slope| <= ln(10)/(D-2) = {limit:.3f} per layer",
        {"pairings": int(len(v)), "max_abs_slope_bn": round(float(v[True].abs().max()), 4) if len(v) else "none",
         "median_abs_slope_without": round(float(v[False].abs().median()), 4) if len(v) else "none"},
        "slope of ln R against depth (least squares over the depths, seed geometric means)", ok_v,
        "pairings with R_D/R_2 < 0.1 without batch norm: " + ", ".join(f"{a}/{p}" for a, p in v.index))
    worst = sl[True].abs().idxmax()
    ok_all = bool((sl[True].abs() <= limit).all())
    report.claim(
        "bn_flat_everywhere",
        "Batch norm flattens the depth dependence for every pairing: |d ln R/d depth| with batch norm "
        "within the band's per-layer rate",
        f"|slope| <= {limit:.3f} per layer", {"max_abs_slope_bn": round(float(sl[True].abs().max()), 4),
                                              "at": f"{worst[0]}/{worst[1]}",
                                              "pairings_within": f"{int((sl[True].abs() <= limit).sum())}/{len(sl)}"},
        "as above", ok_all,
        "batch norm itself makes gradients grow exponentially with depth at initialisation (Yang et al. "
        "2019, 'A mean field theory of batch normalization'): R grows with depth for relu and tanh; "
        f"measured d ln R/d depth with batch norm: " + ", ".join(
            f"{a}/{p} {s:+.3f}" for (a, p), s in sl[True].items() if a != "sigmoid" and p in ("glorot", "he")))


# --------------------------------------------------------------------------------------------
# figures

ACTS = ("sigmoid", "tanh", "relu")


def _log_x(ax):
    """Log x axis with plain tick labels at 1/8, 1/4, ..., 8."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(mticker.FixedLocator([0.125, 0.25, 0.5, 1, 2, 4, 8, 16]))
    ax.xaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())


def _fig_grad_by_layer(report, data):
    rows = pairing_rows(data)
    if rows.empty:
        return
    D = int(rows["depth"].max())
    rows = rows[rows["depth"] == D]
    acts = [a for a in ACTS if a in set(rows["activation"])]
    fig, axes = plt.subplots(2, len(acts), figsize=(4.6 * len(acts), 7.5), squeeze=False, sharex=True)
    for j, act in enumerate(acts):
        for i, bn in enumerate((False, True)):
            ax = axes[i, j]
            sub = rows[(rows["activation"] == act) & (rows["batchnorm"].astype(bool) == bn)]
            for (init, sc), g in sub.groupby(["init", "init_scale"]):
                lab = _label({"init": init, "init_scale": sc})
                prof = g.groupby("layer")["grad_norm"].agg(_gmean)
                style = "-" if init != "normal" else ":"
                ax.plot(prof.index, prof.to_numpy(), style, marker="o", ms=2.5, label=lab)
            ax.set_yscale("log")
            ax.set_title(f"{act}, {'with' if bn else 'no'} batch norm, depth {D}")
            ax.set_xlabel("layer l (1 = input layer, L = output)")
            if j == 0:
                ax.set_ylabel("||dL/dW_l|| at initialisation (log)")
            ax.grid(alpha=0.3, which="both")
            if len(sub):
                ax.legend(fontsize=7)
    fig.tight_layout()
    report.figure("grad_norm_by_layer", fig,
                  f"Gradient norm ||dL/dW_l|| by layer at initialisation for each activation/initialisation "
                  f"pairing (depth {D}, geometric mean over seeds); top without, bottom with batch norm.")


def _fig_meanfield(report, summ, crossings):
    if summ.empty:
        return
    fams = list(summ.groupby(["activation", "sigma_b2"]).groups)
    fig, axes = plt.subplots(1, len(fams), figsize=(4.8 * len(fams), 4.4), squeeze=False)
    for ax, (act, sb2) in zip(axes[0], fams):
        g = summ[(summ["activation"] == act) & (summ["sigma_b2"] == sb2)]
        grid = np.geomspace(g["sigma_w2"].min(), g["sigma_w2"].max(), 160)
        ax.plot(grid, [_pred_slope(act, float(w), sb2) for w in grid], "k-", lw=1.5,
                label="mean field ln sqrt(chi_1)")
        for D, gd in g.groupby("depth"):
            ax.errorbar(gd["sigma_w2"], gd["slope"], yerr=gd["se"], fmt="o", ms=4, capsize=2,
                        label=f"measured, depth {D}")
        cross, crit, lo, hi = crossings.get((act, sb2), (math.nan,) * 4)
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(crit, color="k", ls="--", lw=1, label=f"predicted critical {crit:.3g}")
        if np.isfinite(lo):
            ax.axvspan(lo, hi, color="k", alpha=0.07, label="slope resolution")
        if np.isfinite(cross):
            ax.plot([cross], [0], "rx", ms=10, mew=2, label=f"measured crossing {cross:.3g}")
        _log_x(ax)
        ax.set_xlabel("sigma_w^2 = fan_in x Var(W) (log scale)")
        ax.set_ylabel("slope of ln||delta_l|| per layer (towards input)")
        ax.set_title(f"{act}, sigma_b^2 = {sb2:g}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    report.figure("meanfield_slope", fig,
                  "Measured per-layer slope of ln||delta_l|| (one input per network, mean +- SE over seeds, "
                  "middle layers) against sigma_w^2, with the mean-field ln sqrt(chi_1) (line), the "
                  "predicted critical sigma_w^2 (dashed) and the measured zero crossing (cross).")


def _fig_ratio_depth(report, table):
    if table.empty:
        return
    acts = [a for a in ACTS if a in set(table["activation"])]
    fig, axes = plt.subplots(1, len(acts), figsize=(4.8 * len(acts), 6.2), squeeze=False)
    for ax, act in zip(axes[0], acts):
        sub = table[table["activation"] == act]
        for k, (p, g) in enumerate(sub.groupby("pairing")):
            color = f"C{k}"
            for bn, gb in g.groupby("batchnorm"):
                ax.plot(gb["depth"], gb["ratio"], "--" if bn else "-", marker="o", ms=3, color=color,
                        label=f"{p}{' + BN' if bn else ''}")
        ax.set_yscale("log")
        ax.axhspan(10.0 ** -BAND_DECADES, 10.0 ** BAND_DECADES, color="g", alpha=0.06)
        ax.set_xlabel("depth L (weight layers)")
        ax.set_ylabel("||dL/dW_1|| / ||dL/dW_L|| (log)")
        ax.set_title(act)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    report.figure("ratio_vs_depth", fig,
                  "First-to-last layer gradient ratio at initialisation against depth, without (solid) and "
                  "with (dashed) batch norm; geometric mean over seeds; shaded: [0.1, 10].")


def _fig_saturation(report, data):
    rows = pairing_rows(data)
    tr = training_rows(data)
    if rows.empty:
        return
    D = int(rows["depth"].max())
    rows = rows[(rows["depth"] == D) & ~rows["batchnorm"].astype(bool) & (rows["layer"] < D)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), squeeze=False)
    ax = axes[0, 0]
    for act in ACTS:
        sub = rows[rows["activation"] == act]
        if sub.empty:
            continue
        sat = sub.groupby(["init", "init_scale"])["saturated"].mean().reset_index()
        normal = sat[sat["init"] == "normal"].sort_values("init_scale")
        if len(normal):
            ax.plot(normal["init_scale"] ** 2, normal["saturated"], "-", color=f"C{ACTS.index(act)}",
                    label=f"{act}, normal")
        for _, r in sat[sat["init"] != "normal"].iterrows():
            w = int(str(sub["widths"].iloc[0]).split("-")[0])
            x = theory.sigma_w2_of_init(r["init"], w, scale=float(r["init_scale"]))
            ax.plot([x], [r["saturated"]], "osd"[["uniform", "glorot", "he"].index(r["init"]) % 3],
                    color=f"C{ACTS.index(act)}", ms=6, label=f"{act}, {r['init']}")
    _log_x(ax)
    ax.set_xlabel("sigma_w^2 = fan_in x Var(W) of the hidden layers (log)")
    ax.set_ylabel("fraction of hidden units with |f'(z)| < 0.01")
    ax.set_title(f"at initialisation, depth {D}, no batch norm")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, ncol=3)
    ax = axes[0, 1]
    if not tr.empty:
        hid = tr[tr["layer"] < tr["depth"]]
        for (act, init, bn), g in hid.groupby(["activation", "init", hid["batchnorm"].astype(bool)]):
            prof = g.groupby("step")["saturated"].mean()
            ax.plot(prof.index, prof.to_numpy(), "--" if bn else "-", color=f"C{ACTS.index(act)}",
                    marker="osd"[["uniform", "glorot", "he", "lecun", "normal"].index(init) % 3], ms=3,
                    label=f"{act}/{init}{' + BN' if bn else ''}")
        ax.set_title(f"during training (mean over hidden layers, depths {sorted(set(tr['depth']))})")
        ax.legend(fontsize=6, ncol=3)
    ax.set_xlabel("step")
    ax.set_ylabel("fraction saturated")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    report.figure("saturation", fig,
                  "Saturated units (|f'| < 0.01: sigmoid/tanh in their flat tails, relu units that are off; "
                  "relu sits at 1/2 by symmetry) at initialisation against sigma_w^2 (lines: normal init; "
                  "markers: uniform, Glorot, He), and during training (right; dashed: batch norm).")


def _fig_training(report, data):
    tr = training_rows(data)
    if tr.empty:
        return
    acts = [a for a in ACTS if a in set(tr["activation"])]
    steps = np.sort(tr["step"].unique())
    show = sorted({int(steps[0]), int(steps[len(steps) // 2]), int(steps[-1])})
    fig, axes = plt.subplots(2, len(acts), figsize=(4.6 * len(acts), 7.5), squeeze=False)
    for j, act in enumerate(acts):
        for i, bn in enumerate((False, True)):
            ax = axes[i, j]
            sub = tr[(tr["activation"] == act) & (tr["batchnorm"].astype(bool) == bn)]
            for k, (init, g) in enumerate(sub.groupby("init")):
                for m, st in enumerate(show):
                    prof = g[g["step"] == st].groupby("layer")["grad_norm"].agg(_gmean)
                    if len(prof):
                        ax.plot(prof.index, prof.to_numpy(), ["-", "--", ":"][m], color=f"C{k}",
                                label=f"{init}, step {st}")
            ax.set_yscale("log")
            ax.set_title(f"{act}, {'with' if bn else 'no'} batch norm (training)")
            ax.set_xlabel("layer l")
            if j == 0:
                ax.set_ylabel("||dL/dW_l|| (log)")
            ax.grid(alpha=0.3, which="both")
            if len(sub):
                ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    report.figure("training_grad_norm", fig,
                  "Gradient norm by layer during full-batch gradient descent (first, middle and last "
                  "recorded step; geometric mean over seeds); steps after a divergence are absent.")


def _fig_sigmoid_bound(report, t):
    if t.empty:
        return
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    sc = ax.scatter(t["bound"], t["measured"], c=t["layers_crossed"], s=6, cmap="viridis")
    lim = [min(t["bound"].min(), t["measured"][t["measured"] > 0].min()), max(t["bound"].max(), t["measured"].max())]
    ax.plot(lim, lim, "k-", lw=1, label="measured = bound")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bound (1/4)^(L-l) prod ||W_k||_F (log)")
    ax.set_ylabel("||dW_l|| / (||A_{l-1}|| ||dL/dz_L||) (log)")
    fig.colorbar(sc, label="sigmoid layers crossed L - l")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    report.figure("sigmoid_bound", fig,
                  "Sigmoid networks (no batch norm), every layer and recorded step: measured normalised "
                  "gradient against the sigma' <= 1/4 bound; every point must lie below the line.")


# --------------------------------------------------------------------------------------------

def analyse(data, spec, report):
    points = {p["point"]: p for p in specmod.expand(spec)}
    data = data[data["kind"] == "mlp"].copy()
    # samples per network, from the data each point trained on
    n_of = {k: _sizes(p)[1].shape[0] for k, p in points.items() if p["kind"] == "mlp"}
    data["data_n"] = data["point"].map(n_of).astype(int)

    t_bound = _claim_sigmoid_bound(report, data, points)
    summ = meanfield_summary(meanfield_slopes(data, points))
    crossings = _claims_meanfield(report, summ)
    ratios = pairing_ratios(data)
    table = pairing_table(ratios) if not ratios.empty else pd.DataFrame()
    slopes = depth_slope(table) if not table.empty else pd.DataFrame()
    _claims_pairings(report, table, slopes)

    report.heading("Gradient norm by layer")
    _fig_grad_by_layer(report, data)
    report.heading("Mean field: per-layer growth and the edge of chaos")
    _fig_meanfield(report, summ, crossings)
    if not summ.empty:
        report.table(summ[["activation", "sigma_b2", "depth", "sigma_w2", "seeds", "slope", "se", "predicted",
                           "finite_depth", "error", "tolerance", "within"]],
                     "Measured slope (seed mean), mean-field prediction at q* and along the finite-depth "
                     "variance trajectory, error and tolerance")
    report.heading("Ratio ||dL/dW_1|| / ||dL/dW_L|| against depth, with and without batch norm")
    _fig_ratio_depth(report, table)
    if not slopes.empty:
        report.table(slopes, "d ln R / d depth (least squares over depths)")
    report.heading("Saturation")
    _fig_saturation(report, data)
    report.heading("During training")
    _fig_training(report, data)
    tr = training_rows(data)
    if not tr.empty:
        fin = _runs(tr)
        report.table(fin.groupby(["activation", "init", "batchnorm"])
                     .agg(final_loss_median=("final_loss", "median"), diverged_share=("diverged", "mean"))
                     .reset_index(), "Training runs: final loss and divergence")
    report.heading("The sigmoid bound")
    _fig_sigmoid_bound(report, t_bound)
