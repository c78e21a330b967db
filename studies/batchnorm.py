"""The batch-norm study (Ioffe & Szegedy 2015) at small scale: stable learning rates with and
without batch norm by depth, batch norm's scale invariance, the paper's sigmoid
experiment on scikit-learn's digits, and batch norm's backward invariants.

Runs are recognised by their configuration, not by sub-grid names: the **learning-rate sweep**
is the MLP runs without probes; the **digits experiment** the MLP runs with a probe
(``track_preact``, ``track_prenorm`` or ``track_accuracy``).

Statements (SCIENCE.md, "batchnorm"), of three kinds:

* **Predictions.**

  - ``stable_lr_ratio_rises_with_depth``: the ratio r(d) of the largest stable eta with and
    without batch norm rises with depth d. Measured as the least-squares slope of ln r against
    d; predicted > 0 by more than two standard errors, the standard error from the eta grid's
    resolution alone (each edge is known to one grid step, uniform in log: variance
    (ln step)^2 / 12, so (ln step)^2 / 6 for a ratio).
  - ``stable_lr_bn_above_block_limit``: with batch norm only the scale-variant parameters
    (output layer, gamma, beta) limit eta (Arora, Li & Lyu 2019): the weights feeding a batch
    norm are scale-invariant, their curvature falls as 1/||w||^2 while gradient descent makes
    ||w|| grow. So the network is stable up to at least 2 / lambda_max of the Hessian block of
    the scale-variant parameters at initialisation (:func:`studies.theory.bn_scale_variant_sharpness`,
    median over seeds), to within one grid step; the whole Hessian's 2 / lambda_max, which the
    scale-invariant weights dominate, is far smaller and is beside it in the figure.
    *Why one-sided* (the code shows a better statement than "the limit is 2 / lambda_max of the
    block"): 2 / lambda_max is a local, quadratic threshold; with BCE a run above it is thrown
    out, its sharpness falls (the catapult, Lewkowycz et al. 2020) and it still ends below its
    initial loss, so the measured edge lies far above 2 / lambda_0 with and without batch norm.
    That the block's value, not the whole Hessian's, is the floor is
    what scale invariance predicts and what can fail.

* **Observations** (no theory gives the number): the growth of the hidden layers' ||W||^2 over
  training against eta^2 sum_t ||grad_t||^2 from the recorded telemetry (``weight_norm``,
  ``grad_norm``; the digits grids record every step so the sum is exact), with and without
  batch norm. *Why not a prediction* (the code shows a better statement than SCIENCE.md's
  "w . grad_w L = 0, ||w_{t+1}||^2 = ||w_t||^2 + eta^2 ||grad||^2"): with batch norm's eps
  (torch's 1e-5) scale invariance is not exact, xhat_c = c (z - mu) / sqrt(c^2 var + eps), and
  w_j . grad_{w_j} L = eps / (var_j + eps) gamma_j dL/dgamma_j, which matters where a unit's
  variance is small (narrow layers late in training) and is not recoverable from the telemetry; the exact identity with that term is a check.
  Then the ratio with one hidden layer, where the
  un-normalised output layer sets the limit with and without batch norm (SCIENCE.md; the
  edges there differ by a grid step or two either way, ReLU below, tanh above, so "equal" is
  not a prediction the data support); on digits, the steps to a target accuracy on the
  training and on a held-out split (``holdout``; the held-out loss, recorded by the grid engine
  at every record, beside the training loss in the table and the figure), and the drift of the 15/50/85th percentiles of
  the last hidden layer's unit-0 input *before* normalisation (z = W a + b, ``track_prenorm``)
  beside the normalised value. With full-batch batch norm the normalised value has mean 0 and
  variance 1 over the very samples measured, so its stability is by construction; Santurkar
  et al. (2018) found batch norm does not reduce the drift of the layer inputs ("internal
  covariate shift"); the report says what the data show.

* **Checks** (identities any correct implementation satisfies; tests in
  ``tests/test_study_batchnorm.py``; an appendix of the report): batch norm's backward
  invariants (for any dy, sum_i dx_i = 0; for dy = 1, dx = 0, dgamma = 0, dbeta = N) on the
  networks' own pre-activations; scale invariance with its eps term (w_j . grad_{w_j} L =
  eps / (var_j + eps) gamma_j dL/dgamma_j for each unit's weights feeding a batch norm, and one
  gradient step's ||W - eta g||^2 = ||W||^2 - 2 eta sum_j (that term) + eta^2 ||g||^2);
  accuracy >= 1 - L / ln 2 (a misclassified sample costs >= ln 2) at every probe and at the end.

The largest stable eta: a run is *stable* when simcore's divergence flag is off and its final
loss is below its initial loss (with BCE on bounded activations a run thrown out of its basin
bounces at large but finite loss and the 1e6 flag never trips); an eta is stable when more than
half its seeds are (``MAJORITY``); the largest stable eta is the largest grid eta below the first
unstable one, censored at the grid's top if every eta is stable.
"""
import numpy as np
import pandas as pd

import matplotlib.pyplot as plt

from . import runner
from . import spec as specmod
from . import theory
from .rows import of_kind, per_run, varying_axes

NAME = "batchnorm"
TITLE = "Batch normalisation: stable learning rates, scale invariance, the digits experiment"
SUMMARY = ("Largest stable learning rate with and without batch norm by depth, against the "
           "Hessian block of the scale-variant parameters; the exact growth of the weight norm "
           "under scale invariance; the Ioffe-Szegedy sigmoid experiment on digits (steps to a "
           "target accuracy, training and held-out; percentiles of a last-layer input before "
           "normalisation); batch norm's backward invariants as engine checks.")

# an eta is stable when more than this share of its seeds are stable
MAJORITY = 0.5
# the digits experiment's target accuracy (measured at the probes, training and held-out)
TARGET_ACCURACY = 0.8
# round-off bound: C * n * eps times the sum of magnitudes that enter the sums (see _roundoff)
ROUNDOFF_C = 4.0
# seeds per batch-norm configuration used for the checks (cost: one forward, two backwards)
INVARIANT_SEEDS = 2
# seeds per configuration whose Hessian at initialisation gives the theory's 2 / lambda_max
THEORY_SEEDS = 4
# the scale-invariance checks pass below this relative size (float64 round-off of the backward)
SCALE_TOL = 1e-9
# standard errors by which the slope of ln(ratio) against depth must exceed 0
SLOPE_SE = 2.0
LN2 = float(np.log(2.0))

# configuration columns that are never comparison axes
_NOT_AXES = {"point", "kind", "grid", "seed", "lr", "batchnorm", "depth", "network", "steps",
             "record_every", "probe_every", "track_preact", "track_sharpness", "track_prenorm",
             "track_accuracy", "holdout"}
_PROBES = ("track_preact", "track_prenorm", "track_accuracy")


# --------------------------------------------------------------------------------------------
# selecting runs

def _probed(d):
    """Whether each row's run has a probe (missing flag columns: no)."""
    m = np.zeros(len(d), bool)
    for c in _PROBES:
        if c in d.columns:
            m |= d[c].fillna(False).astype(bool).to_numpy()
    return m


def sweep_rows(data):
    """MLP runs without probes: the learning-rate sweep."""
    d = of_kind(data, "mlp")
    return d[~_probed(d)]


def digits_rows(data):
    """MLP runs with a probe (percentiles, accuracy): the digits experiment."""
    d = of_kind(data, "mlp")
    return d[_probed(d)]


def _axes(rows):
    """Configuration columns (other than lr, seed, batch norm, ...) that vary within ``rows``."""
    return varying_axes(rows, _NOT_AXES | {"initial_loss"})     # runs_of adds initial_loss


