r"""How fast gradient descent converges: the least-squares threshold and optimal step, the
learning slowdown of a saturated sigmoid output under MSE, and steps-to-target over seeds.

Three analyses, each picked by the configuration of a sub-grid (not its name):

* **Least squares** -- sub-grids of linear models (``widths = []``) with ``loss = "mse"``
  trained by full-batch ``gd``. Theory from the data (:mod:`studies.theory`): the Hessian
  :math:`H = \frac{2}{N} X_{aug}^T X_{aug}`, the contraction per step
  :math:`\rho(\eta) = \max_i |1 - \eta\lambda_i|`, the threshold :math:`2/\lambda_{max}`, the
  best step :math:`\eta^* = 2/(\lambda_{min} + \lambda_{max})` and its contraction
  :math:`(\kappa - 1)/(\kappa + 1)`. Measured: the excess loss over the least-squares optimum,
  :math:`e_t = L_t - L^* = \sum_i \frac{\lambda_i}{2} c_i^2 (1 - \eta\lambda_i)^{2t}`, decays (or
  grows) like :math:`\rho^{2t}`; :func:`contraction_rate` fits that rate on the tail of each
  trajectory. Sub-grids on the same data set are pooled (a wide eta axis and a fine one).
* **Learning slowdown** (Nielsen, *Neural Networks and Deep Learning*, ch. 3) -- sub-grids with
  both ``loss = "mse_sigmoid"`` and ``"bce"``: pairs of runs from the same initial weights
  (same seed and scales). MSE's output delta carries :math:`\sigma'(z)`,
  :math:`\delta = \frac{2}{N}(\sigma - y)\sigma'(z)`, cross-entropy's does not,
  :math:`\delta = \frac1N(\sigma - y)`. Target: the loss of an output at distance
  ``SLOWDOWN_EPS`` from every label (:func:`target_loss`), the same milestone for both losses.
  On a single sample with a linear model (Nielsen's neuron) the logit follows the exact map
  :math:`z \leftarrow z - \eta (\|x\|^2 + 1)\,\delta(z)` (:func:`neuron_trajectory`), so the
  steps of both losses are predicted exactly; on a data set the predicted quantity is the
  output layer's gradient ratio at the start, :math:`\|a^T\delta_{mse}\| / \|a^T\delta_{bce}\|`
  (:func:`output_gradient_ratio`).
* **Steps to target** -- every other sub-grid with ``bce`` or ``ce``: the first recorded step at
  which the training loss reaches the loss of a ``DIST_EPS``-confident correct output, over
  seeds, per data set, architecture and activation.
"""
import re
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from simcore import MLP

from . import theory
from .runner import make_data
from .spec import expand

NAME = "convergence"
TITLE = "Convergence of gradient descent"
SUMMARY = ("Least-squares contraction per step against |1 - eta lambda|, the divergence threshold "
           "2/lambda_max and the optimal step; the learning slowdown of MSE on a saturated sigmoid "
           "output against cross-entropy; steps-to-target distributions over seeds.")

# excess losses below this fraction of L* are rounding: the float64 loss of N squared residuals
# carries an absolute error of a few 1e-16 L*, so at 1e-12 L* the excess is still good to ~1e-3
EXCESS_FLOOR = 1e-12
# a run's fit window is asymptotic when the slowest directions carry this share of the
# predicted excess at its start (computed from the run's own initial weights)
DOMINANT_SHARE = 0.99
# largest relative error of the measured log-contraction ln(rho) against theory (see _ls_claims)
RATE_TOL = 0.02
# interpolated threshold (measured ln rho crossing 0) against 2/lambda_max
THRESHOLD_TOL = 0.01
SLOWDOWN_EPS = 0.5      # slowdown milestone: the loss of the uninformative output 1/2
DIST_EPS = 0.2          # steps-to-target: the loss of a 0.8-confident correct output everywhere
SATURATED_RATIO = 0.1   # a start is saturated when MSE's output gradient is < 10% of BCE's
SLOWER_SHARE = 0.9      # share of saturated starts on which MSE must be slower

# configuration columns that identify one training apart from its loss function
_PAIR_KEYS = ["grid", "data", "widths", "activation", "init", "init_scale", "bias_scale", "lr",
              "seed", "steps", "record_every", "optimizer", "momentum", "batch_size", "batchnorm",
              "dtype"]


# --------------------------------------------------------------------------------------------
# small pieces of theory not in studies.theory

def _sigmoid(z):
    return theory.ACTIVATION_FUNCS["sigmoid"][0](z)


def _sigmoid_grad(z):
    return theory.ACTIVATION_FUNCS["sigmoid"][1](z)


def target_loss(loss, eps):
    r"""The loss of an output at distance ``eps`` from the label on every sample.

    .. math:: \text{mse\_sigmoid}: \epsilon^2, \qquad \text{bce}, \text{ce}: -\ln(1 - \epsilon)

    The same milestone for both losses: ``eps = 0.5`` is the uninformative output 1/2.
    """
    if loss == "mse_sigmoid":
        return eps ** 2
    if loss in ("bce", "ce"):
        return -math.log(1.0 - eps)
    raise ValueError(f"no target for loss {loss!r}")


def _loss_of_logit(loss, z, y):
    """Per-sample loss of logits z against 0/1 labels y (simcore's formulas)."""
    if loss == "mse_sigmoid":
        return (_sigmoid(z) - y) ** 2
    return np.maximum(z, 0.0) - y * z + np.log1p(np.exp(-np.abs(z)))


def _delta(loss, z, y):
    r""":math:`\partial L / \partial z` per sample, before the 1/N of the mean."""
    s = _sigmoid(z)
    if loss == "mse_sigmoid":
        return 2.0 * (s - y) * _sigmoid_grad(z)
    return s - y


def neuron_trajectory(loss, z0, y, eta_eff, steps):
    r"""The exact loss trajectory of a linear sigmoid unit trained on one sample.

    With one sample :math:`x` the gradient of W is :math:`x\delta` and of b is :math:`\delta`, so
    the logit moves by :math:`z_{t+1} = z_t - \eta (\|x\|^2 + 1)\,\delta(z_t)`.

    Parameters
    ----------
    loss : {"mse_sigmoid", "bce"}
    z0 : (G,) array of initial logits
    y : float, the label (0 or 1)
    eta_eff : float, :math:`\eta(\|x\|^2 + 1)`
    steps : int

    Returns
    -------
    (steps + 1, G) array of losses at steps 0..steps
    """
    z = np.array(z0, dtype=np.float64)
    out = np.empty((steps + 1, z.size))
    for t in range(steps + 1):
        out[t] = _loss_of_logit(loss, z, y)
        z = z - eta_eff * _delta(loss, z, y)
    return out


