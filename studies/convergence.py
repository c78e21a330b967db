r"""How fast gradient descent converges: the least-squares threshold and optimal step, the
period-2 oscillation before divergence, heavy-ball momentum, the learning slowdown of a
saturated sigmoid output under MSE, and steps-to-target over seeds.

Every statement is one of three kinds (``shared/design/SCIENCE.md``): a **prediction** (theory's
number from :mod:`studies.theory` and the data beside the measured one, with a tolerance from
the grid's resolution or the fit's computed bias), an engine **check** (an identity any correct
implementation satisfies; appendix only, tested in ``tests/test_study_convergence.py``) or an
**observation** (no theory gives a number). The analyses are picked by the configuration of a
sub-grid, not its name:

* **Least squares** -- linear models (``widths = []``), ``loss = "mse"``, full-batch ``gd``.
  Theory: the Hessian :math:`H = \frac{2}{N} X_{aug}^T X_{aug}`, the contraction per step
  :math:`\rho(\eta) = \max_i |1 - \eta\lambda_i|`, the threshold :math:`2/\lambda_{max}`, the
  best step :math:`\eta^* = 2/(\lambda_{min} + \lambda_{max})` and its contraction
  :math:`(\kappa - 1)/(\kappa + 1)`. Measured: the excess loss
  :math:`e_t = L_t - L^* = \sum_i \frac{\lambda_i}{2} c_i^2 (1 - \eta\lambda_i)^{2t}`;
  :func:`contraction_rate` fits its rate on the tail of each trajectory. Predictions:
  ``ls_contraction``, ``ls_threshold_bracket``, ``ls_threshold_interpolated`` (tolerance: the
  same interpolation applied to the theory at the grid's etas, plus the fit's error at both
  ends), ``ls_optimal_step`` and ``ls_optimal_contraction``; check: ``ls_monotone`` (below the
  threshold every mode shrinks, so the loss never rises).
* **Oscillation before divergence** -- the same runs. The engine stores losses and per-layer
  telemetry, not the parameters over time; the output layer's ``act_mean`` (the mean output
  over the samples) is a linear read-out of them, :math:`m_t - \bar y = c^T(\theta_t - \theta^*)`
  with :math:`c = \frac12 H e_b`, whose weight on eigenvector i is
  :math:`\frac{\lambda_i}{2}(u_i)_b` (large for the top direction on this data), so its sign and
  rate are measured, from the stored rows, on the steps where the top direction dominates it
  (computed from each run's initial weights). The loss alone cannot show a sign. Predictions:
  ``ls_oscillation_sign`` (a sign change every step iff :math:`\eta > 1/\lambda_{max}`) and
  ``ls_oscillation_rate`` (:math:`|1 - \eta\lambda_{max}|`, shrinking below
  :math:`2/\lambda_{max}`, growing above). Between :math:`1/\lambda_{max}` and :math:`\eta^*` the
  top direction alternates but is not the slowest, so the read-out's tail follows
  :math:`\lambda_{min}` and few of those steps are tested.
* **Heavy-ball momentum** (Polyak 1964) -- the same problem with ``optimizer = "momentum"``
  (simcore: :math:`v \leftarrow \beta v + g,\ \theta \leftarrow \theta - \eta v`, Polyak's
  iteration). Theory: the root modulus of :math:`x^2 - (1 + \beta - \eta\lambda)x + \beta` per
  direction (:func:`studies.theory.heavy_ball_factor`), the threshold
  :math:`2(1 + \beta)/\lambda_{max}` and the optimum :math:`(\sqrt\kappa - 1)/(\sqrt\kappa + 1)`.
  With complex roots the excess oscillates and a straight-line fit of :math:`\ln e_t` is biased;
  each run's fit window (second half or whole run above the floor) and its bias are computed by
  fitting the exact trajectory from the same start (:func:`studies.theory.heavy_ball_excess`),
  and runs whose exact trajectory the fit misreads by more than ``RATE_TOL / 2`` are left out of
  ``hb_contraction``. Predictions: ``hb_contraction``, ``hb_threshold_bracket`` and
  ``hb_threshold_interpolated`` (per sub-grid with one beta), ``hb_optimal_rate``.
* **Learning slowdown** (Nielsen, *Neural Networks and Deep Learning*, ch. 3) -- sub-grids with
  both ``loss = "mse_sigmoid"`` and ``"bce"``, paired by initial weights. MSE's output delta
  carries :math:`\sigma'(z)`, :math:`\delta = \frac{2}{N}(\sigma - y)\sigma'(z)`, cross-entropy's
  does not, :math:`\delta = \frac1N(\sigma - y)`. Target: the loss of an output at distance
  ``SLOWDOWN_EPS`` from every label (:func:`target_loss`). On one sample with a linear model
  (Nielsen's neuron) the logit follows :math:`z \leftarrow z - \eta (\|x\|^2 + 1)\,\delta(z)`
  (:func:`neuron_trajectory`; the check ``slowdown_neuron_exact``), whose gradient-flow limit
  (:func:`studies.theory.sigmoid_escape_time`) gives the laws: steps like :math:`e^{z_0}` for MSE
  and like :math:`z_0` for cross-entropy from a start :math:`z_0` on the wrong side. Predictions
  ``slowdown_law_mse`` (slope of ln steps over :math:`z_0`) and ``slowdown_law_bce`` (slope of
  steps), fitted on a sub-grid whose zero weights make the initial logit the bias, so that
  ``bias_scale`` is a :math:`z_0` axis. On a data set only the initial gradient ratio
  :math:`\|a^T\delta_{mse}\| / \|a^T\delta_{bce}\|` is exact (check ``slowdown_gradient_ratio``);
  the slowdown factor there is an observation.
* **Steps to target** -- every other sub-grid with ``bce`` or ``ce``: the first recorded step at
  which the training loss reaches the loss of a ``DIST_EPS``-confident correct output, over
  seeds (observations). Zero-centring is judged without the step-size confound: since
  :math:`\sigma(x) - \frac12 = \frac12\tanh(x/2)`, the centred twin of a sigmoid run at
  :math:`(\eta, s)` with one hidden layer is the tanh run at :math:`(\eta/4, s/2)` (see
  ``_zero_centring``); the
  old claim "tanh reaches the target faster than sigmoid at equal eta" compared tanh's 4-times
  larger effective step and is kept only as the observation ``tanh_vs_sigmoid_equal_eta``.
  Where a sub-grid holds a quarter of its samples out (``holdout``), the generalisation is
  reported beside the fit: a table of the final training and held-out loss and accuracy per
  cell and a figure of both losses over training (medians over seeds; the held-out values are
  the grid engine's, ``train_grid(validation=...)``).
"""
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from simcore import MLP, activations, losses
from simcore.losses import LOSSES

from . import theory
from .rows import bracket, data_label, data_set, of_kind, per_run, slug

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
SLOWDOWN_EPS = 0.5      # slowdown milestone: the loss of the uninformative output 1/2
DIST_EPS = 0.2          # steps-to-target: the loss of a 0.8-confident correct output everywhere
SATURATED_RATIO = 0.1   # a start is saturated when MSE's output gradient is < 10% of BCE's

# configuration columns that identify one training apart from its loss function
_PAIR_KEYS = ["grid", "data", "widths", "activation", "init", "init_scale", "bias_scale", "lr",
              "seed", "steps", "record_every", "optimizer", "momentum", "batch_size", "batchnorm",
              "dtype"]


# --------------------------------------------------------------------------------------------
# small pieces of theory not in studies.theory

def target_loss(loss, eps):
    r"""The loss of an output at distance ``eps`` from the label on every sample: simcore's loss
    of a correct output :math:`1 - \epsilon` (a logit :math:`z = \ln\frac{1 - \epsilon}{\epsilon}`
    against label 1; for ``ce`` the two-class row :math:`(z, 0)`, whose softmax gives the label
    :math:`1 - \epsilon`).

    .. math:: \text{mse\_sigmoid}: \epsilon^2, \qquad \text{bce}, \text{ce}: -\ln(1 - \epsilon)

    The same milestone for both losses: ``eps = 0.5`` is the uninformative output 1/2.
    """
    if loss not in ("mse_sigmoid", "bce", "ce"):
        raise ValueError(f"no target for loss {loss!r}")
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps!r}")
    z = math.log((1.0 - eps) / eps)
    if loss == "ce":
        return losses.ce(np.array([[z, 0.0]]), [0])[0]
    return float(LOSSES[loss][1](z, 1.0)[0])