def runs_of(rows):
    """One row per training: configuration, initial loss (step 0), final loss, flags."""
    if rows.empty:
        return rows.assign(initial_loss=[])
    first = rows[rows["layer"] == 1]
    l0 = first[first["step"] == 0].set_index("point")["loss"]
    runs = per_run(rows, keep="last")
    runs["initial_loss"] = l0.reindex(runs.index).to_numpy()
    runs["diverged"] = runs["diverged"].astype(bool)
    return runs.reset_index(drop=True)


def stable_mask(runs):
    """Stable: no divergence flag, a finite final loss, and a final loss below the initial one."""
    fl = runs["final_loss"].to_numpy(dtype=float)
    return (~runs["diverged"].to_numpy(bool)) & np.isfinite(fl) & (fl < runs["initial_loss"].to_numpy(dtype=float))


def _edge(etas, ok):
    """Largest eta below the first False of ``ok`` (etas sorted ascending); (value, censored).
    0.0 when the smallest eta already fails."""
    ok = np.asarray(ok, bool)
    if ok.all():
        return float(etas[-1]), True
    i = int(np.argmin(ok))
    return (float(etas[i - 1]) if i > 0 else 0.0), False


def largest_stable_eta(runs, keys):
    """Per (keys..., batchnorm): the largest stable eta under the majority rule, and for
    comparison under 'every seed stable', 'no seed flagged diverged' (simcore's flag alone)."""
    runs = runs.assign(stable=stable_mask(runs))
    out = []
    for k, g in runs.groupby(keys + ["batchnorm"], sort=True, dropna=False):
        by = g.groupby("lr").agg(share=("stable", "mean"), all_ok=("stable", "all"),
                                 no_flag=("diverged", lambda s: not s.any()), seeds=("seed", "nunique"))
        by = by.sort_index()
        etas = by.index.to_numpy(dtype=float)
        eta, cens = _edge(etas, by["share"].to_numpy() > MAJORITY)
        strict, _ = _edge(etas, by["all_ok"].to_numpy())
        flag, flag_cens = _edge(etas, by["no_flag"].to_numpy())
        row = dict(zip(keys + ["batchnorm"], k if isinstance(k, tuple) else (k,)))
        row.update(eta_max=eta, censored=cens, eta_max_all_seeds=strict, eta_max_flag_only=flag,
                   flag_censored=flag_cens, eta_min_grid=etas[0], eta_max_grid=etas[-1],
                   seeds=int(by["seeds"].max()), etas=len(etas))
        out.append(row)
    return pd.DataFrame(out)



# --------------------------------------------------------------------------------------------
# analysis

def analyse(data, spec, report):
    sw = sweep_rows(data)
    dg = digits_rows(data)
    report.text(
        "Batch norm here is torch's BatchNorm1d in training mode (batch statistics, eps = 1e-5) "
        "after every hidden layer's linear map and before its activation; training is full-batch "
        "gradient descent, so the batch is the whole training set.")
    _stable_lr(sw, spec, report)
    _weight_norm(dg, report)
    _digits(dg, report)
    _checks(data, spec, report)


def _label(keys, values):
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values)) or "all"


# ---- (1) largest stable eta ----------------------------------------------------------------

ASSUMES_RATIO = ("full-batch GD; the no-BN edge falls with depth (gradients and curvature of "
                 "deep un-normalised layers grow), the BN edge is set by the scale-variant "
                 "parameters at every depth; edges known to one grid step")
ASSUMES_BLOCK = ("weights feeding a batch norm are scale-invariant (Arora, Li & Lyu 2019), so "
                 "only the output layer, gamma and beta limit eta; quadratic stability "
                 "eta < 2/lambda_max at initialisation; a one-sided floor (the catapult lets "
                 "BCE runs above it end below their initial loss)")


def _network(p, X, y, batchnorm=None):
    from simcore import MLP
    return MLP(runner.sizes_of(p, X, y), activation=p["activation"], loss=p["loss"],
               batchnorm=p["batchnorm"] if batchnorm is None else batchnorm, init=p["init"],
               dtype="float64")


def theory_limits(runs, spec, keys):
    """Per (keys..., batchnorm): the median over the first THEORY_SEEDS seeds of 2/lambda_max at
    initialisation of the scale-variant Hessian block (``eta_block``; the whole Hessian without
    batch norm) and of the whole Hessian (``eta_full``)."""
    points = {p["point"]: p for p in specmod.expand(spec)}
    out = []
    for k, g in runs.groupby(keys + ["batchnorm"], sort=True, dropna=False):
        k = k if isinstance(k, tuple) else (k,)
        seeds = sorted(g["seed"].unique())[:THEORY_SEEDS]
        first = g[g["seed"].isin(seeds)].drop_duplicates("seed")
        block, full = [], []
        for pid in first["point"]:
            p = points[int(pid)]
            X, y = runner.make_data(p["data"], p["data_args"])[:2]
            net = _network(p, X, y)
            params = net.init(seed=p["seed"], scale=p["init_scale"], bias_scale=p["bias_scale"])
            lam_b = theory.bn_scale_variant_sharpness(net, params, X, y)
            lam_f = theory.mlp_sharpness(net, params, X, y) if net.batchnorm else lam_b
            block.append(2.0 / lam_b if lam_b > 0 else np.inf)
            full.append(2.0 / lam_f if lam_f > 0 else np.inf)
        out.append({**dict(zip(keys + ["batchnorm"], k)), "eta_block": float(np.median(block)),
                    "eta_full": float(np.median(full)), "theory_seeds": len(block)})
    return pd.DataFrame(out)


def ratio_slope(depths, ratios, step):
    """Least-squares slope of ln(ratio) against depth and its standard error from the grid's
    resolution: each edge is the grid value below the true edge, uniform over one step in log,
    so ln(ratio) has variance (ln step)^2 / 6; SE = sqrt(that / sum (d - mean d)^2)."""
    d = np.asarray(depths, float)
    y = np.log(np.asarray(ratios, float))
    if d.size < 2 or np.ptp(d) == 0:
        return np.nan, np.nan
    dc = d - d.mean()
    slope = float((dc * (y - y.mean())).sum() / (dc * dc).sum())
    se = float(np.log(step) / np.sqrt(6.0) / np.sqrt((dc * dc).sum()))
    return slope, se


