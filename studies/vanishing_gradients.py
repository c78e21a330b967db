r"""The vanishing-gradients study: per-layer gradient norms of deep MLPs against mean-field theory.

Every statement is a prediction (theory's number beside the measured one), an engine check (a
theorem, tested in ``tests/test_study_vanishing_gradients.py``, listed in the appendix) or an
observation (SCIENCE.md, "vanishing-gradients"). Runs are recognised by their rows:

* **mean-field runs**: ``init = "normal"`` (weights :math:`N(0, \sigma_w^2/\text{fan\_in})`,
  ``init_scale`` = :math:`\sigma_w`, biases :math:`N(0, \sigma_b^2)`), no batch norm, **one** input
  (``data_n = 1``), depth >= 8, step 0. With one input :math:`\partial L/\partial W_l = a_{l-1}
  \otimes \delta_l`, so :math:`\|\delta_l\| = \|\partial L/\partial W_l\|/\|a_{l-1}\|`, and
  :math:`\|\delta_l\|^2` is what :math:`\chi_1` multiplies per layer. The measured slope is
  :math:`-d\ln\|\delta_l\|/dl` over ``fit_layers(D)``. The prediction is not the wide limit
  :math:`\ln\sqrt{\chi_1(q^*)}` but the same slope computed along the finite-depth trajectory
  :math:`q^l` with the first-order finite-width (Jensen) term of
  ``theory.finite_width_log_growth``:

  .. math:: E\ln\frac{\|\delta_l\|}{\|\delta_{l+1}\|} = \tfrac12\ln\chi_1(q^l)
            - \frac{1}{4N}\Big(\frac{3E f'^4}{(E f'^2)^2} - 1\Big)

  so the tolerance is only the seeds' standard error (family-wise 5 %, Bonferroni over the
  points). This is what SCIENCE.md asks for near tanh's critical point at
  :math:`\sigma_b = 0`, where :math:`\chi_1` rises only quadratically: the crossing is the zero
  of this finite-size slope (above 1, since :math:`q^l` decays only like 1/l), and its window is
  where that slope is within 1.96 standard errors of the measured slopes near the crossing.
* **pairing runs** (step 0, a batch of samples, depth >= 8): the per-layer slope of
  :math:`\ln\|\partial L/\partial W_l\|` over ``fit_layers(D)`` and of :math:`\ln` preact_std
  over the hidden layers, at the deepest depth of each pairing.

  - *The 1/4 per sigmoid layer*: sigmoid without batch norm; predicted
    ``finite_width_log_growth("sigmoid", sigma_w^2, 0, N)`` (Glorot on square layers:
    :math:`\ln\sqrt{\chi_1} = -1.444`), drawn beside the naive :math:`\ln(\sigma_w/4)`. With a
    batch the cross-sample terms follow the correlation map's slope :math:`\chi_c`; sigmoid
    without biases is in the ordered phase (:math:`c^* = 1`), where :math:`\chi_c = \chi_1`.
  - *Batch norm causes gradient explosion* (Yang et al. 2019): predicted
    :math:`\tfrac12\ln\lambda_{BN}` with :math:`\lambda_{BN} = E f'(z)^2/\mathrm{Var} f(z)`
    (``theory.bn_log_gradient_growth``, quadrature), corrected to the grid's width and batch
    by Monte Carlo of random Gaussian networks (``theory.random_mlp_telemetry``, NumPy,
    independent of simcore); every initialisation (uniform, Glorot, He: three sigma_w^2) is
    compared with the same number, which is the independence of the initialisation.
  - *Initialisations judged by the forward pass*: relu, slope of :math:`\ln` preact_std per
    layer against :math:`\tfrac12\ln(\sigma_w^2/2)` (He: 0); tanh Glorot, the change of
    :math:`\ln` preact_std from layer 1 to L-1 against the variance trajectory. The tolerance
    adds the computed finite-width shift (Monte Carlo minus wide limit). The old band on
    :math:`R = \|\partial L/\partial W_1\|/\|\partial L/\partial W_L\|` is gone as a claim: a
    zero-bias relu net is positively homogeneous, so R is scale-free; R is an observation.
* **trainable-depth runs**: tanh, normal init, ``steps > 1`` without probes: short full-batch
  trainings on a :math:`\sigma_w^2` x depth grid. A (sigma_w^2, depth) cell is trained when the
  median final loss is below ``TRAINED_RATIO`` Var(y). The prediction states Schoenholz et
  al.'s result as the theory gives it: the trainable depth scales as the correlation depth scale
  :math:`\xi_c = -1/\ln\chi_c` (``theory.correlation_depth_scale``), i.e. the slope of
  :math:`\ln D^*` against :math:`\ln\xi_c` is 1; their constant 6 is an empirical fit (MNIST,
  CIFAR-10, float32, long SGD) and depends on the training budget and the criterion, so the
  measured constant :math:`D^*/\xi_c` is an observation beside 6.
* **dead-relu runs**: relu with ``track_dead`` probes (at step 0 and at the end): the share of
  hidden units whose activation input is <= 0 on every sample (observation).
* **sigmoid bound** (engine check): every sigmoid network without batch norm trained with mse,
  every recorded step and layer l:

  .. math::
      \frac{\|\partial L/\partial W_l\|_F}{\|A_{l-1}\|_F\, \|\Delta_L\|_F}
      \le \Big(\tfrac14\Big)^{L-l} \prod_{k=l+1}^{L} \|W_k\|_F

  (:math:`\Delta_L = 2R/(nk)`, :math:`\|A_{l-1}\|_F^2 = n\,\text{fan\_in}(\text{act\_std}^2 +
  \text{act\_mean}^2)`).
"""
import functools
import json
import math

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
from scipy import optimize, stats

from . import runner, theory
from . import spec as specmod
from .rows import of_kind, per_run

NAME = "vanishing-gradients"
TITLE = "Vanishing and exploding gradients: mean field, the 1/4 per sigmoid layer, initialisation, batch norm"
SUMMARY = ("Per-layer gradient norms ||dL/dW_l|| of deep MLPs at initialisation and in short trainings, "
           "against mean-field theory: the 1/4 per sigmoid layer, the edge of chaos, batch norm's gradient "
           "explosion, the forward variance of each initialisation, the trainable depth and dead relus.")

# family-wise level of the per-point comparisons (Bonferroni over a prediction's points)
FAMILY_LEVEL = 0.05
# random Gaussian networks simulated per finite-size Monte Carlo prediction
MC_SEEDS = 64
MC_SEED = 12345
# rounding slack of the sigmoid bound (a true bound: measured/bound <= 1 up to float rounding)
BOUND_RTOL = 1e-9
MIN_DEPTH_MF = 8
# a training run has learned the input-dependent target when its final loss is below this
# fraction of Var(y), the loss of the best constant output
TRAINED_RATIO = 0.5
ACTS = ("sigmoid", "tanh", "relu")