def neuron_trajectory(loss, z0, y, eta_eff, steps):
    r"""The exact loss trajectory of a linear sigmoid unit trained on one sample.

    With one sample :math:`x` the gradient of W is :math:`x\delta` and of b is :math:`\delta`, so
    the logit moves by :math:`z_{t+1} = z_t - \eta (\|x\|^2 + 1)\,\delta(z_t)`; the loss and
    :math:`\delta` are simcore's per-unit formulas (:data:`simcore.losses.LOSSES`).

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
    unit = LOSSES[loss][1]        # simcore's per-unit (value, dL/dz): the formula every kernel calls
    z0 = np.array(z0, dtype=np.float64).reshape(-1)
    out = np.empty((steps + 1, z0.size))
    for g, z in enumerate(z0.tolist()):
        for t in range(steps + 1):
            value, delta = unit(z, y)
            out[t, g] = value
            z = z - eta_eff * delta
    return out


def first_step_below(steps, values, target):
    """The first of ``steps`` at which ``values <= target`` (NaN if never)."""
    hit = np.flatnonzero(np.asarray(values) <= target)
    return float(steps[hit[0]]) if hit.size else np.nan


def contraction_rate(steps, excess, floor=0.0, full_output=False, whole=False):
    r"""The asymptotic contraction per step of a geometric trajectory :math:`e_t \sim C\rho^{2t}`.

    Keeps the leading run of records with a finite excess above ``floor`` (later ones are
    rounding), fits :math:`\ln e_t` linearly in t on the second half of that run (where the
    slowest direction dominates; with ``whole`` on all of it, which averages over more periods
    when every direction shrinks at the same rate and oscillates, as heavy ball's complex roots
    do) and returns :math:`\rho = \exp(\text{slope}/2)`; NaN with fewer than 4 usable records.

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
    lo = 0 if whole else n // 2
    slope = np.polyfit(steps[lo:n], np.log(e[lo:n]), 1)[0]
    rho = float(np.exp(slope / 2.0))
    return (rho, float(steps[lo])) if full_output else rho


def initial_logits(point, X):
    """Logits and the last hidden activations (X for a linear model) of the network ``point``
    starts from (the same weights as the grid: ``MLP.init(seed, init_scale, bias_scale)``),
    from :meth:`simcore.MLP.forward`."""
    widths = [] if point["widths"] == "linear" else [int(w) for w in str(point["widths"]).split("-")]
    net = MLP([X.shape[1], *widths, 1], activation=point["activation"], loss="bce",
              init=point["init"])
    params = net.init(int(point["seed"]), float(point["init_scale"]), float(point["bias_scale"]))
    fw = net.forward(params, X)
    return fw.logits[:, 0], (fw.a[-1] if fw.a else np.asarray(X, dtype=np.float64))


def output_gradient_ratio(z, a, y):
    r"""Ratio of the output layer's weight-gradient norms, MSE over BCE, from the initial logits:

    .. math:: \frac{\|a^T \tfrac{2}{N}(\sigma - y)\sigma'(z)\|}{\|a^T \tfrac{1}{N}(\sigma - y)\|}

    each sample's contribution shrunk by :math:`2\sigma'(z) \le 1/2`, tiny where it saturates;
    the deltas are simcore's (:func:`simcore.losses.mse_sigmoid`, :func:`simcore.losses.bce`)."""
    g_mse = a.T @ losses.mse_sigmoid(z, y)[1]
    g_bce = a.T @ losses.bce(z, y)[1]
    return float(np.linalg.norm(g_mse) / np.linalg.norm(g_bce))


# --------------------------------------------------------------------------------------------
# helpers on the stored rows

def _trajectories(data):
    """One row per (point, step): the loss (layer 1 carries it)."""
    return data[data["layer"] == 1][["point", "step", "loss"]]


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
    c2 = (th["U"].T @ _initial_error(th, X, point)) ** 2
    r = np.abs(1.0 - float(point["lr"]) * th["lam"])
    with np.errstate(over="ignore", under="ignore"):
        return (th["lam"] / 2 * c2)[None, :] * r[None, :] ** (2.0 * np.atleast_1d(steps)[:, None]), r


def _ls_predicted_excess(th, X, point, steps):
    """Excess loss predicted at ``steps``: the sum of ``_ls_modes``."""
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


def _mean_output_modes(th, X, point, steps):
    r"""Per-direction terms of the mean-output error predicted at ``steps`` from the point's
    initial weights, :math:`w_i (1 - \eta\lambda_i)^t` with
    :math:`w_i = \frac{\lambda_i}{2} (u_i)_b\, u_i^T d_0`, shape (len(steps), d + 1).

    The mean output over the samples is :math:`m(\theta) = \frac1N 1^T X_{aug}\theta` and
    :math:`m(\theta^*) = \bar y` (the residual of the fit is orthogonal to the bias column), so
    :math:`m_t - \bar y = c^T d_t` with :math:`c = \frac1N X_{aug}^T 1 = \frac12 H e_b`, whose
    component along :math:`u_i` is :math:`\frac{\lambda_i}{2}(u_i)_b`."""
    d0 = _initial_error(th, X, point)
    w = th["lam"] / 2 * th["U"][-1] * (th["U"].T @ d0)
    r = 1.0 - float(point["lr"]) * th["lam"]
    t = np.atleast_1d(np.asarray(steps, dtype=np.float64))[:, None]
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return w[None, :] * np.sign(r)[None, :] ** t * np.abs(r)[None, :] ** t


def _initial_error(th, X, point):
    """The initial error :math:`d_0 = \\theta_0 - \\theta^*` of a linear model's run (the grid's
    initial weights, ``MLP.init(seed, init_scale, bias_scale)``)."""
    net = MLP([X.shape[1], 1], activation="identity", loss="mse", init=point["init"])
    p0 = net.init(int(point["seed"]), float(point["init_scale"]), float(point["bias_scale"]))
    return np.r_[p0[0]["W"][:, 0], p0[0]["b"]] - th["theta_star"]


def _crossing(etas, log_rho):
    """The eta where a piecewise-linear ``log_rho`` (over increasing ``etas``) first crosses 0
    from below, NaN if it never does; and the index of the left end of that segment."""
    for i in range(len(etas) - 1):
        if log_rho[i] < 0 <= log_rho[i + 1]:
            return etas[i] - log_rho[i] * (etas[i + 1] - etas[i]) / (log_rho[i + 1] - log_rho[i]), i
    return np.nan, -1


def _crossing_tolerance(etas, log_rho_theory, eta_c, i):
    r"""How far the interpolated crossing of a measured :math:`\ln\rho` may sit from the
    threshold ``eta_c``: the interpolation error of the same construction on the theory's values
    at the same etas (the grid's resolution), plus the shift of the crossing when the two
    bracketing values carry the fit's relative error ``RATE_TOL`` in either direction."""
    e0, e1 = etas[i], etas[i + 1]
    f0, f1 = log_rho_theory[i], log_rho_theory[i + 1]
    resolution = abs(e0 - f0 * (e1 - e0) / (f1 - f0) - eta_c)
    shifts = [abs(e0 - a * (e1 - e0) / (b - a) - (e0 - f0 * (e1 - e0) / (f1 - f0)))
              for a in (f0 * (1 - RATE_TOL), f0 * (1 + RATE_TOL))
              for b in (f1 * (1 - RATE_TOL), f1 * (1 + RATE_TOL))]
    return resolution + max(shifts)


def _is_hb(p):
    return ((p["widths"] == "linear") & (p["loss_fn"] == "mse") & (p["optimizer"] == "momentum")
            & (p["batch_size"].astype(str) == "full"))


def _rate_runs(th, X, group, traj, momentum):
    """Per-run measured and predicted contraction of the excess loss (GD or heavy ball)."""
    floor = EXCESS_FLOOR * th["Lstar"] + 1e-280
    rows = []
    for pid, t in traj[traj["point"].isin(group.index)].groupby("point", sort=False):
        p = group.loc[pid]
        e = t["loss"].to_numpy() - th["Lstar"]
        steps = t["step"].to_numpy()
        eta = float(p["lr"])
        beta = float(p["momentum"]) if momentum else 0.0
        whole, bias = False, np.nan
        if momentum:
            # the same fit on the exact trajectory from the same start, over the second half and
            # over the whole run above the floor: the window it reads best is used, and its
            # deviation from the asymptotic rate is the finite-window bias for this run
            rho_p = theory.heavy_ball_contraction(eta, beta, th["lam"])
            c0 = th["U"].T @ _initial_error(th, X, p)
            exact = theory.heavy_ball_excess(th["lam"], c0, eta, beta, int(steps.max()))[steps]
            b = [abs(np.log(contraction_rate(steps, exact, floor, whole=w)) - np.log(rho_p)) / abs(np.log(rho_p))
                 for w in (False, True)]
            whole = bool(b[1] < b[0])
            bias = min(b)
        rho_m, t_fit = contraction_rate(steps, e, floor, full_output=True, whole=whole)
        r = {"point": pid, "grid": p["grid"], "lr": eta, "beta": beta, "seed": int(p["seed"]),
             "steps": int(p["steps"]), "rho_measured": rho_m, "fit_from": t_fit,
             "diverged": bool(p["diverged"]),
             # converging: the tail shrinks (the start may shrink even above the threshold,
             # while the fast directions die out and the growing one is still small)
             "converged": (not bool(p["diverged"])) and bool(rho_m < 1)}
        if momentum:
            r.update(rho_predicted=rho_p, fit_bias=bias, whole_window=whole)
        else:
            r["rho_predicted"] = theory.ls_contraction(eta, th["lmin"], th["lmax"])
            r["dominant_share"] = _dominant_share(th, X, p, t_fit) if np.isfinite(t_fit) else np.nan
        rows.append(r)
    m = pd.DataFrame(rows)
    m["log_rate_rel_err"] = (np.abs(np.log(m["rho_measured"]) - np.log(m["rho_predicted"]))
                             / np.abs(np.log(m["rho_predicted"])))
    if momentum:
        m["asymptotic"] = m["fit_bias"] <= 0.5 * RATE_TOL
    else:
        m["asymptotic"] = m["dominant_share"] >= DOMINANT_SHARE
    # the rate is measurable only where the run changes the excess by a factor e or more
    m["resolvable"] = np.abs(np.log(m["rho_predicted"])) * m["steps"] >= 1.0
    m["used"] = m["asymptotic"] & m["resolvable"] & m["rho_measured"].notna()
    return m