def _stable_lr(rows, spec, report):
    report.heading("Largest stable learning rate, with and without batch norm")
    st_ratio = ("The ratio of the largest stable eta with and without batch norm rises with depth "
                "(slope of ln ratio per layer)")
    st_block = ("With batch norm the network is stable up to at least 2/lambda_max of the Hessian "
                "block of its scale-variant parameters (output layer, gamma, beta), at every depth")
    st_d2 = ("With one hidden layer the un-normalised output layer sets the limit with and without "
             "batch norm: the ratio there")
    runs = runs_of(rows)
    if runs.empty or runs["batchnorm"].nunique() < 2:
        what = "learning-rate sweep with batchnorm both false and true (runs without probes)"
        report.missing("stable_lr_ratio_rises_with_depth", st_ratio, what, assumes=ASSUMES_RATIO)
        report.missing("stable_lr_bn_above_block_limit", st_block, what, assumes=ASSUMES_BLOCK)
        return
    other = [c for c in _axes(runs) if c != "widths"]
    keys = ["depth"] + other
    tab = largest_stable_eta(runs, keys)
    tab = tab.merge(theory_limits(runs, spec, keys), on=keys + ["batchnorm"])
    etas = np.sort(runs["lr"].unique())
    step = float(np.exp(np.median(np.diff(np.log(etas))))) if len(etas) > 1 else np.nan
    comp = ratio_table(tab, keys)
    # (a) the ratio rises with depth, per configuration of the other axes
    fits, ok_all, notes = {}, True, []
    groups = list(comp.groupby(other, sort=True)) if other else [((), comp)]
    for gk, g in groups:
        gk = gk if isinstance(gk, tuple) else (gk,)
        use = g[g["ratio_valid"]]
        slope, se = ratio_slope(use["depth"], use["ratio"], step)
        name = _label(other, gk)
        fits[name] = (slope, se)
        ok = bool(np.isfinite(slope) and slope > SLOPE_SE * se)
        ok_all &= ok
        dropped = len(g) - len(use)
        notes.append(f"{name}: slope {slope:.3g} +- {se:.2g} per layer over depths "
                     f"{', '.join(str(int(d)) for d in use['depth'])}; ratios "
                     f"{', '.join(f'{r:.3g}' for r in use['ratio'])}"
                     + (f" ({dropped} depths left out: an edge censored or at 0)" if dropped else ""))
    report.prediction(
        "stable_lr_ratio_rises_with_depth", st_ratio, "> 0",
        {k: round(v[0], 4) for k, v in fits.items()},
        f"slope > {SLOPE_SE:g} SE; SE from the grid's resolution (step x{step:.3g}, ln(step)/sqrt(6) "
        f"per ratio)", ok_all, assumes=ASSUMES_RATIO, figure="stable_lr_vs_depth",
        note="; ".join(notes) + f"; majority of {runs['seed'].nunique()} seeds stable; stable = no "
             f"divergence flag and final loss < initial loss")
    # (b) the BN edge is at least the scale-variant block's 2/lambda_max
    bn = tab[tab["batchnorm"].astype(bool)].sort_values(keys)
    above = bn["eta_max"] * step >= bn["eta_block"]
    lab = [_label(keys, r[keys]) for _, r in bn.iterrows()]
    report.prediction(
        "stable_lr_bn_above_block_limit", st_block,
        dict(zip(lab, bn["eta_block"].round(4))), dict(zip(lab, bn["eta_max"].round(4))),
        f"measured edge x one grid step (x{step:.3g}) >= predicted", bool(above.all()),
        assumes=ASSUMES_BLOCK, figure="stable_lr_vs_depth",
        note=(f"2/lambda_max at initialisation, median over {int(bn['theory_seeds'].max())} seeds; "
              f"measured / predicted {(bn['eta_max'] / bn['eta_block']).min():.3g} to "
              f"{(bn['eta_max'] / bn['eta_block']).max():.3g}; the whole Hessian's 2/lambda_max "
              f"of the same BN networks (scale-invariant weights included) is "
              f"{bn['eta_full'].min():.3g} to {bn['eta_full'].max():.3g}, "
              f"{(bn['eta_block'] / bn['eta_full']).min():.3g} to "
              f"{(bn['eta_block'] / bn['eta_full']).max():.3g} times smaller than the block's"
              + ("" if above.all() else "; below at: " + "; ".join(
                  f"{l} ({m:.3g} vs {p:.3g})" for l, m, p, a in
                  zip(lab, bn["eta_max"], bn["eta_block"], above) if not a))))
    # (c) one hidden layer: an observation
    d0 = comp[comp["depth"] == comp["depth"].min()]
    t0 = tab[tab["depth"] == comp["depth"].min()]
    rep = {}
    for _, r in d0.iterrows():
        name = _label(other, [r[k] for k in other])
        th = t0
        for k in other:
            th = th[th[k] == r[k]]
        tb = th.set_index("batchnorm")
        rep[name] = round(float(r["ratio"]), 4)
        rep[name + " (theory 2/lambda ratio)"] = round(float(tb.loc[True, "eta_block"] / tb.loc[False, "eta_block"]), 4)
    report.observation(
        "stable_lr_depth2_output_layer", st_d2 + f" (depth {int(comp['depth'].min())})", rep,
        figure="stable_lr_vs_depth",
        note="the ratio of measured edges (BN / no BN) beside the ratio of the theory floors "
             "(2/lambda_max of the BN net's scale-variant block over the no-BN net's whole "
             "Hessian; with one hidden layer both are dominated by the output layer, which acts "
             "on bounded or normalised activations); no theory gives the measured ratio, which "
             "the catapult above 2/lambda_0 sets")
    show = comp.drop(columns=["ratio_valid"]).copy()
    th = tab.pivot_table(index=keys, columns="batchnorm", values=["eta_block", "eta_full"],
                         aggfunc="first")
    th.columns = [f"{v}_{'bn' if b else 'no_bn'}" for v, b in th.columns]
    show = show.merge(th.reset_index().drop(columns=["eta_full_no_bn"]), on=keys)
    for c, cen in (("eta_max_no_bn", "no_bn_censored"), ("eta_max_bn", "bn_censored")):
        show[c] = [f"{v:.3g}" + ("+" if z else "") for v, z in zip(show[c], show[cen])]
    report.table(show.drop(columns=["bn_censored", "no_bn_censored"]),
                 f"Largest stable eta (majority of seeds; '+' = every grid eta stable), their ratio, "
                 f"and the theory floors 2/lambda_max at initialisation: eta_block (the scale-variant "
                 f"block with BN, the whole Hessian without) and eta_full_bn (the whole Hessian of the "
                 f"BN net). Grid eta {etas.min():.3g} to {etas.max():.3g}, step x{step:.3g}.")
    _fig_stable(tab, comp, keys, other, fits, step, report)
    _fig_loss_vs_eta(runs, tab, keys, report)


def ratio_table(tab, keys):
    """BN / no-BN edges side by side per configuration; ``ratio_valid``: neither edge censored
    nor 0 (a ratio known to the grid's resolution)."""
    wide = tab.pivot_table(index=keys, columns="batchnorm", values=["eta_max", "censored"],
                           aggfunc="first")
    out = []
    for idx, r in wide.iterrows():
        idx = idx if isinstance(idx, tuple) else (idx,)
        e0, e1 = float(r[("eta_max", False)]), float(r[("eta_max", True)])
        c0, c1 = bool(r[("censored", False)]), bool(r[("censored", True)])
        out.append({**dict(zip(keys, idx)), "eta_max_no_bn": e0, "eta_max_bn": e1,
                    "ratio": e1 / e0 if e0 > 0 else np.inf, "no_bn_censored": c0, "bn_censored": c1,
                    "ratio_valid": bool(e0 > 0 and e1 > 0 and not c0 and not c1)})
    return pd.DataFrame(out)


def _style(bn):
    return ("tab:blue", "o", "with batch norm") if bn else ("tab:red", "s", "without batch norm")