def first_step_below(steps, values, target):
    """The first of ``steps`` at which ``values <= target`` (NaN if never)."""
    hit = np.flatnonzero(np.asarray(values) <= target)
    return float(steps[hit[0]]) if hit.size else np.nan


def contraction_rate(steps, excess, floor=0.0, full_output=False):
    r"""The asymptotic contraction per step of a geometric trajectory :math:`e_t \sim C\rho^{2t}`.

    Keeps the leading run of records with a finite excess above ``floor`` (later ones are
    rounding), fits :math:`\ln e_t` linearly in t on the second half of that run (where the
    slowest direction dominates) and returns :math:`\rho = \exp(\text{slope}/2)`; NaN with fewer
    than 4 usable records.

    Parameters
    ----------
    steps : (R,) array of recorded steps (increasing)
    excess : (R,) array of excess losses :math:`L_t - L^*`
    floor : float, excess values at or below it are not used
    full_output : bool, also return the first step of the fit window (NaN if none)
    """
    steps = np.asarray(steps, dtype=np.float64)
    e = np.asarray(excess, dtype=np.float64)
    ok = np.isfinite(e) & (e > floor)
    bad = np.flatnonzero(~ok)
    n = bad[0] if bad.size else e.size
    if n < 4:
        return (np.nan, np.nan) if full_output else np.nan
    lo = n // 2
    slope = np.polyfit(steps[lo:n], np.log(e[lo:n]), 1)[0]
    rho = float(np.exp(slope / 2.0))
    return (rho, float(steps[lo])) if full_output else rho


def initial_logits(point, X):
    """Logits and the last hidden activations of the network ``point`` starts from (the same
    weights as the grid: ``MLP.init(seed, init_scale, bias_scale)``)."""
    widths = [] if point["widths"] == "linear" else [int(w) for w in str(point["widths"]).split("-")]
    net = MLP([X.shape[1], *widths, 1], activation=point["activation"], loss="bce",
              init=point["init"])
    params = net.init(int(point["seed"]), float(point["init_scale"]), float(point["bias_scale"]))
    f = theory.ACTIVATION_FUNCS[point["activation"]][0]
    a = X
    for layer in params[:-1]:
        a = f(a @ layer["W"] + layer["b"])
    z = a @ params[-1]["W"] + params[-1]["b"]
    return z[:, 0], a


def output_gradient_ratio(z, a, y):
    r"""Ratio of the output layer's weight-gradient norms, MSE over BCE, from the initial logits:

    .. math:: \frac{\|a^T \tfrac{2}{N}(\sigma - y)\sigma'(z)\|}{\|a^T \tfrac{1}{N}(\sigma - y)\|}

    each sample's contribution shrunk by :math:`2\sigma'(z) \le 1/2`, tiny where it saturates."""
    g_mse = a.T @ _delta("mse_sigmoid", z, y)
    g_bce = a.T @ _delta("bce", z, y)
    return float(np.linalg.norm(g_mse) / np.linalg.norm(g_bce))


# --------------------------------------------------------------------------------------------
# helpers on the stored rows

def _data_cols(df):
    return [c for c in df.columns if c.startswith("data_")]


_POINT_ARGS = {}   # point -> the generator's arguments, exactly as in the grid (set by analyse)


def _data_args(row, cols=None):
    """The data set arguments of the point in ``row``, as the grid gave them (the stored
    ``data_*`` columns turn integers into floats where sub-grids differ)."""
    return dict(_POINT_ARGS[int(row["point"])])


def _data_label(name, args):
    return name + ("(" + ", ".join(f"{k}={v}" for k, v in args.items()) + ")" if args else "")


def _trajectories(data):
    """One row per (point, step): the loss (layer 1 carries it)."""
    return data[data["layer"] == 1][["point", "step", "loss"]]


def _per_point(data):
    return data.drop_duplicates("point").set_index("point", drop=False)


def _is_ls(p):
    return ((p["widths"] == "linear") & (p["loss_fn"] == "mse") & (p["optimizer"] == "gd")
            & (p["batch_size"].astype(str) == "full"))


# --------------------------------------------------------------------------------------------
# least squares

def _ls_theory(X, y):
    H = theory.ls_hessian(X)
    lam, U = np.linalg.eigh(H)
    lmin, lmax = theory.ls_spectrum(X)
    sol = theory.ls_solution(X, y)
    return {"lam": lam, "U": U, "lmin": lmin, "lmax": lmax, "Lstar": sol.loss,
            "theta_star": np.r_[sol.W[:, 0], sol.b], "eta_c": theory.ls_threshold(X),
            "eta_star": theory.ls_optimal_step(X), "rho_star": theory.ls_optimal_contraction(lmin, lmax),
            "kappa": theory.ls_condition_number(lmin, lmax)}


def _ls_modes(th, X, point, steps):
    """Per-direction excess loss predicted at ``steps`` from the point's initial weights,
    :math:`\\frac{\\lambda_i}{2} (u_i^T d_0)^2 (1 - \\eta\\lambda_i)^{2t}`, shape (len(steps), d + 1),
    and the factors :math:`|1 - \\eta\\lambda_i|`."""
    net = MLP([X.shape[1], 1], activation="identity", loss="mse", init=point["init"])
    p0 = net.init(int(point["seed"]), float(point["init_scale"]), float(point["bias_scale"]))
    d0 = np.r_[p0[0]["W"][:, 0], p0[0]["b"]] - th["theta_star"]
    c2 = (th["U"].T @ d0) ** 2
    r = np.abs(1.0 - float(point["lr"]) * th["lam"])
    with np.errstate(over="ignore", under="ignore"):
        return (th["lam"] / 2 * c2)[None, :] * r[None, :] ** (2.0 * np.atleast_1d(steps)[:, None]), r


def _ls_predicted_excess(th, X, point, steps):
    """Excess loss predicted at ``steps``: the sum of :func:`_ls_modes`."""
    return _ls_modes(th, X, point, steps)[0].sum(1)