def _by_eta(m, keys=("lr",)):
    keys = list(keys)
    out = (m.groupby(keys).agg(rho_predicted=("rho_predicted", "first"),
                               converged=("converged", "all"), seeds=("seed", "size"))
           .join(m[m["used"]].groupby(keys).agg(rho_measured=("rho_measured", "median"),
                                                asymptotic_seeds=("seed", "size")))
           .reset_index().sort_values(keys))
    out["asymptotic_seeds"] = out["asymptotic_seeds"].fillna(0).astype(int)
    return out


def _contraction_claim(report, cid, m, statement, why, assumes, figure, note):
    """The contraction prediction of gradient descent and heavy ball alike: the worst relative
    error of ln rho over the runs of ``_rate_runs`` marked ``used`` is at most ``RATE_TOL``
    (``why``: what the tolerance covers), and at least half the runs are used."""
    use = m["used"]
    err = m.loc[use, "log_rate_rel_err"]
    worst = float(err.max()) if len(err) else np.nan
    report.prediction(
        cid, statement, predicted=0.0, measured=worst, tolerance=f"<= {RATE_TOL:.0%} of ln rho: {why}",
        passed=bool(len(err)) and worst <= RATE_TOL and use.mean() >= 0.5, assumes=assumes, figure=figure,
        note=f"median error {float(err.median()) if len(err) else np.nan:.2g}; {note}")


def _threshold_claims(report, prefix, key, method, threshold, eta_c, by_eta, rho_theory, assumes,
                      figure, note):
    r"""The two threshold predictions of one eta axis, for gradient descent (``prefix = "ls"``,
    threshold :math:`2/\lambda_{max}`) and heavy ball (``"hb"``, :math:`2(1 + \beta)/\lambda_{max}`)
    alike: ``<prefix>_threshold_bracket[key]``, the largest converging and the smallest
    non-converging grid eta bracket ``eta_c`` (:func:`studies.rows.bracket`), and
    ``<prefix>_threshold_interpolated[key]``, where :math:`\ln\rho` measured, interpolated
    linearly between grid etas, crosses 0 (``_crossing``), within the same interpolation of
    the theory ``rho_theory(etas)`` plus the fit's error at both ends
    (``_crossing_tolerance``). Etas without a measurable rate (right at the threshold) are
    skipped; an axis whose measured contraction never crosses 1 fails the second."""
    lo, hi, monotone = bracket(by_eta["lr"], by_eta["converged"])
    report.prediction(
        f"{prefix}_threshold_bracket[{key}]",
        f"{method} converges below {threshold} and not above it: the largest converging and the "
        f"smallest non-converging eta of the grid bracket {threshold}",
        predicted=eta_c, measured=[float(lo), float(hi)],
        tolerance=f"lo < {threshold} <= hi, convergence monotone in eta (resolution: grid step)",
        passed=monotone and lo < eta_c <= hi, assumes=assumes, figure=figure,
        note=f"bracket width {(hi - lo) / eta_c:.2%} of {threshold}; {note}")
    log_rho = np.log(by_eta["rho_measured"].to_numpy())
    finite = np.isfinite(log_rho)
    etas = by_eta["lr"].to_numpy()[finite]
    cross, i = _crossing(etas, log_rho[finite])
    tol = _crossing_tolerance(etas, np.log(rho_theory(etas)), eta_c, i) if i >= 0 else np.nan
    report.prediction(
        f"{prefix}_threshold_interpolated[{key}]",
        f"{method}: the eta at which the measured contraction crosses 1 (linear interpolation of "
        f"ln rho between grid etas) is {threshold}",
        predicted=eta_c, measured=float(cross),
        tolerance=(f"+-{tol:.2g}: the same interpolation of the theory at these etas, plus a "
                   f"{RATE_TOL:.0%} error of ln rho at both ends" if i >= 0 else "-"),
        passed=bool(np.isfinite(cross) and abs(cross - eta_c) <= tol), assumes=assumes, figure=figure,
        note=(f"measured / predicted = {cross / eta_c:.6f}" if np.isfinite(cross) else
              "the measured contraction never crosses 1 on this eta axis"))


def analyse_least_squares(data, report):
    pts = per_run(data)
    ls = pts[_is_ls(pts) | _is_hb(pts)]
    if ls.empty:
        return
    rows = data[data["point"].isin(ls.index) & (data["layer"] == 1)][["point", "step", "loss", "act_mean"]]
    traj = rows[["point", "step", "loss"]]
    for _, group in ls.groupby(["data", "data_args"], sort=False):
        first = group.iloc[0]
        label = data_label(first)
        X, y = data_set(first)
        if np.asarray(y).ndim != 1:
            report.text(f"Least squares on {label}: several outputs; skipped.")
            continue
        th = _ls_theory(X, np.asarray(y, dtype=np.float64))
        th["ybar"] = float(np.mean(y))
        th["yrms"] = float(np.sqrt(np.mean(np.asarray(y, dtype=np.float64) ** 2)))
        gd = group[_is_ls(group)]
        hb = group[_is_hb(group)]
        report.heading(f"Least squares on {label}")
        report.text(
            f"Hessian (2/N) X_aug^T X_aug of the data: lambda_min = {th['lmin']:.4g}, "
            f"lambda_max = {th['lmax']:.4g}, kappa = {th['kappa']:.4g}; threshold 2/lambda_max = "
            f"{th['eta_c']:.4g}, best step eta* = {th['eta_star']:.4g} with contraction "
            f"(kappa-1)/(kappa+1) = {th['rho_star']:.4g}; least-squares optimum L* = "
            f"{th['Lstar']:.4g}. The measured contraction is exp(slope/2) of a straight-line fit "
            f"of ln(L_t - L*) on the second half of the trajectory above {EXCESS_FLOOR:g} L* "
            "(below that the excess is rounding).")
        if len(gd):
            m = _rate_runs(th, X, gd, traj, momentum=False)
            by_eta = _by_eta(m)
            _ls_claims(report, label, th, m, by_eta)
            _ls_monotone_check(report, label, th, m, traj)
            _ls_figures(report, label, th, X, m, by_eta, gd, traj)
            _ls_oscillation(report, label, th, X, gd, rows)
        if len(hb):
            _hb_claims(report, label, th, X, hb, traj)


ASSUMES_LS = ("linear model, MSE, full-batch gradient descent (a quadratic with constant Hessian "
              "(2/N) X_aug^T X_aug); float64 rounding below 1e-12 L* left out")
ASSUMES_HB = ("linear model, MSE, full batch; Polyak's heavy ball v <- beta v + g, theta <- "
              "theta - eta v from v = 0 (a linear recursion per eigen-direction)")