def _fig_stable(tab, comp, keys, other, fits, step, report):
    groups = list(tab.groupby(other, sort=True)) if other else [((), tab)]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.8))
    lss = ["-", "--", ":", "-."]
    for gi, (gk, g) in enumerate(groups):
        gk = gk if isinstance(gk, tuple) else (gk,)
        name = _label(other, gk)
        suffix = f" ({name})" if other else ""
        for bn in (False, True):
            s = g[g["batchnorm"] == bn].sort_values("depth")
            if s.empty:
                continue
            col, mk, lab = _style(bn)
            y = s["eta_max"].replace(0.0, np.nan)
            # measured: the edge and the grid step above it (where the true edge lies)
            ax.errorbar(s["depth"], y, yerr=[np.zeros(len(y)), y * (step - 1)], color=col, marker=mk,
                        ls="none", ms=6, capsize=2, label=f"measured, {lab}{suffix}" if gi < 4 else None)
            ax.plot(s["depth"], s["eta_block"], color=col, ls=lss[gi % 4], lw=1.6,
                    label=(f"2/lambda_max, scale-variant block{suffix}" if bn else
                           f"2/lambda_max, whole Hessian{suffix}"))
            if bn:
                ax.plot(s["depth"], s["eta_full"], color=col, ls=lss[gi % 4], lw=0.9, alpha=0.5,
                        label=f"2/lambda_max, whole Hessian of the BN net{suffix}")
            cen = s[s["censored"]]
            if len(cen):
                ax.scatter(cen["depth"], cen["eta_max"] * 1.25, marker="^", color=col, s=40, zorder=5)
        c = comp
        for k, v in zip(other, gk):
            c = c[c[k] == v]
        c = c.sort_values("depth")
        v = c[c["ratio_valid"]]
        col = plt.get_cmap("tab10")(gi % 10)
        bx.errorbar(v["depth"], v["ratio"], yerr=[v["ratio"] * (1 - 1 / step), v["ratio"] * (step - 1)],
                    color=col, marker="o", ls="none", capsize=3, label=f"measured{suffix}")
        slope, se = fits.get(name, (np.nan, np.nan))
        if np.isfinite(slope) and len(v):
            d = np.linspace(v["depth"].min(), v["depth"].max(), 50)
            dm = v["depth"].mean()
            y0 = np.exp(np.log(v["ratio"]).mean())
            bx.plot(d, y0 * np.exp(slope * (d - dm)), color=col, lw=1.5,
                    label=f"fit: slope {slope:.3g} / layer{suffix}")
            bx.fill_between(d, y0 * np.exp((slope - SLOPE_SE * se) * (d - dm)),
                            y0 * np.exp((slope + SLOPE_SE * se) * (d - dm)), color=col, alpha=0.15, lw=0)
    bx.axhline(1.0, color="black", lw=0.8, ls=":")
    bx.text(comp["depth"].min(), 1.05, "no gain (ratio 1)", fontsize=8)
    for a in (ax, bx):
        a.set_yscale("log")
        a.set_xticks(sorted(tab["depth"].unique()))
        a.set_xlabel("depth (number of weight layers)")
    ax.set_ylabel("learning rate eta (log scale)")
    ax.set_title("Largest stable eta (markers) and the theory floors (lines)", fontsize=10)
    ax.legend(fontsize=6.5, loc="lower left")
    bx.set_ylabel("eta_max with BN / without (log scale)")
    bx.set_title(f"Ratio by depth, fit of ln ratio (band: +-{SLOPE_SE:g} SE of the slope)", fontsize=10)
    bx.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    report.figure("stable_lr_vs_depth", fig,
                  "Left: the largest stable eta by depth (markers; the bar spans the grid step in "
                  "which the true edge lies; a triangle marks an edge censored at the grid's top), "
                  "with the theory's floor 2/lambda_max at initialisation: the scale-variant block "
                  "(output layer, gamma, beta) with batch norm, the whole Hessian without; the thin "
                  "line is the whole Hessian of the BN net, which scale invariance says does not "
                  "limit eta. Right: the ratio BN / no BN with its resolution bars and the "
                  "least-squares line of ln ratio against depth.")


def _fig_loss_vs_eta(runs, tab, keys, report):
    other = [k for k in keys if k != "depth"]
    depths = sorted(runs["depth"].unique())
    rowsets = list(runs.groupby(other, sort=True)) if other else [((), runs)]
    nr, nc = len(rowsets), len(depths)
    fig, axes = plt.subplots(nr, nc, figsize=(3.3 * nc, 3.0 * nr + 0.6), squeeze=False, sharey=True)
    r = runs.assign(ratio=(runs["final_loss"] / runs["initial_loss"]))
    cap = 1e4
    for i, (gk, g) in enumerate(rowsets):
        gk = gk if isinstance(gk, tuple) else (gk,)
        for j, d in enumerate(depths):
            ax = axes[i, j]
            for bn in (False, True):
                col, mk, lab = _style(bn)
                s = r[(r["depth"] == d) & (r["batchnorm"] == bn) & r["point"].isin(g["point"])]
                if s.empty:
                    continue
                v = s["ratio"].where(np.isfinite(s["ratio"]), cap).clip(upper=cap)
                s = s.assign(v=v)
                med = s.groupby("lr")["v"].median()
                lo = s.groupby("lr")["v"].min()
                hi = s.groupby("lr")["v"].max()
                ax.fill_between(med.index, lo, hi, color=col, alpha=0.15, lw=0)
                ax.plot(med.index, med, color=col, marker=mk, ms=3, lw=1.4, label=lab)
                t = tab[(tab["depth"] == d) & (tab["batchnorm"] == bn)]
                for k, v in zip(other, gk):
                    t = t[t[k] == v]
                if len(t) and t["eta_max"].iloc[0] > 0:
                    ax.axvline(t["eta_max"].iloc[0], color=col, ls="--", lw=1)
            ax.axhline(1.0, color="black", lw=0.8, ls=":")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_ylim(top=cap * 2)
            ax.set_title(f"depth {d}" + (", " + ", ".join(f"{k}={v}" for k, v in zip(other, gk))
                                         if other else ""), fontsize=9)
            ax.set_xlabel("learning rate eta (log)")
            if j == 0:
                ax.set_ylabel("final / initial loss (log)")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    report.figure("final_loss_vs_eta", fig,
                  "Final training loss relative to the initial loss against eta, by depth: median "
                  "over seeds (band: min-max); dotted line 1 is the stability criterion (a run "
                  f"above it ended worse than it started); non-finite losses drawn at {cap:g}; "
                  "dashed verticals, the largest stable eta of each curve.")


# ---- (2) weight-norm growth under scale invariance -----------------------------------------

def norm_growth_table(rows):
    """Per run and hidden layer: measured ||W_T||^2 - ||W_0||^2 from the recorded weight norms,
    the growth eta^2 sum_t ||grad_t||^2 predicted from the recorded gradient norms (trapezoid
    rule over the records) and its tolerance, half the spread of the left and right Riemann
    sums (exact, no tolerance, with a record every step). The record at the last step T carries
    W_T but its gradient is not applied."""
    out = []
    hidden = rows[rows["layer"] < rows["depth"]]
    for (pid, layer), g in hidden.groupby(["point", "layer"], sort=True):
        g = g.sort_values("step")
        if g["diverged"].astype(bool).any() or len(g) < 2:
            continue
        s = g["step"].to_numpy(float)
        w2 = g["weight_norm"].to_numpy(float) ** 2
        g2 = g["grad_norm"].to_numpy(float) ** 2
        lr = float(g["lr"].iloc[0])
        ds = np.diff(s)
        left, right = lr * lr * (ds * g2[:-1]).sum(), lr * lr * (ds * g2[1:]).sum()
        # a record every step: the left sum is the sum itself (the gradient of step T is not applied)
        every = bool((ds == 1).all())
        out.append({"point": pid, "layer": int(layer), "batchnorm": bool(g["batchnorm"].iloc[0]),
                    "lr": lr, "seed": g["seed"].iloc[0], "measured": float(w2[-1] - w2[0]),
                    "predicted": left if every else 0.5 * (left + right),
                    "tolerance": 0.0 if every else 0.5 * abs(right - left),
                    "w2_0": float(w2[0]), "growth_factor": float(w2[-1] / w2[0]),
                    "record_every": int(g["record_every"].iloc[0])})
    return pd.DataFrame(out)