# --------------------------------------------------------------------------------------------
# row selection

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
    """Seed means per (activation, sigma_b2, depth, sigma_w2), with theory beside them: the
    finite-depth, finite-width slope (``predicted``) and the wide limit ln sqrt(chi_1) at q*."""
    if slopes.empty:
        return slopes
    keys = ["activation", "sigma_b2", "depth", "sigma_w2"]
    s = (slopes.groupby(keys).agg(slope=("slope", "mean"), sd=("slope", "std"), seeds=("slope", "size"),
                                  width=("width", "min"), q0=("q0", "mean"))
         .reset_index())
    s["se"] = s["sd"].fillna(0.0) / np.sqrt(s["seeds"])
    s["wide_limit"] = [_pred_slope(a, w, b) for a, w, b in zip(s["activation"], s["sigma_w2"], s["sigma_b2"])]
    s["predicted"] = [_finite_size_slope(a, w, b, round(q, 12), int(d), int(n)) for a, w, b, q, d, n in
                      zip(s["activation"], s["sigma_w2"], s["sigma_b2"], s["q0"], s["depth"], s["width"])]
    s["error"] = s["slope"] - s["predicted"]
    s["tolerance"] = family_z(len(s)) * s["se"]
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
    runs = per_run(rows)
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
# finite-size predictions shared by the comparisons below

def family_z(n_points, level=FAMILY_LEVEL):
    """The two-sided normal quantile for a family of ``n_points`` comparisons at family-wise
    level ``level`` (Bonferroni): each point passes within this many standard errors."""
    return float(stats.norm.ppf(1.0 - level / (2.0 * max(int(n_points), 1))))


def _fit_slope(layers, u):
    """-d u/d l by least squares (growth per layer moving towards the input)."""
    return float(-np.polyfit(layers, u, 1)[0])


@functools.lru_cache(maxsize=None)
def _finite_size_slope(act, sw2, sb2, q0, depth, width):
    """The mean-field slope of ln||delta_l|| over ``fit_layers(depth)`` along the variance
    trajectory q^l from q^1 = q0 (finite depth), with the 1/N Jensen term of
    ``theory.finite_width_log_growth`` at each layer (finite width)."""
    layers = fit_layers(depth)
    qs = theory.variance_trajectory(act, sw2, sb2, q0, int(layers[-1]) - 1)   # qs[l-1] = Var z_l
    # the slope needs u only over the fitted layers, up to a constant: sum from the last of them
    u = np.zeros(depth + 1)
    for l in range(int(layers[-1]) - 1, int(layers[0]) - 1, -1):
        u[l] = u[l + 1] + theory.finite_width_log_growth(act, sw2, sb2, width, q=float(min(qs[l - 1], 1e300)))
    return _fit_slope(layers, u[layers])


def _mc_key(point):
    p = point
    return (p["activation"], p["data"], json.dumps(p["data_args"], sort_keys=True), int(p["widths"][0]),
            int(p["depth"]), bool(p["batchnorm"]))


@functools.lru_cache(maxsize=None)
def _mc(act, data, data_args, width, depth, batchnorm, sigma_w2, sigma_b2=0.0, first_sigma_w2=None):
    """Random Gaussian networks of the grid's width, depth and data (theory.random_mlp_telemetry):
    per-seed ln grad_norm and ln preact_std arrays (MC_SEEDS x depth)."""
    X, y = runner.make_data(data, json.loads(data_args))[:2]
    r = theory.random_mlp_telemetry(act, X, y, width, depth, sigma_w2=sigma_w2, sigma_b2=sigma_b2,
                                    batchnorm=batchnorm, seeds=MC_SEEDS, seed=MC_SEED,
                                    first_sigma_w2=first_sigma_w2)
    with np.errstate(divide="ignore"):
        return np.log(r["grad_norm"]), np.log(r["preact_std"])


def _mean_se(x):
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


# --------------------------------------------------------------------------------------------
# pairings at initialisation: per-layer slopes of ln||dL/dW_l|| and of ln preact_std

def _hidden_sigma_w2(run, width):
    if run["init"] == "normal":
        return float(run["init_scale"]) ** 2
    return theory.sigma_w2_of_init(run["init"], width, scale=float(run["init_scale"]))


def pairing_slopes(data, points):
    """One row per pairing network at the deepest depth of its family: the measured slope of
    ln||dL/dW_l|| over ``fit_layers(D)`` (towards the input) and of ln preact_std over the
    hidden layers 2..D-1 (towards the output), with sigma_w^2 of its hidden layers."""
    rows = pairing_rows(data)
    if rows.empty:
        return pd.DataFrame()
    out = []
    for point, r in rows.groupby("point", sort=True):
        r = r.sort_values("layer")
        run = r.iloc[0]
        D = int(run["depth"])
        if D < MIN_DEPTH_MF:
            continue
        p = points[int(point)]
        width = int(p["widths"][0])
        with np.errstate(divide="ignore"):
            lg = np.log(r["grad_norm"].to_numpy())
            lp = np.log(r["preact_std"].to_numpy())
        layers = fit_layers(D)
        hid = np.arange(2, D)
        out.append({"point": int(point), "activation": run["activation"], "init": run["init"],
                    "pairing": _label(run), "batchnorm": bool(run["batchnorm"]), "depth": D, "width": width,
                    "seed": run["seed"], "sigma_w2": _hidden_sigma_w2(run, width),
                    "sigma_b2": float(run["bias_scale"]) ** 2,
                    "grad_slope": _fit_slope(layers, lg[layers - 1]) if np.isfinite(lg[layers - 1]).all() else np.nan,
                    "preact_slope": -_fit_slope(hid, lp[hid - 1]) if np.isfinite(lp[hid - 1]).all() else np.nan,
                    "preact_change": float(lp[D - 2] - lp[0]) if np.isfinite(lp[[0, D - 2]]).all() else np.nan,
                    "mc": _mc_key(p)})
    s = pd.DataFrame(out)
    if s.empty:
        return s
    top = s.groupby(["activation", "pairing", "batchnorm"])["depth"].transform("max")
    return s[s["depth"] == top].reset_index(drop=True)