def _ls_claims(report, label, th, m, by_eta):
    eta_c, eta_star, rho_star = th["eta_c"], th["eta_star"], th["rho_star"]
    fig = f"ls_contraction_{slug(label)}"
    # ln(rho) is the rate per step: its relative error is a far stricter test than rho's own,
    # which is ~0.99 for any small eta. The only bias of the fit is the second-slowest
    # direction: runs whose fit window starts before the slowest directions carry 99% of the
    # predicted excess (from their own initial weights) are not asymptotic and are left out, as
    # are etas so close to 2/lambda_max that the excess changes by less than a factor e over
    # the run (no rate to measure); with a 1% remainder the slope is off by at most ~2%.
    use = m["used"]
    _contraction_claim(
        report, f"ls_contraction[{label}]", m,
        f"Contraction per step = max_i |1 - eta lambda_i| at every eta: worst relative error of "
        f"the rate ln rho over {int(use.sum())} asymptotic runs at {m.loc[use, 'lr'].nunique()} etas",
        "the bias of the fit when 1% of the excess sits in faster directions", ASSUMES_LS, fig,
        f"left out: {int((~m['asymptotic']).sum())} of {len(m)} runs not asymptotic above the rounding "
        f"floor, {int((~m['resolvable']).sum())} at etas with |ln rho| * steps < 1")
    _threshold_claims(report, "ls", label, "GD", "2/lambda_max", eta_c, by_eta,
                      lambda e: theory.ls_contraction(e, th["lmin"], th["lmax"]), ASSUMES_LS, fig,
                      "converged = fitted tail contraction below 1 for every seed")
    etas = by_eta["lr"].to_numpy()
    valid = by_eta[np.isfinite(by_eta["rho_measured"])]
    if valid.empty:
        return
    best = valid.loc[valid["rho_measured"].idxmin()]
    below, above = etas[etas <= eta_star], etas[etas >= eta_star]
    neighbours = [x for x in (below.max() if below.size else None, above.min() if above.size else None)
                  if x is not None]
    report.prediction(
        f"ls_optimal_step[{label}]",
        "The eta with the fastest measured contraction is the grid point next to "
        "eta* = 2/(lambda_min + lambda_max)",
        predicted=eta_star, measured=float(best["lr"]),
        tolerance="one of the two grid etas either side of eta* (the grid's resolution)",
        passed=float(best["lr"]) in neighbours, assumes=ASSUMES_LS, figure=fig,
        note=f"{(best['lr'] / eta_star - 1):+.2%} from eta*; grid neighbours "
             f"{', '.join(f'{x:.4g}' for x in neighbours)}")
    rho_grid = theory.ls_contraction(float(best["lr"]), th["lmin"], th["lmax"])
    slack = abs(rho_grid - rho_star) + RATE_TOL * abs(math.log(rho_grid)) * rho_grid
    report.prediction(
        f"ls_optimal_contraction[{label}]",
        "The best measured contraction is (kappa - 1)/(kappa + 1)",
        predicted=rho_star, measured=float(best["rho_measured"]),
        tolerance=f"+-{slack:.2g}: |rho(eta_best) - rho*| (grid offset) + a {RATE_TOL:.0%} error of ln rho",
        passed=abs(float(best["rho_measured"]) - rho_star) <= slack, assumes=ASSUMES_LS, figure=fig,
        note=f"theory at the grid eta {best['lr']:.4g}: {rho_grid:.4g}; kappa = {th['kappa']:.4g}")
    table = by_eta.assign(rel_err_ln_rho=(np.abs(np.log(by_eta["rho_measured"]) - np.log(by_eta["rho_predicted"]))
                                          / np.abs(np.log(by_eta["rho_predicted"]))))
    pick = np.unique(np.r_[np.linspace(0, len(table) - 1, min(len(table), 12)).round().astype(int),
                           np.searchsorted(table["lr"].to_numpy(), [eta_star, eta_c]).clip(0, len(table) - 1)])
    report.table(table.iloc[pick][["lr", "seeds", "asymptotic_seeds", "rho_predicted", "rho_measured",
                                   "rel_err_ln_rho", "converged"]]
                 .rename(columns={"lr": "eta"}),
                 f"Contraction per step on {label} at a selection of etas (measured: median over seeds)")


def loss_increases(loss, rounding):
    """Steps at which a loss trajectory rises by more than ``rounding`` (NaNs end it)."""
    loss = np.asarray(loss, dtype=np.float64)
    n = np.flatnonzero(~np.isfinite(loss))
    loss = loss[:n[0]] if n.size else loss
    return int(np.sum(np.diff(loss) > rounding))


def _ls_monotone_check(report, label, th, m, traj):
    r"""Below 2/lambda_max every term :math:`\frac{\lambda_i}{2}c_i^2(1 - \eta\lambda_i)^{2t}` of
    the excess shrinks, so the loss never rises: a theorem, an engine check."""
    stable = m[m["lr"] < th["eta_c"]]
    rounding = EXCESS_FLOOR * th["Lstar"]
    by = {pid: t["loss"].to_numpy() for pid, t in traj[traj["point"].isin(stable["point"])].groupby("point")}
    bad = [pid for pid in stable["point"] if loss_increases(by[pid], rounding)]
    report.check(f"ls_monotone[{label}]",
                 "Below 2/lambda_max the least-squares loss never rises (every mode of the excess "
                 "shrinks): runs whose recorded loss rises by more than 1e-12 L*",
                 expected=0, measured=len(bad), passed=not bad,
                 note=f"{len(stable)} runs with eta < 2/lambda_max")


# the mean-output error is a mean of N outputs of size ~rms(y): its rounding is a few 1e-15
# rms(y); at 1e-11 rms(y) it is still good to ~1e-4
MEAN_FLOOR = 1e-11


def _ls_oscillation(report, label, th, X, gd, rows):
    r"""Period-2 oscillation along the top eigenvector, seen in the mean output over samples.

    The engine records parameters only through per-layer telemetry; the mean output (``act_mean``
    of the output layer) is a linear functional of the parameters, :math:`m_t - \bar y = c^T d_t =
    \sum_i w_i (1 - \eta\lambda_i)^t` (``_mean_output_modes``), so its sign and rate are
    those of the directions that dominate it. Where the top direction's term is larger than
    the sum of all the others (computed from the run's initial weights), the sign of
    :math:`m_t - \bar y` is the sign of :math:`(1 - \eta\lambda_{max})^t`: it alternates every
    step iff :math:`\eta > 1/\lambda_{max}`; where it carries ``DOMINANT_SHARE`` of the total, a
    fit of :math:`\ln|m_t - \bar y|` gives :math:`|1 - \eta\lambda_{max}|`, below 1 up to
    :math:`2/\lambda_{max}` and above it beyond."""
    top = int(np.argmax(th["lam"]))
    floor = MEAN_FLOOR * th["yrms"]
    res = []
    series = {}
    for pid, t in rows[rows["point"].isin(gd.index)].groupby("point", sort=False):
        p = gd.loc[pid]
        t = t.sort_values("step")
        steps = t["step"].to_numpy()
        s = t["act_mean"].to_numpy() - th["ybar"]
        modes = _mean_output_modes(th, X, p, steps)
        total = np.abs(modes).sum(1)
        share = np.abs(modes[:, top]) / np.where(total > 0, total, np.nan)
        ok = np.isfinite(s) & (np.abs(s) > floor) & np.isfinite(total)
        # sign test on consecutive steps where the top term decides the sign of the sum: it is
        # larger than the sum of all the others
        rest = np.abs(modes.sum(1) - modes[:, top])
        dec = ok & (np.abs(modes[:, top]) > rest)
        pair = dec[:-1] & dec[1:] & (np.diff(steps) == 1)
        flips = (np.sign(s[1:]) != np.sign(s[:-1]))[pair]
        # rate: a straight line through ln|s| where the top term carries DOMINANT_SHARE
        dom = np.flatnonzero(ok & (share >= DOMINANT_SHARE))
        rate, span = np.nan, 0
        if dom.size >= 4:
            run = dom[np.r_[0, np.flatnonzero(np.diff(dom) != 1) + 1][-1]:]   # last contiguous run
            if run.size >= 4:
                rate = float(np.exp(np.polyfit(steps[run], np.log(np.abs(s[run])), 1)[0]))
                span = int(steps[run[-1]] - steps[run[0]])
        r_top = abs(1.0 - float(p["lr"]) * th["lmax"])
        res.append({"point": pid, "lr": float(p["lr"]), "seed": int(p["seed"]), "pairs": int(pair.sum()),
                    "flips": int(flips.sum()), "rate": rate, "rate_predicted": r_top,
                    "resolvable": abs(math.log(r_top)) * span >= 1.0 if r_top > 0 else False})
        series[pid] = (steps, s, modes.sum(1))
    o = pd.DataFrame(res)
    if o.empty:
        return
    inv = 1.0 / th["lmax"]
    above, below = o[(o["lr"] > inv) & (o["pairs"] > 0)], o[(o["lr"] < inv) & (o["pairs"] > 0)]
    flip_above = float(above["flips"].sum() / above["pairs"].sum()) if len(above) else np.nan
    flip_below = float(below["flips"].sum() / below["pairs"].sum()) if len(below) else np.nan
    fig = f"ls_oscillation_{slug(label)}"
    report.prediction(
        f"ls_oscillation_sign[{label}]",
        "The error along the top eigenvector changes sign every step iff eta > 1/lambda_max "
        "(period 2): share of sign changes of the mean-output error between consecutive steps "
        "where the top direction decides its sign",
        predicted={"eta > 1/lambda_max": 1.0, "eta < 1/lambda_max": 0.0},
        measured={"eta > 1/lambda_max": flip_above, "eta < 1/lambda_max": flip_below},
        tolerance="exact on every tested pair (the sign is the top term's where it exceeds the sum of the others)",
        passed=bool(len(above)) and flip_above == 1.0 and (not len(below) or flip_below == 0.0),
        assumes=ASSUMES_LS + "; the mean output over samples as the signed linear read-out of the parameters",
        figure=fig,
        note=f"{int(above['pairs'].sum())} pairs in {len(above)} runs above 1/lambda_max = {inv:.4g}, "
             f"{int(below['pairs'].sum())} pairs in {len(below)} runs below; runs with no step "
             f"where the top direction dominates the read-out ({int((o['pairs'] == 0).sum())}) "
             "are not tested")
    use = o[o["rate"].notna() & o["resolvable"]]
    err = np.abs(np.log(use["rate"]) - np.log(use["rate_predicted"])) / np.abs(np.log(use["rate_predicted"]))
    grow, shrink = use[use["rate_predicted"] > 1], use[use["rate_predicted"] < 1]
    worst = float(err.max()) if len(err) else np.nan
    report.prediction(
        f"ls_oscillation_rate[{label}]",
        "The top eigen-direction's error is multiplied by |1 - eta lambda_max| per step: "
        "shrinking below 2/lambda_max, growing above it; worst relative error of the fitted "
        "ln rate of |mean-output error|",
        predicted=0.0, measured=worst,
        tolerance=f"<= {RATE_TOL:.0%} of ln rate, as for ls_contraction (fit where the top term "
                  f"carries {DOMINANT_SHARE:.0%})",
        passed=bool(len(grow)) and bool(len(shrink)) and worst <= RATE_TOL,
        assumes=ASSUMES_LS + "; the mean output over samples as the signed linear read-out of the parameters",
        figure=fig,
        note=f"{len(shrink)} shrinking runs at {shrink['lr'].nunique()} etas, {len(grow)} growing "
             f"runs at {grow['lr'].nunique()} etas (above 2/lambda_max); "
             + ("" if len(grow) else "no growing run was measurable: the grid needs etas above "
                                    "2/lambda_max; ")
             + f"median error {float(err.median()) if len(err) else np.nan:.2g}")
    _oscillation_figure(report, label, th, o, series, gd, fig)