def _dominant_share(th, X, point, t):
    """Share of the predicted excess at step t carried by the slowest directions: those whose
    rate :math:`\\ln|1 - \\eta\\lambda_i|` is within ``RATE_TOL / 2`` (relative) of the slowest
    one, so that any mixture of them still fits a rate within half the tolerance."""
    modes, r = _ls_modes(th, X, point, [t])
    total = modes[0].sum()
    if not np.isfinite(total) or total <= 0:
        return np.nan
    lr_max = np.log(r.max())
    close = np.abs(np.log(np.maximum(r, 1e-300)) - lr_max) <= 0.5 * RATE_TOL * abs(lr_max)
    return float(modes[0][close].sum() / total)


def analyse_least_squares(data, report):
    pts = _per_point(data)
    ls = pts[_is_ls(pts)]
    if ls.empty:
        return
    traj = _trajectories(data[data["point"].isin(ls.index)])
    dcols = _data_cols(ls)
    keys = ["data"] + dcols
    for _, group in ls.groupby(keys, dropna=False, sort=False):
        first = group.iloc[0]
        args = _data_args(first, dcols)
        label = _data_label(first["data"], args)
        X, y = make_data(first["data"], args)[:2]
        if np.asarray(y).ndim != 1:
            report.text(f"Least squares on {label}: several outputs; skipped.")
            continue
        th = _ls_theory(X, np.asarray(y, dtype=np.float64))
        floor = EXCESS_FLOOR * th["Lstar"] + 1e-280
        rows = []
        for pid, t in traj[traj["point"].isin(group.index)].groupby("point", sort=False):
            p = group.loc[pid]
            e = t["loss"].to_numpy() - th["Lstar"]
            steps = t["step"].to_numpy()
            rho_m, t_fit = contraction_rate(steps, e, floor, full_output=True)
            share = _dominant_share(th, X, p, t_fit) if np.isfinite(t_fit) else np.nan
            # converging: the tail shrinks (the start may shrink even above the threshold,
            # while the fast directions die out and the growing one is still small)
            converged = (not bool(p["diverged"])) and bool(rho_m < 1)
            rows.append({"point": pid, "grid": p["grid"], "lr": float(p["lr"]), "seed": int(p["seed"]),
                         "rho_measured": rho_m,
                         "rho_predicted": theory.ls_contraction(float(p["lr"]), th["lmin"], th["lmax"]),
                         "converged": converged, "diverged": bool(p["diverged"]),
                         "fit_from": t_fit, "dominant_share": share})
        m = pd.DataFrame(rows)
        m["log_rate_rel_err"] = (np.abs(np.log(m["rho_measured"]) - np.log(m["rho_predicted"]))
                                 / np.abs(np.log(m["rho_predicted"])))
        m["asymptotic"] = m["dominant_share"] >= DOMINANT_SHARE
        m["steps"] = [int(group.loc[pid, "steps"]) for pid in m["point"]]
        # the rate is measurable only where the run changes the excess by a factor e or more
        m["resolvable"] = np.abs(np.log(m["rho_predicted"])) * m["steps"] >= 1.0
        use = m["asymptotic"] & m["resolvable"] & m["rho_measured"].notna()
        by_eta = (m.groupby("lr").agg(rho_predicted=("rho_predicted", "first"),
                                      converged=("converged", "all"), seeds=("seed", "size"))
                  .join(m[use].groupby("lr").agg(rho_measured=("rho_measured", "median"),
                                                 asymptotic_seeds=("seed", "size")))
                  .reset_index().sort_values("lr"))
        by_eta["asymptotic_seeds"] = by_eta["asymptotic_seeds"].fillna(0).astype(int)
        m["used"] = use
        _ls_claims(report, label, th, m, by_eta)
        _ls_figures(report, label, th, X, m, by_eta, group, traj)