def _summarise(s, value, keys=("activation", "pairing", "init", "batchnorm", "depth", "width", "sigma_w2",
                                 "sigma_b2", "mc")):
    keys = list(keys)
    g = s.groupby(keys)[value]
    t = g.agg(["mean", "count"]).reset_index()
    t["se"] = g.agg(lambda x: _mean_se(x)[1]).to_numpy()
    return t.rename(columns={"mean": value, "count": "seeds"})


def sigmoid_quarter_table(slopes):
    """Sigmoid pairings without batch norm: measured per-layer slope of ln||dL/dW_l|| against
    the mean-field ln sqrt(chi_1) (with its finite-width term) and against ln(sigma_w/4)."""
    s = slopes[(slopes["activation"] == "sigmoid") & ~slopes["batchnorm"]] if len(slopes) else slopes
    if s.empty:
        return pd.DataFrame()
    t = _summarise(s, "grad_slope")
    t["ln_sqrt_chi1"] = [theory.log_gradient_growth("sigmoid", w, b) for w, b in zip(t["sigma_w2"], t["sigma_b2"])]
    t["predicted"] = [theory.finite_width_log_growth("sigmoid", w, b, int(n))
                      for w, b, n in zip(t["sigma_w2"], t["sigma_b2"], t["width"])]
    t["ln_sigma_w_over_4"] = 0.5 * np.log(t["sigma_w2"]) + math.log(theory.sigmoid_derivative_bound())
    z = family_z(len(t))
    t["error"] = t["grad_slope"] - t["predicted"]
    t["tolerance"] = z * t["se"]
    t["within"] = t["error"].abs() <= t["tolerance"]
    return t


def bn_growth_table(slopes, wide_limit=False):
    """Batch-normalised pairings: measured per-layer growth of ln||dL/dW_l|| (towards the input)
    against 1/2 ln lambda_BN (quadrature) and its Monte-Carlo finite-width/finite-batch value."""
    s = slopes[slopes["batchnorm"]] if len(slopes) else slopes
    if s.empty:
        return pd.DataFrame()
    t = _summarise(s, "grad_slope")
    t["wide_limit"] = [theory.bn_log_gradient_growth(a) for a in t["activation"]]
    mc, mc_se = [], []
    for key, D in zip(t["mc"], t["depth"]):
        lg, _ = _mc(*key, sigma_w2=1.0)
        layers = fit_layers(int(D))
        m, e = _mean_se([_fit_slope(layers, row[layers - 1]) for row in lg])
        mc.append(m)
        mc_se.append(e)
    t["predicted"] = mc
    t["predicted_se"] = mc_se
    z = family_z(len(t))
    t["error"] = t["grad_slope"] - t["predicted"]
    t["tolerance"] = z * np.sqrt(t["se"] ** 2 + t["predicted_se"] ** 2)
    t["within"] = t["error"].abs() <= t["tolerance"]
    return t


def init_forward_table(slopes):
    """Pairings without batch norm, relu and tanh: the measured depth trend of ln preact_std
    against mean field (relu: 1/2 ln(sigma_w^2/2) per layer; tanh: the change along the variance
    trajectory q^l) and against random Gaussian networks of the grid's width and batch."""
    s = slopes[~slopes["batchnorm"] & slopes["activation"].isin(["relu", "tanh"])] if len(slopes) else slopes
    if s.empty:
        return pd.DataFrame()
    rows = []
    for key, g in s.groupby(["activation", "pairing", "init", "depth", "width", "sigma_w2", "sigma_b2", "mc"]):
        act, pairing, init, D, width, sw2, sb2, mck = key
        col = "preact_slope" if act == "relu" else "preact_change"
        m, e = _mean_se(g[col])
        if act == "tanh" and init != "glorot":
            continue
        p0 = json.loads(mck[2])
        X = runner.make_data(mck[1], p0)[0]
        first = theory.sigma_w2_of_init(init, X.shape[1], width, scale=1.0) if init != "normal" else sw2
        q1 = first * float(np.mean(np.sum(X ** 2, axis=1))) / X.shape[1] + sb2
        if act == "relu":
            wide = 0.5 * math.log(sw2 / 2.0)
            curve = 0.5 * math.log(q1) + wide * np.arange(D - 1)
        else:
            qs = theory.variance_trajectory(act, sw2, sb2, q1, D - 2)
            wide = 0.5 * math.log(qs[-1] / qs[0])
            curve = 0.5 * np.log(qs)            # ln std of layers 1..D-1
        _, lp = _mc(*mck, sigma_w2=sw2, sigma_b2=sb2, first_sigma_w2=first)
        hid = np.arange(2, D)
        mc_vals = ([-_fit_slope(hid, row[hid - 1]) for row in lp] if act == "relu"
                   else [row[D - 2] - row[0] for row in lp])
        mcm, mce = _mean_se(mc_vals)
        rows.append({"activation": act, "pairing": pairing, "depth": D, "width": width, "sigma_w2": sw2,
                     "measure": "slope of ln preact_std per layer" if act == "relu"
                     else f"ln(preact_std_{D - 1}/preact_std_1)", "measured": m, "se": e, "seeds": len(g),
                     "predicted": wide, "finite_size": mcm, "finite_size_se": mce, "curve": list(curve)})
    t = pd.DataFrame(rows)
    if t.empty:
        return t
    z = family_z(len(t))
    t["error"] = t["measured"] - t["predicted"]
    t["tolerance"] = z * np.sqrt(t["se"] ** 2 + t["finite_size_se"] ** 2) + (t["finite_size"] - t["predicted"]).abs()
    t["within"] = t["error"].abs() <= t["tolerance"]
    return t


# --------------------------------------------------------------------------------------------
# trainable depth (Schoenholz et al. 2017)

def trainable_rows(data):
    """Short trainings of tanh networks on a sigma_w^2 x depth grid: normal init, no batch norm,
    no probes, at least 2 steps."""
    return data[(data["init"] == "normal") & ~data["batchnorm"].astype(bool) & (data["steps"] > 1)
                & (data["probe_every"] == 0) & (data["activation"] == "tanh")]


def trainable_table(data, points):
    """Per (sigma_w^2, depth): the median over seeds of final loss / Var(y) (a diverged run counts
    as not trained, ratio inf), and the correlation depth scale xi_c."""
    rows = trainable_rows(data)
    if rows.empty:
        return pd.DataFrame()
    runs = per_run(rows)
    rec = []
    for _, run in runs.iterrows():
        y = _sizes(points[int(run["point"])])[2]
        ratio = float(run["final_loss"]) / float(np.var(y)) if not run["diverged"] else math.inf
        rec.append({"sigma_w2": float(run["init_scale"]) ** 2, "sigma_b2": float(run["bias_scale"]) ** 2,
                    "depth": int(run["depth"]), "seed": run["seed"], "ratio": ratio if math.isfinite(ratio) else np.inf})
    r = pd.DataFrame(rec)
    t = r.groupby(["sigma_b2", "sigma_w2", "depth"])["ratio"].median().rename("median_ratio").reset_index()
    t["trained"] = t["median_ratio"] < TRAINED_RATIO
    t["xi_c"] = [theory.correlation_depth_scale("tanh", w, b) for w, b in zip(t["sigma_w2"], t["sigma_b2"])]
    return t