def _weight_norm(rows, report):
    report.heading("Scale invariance: the growth of the weight norm")
    st = ("Growth of the hidden layers' ||W||^2 over training against eta^2 sum_t ||grad_t||^2 "
          "from the recorded gradient norms (equal under exact scale invariance)")
    tab = norm_growth_table(rows) if len(rows) else pd.DataFrame()
    if tab.empty or not tab["batchnorm"].any():
        report.missing("bn_weight_norm_growth", st, "batch-norm runs with a probe (the digits experiment)",
                       kind="observation")
        return
    bn = tab[tab["batchnorm"]]
    err = (bn["measured"] - bn["predicted"]).abs()
    # a float64 allowance besides the quadrature's own: the norms are stored to ~1e-16 relative
    ok = err <= bn["tolerance"] + 1e-9 * bn["w2_0"]
    rel = bn["measured"] / bn["predicted"]
    tol_rel = bn["tolerance"] / bn["predicted"]
    nb = tab[~tab["batchnorm"]]
    report.observation(
        "bn_weight_norm_growth", st,
        {"BN: measured / predicted, median": round(float(rel.median()), 5),
         "BN: min": round(float(rel.min()), 5), "BN: max": round(float(rel.max()), 5),
         **({"no BN: median": round(float((nb["measured"] / nb["predicted"]).median()), 4)}
            if len(nb) else {})},
        figure="weight_norm_growth",
        note=(f"{bn['point'].nunique()} BN runs x {bn['layer'].nunique()} hidden layers; records every "
              f"{int(bn['record_every'].max())} steps (sums exact with a record every step, else by the "
              f"trapezoid rule, spread {tol_rel.max():.2g} relative at most"
              + (f", {int(ok.sum())} of {len(bn)} within it" if (bn["tolerance"] > 0).any() else "")
              + f"). What is left is batch norm's eps: "
              f"||W_t+1||^2 - ||W_t||^2 - eta^2 ||g_t||^2 = -2 eta sum_j eps/(var_j + eps) gamma_j "
              f"dL/dgamma_j (the check bn_norm_step_identity), largest where a unit's variance is "
              f"small; ||W||^2 grew by a factor {bn['growth_factor'].min():.3g} to "
              f"{bn['growth_factor'].max():.3g}, so the effective step eta/||W||^2 of a "
              f"scale-invariant layer fell by as much (Arora, Li & Lyu 2019)"))
    _fig_norm(tab, report)


def _fig_norm(tab, report):
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    for bn in (True, False):
        s = tab[tab["batchnorm"] == bn]
        if s.empty:
            continue
        col, mk, lab = _style(bn)
        pos = s["measured"] > 0
        ax.errorbar(s["predicted"][pos], s["measured"][pos], xerr=s["tolerance"][pos], color=col,
                    marker=mk, ms=4, ls="none", alpha=0.75, label=lab)
        if (~pos).any():
            ax.scatter(s["predicted"][~pos], -s["measured"][~pos], facecolor="none", edgecolor=col,
                       marker=mk, s=22, label=f"{lab}: norm shrank (|measured| shown)")
    lo = float(np.nanmin(tab["predicted"][tab["predicted"] > 0])) / 2
    hi = float(np.nanmax(tab[["predicted", "measured"]].abs().to_numpy())) * 2
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, label="theory: measured = eta^2 sum ||g||^2")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("predicted growth eta^2 sum_t ||grad_t||^2 (from the recorded gradient norms)")
    ax.set_ylabel("measured ||W_T||^2 - ||W_0||^2")
    ax.set_title("Weight-norm growth of the hidden layers (digits runs)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    report.figure("weight_norm_growth", fig,
                  "Each (run, hidden layer) of the digits experiment: the measured growth of "
                  "||W||^2 against eta^2 sum_t ||grad_t||^2 from the recorded gradient norms "
                  "(horizontal bars: the quadrature's tolerance). With batch norm the points lie on "
                  "the line (scale invariance: the gradient is orthogonal to W); without, they "
                  "need not.")


# ---- (3) digits -----------------------------------------------------------------------------

_PCOLS = ("preact_p15", "preact_p50", "preact_p85", "prenorm_p15", "prenorm_p50", "prenorm_p85",
          "train_accuracy", "holdout_accuracy", "val_loss")


def _curves(rows):
    """Loss and probe values per recorded step of each run (layer-1 rows)."""
    cols = ["point", "step", "loss"] + [c for c in _PCOLS if c in rows.columns]
    return rows[rows["layer"] == 1][cols].sort_values(["point", "step"])


def steps_to_target(curve, column, target=TARGET_ACCURACY):
    """First probed step whose ``column`` (a measured accuracy) reaches ``target`` (inf if none)."""
    if column not in curve.columns:
        return np.nan
    p = curve.dropna(subset=[column])
    hit = np.flatnonzero(p[column].to_numpy(float) >= target)
    return float(p["step"].to_numpy()[hit[0]]) if hit.size else np.inf


def percentile_drift(curve, prefix="preact"):
    """(median drift |p50(T) - p50(0)| / s(0), spread change |ln s(T)/s(0)|), s = p85 - p15, over
    the probes of ``prefix``_p15/_p50/_p85."""
    c50 = f"{prefix}_p50"
    if c50 not in curve.columns:
        return np.nan, np.nan
    p = curve.dropna(subset=[c50])
    if len(p) < 2:
        return np.nan, np.nan
    a, b = p.iloc[0], p.iloc[-1]
    s0 = a[f"{prefix}_p85"] - a[f"{prefix}_p15"]
    s1 = b[f"{prefix}_p85"] - b[f"{prefix}_p15"]
    if not (s0 > 0 and s1 > 0):
        return np.nan, np.nan
    return float(abs(b[c50] - a[c50]) / s0), float(abs(np.log(s1 / s0)))


def digits_table(rows):
    """One row per digits run of the longest ``steps`` in its (config, lr, seed, batchnorm)."""
    runs = runs_of(rows)
    if runs.empty:
        return runs, runs
    keys = _axes(runs)
    ident = keys + ["lr", "seed", "batchnorm"]
    longest = runs.loc[runs.groupby(ident, dropna=False)["steps"].idxmax()]
    curves = _curves(rows)
    out = []
    for _, r in longest.iterrows():
        c = curves[curves["point"] == r["point"]]
        pre_d, pre_s = percentile_drift(c, "prenorm")
        post_d, post_s = percentile_drift(c, "preact")
        last = c.dropna(subset=["holdout_accuracy"]) if "holdout_accuracy" in c.columns else c.iloc[0:0]
        out.append({**{k: r[k] for k in ident}, "point": r["point"], "steps": int(r["steps"]),
                    "steps_train": steps_to_target(c, "train_accuracy"),
                    "steps_holdout": steps_to_target(c, "holdout_accuracy"),
                    "prenorm_drift": pre_d, "prenorm_spread_change": pre_s,
                    "postnorm_drift": post_d, "postnorm_spread_change": post_s,
                    "final_loss": r["final_loss"], "final_val_loss": r.get("final_val_loss", np.nan),
                    "final_accuracy": r["final_accuracy"],
                    "final_holdout_accuracy": float(last["holdout_accuracy"].iloc[-1]) if len(last) else np.nan,
                    "diverged": bool(r["diverged"])})
    return pd.DataFrame(out), runs


def _by_lr(tab, col):
    """{"lr X BN": median, "lr X no BN": median} of ``col`` over seeds (inf: not reached)."""
    out = {}
    for (lr, bn), g in tab.groupby(["lr", "batchnorm"], sort=True):
        v = g[col].to_numpy(float)
        if np.isnan(v).all():
            continue
        out[f"lr {lr:g} {'BN' if bn else 'no BN'}"] = float(np.median(v))
    return out