def _ls_claims(report, label, th, m, by_eta):
    eta_c, eta_star, rho_star = th["eta_c"], th["eta_star"], th["rho_star"]
    report.heading(f"Least squares on {label}")
    report.text(
        f"Hessian (2/N) X_aug^T X_aug of the data: lambda_min = {th['lmin']:.4g}, "
        f"lambda_max = {th['lmax']:.4g}, kappa = {th['kappa']:.4g}; threshold 2/lambda_max = "
        f"{eta_c:.4g}, best step eta* = {eta_star:.4g} with contraction (kappa-1)/(kappa+1) = "
        f"{rho_star:.4g}; least-squares optimum L* = {th['Lstar']:.4g}. The measured contraction "
        f"is exp(slope/2) of a straight-line fit of ln(L_t - L*) on the second half of the "
        f"trajectory above {EXCESS_FLOOR:g} L* (below that the excess is rounding).")
    # ln(rho) is the rate per step: its relative error is a far stricter test than rho's own,
    # which is ~0.99 for any small eta. The only bias of the fit is the second-slowest
    # direction: runs whose fit window starts before the slowest directions carry 99% of the
    # predicted excess (from their own initial weights) are not asymptotic and are left out, as
    # are etas so close to 2/lambda_max that the excess changes by less than a factor e over
    # the run (no rate to measure); with a 1% remainder the slope is off by at most ~2%.
    use = m["used"]
    err = m.loc[use, "log_rate_rel_err"]
    worst = float(err.max()) if len(err) else np.nan
    report.claim(
        f"ls_contraction[{label}]",
        f"Measured contraction per step equals max_i |1 - eta lambda_i| at every eta (worst "
        f"relative error of the rate ln rho over {int(use.sum())} asymptotic runs at "
        f"{m.loc[use, 'lr'].nunique()} etas)",
        predicted=0.0, measured=worst, tolerance=f"<= {RATE_TOL:.0%} relative error of ln rho",
        passed=bool(len(err)) and worst <= RATE_TOL and use.mean() >= 0.5,
        note=f"median error {float(err.median()) if len(err) else np.nan:.2g}; left out: "
             f"{int((~m['asymptotic']).sum())} of {len(m)} runs not asymptotic above the rounding "
             f"floor, {int((~m['resolvable']).sum())} at etas with |ln rho| * steps < 1")
    # the measured threshold: between the largest eta that converges (all seeds, all smaller
    # etas too) and the smallest that does not
    conv = by_eta["converged"].to_numpy()
    etas = by_eta["lr"].to_numpy()
    if conv.all() or not conv.any():
        lo = etas[conv].max() if conv.any() else np.nan
        hi = etas[~conv].min() if (~conv).any() else np.nan
        monotone = False
    else:
        hi = etas[~conv].min()
        lo = etas[conv & (etas < hi)].max() if (conv & (etas < hi)).any() else np.nan
        monotone = bool(conv[etas < hi].all() and not conv[etas >= hi].any())
    bracket_ok = monotone and lo < eta_c <= hi
    report.claim(
        f"ls_threshold_bracket[{label}]",
        "GD converges below 2/lambda_max and not above it: the largest converging and the "
        "smallest non-converging eta of the grid bracket 2/lambda_max",
        predicted=eta_c, measured=[float(lo), float(hi)],
        tolerance="lo < 2/lambda_max <= hi, convergence monotone in eta (resolution: grid step)",
        passed=bracket_ok,
        note=f"bracket width {(hi - lo) / eta_c:.2%} of 2/lambda_max; converged = fitted tail "
             f"contraction below 1 for every seed")
    # interpolate ln rho_measured through 0 between the etas either side
    # (etas without a measurable rate, right at the threshold, are skipped)
    lr_rho = np.log(by_eta["rho_measured"].to_numpy())
    finite = np.isfinite(lr_rho)
    fe, fr = etas[finite], lr_rho[finite]
    cross = np.nan
    for i in range(len(fe) - 1):
        if fr[i] < 0 <= fr[i + 1]:
            cross = fe[i] - fr[i] * (fe[i + 1] - fe[i]) / (fr[i + 1] - fr[i])
    report.claim(
        f"ls_threshold_interpolated[{label}]",
        "The eta at which the measured contraction crosses 1 (linear interpolation of ln rho) "
        "is 2/lambda_max",
        predicted=eta_c, measured=float(cross), tolerance=f"within {THRESHOLD_TOL:.0%}",
        passed=bool(np.isfinite(cross) and abs(cross / eta_c - 1) <= THRESHOLD_TOL),
        note=f"relative error {abs(cross / eta_c - 1):.2g}" if np.isfinite(cross) else
             "the measured contraction never crosses 1 on this eta axis")
    # the fastest measured contraction and where it sits
    valid = by_eta[np.isfinite(by_eta["rho_measured"])]
    best = valid.loc[valid["rho_measured"].idxmin()]
    below = etas[etas <= eta_star]
    above = etas[etas >= eta_star]
    neighbours = [x for x in (below.max() if below.size else None, above.min() if above.size else None)
                  if x is not None]
    report.claim(
        f"ls_optimal_step[{label}]",
        "The eta with the fastest measured contraction is the grid point next to "
        "eta* = 2/(lambda_min + lambda_max)",
        predicted=eta_star, measured=float(best["lr"]),
        tolerance="one of the two grid etas either side of eta*",
        passed=float(best["lr"]) in neighbours,
        note=f"{(best['lr'] / eta_star - 1):+.2%} from eta*; grid neighbours "
             f"{', '.join(f'{x:.4g}' for x in neighbours)}")
    rho_grid = theory.ls_contraction(float(best["lr"]), th["lmin"], th["lmax"])
    slack = abs(rho_grid - rho_star) + 0.01 * rho_star
    report.claim(
        f"ls_optimal_contraction[{label}]",
        "The best measured contraction is (kappa - 1)/(kappa + 1)",
        predicted=rho_star, measured=float(best["rho_measured"]),
        tolerance="within |rho(eta_best) - rho*| (grid offset) + 1% of rho*",
        passed=abs(float(best["rho_measured"]) - rho_star) <= slack,
        note=f"theory at the grid eta {best['lr']:.4g}: {rho_grid:.4g}; kappa = {th['kappa']:.4g}")
    table = by_eta.assign(rel_err_ln_rho=(np.abs(np.log(by_eta["rho_measured"]) - np.log(by_eta["rho_predicted"]))
                                          / np.abs(np.log(by_eta["rho_predicted"]))))
    pick = np.unique(np.r_[np.linspace(0, len(table) - 1, min(len(table), 12)).round().astype(int),
                           np.searchsorted(table["lr"].to_numpy(), [eta_star, eta_c]).clip(0, len(table) - 1)])
    report.table(table.iloc[pick][["lr", "seeds", "asymptotic_seeds", "rho_predicted", "rho_measured",
                                   "rel_err_ln_rho", "converged"]]
                 .rename(columns={"lr": "eta"}),
                 f"Contraction per step on {label} at a selection of etas (measured: median over seeds)")