def trainable_boundaries(t):
    """Per sigma_w^2: the measured trainable depth D* (geometric midpoint between the deepest
    trained depth and the next, untrained, one), its resolution (half that log-step), and 6 xi_c.
    Only sigma_w^2 whose depth axis brackets the transition (shallowest trained, deepest not)."""
    out = []
    for (sb2, sw2), g in t.groupby(["sigma_b2", "sigma_w2"]):
        g = g.sort_values("depth")
        tr = g["trained"].to_numpy()
        d = g["depth"].to_numpy(float)
        xi = float(g["xi_c"].iloc[0])
        if not tr[0] or tr[-1]:
            out.append({"sigma_b2": sb2, "sigma_w2": sw2, "xi_c": xi, "D_star": math.nan, "log_halfstep": math.nan,
                        "bracket": "not bracketed"})
            continue
        k = int(np.argmin(tr)) - 1            # last trained before the first untrained
        lo, hi = d[k], d[k + 1]
        out.append({"sigma_b2": sb2, "sigma_w2": sw2, "xi_c": xi, "D_star": math.sqrt(lo * hi),
                    "log_halfstep": 0.5 * math.log(hi / lo), "bracket": f"{int(lo)}-{int(hi)}"})
    return pd.DataFrame(out)


# --------------------------------------------------------------------------------------------
# dead relu units (track_dead probes at initialisation and after training)

def dead_table(data):
    rows = data[(data["activation"] == "relu")]
    if "dead_share" not in rows.columns:
        return pd.DataFrame()
    rows = rows[rows["dead_share"].notna() & (rows["layer"] == 1)]
    if rows.empty:
        return pd.DataFrame()
    first = rows.groupby("point")["step"].transform("min")
    last = rows.groupby("point")["step"].transform("max")
    rows = rows.assign(when=np.where(rows["step"] == first, "init", np.where(rows["step"] == last, "trained", "")))
    rows = rows[rows["when"] != ""]
    rows = rows.assign(width=rows["widths"].map(lambda w: int(str(w).split("-")[0])))
    return (rows.groupby(["lr", "depth", "width", "when"])
            .agg(dead_share=("dead_share", "mean"), diverged=("diverged", "mean"), seeds=("seed", "nunique"))
            .reset_index())


# --------------------------------------------------------------------------------------------
# statements

MF_ASSUMES = ("weights N(0, sigma_w^2/fan_in), biases N(0, sigma_b^2), one input, gradient independence; "
              "mean field to first order in 1/width along the finite-depth variance trajectory")


def _check_sigmoid_bound(report, data, points):
    t = sigmoid_bound_table(data, points)
    statement = ("Sigmoid bound (sigma' <= 1/4): for every sigmoid network without batch norm (mse), every "
                 "recorded step and every layer l, ||dL/dW_l||_F / (||A_{l-1}||_F ||dL/dz_L||_F) <= "
                 "(1/4)^(L-l) prod_{k>l} ||W_k||_F")
    if t.empty:
        report.missing("sigmoid_bound", statement, "sigmoid networks without batch norm trained with mse",
                       kind="check")
        return t
    t = t[np.isfinite(t["measured"]) & (t["bound"] > 0)]
    worst = float((t["measured"] / t["bound"]).max())
    report.check("sigmoid_bound", statement, f"max measured/bound <= 1 + {BOUND_RTOL:g}", round(worst, 6),
                 worst <= 1 + BOUND_RTOL,
                 f"{len(t)} comparisons ({t['point'].nunique()} networks); a theorem (tested in "
                 "tests/test_study_vanishing_gradients.py), loose because Frobenius norms bound the spectral ones")
    return t


def _predict_sigmoid_quarter(report, tq):
    statement = ("The 1/4 per sigmoid layer: the per-layer slope of ln||dL/dW_l|| (towards the input, "
                 "seed mean, no batch norm) equals the mean-field ln sqrt(chi_1) with its 1/width term, "
                 "below the naive ln(sigma_w/4)")
    assumes = "sigmoid, i.i.d. weights of variance sigma_w^2/fan_in, zero biases, width >> 1, gradient independence"
    if tq.empty:
        report.missing("sigmoid_quarter", statement, "sigmoid pairings without batch norm of depth >= 8",
                       assumes=assumes)
        return
    gl = tq[tq["pairing"] == "glorot"]
    row = gl.iloc[0] if len(gl) else tq.iloc[0]
    worst = tq.loc[(tq["error"].abs() / tq["tolerance"]).idxmax()]
    report.prediction(
        "sigmoid_quarter", statement,
        {f"{row['pairing']}": round(float(row["predicted"]), 4),
         "wide limit ln sqrt(chi_1)": round(float(row["ln_sqrt_chi1"]), 4)},
        {f"{row['pairing']}": round(float(row["grad_slope"]), 4),
         "pairings within": f"{int(tq['within'].sum())}/{len(tq)}"},
        f"per pairing {family_z(len(tq)):.2f} SE over seeds (family-wise 5 %)", bool(tq["within"].all()),
        assumes=assumes, figure="sigmoid_quarter",
        note=(f"{row['pairing']}: sigma_w^2 = {row['sigma_w2']:.3g}, ln(sigma_w/4) = {row['ln_sigma_w_over_4']:.4f}, "
              f"depth {int(row['depth'])}, width {int(row['width'])}, {int(row['seeds'])} seeds, "
              f"SE {row['se']:.4f}; worst: {worst['pairing']} measured {worst['grad_slope']:.4f}, predicted "
              f"{worst['predicted']:.4f} (tolerance {worst['tolerance']:.4f})"))