def _digits(rows, report):
    report.heading("The Ioffe-Szegedy experiment on digits")
    tab, runs = digits_table(rows)
    st = {
        "digits_steps_to_target_train": f"Steps to {TARGET_ACCURACY:.0%} training accuracy, with and without batch norm (median over seeds)",
        "digits_steps_to_target_holdout": f"Steps to {TARGET_ACCURACY:.0%} held-out accuracy, with and without batch norm (median over seeds)",
        "digits_prenorm_drift": ("Drift of the last hidden layer's unit-0 input before normalisation "
                                 "(z = W a + b): |p50(T) - p50(0)| / (p85 - p15)(0), with and without "
                                 "batch norm (median over seeds)"),
        "digits_postnorm_drift": ("The same drift of the normalised input gamma xhat + beta (batch norm's "
                                  "output, over the very samples whose statistics normalise it)"),
    }
    if tab.empty or tab["batchnorm"].nunique() < 2:
        for id, s in st.items():
            report.missing(id, s, "digits runs with a probe and batchnorm both false and true",
                           kind="observation")
        return
    probe = int(runs["probe_every"].max())
    n_held = "no held-out split (holdout = 0)" if not runs["holdout"].fillna(0).gt(0).any() else \
        f"held-out fraction {runs['holdout'].max():g}, batch norm normalised by the training set's statistics"
    fin = _by_lr(tab, "final_holdout_accuracy")
    for id, col in (("digits_steps_to_target_train", "steps_train"),
                    ("digits_steps_to_target_holdout", "steps_holdout")):
        report.observation(id, st[id], _by_lr(tab, col) or "no probes", figure="digits_accuracy",
                           note=f"measured accuracy at the probes (every {probe} steps); inf: not "
                                f"reached in {int(tab['steps'].max())} steps; {n_held}"
                                + (f"; final held-out accuracy (median): "
                                   + "; ".join(f"{k} {v:.3f}" for k, v in fin.items())
                                   if id.endswith("holdout") and fin else ""))
    spread_pre = _by_lr(tab, "prenorm_spread_change")
    drift = _by_lr(tab, "prenorm_drift")
    ratios = [drift[f"lr {lr:g} BN"] / drift[f"lr {lr:g} no BN"] for lr in sorted(tab["lr"].unique())
              if f"lr {lr:g} BN" in drift and f"lr {lr:g} no BN" in drift and drift[f"lr {lr:g} no BN"] > 0]
    report.observation("digits_prenorm_drift", st["digits_prenorm_drift"], drift or "no probes",
                       figure="preact_percentiles",
                       note="spread change |ln s(T)/s(0)|: " + "; ".join(
                           f"{k} {v:.3g}" for k, v in spread_pre.items())
                       + "; without batch norm z is the activation input itself"
                       + (f"; here the drift with batch norm is {min(ratios):.3g} to {max(ratios):.3g} "
                          f"times that without" if ratios else "")
                       + ". Santurkar et al. (2018) found batch norm does not reduce the shift of "
                         "layer inputs on CIFAR-10 VGG networks; the drift here is in units of each "
                         "unit's own initial spread, after a fixed number of steps")
    spread_post = _by_lr(tab[tab["batchnorm"].astype(bool)], "postnorm_spread_change")
    report.observation("digits_postnorm_drift", st["digits_postnorm_drift"],
                       _by_lr(tab[tab["batchnorm"].astype(bool)], "postnorm_drift") or "no probes",
                       figure="preact_percentiles",
                       note="spread change: " + "; ".join(f"{k} {v:.3g}" for k, v in spread_post.items())
                       + "; over the training batch every unit of xhat has mean 0 and variance 1, so "
                         "these percentiles move only through gamma, beta and the shape of the "
                         "distribution: stable by construction, not evidence about covariate shift")
    report.table(tab.drop(columns=["point"]),
                 f"Digits runs (the longest of each seed): steps to {TARGET_ACCURACY:.0%} measured "
                 f"accuracy (training and held-out; inf: not reached), percentile drift and spread "
                 f"change of the last hidden layer's unit-0 input before (prenorm) and after "
                 f"(postnorm) normalisation, final training and held-out loss (final_val_loss) and "
                 f"accuracies")
    _fig_percentiles(tab, rows, report)
    _fig_digits_accuracy(tab, rows, report)