def _ls_figures(report, label, th, X, m, by_eta, group, traj):
    slug = re.sub(r"[^0-9a-z]+", "_", label.lower()).strip("_")[:40]
    eta_c, eta_star = th["eta_c"], th["eta_star"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    grid_eta = np.geomspace(m["lr"].min() * 0.9, m["lr"].max() * 1.1, 600)
    ax.plot(grid_eta, theory.ls_contraction(grid_eta, th["lmin"], th["lmax"]), "k-", lw=1.6,
            label=r"theory $\max_i|1-\eta\lambda_i|$")
    ax.plot(grid_eta, np.abs(1 - grid_eta * th["lmin"]), ":", color="tab:blue", lw=1,
            label=r"$|1-\eta\lambda_{min}|$")
    ax.plot(grid_eta, np.abs(1 - grid_eta * th["lmax"]), ":", color="tab:red", lw=1,
            label=r"$|1-\eta\lambda_{max}|$")
    conv, use = m["converged"], m["used"]
    ax.scatter(m.loc[conv & use, "lr"], m.loc[conv & use, "rho_measured"], s=14, color="tab:green",
               alpha=0.7, label="measured, converging run", zorder=3)
    ax.scatter(m.loc[~conv & use, "lr"], m.loc[~conv & use, "rho_measured"], s=14, marker="x",
               color="tab:red", alpha=0.8, label="measured, non-converging run", zorder=3)
    if (~use).any():
        ax.scatter(m.loc[~use, "lr"], m.loc[~use, "rho_measured"], s=14, facecolors="none",
                   edgecolors="gray", label="not asymptotic (left out)", zorder=2)
    ax.axvline(eta_star, color="tab:purple", ls="--", lw=1, label=rf"$\eta^*$ = {eta_star:.3g}")
    ax.axvline(eta_c, color="tab:gray", ls="--", lw=1, label=rf"$2/\lambda_{{max}}$ = {eta_c:.3g}")
    ax.axhline(th["rho_star"], color="tab:purple", ls=":", lw=0.8)
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xticks([x for x in (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0) if grid_eta[0] <= x <= grid_eta[-1]])
    ax.xaxis.set_major_formatter(plt.ScalarFormatter())
    ax.set_ylim(max(0.0, th["rho_star"] - 0.15), min(np.nanmax(m["rho_measured"]) + 0.05, 2.0))
    ax.set_xlim(grid_eta[0], grid_eta[-1])
    ax.set_xlabel(r"learning rate $\eta$ (log scale)")
    ax.set_ylabel(r"contraction per step $\rho$ (error factor per update)")
    ax.set_title(f"{label}\nkappa = {th['kappa']:.3g}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    report.figure(f"ls_contraction_{slug}", fig,
                  f"Least squares on {label}: contraction per step against eta, measured on every run "
                  "(points) and predicted from the Hessian's spectrum (line).")

    # trajectories of a few etas, with the exact prediction from the initial weights
    etas = np.sort(m["lr"].unique())
    wanted = [etas.min(), eta_star, 0.5 * (eta_star + eta_c), eta_c * 1.01]
    chosen = []
    for w in wanted:
        e = etas[np.argmin(np.abs(etas - w))]
        if e not in chosen:
            chosen.append(e)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    seed0 = group["seed"].min()
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(chosen)))
    for e, c in zip(chosen, colors):
        pid = group[(group["lr"] == e) & (group["seed"] == seed0)].index[0]
        t = traj[traj["point"] == pid]
        exc = t["loss"].to_numpy() - th["Lstar"]
        keep = exc > 0
        ax.plot(t["step"].to_numpy()[keep], exc[keep], "o", ms=2.5, color=c, alpha=0.6)
        s = np.arange(0, int(group["steps"].max()) + 1)
        pred = _ls_predicted_excess(th, X, group.loc[pid], s)
        keep = (pred > 1e-3 * EXCESS_FLOOR * th["Lstar"]) & (pred < 1e30)
        ax.plot(s[keep], pred[keep], "-", color=c, lw=1.2,
                label=rf"$\eta$ = {e:.3g} ($\rho$ = {theory.ls_contraction(e, th['lmin'], th['lmax']):.3f})")
    ax.axhline(EXCESS_FLOOR * th["Lstar"], color="gray", lw=0.6, ls=":", label="rounding floor")
    ax.set_yscale("log")
    ax.set_xlabel("step (full-batch updates)")
    ax.set_ylabel(r"excess loss $L_t - L^*$ (log scale)")
    ax.set_title(f"seed {seed0}: measured (points), exact theory (lines)")
    ax.legend(fontsize=8)
    report.figure(f"ls_trajectories_{slug}", fig,
                  f"Excess training loss over the least-squares optimum for a few etas on {label}: "
                  "points are recorded losses, lines the exact prediction sum_i (lambda_i/2) c_i^2 "
                  "(1 - eta lambda_i)^(2t) from the same initial weights.")


# --------------------------------------------------------------------------------------------
# learning slowdown

def _pairs(pts):
    """Points of sub-grids that train both mse_sigmoid and bce, paired by configuration."""
    cand = pts[pts["loss_fn"].isin(["mse_sigmoid", "bce"])]
    grids = [g for g, r in cand.groupby("grid") if set(r["loss_fn"]) >= {"mse_sigmoid", "bce"}]
    cand = cand[cand["grid"].isin(grids)]
    if cand.empty:
        return None
    keys = [k for k in _PAIR_KEYS if k in cand.columns] + _data_cols(cand)
    cand = cand.assign(_key=cand[keys].apply(lambda col: col.map(repr)).agg("|".join, axis=1))
    mse = cand[cand["loss_fn"] == "mse_sigmoid"].set_index("_key")
    bce = cand[cand["loss_fn"] == "bce"].set_index("_key")
    common = mse.index.intersection(bce.index)
    return mse.loc[common], bce.loc[common]