def _predict_meanfield(report, summ, slopes):
    statement = ("Mean field: the measured per-layer slope of ln||delta_l|| (middle layers, one input, seed "
                 "mean) equals the finite-depth, finite-width mean-field slope over the sigma_w^2 x depth sweep")
    if summ.empty:
        report.missing("mf_slope", statement, "single-input normal-init runs of depth >= 8", assumes=MF_ASSUMES)
        return {}
    z = family_z(len(summ))
    n_in = int(summ["within"].sum())
    worst = summ.loc[(summ["error"].abs() / summ["tolerance"]).idxmax()]
    r = float(np.corrcoef(summ["slope"], summ["predicted"])[0, 1]) if len(summ) > 2 else math.nan
    report.prediction(
        "mf_slope", statement, {"points": len(summ), "max |error|": 0.0},
        {"points within": n_in, "max |error|": round(float(summ["error"].abs().max()), 4),
         "correlation": round(r, 4)},
        f"per point {z:.2f} SE over seeds (family-wise 5 %)", n_in == len(summ), assumes=MF_ASSUMES,
        figure="meanfield_slope",
        note=(f"worst point: {worst['activation']} sigma_w^2={worst['sigma_w2']:.3g}, sigma_b^2={worst['sigma_b2']:.3g}, "
              f"depth {int(worst['depth'])}: measured {worst['slope']:+.4f}, predicted {worst['predicted']:+.4f} "
              f"(wide limit at q* {worst['wide_limit']:+.4f}), tolerance {worst['tolerance']:.4f}"))
    crossings = {}
    for (act, sb2), g in summ.groupby(["activation", "sigma_b2"]):
        D = int(g["depth"].max())
        gd = g[g["depth"] == D].sort_values("sigma_w2")
        width, q0 = int(gd["width"].min()), float(round(gd["q0"].mean(), 12))
        cross = zero_crossing(gd["sigma_w2"], gd["slope"])
        lo_w, hi_w = float(gd["sigma_w2"].min()), float(gd["sigma_w2"].max())

        def pred(w, shift=0.0):
            return _finite_size_slope(act, float(w), sb2, q0, D, width) - shift

        cid = f"mf_crossing_{act}_sb2_{sb2:g}"
        st = (f"Order-to-chaos crossing, {act}, sigma_b^2 = {sb2:g}: the sigma_w^2 where the measured slope "
              f"crosses 0 (depth {D}) is the zero of the finite-depth, finite-width mean-field slope")
        try:
            pc = optimize.brentq(pred, lo_w, hi_w, xtol=1e-10)
        except ValueError:
            report.missing(cid, st, "sigma_w^2 sweep bracketing the predicted crossing", assumes=MF_ASSUMES)
            continue
        i = int(np.searchsorted(gd["sigma_w2"].to_numpy(), pc))
        se = float(gd["se"].iloc[max(i - 1, 0):i + 1].mean())
        eps = family_z(1) * se
        lo = optimize.brentq(pred, lo_w, pc, args=(-eps,), xtol=1e-10) if pred(lo_w, -eps) < 0 else lo_w
        hi = optimize.brentq(pred, pc, hi_w, args=(eps,), xtol=1e-10) if pred(hi_w, eps) > 0 else hi_w
        crit = theory.critical_sigma_w2(act, sb2)
        crossings[(act, sb2)] = (cross, pc, lo, hi, crit)
        report.prediction(
            cid, st, round(pc, 4), round(cross, 4) if np.isfinite(cross) else "no crossing",
            f"[{lo:.3g}, {hi:.3g}]: where the predicted slope is within {eps:.4f} = 1.96 SE of the measured "
            f"slopes near the crossing", bool(np.isfinite(cross) and lo <= cross <= hi),
            assumes=MF_ASSUMES, figure="meanfield_slope",
            note=(f"wide-limit critical sigma_w^2 (chi_1 = 1 at q*): {crit:.4g}; the finite-depth trajectory "
                  f"(q^l not yet at q*) and the 1/width Jensen term move it to {pc:.4g}; width {width}, "
                  f"sweep {lo_w:.3g}-{hi_w:.3g} in {len(gd)} values"))
    return crossings


def _predict_bn(report, tb, slopes):
    assumes = ("batch norm (gamma = 1, beta = 0) before every hidden activation, i.i.d. weights, zero biases; "
               "value by Monte Carlo of the same random network at the grid's width and batch")
    for act in ACTS:
        g = tb[tb["activation"] == act] if len(tb) else tb
        statement = (f"Batch norm causes gradient explosion at initialisation ({act}): ln||dL/dW_l|| grows "
                     f"towards the input by 1/2 ln lambda_BN per layer, whatever the initialisation")
        cid = f"bn_growth_{act}"
        if g.empty:
            report.missing(cid, statement, f"{act} pairings with batch norm of depth >= 8", assumes=assumes)
            continue
        wide = float(g["wide_limit"].iloc[0])
        pred = float(g["predicted"].mean())
        meas = {str(p): round(float(v), 4) for p, v in zip(g["pairing"], g["grad_slope"])}
        no_bn = slopes[(slopes["activation"] == act) & ~slopes["batchnorm"] & (slopes["init"] != "normal")]
        nb = ", ".join(f"{p} {v:+.3f}" for p, v in no_bn.groupby("pairing")["grad_slope"].mean().items())
        report.prediction(
            cid, statement, {"finite size": round(pred, 4), "wide limit": round(wide, 4)}, meas,
            f"per initialisation {family_z(len(tb)):.2f} x the combined SE of the seed mean and the Monte "
            f"Carlo (family-wise 5 % over {len(tb)})", bool(g["within"].all()), assumes=assumes,
            figure="bn_growth",
            note=(f"1/2 ln(E[f'(z)^2]/Var f(z)) by quadrature {wide:.4f}; at width {int(g['width'].iloc[0])}, "
                  f"batch {json.loads(g['mc'].iloc[0][2]).get('n')}, depth "
                  f"{int(g['depth'].iloc[0])}: {pred:.4f} (Monte Carlo, {MC_SEEDS} networks); without batch "
                  f"norm the same slopes are: {nb}"))