def _oscillation_figure(report, label, th, o, series, gd, name):
    inv, eta_star, eta_c = 1.0 / th["lmax"], th["eta_star"], th["eta_c"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    ax = axes[0]
    etas = np.sort(o["lr"].unique())
    wanted = [0.5 * (inv + eta_star), 0.5 * (eta_star + eta_c), eta_c * 1.06]
    seed0 = int(o["seed"].min())
    for w, c in zip(wanted, ("tab:blue", "tab:green", "tab:red")):
        e = etas[np.argmin(np.abs(etas - w))]
        pid = o[(o["lr"] == e) & (o["seed"] == seed0)]["point"].iloc[0]
        steps, s, pred = series[pid]
        n = min(steps.size, 40)
        ax.plot(steps[:n], s[:n], "o", ms=3.5, color=c)
        ax.plot(steps[:n], pred[:n], "-", lw=0.8, color=c,
                label=rf"$\eta$ = {e:.3g}, $1-\eta\lambda_{{max}}$ = {1 - e * th['lmax']:+.3f}")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.axhline(0.0, color="k", lw=0.4)
    ax.set_xlabel("step")
    ax.set_ylabel(r"mean output $-\ \bar y$ (symlog scale)")
    ax.set_title(f"seed {seed0}: measured (points), exact theory (lines)", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    grid_eta = np.linspace(min(etas.min(), inv) * 0.95, etas.max() * 1.02, 400)
    ax.plot(grid_eta, np.abs(1 - grid_eta * th["lmax"]), "k-", lw=1.4, label=r"theory $|1-\eta\lambda_{max}|$")
    ok = o["rate"].notna()
    ax.scatter(o.loc[ok & o["resolvable"], "lr"], o.loc[ok & o["resolvable"], "rate"], s=14, color="tab:green",
               zorder=3, label="measured, top direction dominant")
    ax.scatter(o.loc[ok & ~o["resolvable"], "lr"], o.loc[ok & ~o["resolvable"], "rate"], s=14,
               facecolors="none", edgecolors="gray", zorder=2, label="|ln rate| x span < 1 (left out)")
    for x, ls_, nm in ((inv, ":", r"$1/\lambda_{max}$"), (eta_star, "--", r"$\eta^*$"), (eta_c, "-.", r"$2/\lambda_{max}$")):
        ax.axvline(x, color="gray", ls=ls_, lw=0.9, label=nm)
    ax.axhline(1.0, color="k", lw=0.4)
    ax.set_ylim(0, 1.4)
    ax.set_xlabel(r"learning rate $\eta$")
    ax.set_ylabel("factor per step of the top direction")
    ax.legend(fontsize=7)
    ax = axes[2]
    t = o[o["pairs"] > 0].groupby("lr").agg(flips=("flips", "sum"), pairs=("pairs", "sum")).reset_index()
    ax.plot(grid_eta, (grid_eta > inv).astype(float), "k-", lw=1.4, label="theory: 1 iff eta > 1/lambda_max")
    ax.scatter(t["lr"], t["flips"] / t["pairs"], s=16, color="tab:purple", zorder=3,
               label="measured share of sign changes")
    ax.axvline(inv, color="gray", ls=":", lw=0.9)
    ax.set_ylim(-0.05, 1.1)
    ax.set_xlabel(r"learning rate $\eta$")
    ax.set_ylabel("sign changes per step (where the top direction decides)")
    ax.legend(fontsize=7)
    report.figure(name, fig,
                  f"Oscillation before divergence on {label}: left, the signed mean-output error of "
                  "three runs (points) with the exact prediction (lines); middle, the "
                  "measured factor per step of the top direction against |1 - eta lambda_max|; "
                  "right, the share of steps at which its sign changes, against the step at "
                  "1/lambda_max.")


def _hb_claims(report, label, th, X, hb, traj):
    m = _rate_runs(th, X, hb, traj, momentum=True)
    fig = f"hb_rates_{slug(label)}"
    use = m["used"]
    _contraction_claim(
        report, f"hb_contraction[{label}]", m,
        "Heavy-ball contraction per step = the largest root modulus of x^2 - (1 + beta - eta "
        "lambda_i) x + beta over the spectrum: worst relative error of ln rho over "
        f"{int(use.sum())} runs at {m.loc[use, ['lr', 'beta']].drop_duplicates().shape[0]} (eta, beta)",
        f"on runs whose exact trajectory the same fit reads to within {0.5 * RATE_TOL:.0%}", ASSUMES_HB, fig,
        f"left out {int((~m['asymptotic']).sum())} of {len(m)} runs whose finite window biases the fit "
        f"(oscillating complex roots), {int((~m['resolvable']).sum())} unresolvable")
    # threshold scans: sub-grids with one beta and an eta axis across 2(1 + beta)/lambda_max
    for (_, beta), mb in m.groupby(["grid", "beta"]):
        by = _by_eta(mb)
        if len(by) < 4 or m.loc[m["grid"] == mb["grid"].iloc[0], "beta"].nunique() > 1:
            continue
        eta_c = theory.heavy_ball_threshold(beta, th["lmax"])
        if not (by["lr"].min() < eta_c < by["lr"].max()):
            continue
        _threshold_claims(report, "hb", f"{label}, beta={beta:g}", f"Heavy ball with beta = {beta:g}",
                          "2(1 + beta)/lambda_max", eta_c, by,
                          lambda e, beta=beta: theory.heavy_ball_contraction(e, beta, th["lam"]), ASSUMES_HB,
                          fig, f"gradient descent's 2/lambda_max = {th['eta_c']:.4g}")
    eta_o, beta_o, rho_o = theory.heavy_ball_optimal(th["lmin"], th["lmax"])
    cells = _by_eta(m, ("lr", "beta"))
    cells = cells[np.isfinite(cells["rho_measured"])]
    near = cells[(cells["beta"] > 0)]
    if len(near):
        best = near.loc[near["rho_measured"].idxmin()]
        grid_best = float(near["rho_predicted"].min())
        slack = abs(grid_best - rho_o) + RATE_TOL * abs(math.log(grid_best)) * grid_best
        report.prediction(
            f"hb_optimal_rate[{label}]",
            "The best heavy-ball contraction over the (eta, beta) grid is (sqrt(kappa) - 1)/"
            "(sqrt(kappa) + 1), at eta = 4/(sqrt(lambda_max) + sqrt(lambda_min))^2, beta = rho^2",
            predicted=rho_o, measured=float(best["rho_measured"]),
            tolerance=f"+-{slack:.2g}: the best grid cell's theory minus rho* (grid offset) + a "
                      f"{RATE_TOL:.0%} error of ln rho",
            passed=abs(float(best["rho_measured"]) - rho_o) <= slack, assumes=ASSUMES_HB, figure=fig,
            note=f"best cell eta = {best['lr']:.4g}, beta = {best['beta']:.4g} (theory eta* = "
                 f"{eta_o:.4g}, beta* = {beta_o:.4g}); gradient descent's best is "
                 f"(kappa-1)/(kappa+1) = {th['rho_star']:.4g}")
    _hb_figure(report, label, th, m, cells, fig)
    report.table(cells.rename(columns={"lr": "eta"})[["eta", "beta", "seeds", "asymptotic_seeds",
                                                     "rho_predicted", "rho_measured", "converged"]],
                 f"Heavy-ball contraction per step on {label} (measured: median over seeds)")


def _hb_figure(report, label, th, m, cells, name):
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    betas = sorted(m["beta"].unique())
    colors = plt.cm.plasma(np.linspace(0, 0.85, len(betas)))
    grid_eta = np.linspace(0.9 * m["lr"].min(), 1.05 * m["lr"].max(), 300)
    for b, c in zip(betas, colors):
        mb = m[m["beta"] == b]
        if mb["lr"].nunique() < 4:
            continue
        ax.plot(grid_eta, theory.heavy_ball_contraction(grid_eta, b, th["lam"]), "-",
                color=c, lw=1.2, label=rf"theory, $\beta$ = {b:g}")
        u = mb["used"]
        ax.scatter(mb.loc[u, "lr"], mb.loc[u, "rho_measured"], s=12, color=c, zorder=3)
        ax.scatter(mb.loc[~u, "lr"], mb.loc[~u, "rho_measured"], s=12, facecolors="none", edgecolors=c)
        ax.axvline(theory.heavy_ball_threshold(b, th["lmax"]), color=c, ls="--", lw=0.8)
    ax.plot(grid_eta, theory.ls_contraction(grid_eta, th["lmin"], th["lmax"]), "k:", lw=1,
            label=r"gradient descent ($\beta$ = 0)")
    ax.axhline(1.0, color="k", lw=0.4)
    ax.set_ylim(0.3, 1.15)
    ax.set_xlabel(r"learning rate $\eta$ (dashed: $2(1+\beta)/\lambda_{max}$)")
    ax.set_ylabel(r"contraction per step $\rho$")
    ax.set_title("measured (points; open: fit biased, left out), theory (lines)", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    eta_o, beta_o, rho_o = theory.heavy_ball_optimal(th["lmin"], th["lmax"])
    bb = np.linspace(0.0, max(0.6, cells["beta"].max()), 121)
    dense = np.linspace(0.05, 2 * (1 + bb.max()) / th["lmax"], 800)
    ax.plot(bb, [theory.heavy_ball_contraction(dense, b, th["lam"]).min() for b in bb], "k-", lw=1.3,
            label=r"theory: $\min_\eta \rho(\eta, \beta)$")
    best = cells.groupby("beta")["rho_measured"].min()
    ax.scatter(best.index, best.to_numpy(), s=18, color="tab:green", zorder=3, label=r"measured: best grid $\eta$")
    ax.axhline(rho_o, color="tab:purple", ls="--", lw=0.9, label=rf"$(\sqrt{{\kappa}}-1)/(\sqrt{{\kappa}}+1)$ = {rho_o:.3f}")
    ax.axhline(th["rho_star"], color="gray", ls=":", lw=0.9, label=rf"GD $(\kappa-1)/(\kappa+1)$ = {th['rho_star']:.3f}")
    ax.axvline(beta_o, color="tab:purple", ls=":", lw=0.8)
    ax.set_xlabel(r"momentum $\beta$")
    ax.set_ylabel(r"best contraction per step")
    ax.legend(fontsize=7)
    report.figure(name, fig,
                  f"Heavy-ball momentum on {label}: left, contraction per step against eta for each "
                  "beta (points measured, lines the root modulus of the recursion, dashed lines the "
                  "threshold 2(1 + beta)/lambda_max); right, the best contraction over eta for each "
                  "beta against theory, with Polyak's optimum and gradient descent's.")


def _ls_figures(report, label, th, X, m, by_eta, group, traj):
    name = slug(label)
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
    report.figure(f"ls_contraction_{name}", fig,
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
    report.figure(f"ls_trajectories_{name}", fig,
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
    keys = [k for k in _PAIR_KEYS if k in cand.columns] + ["data_args"]
    cand = cand.assign(_key=cand[keys].apply(lambda col: col.map(repr)).agg("|".join, axis=1))
    mse = cand[cand["loss_fn"] == "mse_sigmoid"].set_index("_key")
    bce = cand[cand["loss_fn"] == "bce"].set_index("_key")
    common = mse.index.intersection(bce.index)
    return mse.loc[common], bce.loc[common]


def analyse_slowdown(data, report):
    pts = per_run(data)
    paired = _pairs(pts)
    if paired is None or paired[0].empty:
        return
    mse, bce = paired
    traj = _trajectories(data[data["point"].isin(np.r_[mse["point"], bce["point"]])])
    traj_by = {pid: t for pid, t in traj.groupby("point", sort=False)}
    out0 = data[(data["step"] == 0)]
    out0 = out0[out0["layer"] == out0.groupby("point")["layer"].transform("max")].set_index("point")
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
        X, y = data_set(pm)
        y = np.asarray(y, dtype=np.float64)
        z0, a = initial_logits(pm, X)
        r = {"grid": pm["grid"], "data": data_label(pm), "n": X.shape[0],
             "seed": int(pm["seed"]), "lr": float(pm["lr"]), "steps": int(pm["steps"]),
             "linear": pm["widths"] == "linear", "z0": float(z0[0]) if X.shape[0] == 1 else np.nan,
             "y0": float(y[0]), "point_mse": int(pm["point"]), "point_bce": int(pb["point"]),
             "wrong_saturated": float(np.mean(np.abs(activations.apply("sigmoid", z0) - y) > 0.9)),
             "ratio_predicted": output_gradient_ratio(z0, a, y),
             "ratio_measured": float(out0.loc[pm["point"], "grad_norm"] / out0.loc[pb["point"], "grad_norm"])}
        for loss, p in (("mse", pm), ("bce", pb)):
            t = traj_by[int(p["point"])]
            r[f"steps_{loss}"] = first_step_below(t["step"].to_numpy(), t["loss"].to_numpy(),
                                                  target_loss(p["loss_fn"], SLOWDOWN_EPS))
            r["record_every"] = int(p["record_every"])
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
        _slowdown_law(report, neuron)
    for label, d in multi.groupby("data", sort=False):
        _data_slowdown_claims(report, label, d, traj_by)


def _neuron_claims(report, d, mse, traj_by):
    both = pd.concat([d["steps_mse"], d["steps_bce"]]).to_numpy()
    pred = pd.concat([d["pred_mse"], d["pred_bce"]]).to_numpy()
    re = pd.concat([d["record_every"], d["record_every"]]).to_numpy()
    same = (np.isnan(both) & np.isnan(pred)) | (np.abs(both - pred) <= re)
    report.check(
        "slowdown_neuron_exact",
        "One sigmoid neuron on one sample: the exact map z <- z - eta(|x|^2+1) delta(z) gives "
        "the steps to the target of both losses, within one record interval, on every run",
        expected=1.0, measured=float(np.mean(same)), passed=bool(same.all()),
        note=f"{int((~same).sum())} of {same.size} runs differ; {int(np.isfinite(pred).sum())} reach "
             "the target within the budget; the logit starts at the point's initial weights")
    sat = d[(d["wrong_saturated"] > 0) & (np.abs(d["z0"]) >= 2.0)]
    if len(sat):
        slower = float(np.mean(sat["factor"] > 1))
        # the map's steps rounded up to the record grid, censored like the runs
        pf = (np.where(np.isfinite(sat["pred_mse"]), sat["pred_mse"], sat["steps"] + sat["record_every"])
              / np.maximum(np.where(np.isfinite(sat["pred_bce"]), sat["pred_bce"],
                                    sat["steps"] + sat["record_every"]), 1))
        report.observation(
            "slowdown_neuron_factor",
            "From starts saturated at the wrong answer (|z0| >= 2), the median ratio of steps to "
            "the target, MSE over cross-entropy (the law over z0 is slowdown_law_*)",
            measured=float(np.median(sat["factor"])),
            figure="slowdown_neuron" if ((d["y0"] == 0) & (d["z0"] > 0)).any() else "",
            note=f"{len(sat)} saturated starts, MSE slower on {slower:.0%}; the exact map gives a "
                 f"median {float(np.median(pf)):.4g}; {int(sat['steps_mse'].isna().sum())} MSE runs "
                 "censored at the budget")
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
            X, _ = data_set(pm)
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
    report.check(
        f"slowdown_gradient_ratio[{label}]",
        "At the start, the output layer's gradient norm under MSE is the cross-entropy one "
        "shrunk by the sigmoid' factors, ||a^T 2(s-y)s'(z)|| / ||a^T (s-y)|| from the initial "
        "network, on every seed within 1e-6 relative (medians shown)",
        expected=float(np.median(d["ratio_predicted"])), measured=float(np.median(d["ratio_measured"])),
        passed=bool((err <= 1e-6).all()),
        note=f"worst relative error {err.max():.2g} over {len(d)} seeds; the ratio is <= 1/2 "
             f"everywhere since 2 s'(z) <= 1/2")
    sat = d[d["ratio_predicted"] < SATURATED_RATIO]
    if len(sat):
        slower = float(np.mean(sat["factor"] > 1))
        report.observation(
            f"slowdown[{label}]",
            f"From saturated starts (MSE's initial output gradient < {SATURATED_RATIO:g} of BCE's), "
            "the median ratio of steps to the target, MSE over cross-entropy, and the share of "
            "starts on which MSE is slower",
            measured={"median factor": float(np.median(sat["factor"])), "share MSE slower": slower},
            figure=f"slowdown_{slug(label)}",
            note=f"{len(sat)} of {len(d)} seeds saturated; {int(sat['steps_mse'].isna().sum())} MSE "
                 "runs censored at the budget (factor then a lower bound); the median initial "
                 f"speed ratio BCE/MSE (1/gradient ratio) is {float(np.median(1 / sat['ratio_predicted'])):.4g}, "
                 "a guide only: on a data set no theory gives the factor")
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
    report.figure(f"slowdown_{slug(label)}", fig,
                  f"Learning slowdown on {label}: left, loss relative to the target for MSE (red) and "
                  "cross-entropy (blue) from the same saturated starts; right, the measured slowdown "
                  "per seed against the initial gradient ratio predicted from sigma'(z).")


# a start is saturated on the wrong side when its logit is this far past 0 (sigma' < 0.105)
Z_SAT = 2.0
ASSUMES_LAW = ("one sample, a linear sigmoid unit trained by full-batch gradient descent, a start "
               "on the wrong side at z0 >= 2; the gradient-flow limit of small eta (|x|^2 + 1)")


def _slope_fit(z, t, sigma):
    """Least-squares slope of t against z, and its standard error from independent errors
    ``sigma`` of the t values."""
    z = np.asarray(z, dtype=np.float64)
    w = (z - z.mean()) / np.sum((z - z.mean()) ** 2)
    return float(np.sum(w * (np.asarray(t) - np.mean(t)))), float(np.sqrt(np.sum((w * sigma) ** 2)))


def _slowdown_law(report, d):
    r"""The escape-time laws over the wrong-side initial logit: :math:`\ln t_{mse}` has slope
    :math:`d\ln t/dz_0 \to 1` (steps like :math:`e^{z_0}`), :math:`t_{bce}` has slope
    :math:`1/\eta_{eff}` (steps like :math:`z_0`). The predicted slopes are the same straight-line
    fits applied to :func:`studies.theory.sigmoid_escape_time` at the measured starts, so their
    finite-z0 curvature is part of the prediction; the tolerance is the slope difference between
    the discrete map and the flow at the same starts (the finite-step correction, computed) plus
    three standard errors from the record interval: the first recorded step at or below the
    target is up to one interval ``re`` after the crossing, so the crossing is taken at the
    interval's middle (``re - 1``)/2 steps earlier, uniform within it (standard deviation
    ``re``/sqrt(12); one step for ``re = 1``, the resolution of an integer step count)."""
    d = d[d["eta_eff"].notna()].copy()
    d["z_wrong"] = np.where(d["y0"] == 0, d["z0"], -d["z0"])
    for eta_eff, g in d.groupby("eta_eff"):
        sat = g[(g["z_wrong"] >= Z_SAT) & g["steps_mse"].notna() & g["steps_bce"].notna()
                & g["pred_raw_mse"].notna() & g["pred_raw_bce"].notna()]
        if sat["z_wrong"].round(9).nunique() < 3:
            report.missing("slowdown_law_mse", "Steps to escape a saturated start grow like e^{z0} "
                           "for MSE", "three or more wrong-side starts z0 >= 2 that reach the target",
                           assumes=ASSUMES_LAW)
            continue
        z = sat["z_wrong"].to_numpy()
        re_ = sat["record_every"].to_numpy().astype(float)
        res = {}
        for loss, name, log in (("mse", "mse_sigmoid", True), ("bce", "bce", False)):
            # the first recorded step at or below the target is up to a record interval late:
            # the crossing is taken at the middle of the interval, known to +-re/sqrt(12)
            meas = sat[f"steps_{loss}"].to_numpy() - (re_ - 1) / 2
            exact = sat[f"pred_raw_{loss}"].to_numpy()
            flow = theory.sigmoid_escape_time(name, z, eta_eff)
            f = np.log if log else (lambda v: v)
            sig = re_ / math.sqrt(12) / (meas if log else 1.0)
            b_m, se = _slope_fit(z, f(meas), sig)
            b_f, _ = _slope_fit(z, f(flow), sig)
            b_x, _ = _slope_fit(z, f(exact), sig)
            res[loss] = dict(measured=b_m, predicted=b_f, tol=abs(b_x - b_f) + 3 * se, se=se,
                             other=_slope_fit(z, (np.log(meas) if not log else meas), sig)[0])
        law = {"mse": ("slowdown_law_mse", "d ln(steps) / d z0",
                       "MSE's steps to escape a start saturated on the wrong side grow like e^{z0}: "
                       "the slope of ln(steps) against z0", "-> 1"),
               "bce": ("slowdown_law_bce", "d steps / d z0",
                       "Cross-entropy's steps grow like z0: the slope of steps against z0",
                       f"-> 1/eta_eff = {1 / eta_eff:.4g}")}
        suffix = "" if d["eta_eff"].nunique() == 1 else f"[eta_eff={eta_eff:g}]"
        for loss, (cid, what, statement, asym) in law.items():
            r = res[loss]
            report.prediction(
                cid + suffix, statement + f" ({what}, fitted over {len(sat)} starts, z0 in "
                f"[{z.min():.3g}, {z.max():.3g}])",
                predicted=r["predicted"], measured=r["measured"],
                tolerance=f"+-{r['tol']:.2g}: discrete map minus flow at these z0 (computed) + 3 "
                          f"standard errors of the record interval (steps taken at its middle)",
                passed=abs(r["measured"] - r["predicted"]) <= r["tol"], assumes=ASSUMES_LAW,
                figure="slowdown_law",
                note=f"the flow law's fit at these starts (asymptotically {asym}); the slope of "
                     f"ln(steps) against z0 is {res['mse']['measured']:.3g} for MSE and "
                     f"{res['bce']['other']:.3g} for cross-entropy")
        _law_figure(report, g, sat, eta_eff)
        break   # one figure name: the law of the first step size


def _law_figure(report, g, sat, eta_eff):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    zz = np.linspace(Z_SAT * 0.5, max(float(g["z_wrong"].max()), Z_SAT + 1), 300)
    wrong = g[g["z_wrong"] > 0]
    for ax, loss, name, color, log in ((axes[0], "mse", "mse_sigmoid", "tab:red", True),
                                        (axes[1], "bce", "bce", "tab:blue", False)):
        ok = wrong[f"steps_{loss}"].notna()
        ax.plot(wrong.loc[ok, "z_wrong"], wrong.loc[ok, f"steps_{loss}"], "o", ms=4, color=color,
                alpha=0.7, label="measured")
        ax.plot(zz, theory.sigmoid_escape_time(name, zz, eta_eff), "k-", lw=1.3,
                label="gradient flow " + ("(F(z0) - F(0)) / (2 eta_eff)" if log else "(G(z0) - G(0)) / eta_eff"))
        asym = np.exp(zz) / (2 * eta_eff) if log else zz / eta_eff
        ax.plot(zz, asym, "k:", lw=1, label="e^{z0} / (2 eta_eff)" if log else "z0 / eta_eff")
        ax.axvline(Z_SAT, color="gray", ls=":", lw=0.8, label="saturation cut z0 = 2")
        if (~ok).any():
            ax.plot(wrong.loc[~ok, "z_wrong"], wrong.loc[~ok, "steps"], "^",
                    color="tab:orange", ms=5, label="censored at the budget")
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("initial logit on the wrong side, z0")
        ax.set_ylabel(f"steps to the target, {name}" + (" (log scale)" if log else ""))
        ax.legend(fontsize=7)
    axes[0].set_title(f"MSE: exponential in z0 (eta_eff = {eta_eff:.3g})", fontsize=9)
    axes[1].set_title("cross-entropy: linear in z0", fontsize=9)
    report.figure("slowdown_law", fig,
                  "The learning-slowdown law on one sigmoid neuron: steps to the target against the "
                  "initial logit on the wrong side, MSE (left, log scale) and cross-entropy (right), "
                  "measured (points) against the gradient-flow solution (line) and its asymptote "
                  "(dotted).")


# --------------------------------------------------------------------------------------------
# steps-to-target distributions

def analyse_steps_to_target(data, report, exclude):
    pts = per_run(data)
    pts = pts[pts["loss_fn"].isin(["bce", "ce"]) & ~pts["grid"].isin(exclude)]
    if pts.empty:
        return
    traj = _trajectories(data[data["point"].isin(pts.index)])
    target = pts["loss_fn"].map(lambda l: target_loss(l, DIST_EPS))
    hit = traj[traj["loss"].to_numpy() <= target.loc[traj["point"]].to_numpy()]
    first = hit.groupby("point")["step"].min()
    labels = {pid: data_label(p) for pid, p in pts.iterrows()}
    df = pd.DataFrame({"grid": pts["grid"], "data": [labels[i] for i in pts.index],
                       "loss_fn": pts["loss_fn"], "widths": pts["widths"],
                       "activation": pts["activation"], "lr": pts["lr"].astype(float),
                       "seed": pts["seed"].astype(int), "steps_budget": pts["steps"].astype(int),
                       "init_scale": pts["init_scale"].astype(float), "bias_scale": pts["bias_scale"].astype(float),
                       "steps_to_target": first.reindex(pts.index).astype(float).to_numpy()})
    df["censored"] = df["steps_to_target"].isna()
    df["steps_inf"] = df["steps_to_target"].fillna(np.inf)
    report.heading("Steps to target over seeds")
    report.text(
        f"Target: the loss of an output {1 - DIST_EPS:.0%} confident in the correct class on every "
        f"sample (bce/ce {target_loss('bce', DIST_EPS):.4g}); the first recorded step at or below "
        "it. Runs that never reach it within the budget are censored (drawn above the budget line; "
        "medians count them as infinite).")
    cells = ["data", "loss_fn", "widths", "activation", "lr", "init_scale"]
    q = lambda p: (lambda s: float(np.quantile(s, p, method="inverted_cdf")))  # noqa: E731
    summary = (df.groupby(cells, sort=False)
               .agg(seeds=("seed", "size"), reached=("censored", lambda c: float(1 - c.mean())),
                    p10=("steps_inf", q(0.1)), median=("steps_inf", q(0.5)), p90=("steps_inf", q(0.9)),
                    budget=("steps_budget", "max"))
               .reset_index())
    report.table(summary, "Steps to target per cell: share of seeds that reached it, 10th/50th/90th "
                          "percentiles (inf: not reached within the budget)")
    if _held_out_table(report, pts, df, cells):
        _fig_held_out(report, data[data["point"].isin(pts.index) & (data["layer"] == 1)], df)
    _zero_centring(report, df)
    # figure
    df["cell"] = df["widths"].astype(str) + " " + df["activation"]
    if df.groupby(["data", "widths", "activation"])[["lr", "init_scale"]].nunique().max().max() > 1:
        df["cell"] += [f" eta={a:g} s={b:g}" for a, b in zip(df["lr"], df["init_scale"])]
    datas = list(dict.fromkeys(df["data"]))
    fig, axes = plt.subplots(1, len(datas), figsize=(4.2 * len(datas) + 1, 4.6), squeeze=False, sharey=True)
    budget = df["steps_budget"].max()
    for ax, dname in zip(axes[0], datas):
        sub = df[df["data"] == dname]
        order = list(dict.fromkeys(sub.sort_values(["widths", "activation", "lr"])["cell"]))
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


def _held_out_table(report, pts, df, cells):
    """The generalisation beside the fit: per cell, the median over seeds of the final training
    and held-out loss and accuracy (the grid engine's, on the grid's held-out split; an
    observation). Absent where no grid holds samples out."""
    if "final_val_loss" not in pts.columns or pts["final_val_loss"].isna().all():
        return False
    fin = df.assign(train_loss=pts["final_loss"].astype(float).to_numpy(),
                    held_out_loss=pts["final_val_loss"].astype(float).to_numpy(),
                    train_accuracy=pts["final_accuracy"].astype(float).to_numpy(),
                    held_out_accuracy=pts["final_val_accuracy"].astype(float).to_numpy())
    cols = ["train_loss", "held_out_loss", "train_accuracy", "held_out_accuracy"]
    table = fin.groupby(cells, sort=False)[cols].median().reset_index()
    report.table(table, "Held-out beside training, per cell: median over seeds of the final loss and "
                        "accuracy on the training samples and on the held-out split (holdout), at the "
                        "end of the budget")
    return True


def _fig_held_out(report, rows, df):
    """Median over seeds of the training loss (solid) and the held-out loss (dashed) against the
    step, one panel per data set, one colour per cell."""
    rows = rows.dropna(subset=["val_loss"])
    datas = [d for d in dict.fromkeys(df["data"]) if df.index[df["data"] == d].isin(rows["point"]).any()]
    if not datas:
        return
    fig, axes = plt.subplots(1, len(datas), figsize=(4.2 * len(datas) + 1, 4.2), squeeze=False, sharey=True)
    for ax, dname in zip(axes[0], datas):
        sub = df[df["data"] == dname]
        cells = sub.groupby(["widths", "activation", "lr", "init_scale"], sort=True)
        for k, ((widths, act, lr, sc), cell) in enumerate(cells):
            r = rows[rows["point"].isin(cell.index)]
            med = r.groupby("step")[["loss", "val_loss"]].median()
            color = f"C{k % 10}"
            ax.plot(med.index, med["loss"], color=color, lw=1.2, label=f"{widths} {act} eta={lr:g} s={sc:g}")
            ax.plot(med.index, med["val_loss"], color=color, lw=1.2, ls="--")
        ax.set_yscale("log")
        ax.set_title(dname, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=6.5)
    axes[0][0].set_ylabel("loss (median over seeds); solid: training, dashed: held-out")
    report.figure("steps_to_target_held_out", fig,
                  "Training loss (solid) and held-out loss (dashed) over training, median over seeds, "
                  "per data set and cell: where the two part, the fit stops generalising.")


def _zero_centring(report, df):
    r"""Zero-centring without the step-size confound (observations: no theory gives a number).

    :math:`\tanh(x) = 2\sigma(2x) - 1`, and the centred sigmoid :math:`\sigma(x) - \tfrac12 =
    \tfrac12\tanh(x/2)`: a centred-sigmoid network with weights :math:`(W_1, b_1, W_2, b_2)` is the
    tanh network :math:`(W_1/2, b_1/2, W_2/2, b_2)`, and gradient descent at step :math:`\eta` on
    the first moves the second at :math:`\eta/4` in every weight and hidden bias (at
    :math:`\eta` in the output bias). simcore has no centred sigmoid, so the centred twin of a
    sigmoid run at :math:`(\eta, s)` (step, init scale, zero biases, glorot draws that do not
    depend on the activation) is the tanh run at :math:`(\eta/4, s/2)` from the same seed; it
    differs from the sigmoid run only by the centring, and by an output bias that learns 4 times
    more slowly. Comparing tanh and sigmoid at equal :math:`(\eta, s)` instead gives tanh a
    4-times larger effective step and 2-times larger initial weights. With two or more hidden
    layers the inner weights of the twin scale by 1/4 and move at :math:`\eta/16`, so no single
    (eta, s) makes a twin: only one-hidden-layer cells are compared."""
    key = ["data", "loss_fn", "widths", "seed"]
    zero = df[(df["bias_scale"] == 0) & ~df["widths"].astype(str).str.contains("-")
              & (df["widths"].astype(str) != "linear")]
    sig = zero[zero["activation"] == "sigmoid"]
    tan = zero[zero["activation"] == "tanh"]
    med = lambda s: float(np.quantile(s, 0.5, method="inverted_cdf"))  # noqa: E731
    matched, equal = {}, {}
    for (dname, loss, widths), sg in sig.groupby(["data", "loss_fn", "widths"], sort=False):
        tg = tan[(tan["data"] == dname) & (tan["loss_fn"] == loss) & (tan["widths"] == widths)]
        for (lr, sc), cell in sg.groupby(["lr", "init_scale"]):
            for target, out, what in (((lr / 4, sc / 2), matched, "matched"), ((lr, sc), equal, "equal")):
                tw = tg[np.isclose(tg["lr"], target[0], rtol=1e-12) & np.isclose(tg["init_scale"], target[1], rtol=1e-12)]
                both = cell.merge(tw, on=key, suffixes=("_s", "_t"))
                if len(both):
                    out[f"{dname} {widths} sigmoid eta={lr:g}"] = (
                        med(both["steps_inf_s"]), med(both["steps_inf_t"]), len(both))
    if matched:
        report.observation(
            "zero_centring",
            "Zero-centring alone: median steps to the target, sigmoid at (eta, s) over its centred "
            "twin sigma(x) - 1/2 (= tanh at (eta/4, s/2) from the same seeds), per one-hidden-layer "
            "cell; > 1: centring helps",
            measured={k: (a / b if np.isfinite(b) and b > 0 else np.nan) for k, (a, b, n) in matched.items()},
            figure="steps_to_target",
            note="; ".join(f"{k}: sigmoid {a:.4g}, centred {b:.4g} ({n} seeds)" for k, (a, b, n) in matched.items())[:600]
                 + "; the centred twin's output bias learns at eta/4 (see the module docstring)")
    if equal:
        report.observation(
            "tanh_vs_sigmoid_equal_eta",
            "At equal eta and init scale (confounded: tanh takes 4-times larger effective steps from "
            "2-times larger effective weights), median steps to the target, sigmoid over tanh, per cell",
            measured={k: (a / b if np.isfinite(b) and b > 0 else np.nan) for k, (a, b, n) in equal.items()},
            figure="steps_to_target",
            note="; ".join(f"{k}: sigmoid {a:.4g}, tanh {b:.4g}" for k, (a, b, n) in equal.items())[:600])


# --------------------------------------------------------------------------------------------

def analyse(data, spec, report):
    """The convergence study's claims, figures and tables (see the module docstring)."""
    data = of_kind(data, "mlp")
    analyse_least_squares(data, report)
    pts = per_run(data)
    paired = _pairs(pts)
    slow_grids = set(paired[0]["grid"]) if paired is not None else set()
    analyse_slowdown(data, report)
    ls_grids = set(pts[_is_ls(pts)]["grid"])
    analyse_steps_to_target(data, report, exclude=slow_grids | ls_grids)