def analyse_slowdown(data, report):
    pts = _per_point(data)
    paired = _pairs(pts)
    if paired is None or paired[0].empty:
        return
    mse, bce = paired
    traj = _trajectories(data[data["point"].isin(np.r_[mse["point"], bce["point"]])])
    traj_by = {pid: t for pid, t in traj.groupby("point", sort=False)}
    out0 = data[(data["step"] == 0)]
    out0 = out0[out0["layer"] == out0.groupby("point")["layer"].transform("max")].set_index("point")
    dcols = _data_cols(mse)
    report.heading("Learning slowdown: MSE on a sigmoid output against cross-entropy")
    report.text(
        f"Pairs of runs from the same initial weights, one with loss mse_sigmoid and one with bce. "
        f"Target: the loss of an output at distance {SLOWDOWN_EPS} from every label "
        f"(mse_sigmoid {target_loss('mse_sigmoid', SLOWDOWN_EPS):.4g}, bce "
        f"{target_loss('bce', SLOWDOWN_EPS):.4g}): the same milestone for both losses. Runs that "
        "never reach it count as censored at their step budget.")
    rows = []
    for key in mse.index:
        pm, pb = mse.loc[key], bce.loc[key]
        args = _data_args(pm, dcols)
        X, y = make_data(pm["data"], args)[:2]
        y = np.asarray(y, dtype=np.float64)
        z0, a = initial_logits(pm, X)
        r = {"grid": pm["grid"], "data": _data_label(pm["data"], args), "n": X.shape[0],
             "seed": int(pm["seed"]), "lr": float(pm["lr"]), "steps": int(pm["steps"]),
             "linear": pm["widths"] == "linear", "z0": float(z0[0]) if X.shape[0] == 1 else np.nan,
             "y0": float(y[0]), "point_mse": int(pm["point"]), "point_bce": int(pb["point"]),
             "wrong_saturated": float(np.mean(np.abs(_sigmoid(z0) - y) > 0.9)),
             "ratio_predicted": output_gradient_ratio(z0, a, y),
             "ratio_measured": float(out0.loc[pm["point"], "grad_norm"] / out0.loc[pb["point"], "grad_norm"])}
        for loss, p in (("mse", pm), ("bce", pb)):
            t = traj_by[int(p["point"])]
            r[f"steps_{loss}"] = first_step_below(t["step"].to_numpy(), t["loss"].to_numpy(),
                                                  target_loss(p["loss_fn"], SLOWDOWN_EPS))
            r[f"record_every"] = int(p["record_every"])
        if X.shape[0] == 1 and pm["widths"] == "linear":
            r["eta_eff"] = float(pm["lr"]) * (float(X[0] @ X[0]) + 1.0)
        rows.append(r)
    df = pd.DataFrame(rows)
    for c in ("pred_mse", "pred_bce", "pred_raw_mse", "pred_raw_bce", "eta_eff"):
        if c not in df:
            df[c] = np.nan
    # Nielsen's neuron: the exact map, all seeds of one configuration at once
    single = df["eta_eff"].notna()
    for (eta_eff, y0, steps, re), idx in df[single].groupby(["eta_eff", "y0", "steps", "record_every"]).groups.items():
        for loss, name in (("mse", "mse_sigmoid"), ("bce", "bce")):
            pred = neuron_trajectory(name, df.loc[idx, "z0"].to_numpy(), y0, eta_eff, int(steps))
            s = np.array([first_step_below(np.arange(pred.shape[0]), pred[:, j], target_loss(name, SLOWDOWN_EPS))
                          for j in range(pred.shape[1])])
            df.loc[idx, f"pred_raw_{loss}"] = s
            # the first recorded step at or after it
            df.loc[idx, f"pred_{loss}"] = np.where(np.isfinite(s), np.minimum(np.ceil(s / re) * re, steps), np.nan)
    # censored steps count as the budget (+1 record): a lower bound on the slowdown
    cens = lambda s, d: np.where(np.isfinite(s), s, d["steps"] + d["record_every"])  # noqa: E731
    df["factor"] = cens(df["steps_mse"], df) / np.maximum(cens(df["steps_bce"], df), 1)
    neuron = df[df["n"] == 1]
    multi = df[df["n"] > 1]
    if not neuron.empty:
        _neuron_claims(report, neuron, mse, traj_by)
    for label, d in multi.groupby("data", sort=False):
        _data_slowdown_claims(report, label, d, traj_by)


def _neuron_claims(report, d, mse, traj_by):
    both = pd.concat([d["steps_mse"], d["steps_bce"]]).to_numpy()
    pred = pd.concat([d["pred_mse"], d["pred_bce"]]).to_numpy()
    re = pd.concat([d["record_every"], d["record_every"]]).to_numpy()
    same = (np.isnan(both) & np.isnan(pred)) | (np.abs(both - pred) <= re)
    report.claim(
        "slowdown_neuron_exact",
        "One sigmoid neuron on one sample: the exact map z <- z - eta(|x|^2+1) delta(z) predicts "
        "the steps to the target of both losses",
        predicted=f"{int(np.isfinite(pred).sum())} of {pred.size} runs reach it",
        measured=float(np.mean(same)), tolerance="every run within one record interval (share = 1)",
        passed=bool(same.all()),
        note=f"{int((~same).sum())} runs differ; the logit starts at the point's initial weights")
    sat = d[(d["wrong_saturated"] > 0) & (np.abs(d["z0"]) >= 2.0)]
    if len(sat):
        slower = float(np.mean(sat["factor"] > 1))
        # the map's steps rounded up to the record grid, censored like the runs
        pf = (np.where(np.isfinite(sat["pred_mse"]), sat["pred_mse"], sat["steps"] + sat["record_every"])
              / np.maximum(np.where(np.isfinite(sat["pred_bce"]), sat["pred_bce"],
                                    sat["steps"] + sat["record_every"]), 1))
        report.claim(
            "slowdown_neuron",
            "From a start saturated at the wrong answer (|z0| >= 2, output on the wrong side), "
            "MSE reaches the target more slowly than cross-entropy (Nielsen ch. 3); measured factor "
            "= median steps ratio MSE/BCE",
            predicted=float(np.median(pf)), measured=float(np.median(sat["factor"])),
            tolerance=f"MSE slower on every saturated start; median factor within 10% of the map's",
            passed=slower == 1.0 and abs(np.median(sat["factor"]) / np.median(pf) - 1) <= 0.10,
            note=f"{len(sat)} saturated starts, MSE slower on {slower:.0%}; "
                 f"{int(sat['steps_mse'].isna().sum())} MSE runs censored at the budget")
    # figures: a Nielsen-style pair of curves, and steps against z0
    worst = d[(d["y0"] == 0) & (d["z0"] > 0)]
    if len(worst):
        pick = worst.iloc[np.argmin(np.abs(worst["z0"] - np.median(worst["z0"])))]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        ax = axes[0]
        eta_eff_steps = int(pick["steps"])
        for loss, name, color in (("mse", "mse_sigmoid", "tab:red"), ("bce", "bce", "tab:blue")):
            t = traj_by[int(pick[f"point_{loss}"])]
            ax.plot(t["step"], t["loss"], "o", ms=2, color=color, alpha=0.4)
            pm = mse[mse["point"] == pick["point_mse"]].iloc[0]
            X, _ = make_data(pm["data"], _data_args(pm, _data_cols(mse)))[:2]
            pred = neuron_trajectory(name, [pick["z0"]], pick["y0"], pick["lr"] * (float(X[0] @ X[0]) + 1),
                                     eta_eff_steps)[:, 0]
            ax.plot(np.arange(pred.size), pred, "-", color=color, lw=1.3, label=f"{name}: map (line), run (points)")
            ax.axhline(target_loss(name, SLOWDOWN_EPS), color=color, ls=":", lw=0.8)
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(0, eta_eff_steps)
        ax.set_yscale("log")
        ax.set_xlabel("step (updates, symlog scale)")
        ax.set_ylabel("training loss (log scale)")
        ax.set_title(f"One neuron, seed {pick['seed']}: z0 = {pick['z0']:.2f}, target y = 0")
        ax.legend(fontsize=8)
        ax = axes[1]
        zz = np.linspace(0.05, max(d["z0"].abs().max(), 1.0), 200)
        for loss, name, color in (("mse", "mse_sigmoid", "tab:red"), ("bce", "bce", "tab:blue")):
            sub = d[d["y0"] == 0]
            zs = np.r_[sub["z0"], -d[d["y0"] == 1]["z0"]]
            st = np.r_[sub[f"steps_{loss}"], d[d["y0"] == 1][f"steps_{loss}"]]
            ax.plot(zs, np.where(np.isfinite(st), st, np.nan), "o", ms=3, color=color, alpha=0.6,
                    label=f"{name}, measured")
            pred = neuron_trajectory(name, zz, 0.0, float(d["lr"].iloc[0]) * (float(X[0] @ X[0]) + 1),
                                     int(d["steps"].max()))
            s = np.array([first_step_below(np.arange(pred.shape[0]), pred[:, j], target_loss(name, SLOWDOWN_EPS))
                          for j in range(zz.size)])
            ax.plot(zz, s, "-", color=color, lw=1.3, label=f"{name}, exact map")
        ax.axhline(int(d["steps"].max()), color="gray", ls=":", lw=0.8, label="step budget")
        ax.set_yscale("log")
        ax.set_xlim(0, zz[-1] * 1.05)
        ax.set_xlabel("initial logit on the wrong side, z0 (y = 0; sign flipped for y = 1)")
        ax.set_ylabel("steps to the target (log scale)")
        ax.set_title("Escape time from the initial saturation")
        ax.legend(fontsize=8)
        report.figure("slowdown_neuron", fig,
                      "Nielsen's neuron: left, loss over steps for MSE (red) and cross-entropy (blue) "
                      "from the same saturated start, runs as points and the exact map as lines; "
                      "right, steps to the target against the initial logit (runs above the budget "
                      "never reached it).")