def _predict_init_forward(report, tf):
    for act, text, assumes in (
            ("relu", "He keeps relu's pre-activation variance constant; otherwise q^l = (sigma_w^2/2)^l q^0: the "
             "per-layer slope of ln preact_std is 1/2 ln(sigma_w^2/2) for every initialisation",
             "relu, zero biases, i.i.d. weights of variance sigma_w^2/fan_in, width >> 1"),
            ("tanh", "Glorot keeps tanh's pre-activation variance near-constant: ln(preact_std_{L-1}/preact_std_1) "
             "follows the mean-field variance trajectory q^l",
             "tanh, zero biases, i.i.d. weights (Glorot: sigma_w^2 = 1 on square layers), width >> 1")):
        g = tf[tf["activation"] == act] if len(tf) else tf
        cid = f"init_forward_{act}"
        if g.empty:
            report.missing(cid, text, f"{act} pairings without batch norm of depth >= 8", assumes=assumes)
            continue
        worst = g.loc[(g["error"].abs() / g["tolerance"]).idxmax()]
        key = "he" if act == "relu" else "glorot"
        h = g[g["pairing"] == key]
        row = h.iloc[0] if len(h) else g.iloc[0]
        report.prediction(
            cid, text, {str(p): round(float(v), 4) for p, v in zip(g["pairing"], g["predicted"])},
            {str(p): round(float(v), 4) for p, v in zip(g["pairing"], g["measured"])},
            f"per initialisation {family_z(len(tf)):.2f} combined SE (seeds, Monte Carlo, family-wise 5 %) + the "
            f"computed finite-width shift |Monte Carlo - wide limit|", bool(g["within"].all()), assumes=assumes,
            figure="init_forward",
            note=(f"{row['measure']}; {row['pairing']}: measured {row['measured']:+.4f} +- {row['se']:.4f}, wide "
                  f"limit {row['predicted']:+.4f}, random Gaussian networks of width {int(row['width'])} "
                  f"{row['finite_size']:+.4f}; worst: {worst['pairing']} error {worst['error']:+.4f} "
                  f"(tolerance {worst['tolerance']:.4f}); the ratio ||dW_1||/||dW_L|| cannot test this for relu "
                  "(positively homogeneous: scale-free)"))


def _predict_trainable(report, t, b):
    statement = ("Trainable depth (Schoenholz et al. 2017): the depth D* beyond which short trainings fail scales "
                 "as the correlation depth scale xi_c: slope of ln D* against ln xi_c over sigma_w^2 is 1")
    assumes = ("tanh, sigma_b^2 > 0, ordered phase and near it; full-batch GD for a fixed number of steps; trained = "
               f"median final loss < {TRAINED_RATIO:g} Var(y)")
    if b.empty or b["D_star"].notna().sum() < 2:
        report.missing("trainable_depth", statement, "sigma_w^2 x depth trainings bracketing the transition at "
                       ">= 2 sigma_w^2 values", assumes=assumes)
        return
    ok = b[b["D_star"].notna() & np.isfinite(b["xi_c"])]
    x, yv = np.log(ok["xi_c"].to_numpy()), np.log(ok["D_star"].to_numpy())
    slope = float(np.polyfit(x, yv, 1)[0]) if np.ptp(x) > 0 else math.nan
    # resolution: D* is known to within a half log-step of the depth axis (uniform: sd = step/sqrt(3))
    sd = float(ok["log_halfstep"].mean()) / math.sqrt(3.0)
    se = sd / math.sqrt(float(np.sum((x - x.mean()) ** 2)))
    z = family_z(1)
    const = float(np.exp(np.mean(yv - x)))
    report.prediction(
        "trainable_depth", statement, 1.0, round(slope, 3),
        f"+- {z:.2f} x {se:.3f}: the depth axis's resolution (D* within half a log-step) through the fit",
        bool(abs(slope - 1.0) <= z * se), assumes=assumes, figure="trainable_depth",
        note=(f"D* by sigma_w^2: " + ", ".join(f"{w:.3g}: {br} (6 xi_c = {6 * xi:.3g})" for w, br, xi in
                                             zip(b["sigma_w2"], b["bracket"], b["xi_c"]))
              + f"; D*/xi_c = {const:.3g} (Schoenholz et al. find about 6 on MNIST/CIFAR-10 in float32 with SGD)"))
    report.observation("trainable_depth_constant",
                       "The constant of the trainable depth, D*/xi_c (Schoenholz et al.: about 6)",
                       {"D*/xi_c": round(const, 3), "spread (sd of ln)": round(float(np.std(yv - x)), 3)},
                       figure="trainable_depth",
                       note="it depends on the training budget and the 'trained' criterion; theory gives the scaling")


def _observe(report, table, dead):
    if not table.empty and table["depth"].nunique() > 1:
        D = int(table["depth"].max())
        t = table[(table["depth"] == D) & ~table["batchnorm"]]
        report.observation(
            "ratio_vs_depth", f"First-to-last layer gradient ratio R = ||dL/dW_1||/||dL/dW_L|| at depth {D}, "
            "relative to depth 2 (no batch norm)",
            {f"{a}/{p}": float(f"{v:.3g}") for a, p, v in zip(t["activation"], t["pairing"], t["relative"])
             if p in ("uniform", "glorot", "he")}, figure="ratio_vs_depth",
            note="for a zero-bias relu net R is scale-free (positive homogeneity), so it says nothing of He vs others")
    if not dead.empty:
        init = dead[dead["when"] == "init"].groupby(["depth", "width"])["dead_share"].mean()
        tr = dead[(dead["when"] == "trained") & (dead["diverged"] < 0.5)]
        top = tr[tr["lr"] == tr.groupby(["depth", "width"])["lr"].transform("max")].set_index(["depth", "width"])
        report.observation(
            "dead_relu", "Share of hidden relu units never active over the data, at initialisation and after "
            "training at the largest eta that did not diverge, by depth and width",
            {**{f"init D{d} N{w}": round(float(v), 3) for (d, w), v in init.items()},
             **{f"trained D{d} N{w} (eta {r['lr']:g})": round(float(r["dead_share"]), 3) for (d, w), r in top.iterrows()}},
            figure="dead_relu", note="mean over seeds; a diverged run has no value after training")