def _fig_percentiles(tab, rows, report):
    curves = _curves(rows)
    lrs = sorted(tab["lr"].unique())
    panels = [(False, "prenorm", "without batch norm: z = W a + b"),
              (True, "prenorm", "with batch norm, before normalisation: z = W a + b"),
              (True, "preact", "with batch norm, after: gamma xhat + beta")]
    fig, axes = plt.subplots(len(lrs), 3, figsize=(15, 3.6 * len(lrs) + 0.4), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for i, lr in enumerate(lrs):
        for j, (bn, prefix, title) in enumerate(panels):
            ax = axes[i, j]
            col50 = f"{prefix}_p50" if f"{prefix}_p50" in curves.columns else "preact_p50"
            pre = col50[:-4]
            sub = tab[(tab["lr"] == lr) & (tab["batchnorm"] == bn)].sort_values("seed")
            for k, (_, r) in enumerate(sub.iterrows()):
                c = curves[curves["point"] == r["point"]].dropna(subset=[col50])
                colr = cmap(k % 10)
                ax.fill_between(c["step"], c[f"{pre}_p15"], c[f"{pre}_p85"], color=colr, alpha=0.12, lw=0)
                ax.plot(c["step"], c[col50], color=colr, lw=1.8, label=f"seed {r['seed']}: 50th" if k < 4 else None)
                ax.plot(c["step"], c[f"{pre}_p15"], color=colr, lw=0.9, ls="--",
                        label="15th / 85th" if k == 0 else None)
                ax.plot(c["step"], c[f"{pre}_p85"], color=colr, lw=0.9, ls="--")
            ax.set_title(f"{title}, eta = {lr:g}", fontsize=9)
            ax.set_xlabel("gradient-descent step (full batch)")
            ax.set_ylabel("last-layer unit 0 input")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    report.figure("preact_percentiles", fig,
                  "The 15th, 50th and 85th percentiles over the training samples of the input of "
                  "unit 0 of the last hidden layer over training (after Ioffe & Szegedy's Figure "
                  "1b-c); one colour per seed. Left: without batch norm. Middle: with batch norm, "
                  "before normalisation (the drift Santurkar et al. measured). Right: with batch "
                  "norm, after normalisation (mean 0, variance 1 over these samples by construction, "
                  "up to gamma and beta).")


def _fig_digits_accuracy(tab, rows, report):
    curves = _curves(rows)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    lss = ["-", "--", ":", "-."]
    lrs = sorted(tab["lr"].unique())
    for _, r in tab.iterrows():
        col, _, lab = _style(bool(r["batchnorm"]))
        ls = lss[lrs.index(r["lr"]) % len(lss)]
        c = curves[curves["point"] == r["point"]]
        label = f"{lab}, eta = {r['lr']:g}" if r["seed"] == tab["seed"].min() else None
        axes[0].plot(c["step"], c["loss"], color=col, ls=ls, lw=1.2, alpha=0.8, label=label)
        if "val_loss" in c.columns and c["val_loss"].notna().any():  # the held-out loss, every record
            axes[0].plot(c["step"], c["val_loss"], color=col, ls=ls, lw=0.7, alpha=0.45,
                         label="held-out (thin)" if label and not r["batchnorm"] and lrs.index(r["lr"]) == 0 else None)
        for ax, colname in ((axes[1], "train_accuracy"), (axes[2], "holdout_accuracy")):
            if colname in c.columns:
                p = c.dropna(subset=[colname])
                ax.plot(p["step"], p[colname], color=col, ls=ls, lw=1.2, alpha=0.8, label=label)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("cross-entropy (nats, log scale)")
    axes[0].set_title("Training loss, held-out loss thin (one line per seed)", fontsize=10)
    for ax, t in ((axes[1], "Training accuracy (measured at the probes)"),
                  (axes[2], "Held-out accuracy (BN: training-set statistics)")):
        ax.axhline(TARGET_ACCURACY, color="gray", ls=":", lw=1)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("accuracy")
        ax.set_title(t, fontsize=10)
    for ax in axes:
        ax.set_xlabel("gradient-descent step (full batch)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    report.figure("digits_accuracy", fig,
                  "Digits, three hidden sigmoid layers, with and without batch norm: training loss "
                  "and, thin, the held-out loss (recorded by the grid engine; batch norm normalises "
                  "the held-out split with the training set's statistics), training and held-out "
                  f"accuracy over training; dotted, the {TARGET_ACCURACY:.0%} target.")


# ---- (4) engine checks ----------------------------------------------------------------------

def _roundoff(dy, xhat, inv_std, gamma):
    """Per unit, a float64 round-off bound for sums over the batch of the backward's terms:
    C n eps sum_i |gamma s / n| (n |dy_i| + |sum dy| + |xhat_i| |sum dy xhat|), the standard
    bound for recursive summation (n eps times the sum of magnitudes) with a safety factor C."""
    n = dy.shape[0]
    eps = np.finfo(np.float64).eps
    S = np.abs(dy.sum(0))
    T = np.abs((dy * xhat).sum(0))
    mag = np.abs(gamma * inv_std / n) * (n * np.abs(dy) + S + np.abs(xhat) * T)
    return ROUNDOFF_C * n * eps * mag.sum(0)


def bn_invariants(net, params, X, rng):
    """Run a forward pass of a batch-norm network layer by layer with simcore.layers, and at each
    hidden layer measure batch norm's backward invariants on its actual z. Returns a list of
    per-layer dicts and the largest difference to ``net.activation_inputs`` (a check that these
    are the network's own pre-activations)."""
    from simcore import activations, layers

    a = X
    out, ys = [], []
    for l, p in enumerate(params[:-1]):
        z = layers.dense_forward(a, p["W"], p["b"])
        y, cache = layers.batchnorm_forward(z, p["gamma"], p["beta"])
        xhat, inv_std = cache
        n = z.shape[0]
        dy = rng.standard_normal(z.shape)
        dz, _, _ = layers.batchnorm_backward(dy, cache, p["gamma"])
        tol_r = _roundoff(dy, xhat, inv_std, p["gamma"])
        sums = np.abs(dz.sum(0))
        ones = np.ones_like(z)
        dz1, dg1, db1 = layers.batchnorm_backward(ones, cache, p["gamma"])
        tol_1 = _roundoff(ones, xhat, inv_std, p["gamma"])
        eps = np.finfo(np.float64).eps
        tol_g = ROUNDOFF_C * n * eps * np.abs(xhat).sum(0)
        tol_b = ROUNDOFF_C * n * eps * n
        out.append({"layer": l + 1, "n": n, "units": z.shape[1],
                    "sum_dx_max": float(sums.max()), "sum_dx_ratio": float((sums / tol_r).max()),
                    "ones_dx_max": float(np.abs(dz1).max()),
                    "ones_dx_ratio": float((np.abs(dz1) / tol_1).max()),
                    "ones_dgamma_max": float(np.abs(dg1).max()),
                    "ones_dgamma_ratio": float((np.abs(dg1) / tol_g).max()),
                    "ones_dbeta_err": float(np.abs(db1 - n).max()),
                    "ones_dbeta_ratio": float(np.abs(db1 - n).max() / tol_b),
                    "dbeta_far": float(db1[np.argmax(np.abs(db1 - n))]),
                    "dx_scale": float(np.abs(dz).max())})
        ys.append(y)
        a = activations.apply(net.activation, y)
    ref = net.activation_inputs(params, X)
    diff = max(float(np.abs(u - v).max()) for u, v in zip(ys, ref))
    return out, diff




def bn_networks(data, spec, seeds=INVARIANT_SEEDS):
    """The batch-norm networks of ``data`` at initialisation, ``seeds`` seeds per configuration:
    a list of (point, net (float64), params, X, y) on each one's own training data."""
    points = {p["point"]: p for p in specmod.expand(spec)}
    present = set(of_kind(data, "mlp")["point"].unique()) if "point" in data.columns else set()
    chosen = {}
    for pid in sorted(present):
        p = points.get(int(pid))
        if p is None or p["kind"] != "mlp" or not p["batchnorm"]:
            continue
        key = (p["data"], str(p["data_args"]), tuple(p["widths"]), p["activation"], p["loss"],
               p["init"], p["dtype"], p["init_scale"], p["bias_scale"], p["holdout"])
        got = chosen.setdefault(key, {})
        if p["seed"] not in got and len(got) < seeds:
            got[p["seed"]] = p
    out = []
    for got in chosen.values():
        for p in got.values():
            X, y = runner.make_data(p["data"], p["data_args"])[:2]
            if p["holdout"] > 0:
                X, y = runner.split_holdout(X, y, p["holdout"], p["grid"])[:2]
            net = _network(p, X, y)
            params = net.init(seed=p["seed"], scale=p["init_scale"], bias_scale=p["bias_scale"])
            out.append((p, net, params, np.asarray(X, np.float64), y))
    return out


def invariant_table(nets):
    """Batch norm's backward invariants on every hidden layer of ``nets`` (:func:`bn_invariants`)."""
    rows = []
    rng = np.random.default_rng(0)
    for p, net, params, X, y in nets:
        per, diff = bn_invariants(net, params, X, rng)
        for r in per:
            rows.append({"data": p["data"], "widths": "-".join(map(str, p["widths"])),
                         "activation": p["activation"], "seed": p["seed"], **r, "forward_check": diff})
    return pd.DataFrame(rows)


def scale_correction(net, params, X, grads):
    """Per hidden layer, the (fan_out,) values of d/dc L(c w_j) at c = 1 that batch norm's eps
    leaves: xhat_c = c (z - mu) / sqrt(c^2 var + eps), so

        w_j . grad_{w_j} L = eps / (var_j + eps) * gamma_j * dL/dgamma_j,

    which is 0 for eps = 0 (exact scale invariance) and small where var_j >> eps."""
    from simcore.layers import BN_EPS
    return [BN_EPS / (var + BN_EPS) * np.asarray(p["gamma"], float) * np.asarray(g["gamma"], float)
            for var, p, g in zip(net.forward(params, X).var, params, grads)]


def scale_invariance(net, params, X, y, lr):
    """Per layer of one batch-norm network: the largest |w_j . g_j - c_j| / (||w_j|| ||g_j||) over
    units j, c_j the eps correction of :func:`scale_correction` (0 for the output layer, which
    feeds no batch norm: there the plain |cos| is shown), the size of that correction
    max |c_j| / (||w_j|| ||g_j||), the largest |db| / max|dW| (the bias before a batch norm has no
    effect), and the relative error of one gradient step of size ``lr``:
    ||W - eta g||^2 = ||W||^2 - 2 eta sum_j c_j + eta^2 ||g||^2."""
    _, grads = net.loss_and_grad(params, X, y)
    corr = scale_correction(net, params, X, grads)
    out = []
    for l, (p, g) in enumerate(zip(params, grads)):
        W, dW = np.asarray(p["W"], float), np.asarray(g["W"], float)
        c = corr[l] if l < len(corr) else np.zeros(W.shape[1])
        den = np.linalg.norm(W, axis=0) * np.linalg.norm(dW, axis=0)
        den = np.where(den > 0, den, np.inf)
        w2 = float((W * W).sum())
        step = float(((W - lr * dW) ** 2).sum())
        out.append({"layer": l + 1, "feeds_bn": l < len(params) - 1,
                    "max_cos": float((np.abs((W * dW).sum(0) - c) / den).max()),
                    "eps_correction": float((np.abs(c) / den).max()),
                    "bias_grad_ratio": float(np.abs(g["b"]).max() / max(np.abs(dW).max(), 1e-300)),
                    "step_rel_err": abs(step - w2 + 2 * lr * c.sum() - lr * lr * float((dW * dW).sum())) / w2})
    return out


def scale_table(nets):
    rows = []
    for p, net, params, X, y in nets:
        for r in scale_invariance(net, params, X, y, p["lr"]):
            rows.append({"data": p["data"], "widths": "-".join(map(str, p["widths"])),
                         "seed": p["seed"], "lr": p["lr"], **r})
    return pd.DataFrame(rows)


def accuracy_margins(rows):
    """Measured accuracy minus the certified 1 - L/ln 2 at every point where both are known:
    each run's end (final_accuracy, final_loss) and its probes (train_accuracy, loss)."""
    runs = runs_of(rows)
    ok = runs[~runs["diverged"] & runs["final_accuracy"].notna()]
    m = list(ok["final_accuracy"] - (1.0 - ok["final_loss"] / LN2))
    if "train_accuracy" in rows.columns:
        pr = rows[(rows["layer"] == 1)].dropna(subset=["train_accuracy"])
        m += list(pr["train_accuracy"] - (1.0 - pr["loss"] / LN2))
    return np.asarray(m, float)


def _checks(data, spec, report):
    report.heading("Engine checks")
    st = {
        "bn_backward_sum_dx_zero": "For any upstream gradient dy, the batch sum of batch norm's "
                                   "input gradient is zero: sum_i dx_i = 0",
        "bn_backward_ones_dx_zero": "For dy = 1 everywhere, dx = 0",
        "bn_backward_ones_dgamma_zero": "For dy = 1 everywhere, dgamma = sum_i xhat_i = 0",
        "bn_backward_ones_dbeta_n": "For dy = 1 everywhere, dbeta = N (the batch size)",
        "bn_scale_invariance_orthogonal": "Weights feeding a batch norm are orthogonal to their "
                                          "gradient up to batch norm's eps: w_j . grad_{w_j} L = "
                                          "eps/(var_j + eps) gamma_j dL/dgamma_j (0 as eps -> 0)",
        "bn_norm_step_identity": "One gradient step: ||W - eta g||^2 = ||W||^2 + eta^2 ||g||^2 "
                                 "- 2 eta sum_j (that eps term), every layer feeding a batch norm",
        "digits_accuracy_bound": "Measured training accuracy >= 1 - L/ln 2 (a misclassified sample "
                                 "costs >= ln 2), at every probe and at the end of every run",
    }
    nets = bn_networks(data, spec)
    if not nets:
        for id in list(st)[:6]:
            report.missing(id, st[id], "batch-norm networks", kind="check")
    else:
        _invariant_checks(invariant_table(nets), st, report)
        sc = scale_table(nets)
        fb = sc[sc["feeds_bn"]]
        out = sc[~sc["feeds_bn"]]
        where = f"{len(nets)} batch-norm networks at initialisation, every layer feeding a batch norm"
        report.check("bn_scale_invariance_orthogonal", st["bn_scale_invariance_orthogonal"],
                     f"|cos| <= {SCALE_TOL:g}", float(fb["max_cos"].max()),
                     bool(fb["max_cos"].max() <= SCALE_TOL),
                     note=f"largest |w_j . g_j - eps term| / (||w_j|| ||g_j||); {where}; the eps term "
                          f"itself reaches {fb['eps_correction'].max():.3g} of ||w_j|| ||g_j|| (eps = "
                          f"1e-5 against the units' variances: scale invariance is exact only for "
                          f"eps = 0); the output layer, which feeds no batch norm, has |cos| up to "
                          f"{out['max_cos'].max():.3g}; the bias before a batch norm has |db| / max|dW| "
                          f"<= {fb['bias_grad_ratio'].max():.2g}")
        report.check("bn_norm_step_identity", st["bn_norm_step_identity"],
                     f"relative error <= {SCALE_TOL:g}", float(fb["step_rel_err"].max()),
                     bool(fb["step_rel_err"].max() <= SCALE_TOL),
                     note=f"eta = each network's own learning rate; {where}; the output layer's "
                          f"relative error {out['step_rel_err'].max():.3g}")
        report.table(sc, "Scale invariance per network and layer at initialisation: the largest "
                         "|w_j . g_j - eps term| / (||w_j|| ||g_j||) (the plain |cos| for the output "
                         "layer), the eps term's size, |db| / max|dW|, and the relative error of the "
                         "one-step norm identity")
    dg = digits_rows(data)
    m = accuracy_margins(dg) if len(dg) else np.array([])
    report.check("digits_accuracy_bound", st["digits_accuracy_bound"], ">= 0",
                 float(m.min()) if m.size else "no runs", bool(m.size and (m >= -1e-12).all()),
                 note=(f"{m.size} (run, step) pairs; measured minus certified accuracy: min "
                       f"{m.min():.3g}, median {np.median(m):.3g}" if m.size else
                       "the grid has no digits runs"))


def _invariant_checks(tab, st, report):
    eps = np.finfo(np.float64).eps
    where = (f"{tab.groupby(['data', 'widths', 'seed']).ngroups} networks at initialisation "
             f"({', '.join(sorted(set(tab['data'] + ' ' + tab['widths'])))}), every hidden layer; "
             f"layer inputs recomputed with simcore.layers match activation_inputs to "
             f"{tab['forward_check'].max():.2g}; bound: {ROUNDOFF_C:g} n eps x the magnitudes "
             f"summed (eps = {eps:.3g})")
    r = tab["sum_dx_ratio"].max()
    report.check("bn_backward_sum_dx_zero", st["bn_backward_sum_dx_zero"], 0.0, tab["sum_dx_max"].max(),
                 bool(r <= 1.0), note=f"dy ~ N(0, 1); largest |sum_i dx| / its round-off bound "
                                      f"{r:.3g}, while |dx| reaches {tab['dx_scale'].max():.3g}; {where}")
    r = tab["ones_dx_ratio"].max()
    report.check("bn_backward_ones_dx_zero", st["bn_backward_ones_dx_zero"], 0.0, tab["ones_dx_max"].max(),
                 bool(r <= 1.0), note=f"largest |dx| / its bound {r:.3g}; {where}")
    r = tab["ones_dgamma_ratio"].max()
    report.check("bn_backward_ones_dgamma_zero", st["bn_backward_ones_dgamma_zero"], 0.0,
                 tab["ones_dgamma_max"].max(), bool(r <= 1.0),
                 note=f"largest |dgamma| / its bound {r:.3g}; {where}")
    n = tab.loc[tab["ones_dbeta_err"].idxmax()]
    r = tab["ones_dbeta_ratio"].max()
    ns = sorted(tab["n"].unique())
    report.check("bn_backward_ones_dbeta_n", st["bn_backward_ones_dbeta_n"],
                 int(n["n"]) if len(ns) == 1 else "N = " + ", ".join(str(int(v)) for v in ns),
                 float(n["dbeta_far"]), bool(r <= 1.0),
                 note=f"largest |dbeta - N| = {tab['ones_dbeta_err'].max():.3g} (a sum of N ones is "
                      f"exact in float64); {where}")
    report.table(tab.drop(columns=["forward_check"]),
                 "Backward invariants per network and hidden layer (max over units) and their "
                 "ratio to the round-off bound (<= 1 passes)")