def _data_slowdown_claims(report, label, d, traj_by):
    err = np.abs(d["ratio_measured"] / d["ratio_predicted"] - 1)
    report.claim(
        f"slowdown_gradient_ratio[{label}]",
        "At the start, the output layer's gradient norm under MSE is the cross-entropy one "
        "shrunk by the sigmoid' factors: ||a^T 2(s-y)s'(z)|| / ||a^T (s-y)|| from the initial network",
        predicted=float(np.median(d["ratio_predicted"])), measured=float(np.median(d["ratio_measured"])),
        tolerance="every seed within 1e-6 relative (medians shown)",
        passed=bool((err <= 1e-6).all()),
        note=f"worst relative error {err.max():.2g} over {len(d)} seeds; the ratio is <= 1/2 "
             f"everywhere since 2 s'(z) <= 1/2")
    sat = d[d["ratio_predicted"] < SATURATED_RATIO]
    if len(sat):
        slower = float(np.mean(sat["factor"] > 1))
        report.claim(
            f"slowdown[{label}]",
            f"From saturated starts (MSE's initial output gradient < {SATURATED_RATIO:g} of BCE's), "
            "MSE reaches the target more slowly than cross-entropy; measured = median steps "
            "ratio MSE/BCE, predicted = median initial speed ratio BCE/MSE (1/gradient ratio)",
            predicted=float(np.median(1 / sat["ratio_predicted"])), measured=float(np.median(sat["factor"])),
            tolerance=f"MSE slower on >= {SLOWER_SHARE:.0%} of saturated starts and median factor > 1",
            passed=slower >= SLOWER_SHARE and np.median(sat["factor"]) > 1,
            note=f"{len(sat)} of {len(d)} seeds saturated; MSE slower on {slower:.0%}; "
                 f"{int(sat['steps_mse'].isna().sum())} MSE runs censored at the budget (factor "
                 f"then a lower bound); the initial speed ratio is only a guide to the factor")
    # figure: median loss over saturated starts, normalised by the target
    use = sat if len(sat) else d
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    for loss, name, color in (("mse", "mse_sigmoid", "tab:red"), ("bce", "bce", "tab:blue")):
        curves = pd.concat([traj_by[int(p)].assign(seed=s) for p, s in zip(use[f"point_{loss}"], use["seed"])])
        curves["rel"] = curves["loss"] / target_loss(name, SLOWDOWN_EPS)
        q = curves.groupby("step")["rel"].quantile([0.25, 0.5, 0.75]).unstack()
        ax.plot(q.index, q[0.5], color=color, label=f"{name} (median, 25-75% band)")
        ax.fill_between(q.index, q[0.25], q[0.75], color=color, alpha=0.2)
    ax.axhline(1.0, color="k", ls=":", lw=0.8, label="target")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(0, int(use["steps"].max()))
    ax.set_yscale("log")
    ax.set_xlabel("step (full-batch updates, symlog scale)")
    ax.set_ylabel("training loss / target loss (log scale)")
    ax.set_title(f"{label}: {len(use)} saturated starts")
    ax.legend(fontsize=8)
    ax = axes[1]
    f = d["factor"]
    cens = d["steps_mse"].isna()
    ax.scatter(1 / d.loc[~cens, "ratio_predicted"], f[~cens], s=12, color="tab:red", label="MSE reached the target")
    ax.scatter(1 / d.loc[cens, "ratio_predicted"], f[cens], s=16, marker="^", color="tab:orange",
               label="MSE censored (lower bound)")
    lim = np.array([1.0, max(float((1 / d["ratio_predicted"]).max()), float(f.max()), 10.0)])
    ax.plot(lim, lim, "k--", lw=0.8, label="factor = initial speed ratio")
    ax.axhline(1.0, color="gray", lw=0.6)
    ax.axvline(1 / SATURATED_RATIO, color="gray", ls=":", lw=0.8, label="saturation cut")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("predicted initial speed ratio BCE/MSE, 1/gradient ratio (log scale)")
    ax.set_ylabel("measured slowdown, steps MSE / steps BCE (log scale)")
    ax.set_title("Slowdown per seed")
    ax.legend(fontsize=8)
    slug = re.sub(r"[^0-9a-z]+", "_", label.lower()).strip("_")[:40]
    report.figure(f"slowdown_{slug}", fig,
                  f"Learning slowdown on {label}: left, loss relative to the target for MSE (red) and "
                  "cross-entropy (blue) from the same saturated starts; right, the measured slowdown "
                  "per seed against the initial gradient ratio predicted from sigma'(z).")


# --------------------------------------------------------------------------------------------
# steps-to-target distributions