# --------------------------------------------------------------------------------------------
# figures



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
        grid = np.geomspace(g["sigma_w2"].min(), g["sigma_w2"].max(), 25)
        ax.plot(grid, [_pred_slope(act, float(w), sb2) for w in grid], "k:", lw=1, label="wide limit ln sqrt(chi_1)")
        for k, (D, gd) in enumerate(g.groupby("depth")):
            q0, width = float(round(gd["q0"].mean(), 12)), int(gd["width"].min())
            ax.plot(grid, [_finite_size_slope(act, float(w), sb2, q0, int(D), width) for w in grid], "-",
                    color=f"C{k}", lw=1.2)
            ax.errorbar(gd["sigma_w2"], gd["slope"], yerr=gd["tolerance"], fmt="o", ms=4, capsize=2, color=f"C{k}",
                        label=f"measured, depth {D} (line: finite size)")
        cross, pc, lo, hi, crit = crossings.get((act, sb2), (math.nan,) * 5)
        ax.axhline(0, color="grey", lw=0.8)
        if np.isfinite(crit):
            ax.axvline(crit, color="k", ls=":", lw=1, label=f"wide-limit critical {crit:.3g}")
        if np.isfinite(pc):
            ax.axvspan(lo, hi, color="k", alpha=0.08, label=f"predicted crossing {pc:.3g}")
        if np.isfinite(cross):
            ax.plot([cross], [0], "rx", ms=10, mew=2, label=f"measured crossing {cross:.3g}")
        _log_x(ax)
        ax.set_xlabel("sigma_w^2 = fan_in x Var(W) (log scale)")
        ax.set_ylabel("slope of ln||delta_l|| per layer (towards input)")
        ax.set_title(f"{act}, sigma_b^2 = {sb2:g}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    fig.tight_layout()
    report.figure("meanfield_slope", fig,
                  "Measured per-layer slope of ln||delta_l|| (one input per network, seed mean, bars: tolerance) "
                  "against sigma_w^2, with the finite-depth, finite-width mean-field prediction (lines), the "
                  "wide limit ln sqrt(chi_1) (dotted), the predicted crossing and its window (shaded) and the "
                  "measured zero crossing (cross).")


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
        ax.set_xlabel("depth L (weight layers)")
        ax.set_ylabel("||dL/dW_1|| / ||dL/dW_L|| (log)")
        ax.set_title(act)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    report.figure("ratio_vs_depth", fig,
                  "First-to-last layer gradient ratio at initialisation against depth, without (solid) and "
                  "with (dashed) batch norm; geometric mean over seeds.")


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




def _fig_sigmoid_quarter(report, tq):
    if tq.empty:
        return
    fig, ax = plt.subplots(figsize=(6.2, 4.6))
    grid = np.geomspace(min(tq["sigma_w2"].min(), 0.2), max(tq["sigma_w2"].max(), 5.0), 120)
    width = int(tq["width"].min())
    ax.plot(grid, [theory.finite_width_log_growth("sigmoid", float(w), 0.0, width) for w in grid], "k-",
            lw=1.5, label=f"mean field ln sqrt(chi_1), width {width}")
    ax.plot(grid, [theory.log_gradient_growth("sigmoid", float(w), 0.0) for w in grid], "k:", lw=1,
            label="wide limit")
    ax.plot(grid, 0.5 * np.log(grid) + math.log(0.25), "r--", lw=1, label="ln(sigma_w/4) (sigma' <= 1/4)")
    for k, (p, g) in enumerate(tq.groupby("init")):
        ax.errorbar(g["sigma_w2"], g["grad_slope"], yerr=g["tolerance"], fmt="os^d"[k % 4], ms=5, capsize=2,
                    label=f"measured, {p}")
    _log_x(ax)
    ax.set_xlabel("sigma_w^2 of the hidden layers (log)")
    ax.set_ylabel("per-layer slope of ln||dL/dW_l|| (towards input)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    report.figure("sigmoid_quarter", fig,
                  "Sigmoid networks without batch norm at initialisation: measured per-layer growth of "
                  "ln||dL/dW_l|| (seed mean, bars: tolerance) against the mean-field ln sqrt(chi_1) (line) and "
                  "the naive ln(sigma_w/4) from sigma' <= 1/4 (dashed).")


def _fig_bn_growth(report, data, tb):
    if tb.empty:
        return
    rows = pairing_rows(data)
    rows = rows[rows["batchnorm"].astype(bool)]
    acts = [a for a in ACTS if a in set(tb["activation"])]
    fig, axes = plt.subplots(1, len(acts), figsize=(4.6 * len(acts), 4.2), squeeze=False)
    for ax, act in zip(axes[0], acts):
        g = tb[tb["activation"] == act]
        D = int(g["depth"].max())
        sub = rows[(rows["activation"] == act) & (rows["depth"] == D)]
        ref = None
        for k, (init, gi) in enumerate(sub.groupby("init")):
            prof = np.log(gi.groupby("layer")["grad_norm"].agg(_gmean))
            ax.plot(prof.index, prof.to_numpy() - prof.loc[D // 2], "os^d"[k % 4], ms=3, color=f"C{k}",
                    label=f"measured, {init}")
            ref = prof
        if ref is not None:
            l = np.arange(1, D + 1)
            pred = float(g["predicted"].mean())
            ax.plot(l, -pred * (l - D // 2), "k-", lw=1.3, label=f"predicted {pred:+.4f}/layer (finite size)")
            ax.plot(l, -float(g["wide_limit"].iloc[0]) * (l - D // 2), "k:", lw=1,
                    label=f"1/2 ln lambda_BN = {float(g['wide_limit'].iloc[0]):+.4f}")
        ax.set_title(f"{act} + batch norm, depth {D}")
        ax.set_xlabel("layer l")
        ax.set_ylabel("ln||dL/dW_l|| - its value at L/2")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    report.figure("bn_growth", fig,
                  "Batch-normalised networks at initialisation: ln||dL/dW_l|| by layer (geometric mean over "
                  "seeds, centred at the middle layer) for each initialisation, with the predicted slope "
                  "(line: Monte Carlo at the grid's width and batch; dotted: the wide limit 1/2 ln lambda_BN).")


def _fig_init_forward(report, data, tf):
    if tf.empty:
        return
    rows = pairing_rows(data)
    rows = rows[~rows["batchnorm"].astype(bool)]
    acts = [a for a in ("relu", "tanh") if a in set(tf["activation"])]
    fig, axes = plt.subplots(1, len(acts), figsize=(5.4 * len(acts), 4.4), squeeze=False)
    for ax, act in zip(axes[0], acts):
        g = tf[tf["activation"] == act]
        D = int(g["depth"].max())
        sub = rows[(rows["activation"] == act) & (rows["depth"] == D) & (rows["layer"] < D)]
        for k, (pairing, gp) in enumerate(g.groupby("pairing")):
            init = pairing.split()[0]
            m = sub[sub["init"] == init]
            if init == "normal":
                m = m[np.isclose(m["init_scale"] ** 2, float(gp["sigma_w2"].iloc[0]))]
            prof = np.log(m.groupby("layer")["preact_std"].agg(_gmean))
            if prof.empty:
                continue
            ax.plot(prof.index, prof.to_numpy(), "o", ms=3, color=f"C{k}", label=f"measured, {pairing}")
            curve = gp["curve"].iloc[0]
            ax.plot(np.arange(1, len(curve) + 1), curve, "-", color=f"C{k}", lw=1)
        ax.set_title(f"{act}, no batch norm, depth {D} (lines: mean field)")
        ax.set_xlabel("layer l")
        ax.set_ylabel("ln preact_std (log std of the activation's input)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    report.figure("init_forward", fig,
                  "Initialisations judged by the forward pass: ln of the pre-activation std by layer (geometric "
                  "mean over seeds) with the mean-field prediction from the first layer's q^1 (relu: "
                  "q^l = (sigma_w^2/2)^(l-1) q^1; tanh: the variance trajectory q^l).")


def _fig_trainable(report, t, b):
    if t.empty:
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for sb2, g in t.groupby("sigma_b2"):
        tr, un = g[g["trained"]], g[~g["trained"]]
        ax.scatter(tr["sigma_w2"], tr["depth"], marker="o", c="g", s=30, label="trained (median)")
        ax.scatter(un["sigma_w2"], un["depth"], marker="x", c="r", s=30, label="not trained")
        grid = np.linspace(g["sigma_w2"].min(), g["sigma_w2"].max(), 80)
        xi = np.array([theory.correlation_depth_scale("tanh", float(w), sb2) for w in grid])
        ax.plot(grid, 6 * xi, "k-", lw=1.3, label="6 xi_c (Schoenholz et al.)")
        ok = b[b["D_star"].notna()] if len(b) else b
        if len(ok):
            c = float(np.exp(np.mean(np.log(ok["D_star"] / ok["xi_c"]))))
            ax.plot(grid, c * xi, "b--", lw=1, label=f"{c:.3g} xi_c (fitted constant)")
            ax.plot(ok["sigma_w2"], ok["D_star"], "bs", ms=5, mfc="none", label="measured D*")
    ax.set_yscale("log")
    ax.set_ylim(t["depth"].min() / 1.5, t["depth"].max() * 1.5)
    ax.set_xlabel("sigma_w^2")
    ax.set_ylabel("depth L")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    report.figure("trainable_depth", fig,
                  f"Short trainings of tanh networks (sigma_b^2 = {t['sigma_b2'].iloc[0]:g}) on a depth x sigma_w^2 "
                  f"grid: trained when the median final loss is below {TRAINED_RATIO:g} Var(y); lines: 6 xi_c and "
                  "the fitted multiple of the correlation depth scale xi_c.")


def _fig_dead(report, dead):
    if dead.empty:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.2), squeeze=False)
    for ax, when in zip(axes[0], ("init", "trained")):
        g = dead[dead["when"] == when]
        if when == "init":          # the same networks for every eta
            for w, gw in g.groupby("width"):
                m = gw.groupby("depth")["dead_share"].mean()
                ax.plot(m.index, m.to_numpy(), "o-", ms=4, label=f"width {w}")
        for (lr, w), gw in (g.groupby(["lr", "width"]) if when == "trained" else ()):
            ax.plot(gw["depth"], gw["dead_share"], "o-", ms=4, label=f"width {w}, eta {lr:g}")
        ax.set_xlabel("depth L")
        ax.set_ylabel("share of hidden units dead on all samples")
        ax.set_title("at initialisation" if when == "init" else "after training")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    report.figure("dead_relu", fig,
                  "Dead relu units (activation input <= 0 on every training sample), mean over seeds, against "
                  "depth and width, at initialisation (He) and after full-batch training at each eta.")


# --------------------------------------------------------------------------------------------

def analyse(data, spec, report):
    points = {p["point"]: p for p in specmod.expand(spec)}
    data = of_kind(data, "mlp").copy()
    # samples per network, from the data each point trained on
    n_of = {k: _sizes(p)[1].shape[0] for k, p in points.items() if p["kind"] == "mlp"}
    data["data_n"] = data["point"].map(n_of).astype(int)

    slopes = pairing_slopes(data, points)
    tq = sigmoid_quarter_table(slopes) if len(slopes) else pd.DataFrame()
    _predict_sigmoid_quarter(report, tq)
    summ = meanfield_summary(meanfield_slopes(data, points))
    crossings = _predict_meanfield(report, summ, slopes)
    tb = bn_growth_table(slopes) if len(slopes) else pd.DataFrame()
    _predict_bn(report, tb, slopes)
    tf = init_forward_table(slopes) if len(slopes) else pd.DataFrame()
    _predict_init_forward(report, tf)
    tt = trainable_table(data, points)
    tbound = trainable_boundaries(tt) if len(tt) else pd.DataFrame()
    _predict_trainable(report, tt, tbound)
    ratios = pairing_ratios(data)
    table = pairing_table(ratios) if not ratios.empty else pd.DataFrame()
    dead = dead_table(data)
    _observe(report, table, dead)
    t_bound = _check_sigmoid_bound(report, data, points)

    report.heading("The 1/4 per sigmoid layer")
    _fig_sigmoid_quarter(report, tq)
    if len(tq):
        report.table(tq.drop(columns=["mc"]), "Sigmoid pairings: measured slope of ln||dL/dW_l|| per layer, "
                     "mean field (with its 1/width term), wide limit and ln(sigma_w/4)")
    report.heading("Mean field: per-layer growth and the edge of chaos")
    _fig_meanfield(report, summ, crossings)
    if not summ.empty:
        report.table(summ[["activation", "sigma_b2", "depth", "sigma_w2", "seeds", "slope", "se", "predicted",
                           "wide_limit", "error", "tolerance", "within"]],
                     "Measured slope (seed mean), finite-size mean-field prediction, wide limit at q*, error "
                     "and tolerance")
    report.heading("Batch norm: gradient explosion at initialisation")
    _fig_bn_growth(report, data, tb)
    if len(tb):
        report.table(tb.drop(columns=["mc"]), "Batch-normalised pairings: measured growth per layer, the Monte "
                     "Carlo prediction at the grid's width and batch, and the wide limit")
    report.heading("Initialisations judged by the forward pass")
    _fig_init_forward(report, data, tf)
    if len(tf):
        report.table(tf.drop(columns=["curve"]), "Pre-activation std across depth: measured, mean field, random "
                     "Gaussian networks")
    report.heading("Trainable depth")
    _fig_trainable(report, tt, tbound)
    if len(tbound):
        report.table(tbound, "Measured trainable depth D* and the correlation depth scale xi_c")
    report.heading("Dead relu units")
    _fig_dead(report, dead)
    if len(dead):
        report.table(dead, "Share of dead relu units at initialisation and after training")
    report.heading("Gradient norm by layer")
    _fig_grad_by_layer(report, data)
    report.heading("Ratio ||dL/dW_1|| / ||dL/dW_L|| against depth, with and without batch norm")
    _fig_ratio_depth(report, table)
    report.heading("Saturation")
    _fig_saturation(report, data)
    report.heading("During training")
    _fig_training(report, data)
    tr = training_rows(data)
    if not tr.empty:
        fin = per_run(tr)
        report.table(fin.groupby(["activation", "init", "batchnorm"])
                     .agg(final_loss_median=("final_loss", "median"), diverged_share=("diverged", "mean"))
                     .reset_index(), "Training runs: final loss and divergence")
    report.heading("The sigmoid bound (engine check)")
    _fig_sigmoid_bound(report, t_bound)