def analyse_steps_to_target(data, report, exclude):
    pts = _per_point(data)
    pts = pts[pts["loss_fn"].isin(["bce", "ce"]) & ~pts["grid"].isin(exclude)]
    if pts.empty:
        return
    traj = _trajectories(data[data["point"].isin(pts.index)])
    target = pts["loss_fn"].map(lambda l: target_loss(l, DIST_EPS))
    hit = traj[traj["loss"].to_numpy() <= target.loc[traj["point"]].to_numpy()]
    first = hit.groupby("point")["step"].min()
    labels = {pid: _data_label(p["data"], _data_args(p)) for pid, p in pts.iterrows()}
    df = pd.DataFrame({"grid": pts["grid"], "data": [labels[i] for i in pts.index],
                       "loss_fn": pts["loss_fn"], "widths": pts["widths"],
                       "activation": pts["activation"], "lr": pts["lr"].astype(float),
                       "seed": pts["seed"].astype(int), "steps_budget": pts["steps"].astype(int),
                       "steps_to_target": first.reindex(pts.index).astype(float).to_numpy()})
    df["censored"] = df["steps_to_target"].isna()
    df["steps_inf"] = df["steps_to_target"].fillna(np.inf)
    report.heading("Steps to target over seeds")
    report.text(
        f"Target: the loss of an output {1 - DIST_EPS:.0%} confident in the correct class on every "
        f"sample (bce/ce {target_loss('bce', DIST_EPS):.4g}); the first recorded step at or below "
        "it. Runs that never reach it within the budget are censored (drawn above the budget line; "
        "medians count them as infinite).")
    cells = ["data", "loss_fn", "widths", "activation", "lr"]
    q = lambda p: (lambda s: float(np.quantile(s, p, method="inverted_cdf")))  # noqa: E731
    summary = (df.groupby(cells, sort=False)
               .agg(seeds=("seed", "size"), reached=("censored", lambda c: float(1 - c.mean())),
                    p10=("steps_inf", q(0.1)), median=("steps_inf", q(0.5)), p90=("steps_inf", q(0.9)),
                    budget=("steps_budget", "max"))
               .reset_index())
    report.table(summary, "Steps to target per cell: share of seeds that reached it, 10th/50th/90th "
                          "percentiles (inf: not reached within the budget)")
    # claim: zero-centred tanh hidden units reach the target in fewer steps than logistic sigmoid
    # (LeCun et al. 1998, Efficient BackProp sec. 4.4; Glorot & Bengio 2010)
    wide = summary.pivot_table(index=["data", "loss_fn", "widths", "lr"], columns="activation",
                               values="median", aggfunc="first")
    if {"tanh", "sigmoid"} <= set(wide.columns):
        pair = wide[["tanh", "sigmoid"]].dropna(how="all")
        pair = pair[np.isfinite(pair["tanh"]) | np.isfinite(pair["sigmoid"])]
        faster = pair["tanh"] < pair["sigmoid"]
        report.claim(
            "tanh_faster_than_sigmoid",
            "Hidden tanh units (zero-centred) reach the target in fewer median steps than logistic "
            "sigmoid units, in every cell of data set and architecture (LeCun et al. 1998; Glorot "
            "& Bengio 2010)",
            predicted=f"tanh faster in {len(pair)} of {len(pair)} cells", measured=f"{int(faster.sum())} of {len(pair)}",
            tolerance="every cell", passed=bool(len(pair)) and bool(faster.all()),
            note="; ".join(f"{i[0]} {i[2]}: tanh {r['tanh']:.4g}, sigmoid {r['sigmoid']:.4g}"
                           for i, r in pair.iterrows())[:600])
    # figure
    df["cell"] = df["widths"].astype(str) + " " + df["activation"]
    datas = list(dict.fromkeys(df["data"]))
    fig, axes = plt.subplots(1, len(datas), figsize=(4.2 * len(datas) + 1, 4.6), squeeze=False, sharey=True)
    budget = df["steps_budget"].max()
    for ax, dname in zip(axes[0], datas):
        sub = df[df["data"] == dname]
        order = list(dict.fromkeys(sub.sort_values(["widths", "activation"])["cell"]))
        vals = [sub[(sub["cell"] == c) & ~sub["censored"]]["steps_to_target"].to_numpy() for c in order]
        pos = np.arange(1, len(order) + 1)
        ax.boxplot([v if v.size else [np.nan] for v in vals], positions=pos, widths=0.6, showfliers=True,
                   flierprops={"markersize": 2})
        for k, (x, c) in enumerate(zip(pos, order)):
            n_c = int(sub[(sub["cell"] == c)]["censored"].sum())
            n = int((sub["cell"] == c).sum())
            if n_c:
                ax.plot([x], [budget * 1.3], "v", color="tab:red", ms=5)
                ax.text(x, budget * (1.6 if k % 2 == 0 else 1.95), f"{n_c}/{n}", ha="center", fontsize=6.5,
                        color="tab:red")
        ax.axhline(budget, color="tab:red", ls=":", lw=0.8)
        ax.set_xticks(pos)
        ax.set_xticklabels(order, rotation=45, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylim(max(1.0, 0.5 * float(df["steps_to_target"].min(skipna=True) if (~df["censored"]).any() else 1.0)),
                    budget * 2.5)
        ax.set_title(dname, fontsize=9)
        ax.set_xlabel("hidden widths and activation")
    axes[0][0].set_ylabel("steps to target (log scale); red: censored / seeds")
    report.figure("steps_to_target", fig,
                  "Steps to the target loss over seeds, per data set, hidden widths and activation "
                  "(boxes: runs that reached it; red counts above the dotted budget line: runs that "
                  "did not).")


# --------------------------------------------------------------------------------------------

def analyse(data, spec, report):
    """The convergence study's claims, figures and tables (see the module docstring)."""
    _POINT_ARGS.clear()
    _POINT_ARGS.update({p["point"]: p["data_args"] for p in expand(spec)})
    data = data[data["kind"] == "mlp"] if "kind" in data.columns else data
    analyse_least_squares(data, report)
    pts = _per_point(data)
    paired = _pairs(pts)
    slow_grids = set(paired[0]["grid"]) if paired is not None else set()
    analyse_slowdown(data, report)
    ls_grids = set(pts[_is_ls(pts)]["grid"])
    analyse_steps_to_target(data, report, exclude=slow_grids | ls_grids)
