"""The batch-norm study (Ioffe & Szegedy 2015) at small scale: higher stable learning rates,
the paper's sigmoid experiment scaled to scikit-learn's digits, and batch norm's backward
invariants.

Runs are recognised by their configuration, not by sub-grid names:

* **learning-rate sweep**: MLP runs without probes (``track_preact`` false). Per configuration
  (every varying axis but ``lr``, ``seed`` and ``batchnorm``) and batch-norm setting, the grid's
  eta axis is scanned from below.

  A run is *stable* when simcore's divergence flag is off (loss finite and <= 1e6 x the initial
  loss) **and** its final loss is below its initial loss. The second condition is needed: with
  BCE or CE on bounded hidden activations (tanh, sigmoid, and anything after batch norm's
  normalisation) the loss grows at most linearly in the output weights, so a run thrown out of
  its basin by a too-large step bounces at losses of 10-10^4 x the start and the 10^6 flag
  never trips; a run that ends above where it started has not descended, so it is counted as
  unstable. An eta is *stable* when more than half of its seeds are (``MAJORITY``); the
  *largest stable eta* is the largest grid eta below the first unstable one (the edge of the
  stable band, so a lucky stable eta above an unstable one does not count). If every eta is
  stable the value is censored at the grid's top (reported as ">= top").

* **digits experiment**: MLP runs with ``track_preact`` (the percentiles of unit 0 of the last
  hidden layer's sigmoid input, probed every ``probe_every`` steps, full-batch gradient
  descent). The runner stores only the final accuracy, so accuracy over training is taken from
  the recorded loss: a sample the network misclassifies has p_y <= 1/2, so its cross-entropy is
  >= ln 2 and the training accuracy is >= 1 - L / ln 2 (``certified accuracy``). The steps to a
  target accuracy are the first recorded step whose certified accuracy reaches
  ``TARGET_ACCURACY``: exact to ``record_every`` steps, free (no extra training), and a rigorous
  upper bound on the steps the measured accuracy needs. Each run's final accuracy is checked
  against the bound. If the grid has a ``steps`` axis (checkpoint runs: the same seed trained
  for fewer steps, identical to the first steps of the longest run since GD is
  deterministic), their final accuracies are drawn as measured accuracy over training.

  The percentile stability measure of a run: the median's drift between the first and last
  probe, |p50(T) - p50(0)|, and the change of the 15-85 spread s = p85 - p15, |ln(s(T)/s(0))|;
  the drift is in units of the initial spread s(0), so both are scale-free and comparable
  with and without batch norm.

* **backward invariants**: computed here with :func:`simcore.layers.batchnorm_forward` and
  :func:`simcore.layers.batchnorm_backward` on the pre-activations z of every hidden layer of
  the studied batch-norm networks at initialisation (their own data and seeds): for any dy,
  sum_i dz_i = 0; for dy = 1, dz = 0, dgamma = sum_i xhat_i = 0 and dbeta = N. Measured values
  are compared with a float64 round-off bound (see :func:`_roundoff`).
"""
import numpy as np
import pandas as pd

import matplotlib.pyplot as plt

from . import runner
from . import spec as specmod

NAME = "batchnorm"
TITLE = "Batch normalisation: stable learning rates, the digits experiment, backward invariants"
SUMMARY = ("Largest stable learning rate with and without batch norm by depth; the Ioffe-Szegedy "
           "sigmoid experiment scaled to digits (steps to a target accuracy, percentiles of a "
           "last-layer sigmoid input over training); batch norm's backward invariants measured "
           "on the networks' own pre-activations.")

# an eta is stable when more than this share of its seeds are stable
MAJORITY = 0.5
# the digits experiment's target training accuracy (certified from the loss: acc >= 1 - L/ln 2)
TARGET_ACCURACY = 0.8
# round-off bound: C * n * eps times the sum of magnitudes that enter the sums (see _roundoff)
ROUNDOFF_C = 4.0
# seeds per batch-norm configuration used for the invariants (cost: one forward, two backwards)
INVARIANT_SEEDS = 2
LN2 = float(np.log(2.0))

# configuration columns that are never comparison axes
_NOT_AXES = {"point", "kind", "grid", "seed", "lr", "batchnorm", "depth", "network", "steps",
             "record_every", "probe_every", "track_preact", "track_sharpness"}
_RESULTS = {"step", "layer", "loss", "grad_norm", "weight_norm", "preact_mean", "preact_std",
            "act_mean", "act_std", "saturated", "final_loss", "diverged", "diverged_at",
            "final_accuracy", "sharpness", "preact_p15", "preact_p50", "preact_p85", "epoch",
            "mistakes", "cumulative_mistakes", "total_mistakes", "converged", "epochs_run",
            "radius", "margin", "bound", "initial_loss"}


# --------------------------------------------------------------------------------------------
# selecting runs

def _mlp(data):
    if "kind" not in data.columns:
        return data.iloc[0:0]
    return data[data["kind"] == "mlp"]


def sweep_rows(data):
    """MLP runs without the percentile probe: the learning-rate sweep."""
    d = _mlp(data)
    if "track_preact" in d.columns:
        d = d[~d["track_preact"].fillna(False).astype(bool)]
    return d


def digits_rows(data):
    """MLP runs with the percentile probe: the digits experiment."""
    d = _mlp(data)
    if "track_preact" not in d.columns:
        return d.iloc[0:0]
    return d[d["track_preact"].fillna(False).astype(bool)]


def _axes(rows):
    """Configuration columns (other than lr, seed, batch norm, ...) that vary within ``rows``."""
    return [c for c in rows.columns if c not in _RESULTS and c not in _NOT_AXES
            and rows[c].nunique(dropna=False) > 1]


def runs_of(rows):
    """One row per training: configuration, initial loss (step 0), final loss, flags."""
    if rows.empty:
        return rows.assign(initial_loss=[])
    first = rows[rows["layer"] == 1]
    l0 = first[first["step"] == 0].set_index("point")["loss"]
    runs = rows.drop_duplicates("point", keep="last").set_index("point", drop=False)
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
    _stable_lr(sw, report)
    _digits(dg, report)
    _invariants(data, spec, report)


def _missing(report, id, statement, what):
    report.claim(id, statement, "runs present", "no runs", "-", False,
                 f"the grid has no {what}; add them to check this claim")


# ---- (1) largest stable eta ----------------------------------------------------------------

def _cfg_label(row, keys):
    return ", ".join(f"{k}={row[k]}" for k in keys)


def _stable_lr(rows, report):
    report.heading("Largest stable learning rate, with and without batch norm")
    st = ("The largest stable eta is larger with batch norm than without, at every depth "
          "(and every other configuration of the sweep)")
    runs = runs_of(rows)
    if runs.empty or runs["batchnorm"].nunique() < 2:
        _missing(report, "stable_lr_bn_higher", st,
                 "learning-rate sweep with batchnorm both false and true (runs without probes)")
        return
    keys = ["depth"] + [c for c in _axes(runs) if c != "widths"]
    tab = largest_stable_eta(runs, keys)
    wide = tab.pivot_table(index=keys, columns="batchnorm",
                           values=["eta_max", "censored", "eta_max_all_seeds", "eta_max_flag_only"],
                           aggfunc="first")
    comp = []
    for idx, r in wide.iterrows():
        idx = idx if isinstance(idx, tuple) else (idx,)
        e0, e1 = r[("eta_max", False)], r[("eta_max", True)]
        c0, c1 = bool(r[("censored", False)]), bool(r[("censored", True)])
        # BN higher: strictly larger, and the no-BN value is not censored (then BN's true edge
        # could be anywhere above the grid's top and no comparison is possible)
        higher = bool(e1 > e0 and not c0)
        comp.append({**dict(zip(keys, idx)), "eta_max_no_bn": e0, "eta_max_bn": e1,
                     "ratio": e1 / e0 if e0 > 0 else np.inf, "bn_censored": c1, "no_bn_censored": c0,
                     "bn_higher": higher})
    comp = pd.DataFrame(comp)
    n_hi = int(comp["bn_higher"].sum())
    not_hi = comp[~comp["bn_higher"]]
    where_not = ("; not at: " + "; ".join(
        f"{_cfg_label(r, keys)} (BN {r['eta_max_bn']:.3g}{'+' if r['bn_censored'] else ''} vs "
        f"no BN {r['eta_max_no_bn']:.3g}{'+' if r['no_bn_censored'] else ''})"
        for _, r in not_hi.iterrows())) if len(not_hi) else ""
    ratios = comp["ratio"].replace(np.inf, np.nan)
    etas = runs["lr"].unique()
    step = float(np.exp(np.median(np.diff(np.log(np.sort(etas)))))) if len(etas) > 1 else np.nan
    flag_share = float(runs["diverged"].mean())
    kept = runs[~runs["diverged"]]
    fr = (kept["final_loss"] / kept["initial_loss"]).replace([np.inf, -np.inf], np.nan)
    report.claim("stable_lr_bn_higher", st, f"{len(comp)} of {len(comp)}", f"{n_hi} of {len(comp)}",
                 f"strictly larger on the grid (eta step x{step:.3g}); majority of seeds stable",
                 n_hi == len(comp),
                 f"ratio BN / no BN {ratios.min():.3g} to {ratios.max():.3g} (median "
                 f"{ratios.median():.3g}) over {len(comp)} configurations of {runs['seed'].nunique()} "
                 f"seeds; stable = no divergence flag and final loss < initial loss; the flag "
                 f"alone (loss > 1e6 x initial) tripped in {flag_share:.1%} of runs "
                 f"(largest final/initial loss of a run it let pass: "
                 f"{np.nanmax(fr.to_numpy()) if fr.notna().any() else np.nan:.3g})" + where_not)
    report.text(
        "Reading: batch norm normalises the hidden layers only; the output layer's weights act on "
        "bounded activations in both networks. With a single hidden layer (depth 2) that output "
        "layer plausibly sets the stability edge with or without batch norm, which is where equal "
        "edges are to be expected; with depth the unnormalised network's edge falls faster. This "
        "is an interpretation of the table below, not a tested claim.")
    show = comp.copy()
    for c, cen in (("eta_max_no_bn", "no_bn_censored"), ("eta_max_bn", "bn_censored")):
        show[c] = [f"{v:.3g}" + ("+" if z else "") for v, z in zip(show[c], show[cen])]
    flag = tab.pivot_table(index=keys, columns="batchnorm", values="eta_max_flag_only",
                           aggfunc="first").reset_index().rename(
        columns={False: "flag_only_no_bn", True: "flag_only_bn"})
    strict = tab.pivot_table(index=keys, columns="batchnorm", values="eta_max_all_seeds",
                             aggfunc="first").reset_index().rename(
        columns={False: "all_seeds_no_bn", True: "all_seeds_bn"})
    show = show.drop(columns=["bn_censored", "no_bn_censored"]).merge(strict, on=keys).merge(flag, on=keys)
    report.table(show, f"Largest stable eta (majority of seeds; '+' = every grid eta stable, the "
                       f"edge lies above the grid), beside the stricter rule 'every seed stable' "
                       f"and simcore's divergence flag alone (which ignores runs that bounce at "
                       f"large but finite loss). Grid eta {np.min(etas):.3g} to {np.max(etas):.3g}, "
                       f"step x{step:.3g}.")
    _fig_stable(tab, keys, report)
    _fig_loss_vs_eta(runs, tab, keys, report)


def _style(bn):
    return ("tab:blue", "o", "with batch norm") if bn else ("tab:red", "s", "without batch norm")


def _fig_stable(tab, keys, report):
    other = [k for k in keys if k != "depth"]
    groups = list(tab.groupby(other, sort=True)) if other else [((), tab)]
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    lss = ["-", "--", ":", "-."]
    for gi, (gk, g) in enumerate(groups):
        gk = gk if isinstance(gk, tuple) else (gk,)
        for bn in (False, True):
            s = g[g["batchnorm"] == bn].sort_values("depth")
            if s.empty:
                continue
            col, mk, lab = _style(bn)
            y = s["eta_max"].replace(0.0, np.nan)
            label = lab + (" (" + ", ".join(f"{k}={v}" for k, v in zip(other, gk)) + ")" if other else "")
            ax.plot(s["depth"], y, color=col, marker=mk, ls=lss[gi % len(lss)], lw=1.8, label=label)
            # bar: from 'every seed stable' to the flag-only edge (the range of definitions)
            lo = s["eta_max_all_seeds"].replace(0.0, np.nan)
            ax.vlines(s["depth"] + (0.08 if bn else -0.08), lo, y, color=col, alpha=0.5, lw=3)
            cen = s[s["censored"]]
            if len(cen):
                ax.scatter(cen["depth"], cen["eta_max"] * 1.25, marker="^", color=col, s=40, zorder=5)
    top = tab["eta_max_grid"].max()
    ax.axhline(top, color="gray", ls=":", lw=1)
    ax.text(tab["depth"].min(), top * 1.1, "top of the eta grid", fontsize=8, color="gray")
    ax.set_yscale("log")
    ax.set_xticks(sorted(tab["depth"].unique()))
    ax.set_xlabel("depth (number of weight layers)")
    ax.set_ylabel("largest stable learning rate eta (log scale)")
    ax.set_title("Largest stable eta by depth (majority of seeds stable)")
    ax.legend(fontsize=8)
    report.figure("stable_lr_vs_depth", fig,
                  "Largest stable learning rate by depth with and without batch norm: lines, "
                  "the majority-of-seeds edge; thick bars reach down to the edge under 'every "
                  "seed stable'; a triangle marks an edge censored at the grid's top. A run is "
                  "stable when it is not flagged diverged and ends below its initial loss.")


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


# ---- (2) digits -----------------------------------------------------------------------------

def _curves(rows):
    """Loss and probe values per recorded step of each run (layer-1 rows)."""
    cols = ["point", "step", "loss"] + [c for c in ("preact_p15", "preact_p50", "preact_p85")
                                        if c in rows.columns]
    return rows[rows["layer"] == 1][cols].sort_values(["point", "step"])


def steps_to_target(curve, target=TARGET_ACCURACY):
    """First recorded step whose certified accuracy 1 - L/ln 2 reaches ``target`` (inf if none)."""
    cert = 1.0 - curve["loss"].to_numpy(dtype=float) / LN2
    hit = np.flatnonzero(cert >= target)
    return float(curve["step"].to_numpy()[hit[0]]) if hit.size else np.inf


def percentile_drift(curve):
    """(median drift |p50(T) - p50(0)| / s(0), spread change |ln s(T)/s(0)|) over the probes."""
    p = curve.dropna(subset=["preact_p50"])
    if len(p) < 2:
        return np.nan, np.nan
    a, b = p.iloc[0], p.iloc[-1]
    s0 = a["preact_p85"] - a["preact_p15"]
    s1 = b["preact_p85"] - b["preact_p15"]
    if not (s0 > 0 and s1 > 0):
        return np.nan, np.nan
    return float(abs(b["preact_p50"] - a["preact_p50"]) / s0), float(abs(np.log(s1 / s0)))


def digits_table(rows):
    """One row per digits run of the longest ``steps`` in its (config, lr, seed, batchnorm):
    steps to target, percentile drift, final loss and accuracy."""
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
        drift, spread = percentile_drift(c)
        out.append({**{k: r[k] for k in ident}, "point": r["point"], "steps": int(r["steps"]),
                    "steps_to_target": steps_to_target(c), "median_drift": drift,
                    "spread_change": spread, "initial_loss": r["initial_loss"],
                    "final_loss": r["final_loss"], "final_accuracy": r["final_accuracy"],
                    "diverged": bool(r["diverged"])})
    return pd.DataFrame(out), runs


def _pairs(tab):
    """Paired BN / no-BN rows (same configuration, lr and seed)."""
    ident = [c for c in tab.columns if c not in ("batchnorm", "point", "steps", "steps_to_target",
                                                 "median_drift", "spread_change", "initial_loss",
                                                 "final_loss", "final_accuracy", "diverged")]
    a = tab[~tab["batchnorm"].astype(bool)].drop(columns="batchnorm")
    b = tab[tab["batchnorm"].astype(bool)].drop(columns="batchnorm")
    return a.merge(b, on=ident, suffixes=("_no_bn", "_bn")), ident


def _digits(rows, report):
    report.heading("The Ioffe-Szegedy experiment on digits")
    ids = {
        "digits_steps_to_target": (
            f"With batch norm the network reaches {TARGET_ACCURACY:.0%} training accuracy "
            f"(certified by the loss, 1 - L/ln 2) in fewer steps than without, for every seed "
            f"and learning rate"),
        "digits_accuracy_bound": (
            "Every run's measured training accuracy is at least the certified 1 - L/ln 2 of its "
            "final loss (a misclassified sample costs >= ln 2)"),
        "digits_median_drift": (
            "With batch norm the median of the last-hidden-layer sigmoid input drifts less "
            "over training (|p50(T) - p50(0)| / (p85 - p15)(0)) than without, at every "
            "learning rate (median over seeds)"),
        "digits_spread_change": (
            "With batch norm the 15-85 percentile spread of that input changes less over "
            "training (|ln s(T)/s(0)|) than without, at every learning rate (median over seeds)"),
    }
    tab, runs = digits_table(rows)
    if tab.empty or tab["batchnorm"].nunique() < 2:
        for id, st in ids.items():
            _missing(report, id, st, "digits runs with track_preact and batchnorm both false and true")
        return
    pairs, ident = _pairs(tab)
    lrs = sorted(pairs["lr"].unique())
    # steps to target
    sb, sn = pairs["steps_to_target_bn"], pairs["steps_to_target_no_bn"]
    faster = (sb < sn) & np.isfinite(sb)
    fmt_s = lambda v, S: f"> {S}" if not np.isfinite(v) else f"{v:.0f}"
    report.claim("digits_steps_to_target", ids["digits_steps_to_target"],
                 "BN < no BN in every pair",
                 f"{int(faster.sum())} of {len(pairs)} pairs; median {fmt_s(sb.median(), pairs['steps_bn'].max())} "
                 f"vs {fmt_s(sn.median(), pairs['steps_no_bn'].max())} steps",
                 f"first recorded step (every {int(runs['record_every'].max())}); "
                 "a run that never reaches it counts as > its steps",
                 bool(faster.all()) and len(pairs) > 0,
                 f"target loss (1 - {TARGET_ACCURACY}) ln 2 = {(1 - TARGET_ACCURACY) * LN2:.4g} nats; "
                 + "; ".join(f"lr {lr:g}: BN {', '.join(fmt_s(v, S) for v, S in zip(g['steps_to_target_bn'], g['steps_bn']))}"
                             f" / no BN {', '.join(fmt_s(v, S) for v, S in zip(g['steps_to_target_no_bn'], g['steps_no_bn']))}"
                             for lr, g in pairs.groupby("lr")))
    # the bound on every run (checkpoint runs included)
    ok = runs[~runs["diverged"] & runs["final_accuracy"].notna()]
    cert = 1.0 - ok["final_loss"] / LN2
    margin = ok["final_accuracy"] - cert
    report.claim("digits_accuracy_bound", ids["digits_accuracy_bound"], ">= 0",
                 float(margin.min()) if len(ok) else "no runs", "exact (a theorem)",
                 len(ok) > 0 and bool((margin >= -1e-12).all()),
                 f"{len(ok)} runs; measured accuracy minus certified: min {margin.min():.3g}, "
                 f"median {margin.median():.3g} (the bound is loose: accuracy is reached long "
                 f"before the loss certifies it)")
    # percentile stability
    for cid, col in (("digits_median_drift", "median_drift"), ("digits_spread_change", "spread_change")):
        per_lr = pairs.groupby("lr").agg(bn=(f"{col}_bn", "median"), no_bn=(f"{col}_no_bn", "median"))
        good = per_lr["bn"] < per_lr["no_bn"]
        report.claim(cid, ids[cid], "BN < no BN at every lr",
                     "; ".join(f"lr {lr:g}: {r['bn']:.3g} vs {r['no_bn']:.3g}" for lr, r in per_lr.iterrows()),
                     "strictly smaller (median over seeds)", bool(good.all()) and per_lr.notna().all().all(),
                     f"{len(pairs)} seed pairs; per pair BN smaller in "
                     f"{int((pairs[f'{col}_bn'] < pairs[f'{col}_no_bn']).sum())}; unit 0 of the last "
                     f"hidden layer, probed every {int(runs['probe_every'].max())} steps; ratio "
                     f"BN / no BN of the medians {(per_lr['bn'] / per_lr['no_bn']).min():.3g} to "
                     f"{(per_lr['bn'] / per_lr['no_bn']).max():.3g}")
    show = tab.drop(columns=["point"]).copy()
    report.table(show, f"Digits runs (the longest of each seed): steps to certified "
                       f"{TARGET_ACCURACY:.0%} accuracy (inf: not reached), percentile drift and "
                       f"spread change of the last hidden layer's unit-0 sigmoid input, final loss "
                       f"and measured training accuracy")
    ck = runs[runs["steps"] < runs.groupby(ident + ["batchnorm"], dropna=False)["steps"].transform("max")]
    if len(ck):
        report.table(ck[ident + ["batchnorm", "steps", "final_loss", "final_accuracy"]],
                     "Checkpoint runs (the same seed trained for fewer steps): measured accuracy "
                     "over training")
    _fig_percentiles(tab, rows, report)
    _fig_digits_training(tab, runs, rows, report)


def _fig_percentiles(tab, rows, report):
    curves = _curves(rows)
    lrs = sorted(tab["lr"].unique())
    fig, axes = plt.subplots(len(lrs), 2, figsize=(11, 3.6 * len(lrs) + 0.4), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for i, lr in enumerate(lrs):
        for j, bn in enumerate((False, True)):
            ax = axes[i, j]
            sub = tab[(tab["lr"] == lr) & (tab["batchnorm"] == bn)].sort_values("seed")
            for k, (_, r) in enumerate(sub.iterrows()):
                c = curves[curves["point"] == r["point"]].dropna(subset=["preact_p50"])
                col = cmap(k % 10)
                ax.fill_between(c["step"], c["preact_p15"], c["preact_p85"], color=col, alpha=0.12, lw=0)
                ax.plot(c["step"], c["preact_p50"], color=col, lw=1.8,
                        label=f"seed {r['seed']}: 50th" if k < 4 else None)
                ax.plot(c["step"], c["preact_p15"], color=col, lw=0.9, ls="--",
                        label="15th / 85th" if k == 0 else None)
                ax.plot(c["step"], c["preact_p85"], color=col, lw=0.9, ls="--")
            ax.set_title(f"{'with' if bn else 'without'} batch norm, eta = {lr:g}", fontsize=10)
            ax.set_xlabel("gradient-descent step (full batch)")
            ax.set_ylabel("sigmoid input of last-layer unit 0")
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    report.figure("preact_percentiles", fig,
                  "The 15th, 50th and 85th percentiles over the training samples of the input to "
                  "the sigmoid of unit 0 of the last hidden layer, over training (after Ioffe & "
                  "Szegedy's Figure 1b-c); one colour per seed, band between the 15th and 85th. "
                  "Left without, right with batch norm (whose input is gamma * xhat + beta).")


def _fig_digits_training(tab, runs, rows, report):
    curves = _curves(rows)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.6))
    lss = ["-", "--", ":", "-."]
    lrs = sorted(tab["lr"].unique())
    for _, r in tab.iterrows():
        col, mk, lab = _style(bool(r["batchnorm"]))
        ls = lss[lrs.index(r["lr"]) % len(lss)]
        c = curves[curves["point"] == r["point"]]
        first = r["seed"] == tab["seed"].min()
        label = f"{lab}, eta = {r['lr']:g}" if first else None
        a1.plot(c["step"], c["loss"], color=col, ls=ls, lw=1.3, alpha=0.85, label=label)
        a2.plot(c["step"], np.clip(1.0 - c["loss"] / LN2, 0, 1), color=col, ls=ls, lw=1.3, alpha=0.85,
                label=label)
    tl = (1 - TARGET_ACCURACY) * LN2
    a1.axhline(tl, color="gray", ls=":", lw=1)
    a1.text(a1.get_xlim()[1], tl * 1.08, f"target loss (1 - {TARGET_ACCURACY}) ln 2", ha="right",
            fontsize=8, color="gray")
    a1.set_yscale("log")
    a1.set_xlabel("gradient-descent step (full batch)")
    a1.set_ylabel("training cross-entropy (nats, log scale)")
    a1.legend(fontsize=8)
    a1.set_title("Training loss (one line per seed)")
    # measured accuracies: every run's final accuracy at its own last step
    for bn in (False, True):
        col, mk, lab = _style(bn)
        m = runs[(runs["batchnorm"] == bn) & runs["final_accuracy"].notna()]
        a2.scatter(m["steps"], m["final_accuracy"], color=col, marker=mk, s=36, edgecolor="black",
                   zorder=5, label=f"measured accuracy ({lab})")
    a2.axhline(TARGET_ACCURACY, color="gray", ls=":", lw=1)
    a2.set_ylim(0, 1.02)
    a2.set_xlabel("gradient-descent step (full batch)")
    a2.set_ylabel("training accuracy")
    a2.set_title("Certified accuracy 1 - L/ln 2 (lines) and measured (markers)")
    a2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    report.figure("digits_training", fig,
                  "Digits, three hidden sigmoid layers, with and without batch norm. Left: "
                  "training loss. Right: the accuracy the loss certifies (lines; a misclassified "
                  "sample costs >= ln 2) and the measured training accuracy at the end of each "
                  "run (markers; checkpoint runs, if the grid has a steps axis, give the earlier "
                  "ones); dotted, the target accuracy.")


# ---- (3) backward invariants ---------------------------------------------------------------

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


def invariant_table(data, spec):
    """The invariants on every batch-norm configuration in ``data`` (first INVARIANT_SEEDS seeds
    of each), at initialisation."""
    from simcore import MLP

    points = {p["point"]: p for p in specmod.expand(spec)}
    present = set(_mlp(data)["point"].unique()) if "point" in data.columns else set()
    chosen = {}
    for pid in sorted(present):
        p = points.get(int(pid))
        if p is None or p["kind"] != "mlp" or not p["batchnorm"]:
            continue
        key = (p["data"], str(p["data_args"]), tuple(p["widths"]), p["activation"], p["loss"],
               p["init"], p["dtype"], p["init_scale"], p["bias_scale"])
        seeds = chosen.setdefault(key, {})
        if p["seed"] not in seeds and len(seeds) < INVARIANT_SEEDS:
            seeds[p["seed"]] = p
    rows = []
    rng = np.random.default_rng(0)
    for key, seeds in chosen.items():
        for seed, p in seeds.items():
            X, y = runner.make_data(p["data"], p["data_args"])[:2]
            net = MLP(runner.sizes_of(p, X, y), activation=p["activation"], loss=p["loss"],
                      batchnorm=True, init=p["init"], dtype="float64")
            params = net.init(seed=p["seed"], scale=p["init_scale"], bias_scale=p["bias_scale"])
            per, diff = bn_invariants(net, params, np.asarray(X, np.float64), rng)
            for r in per:
                rows.append({"data": p["data"], "widths": "-".join(map(str, p["widths"])),
                             "activation": p["activation"], "seed": seed, **r, "forward_check": diff})
    return pd.DataFrame(rows)


def _invariants(data, spec, report):
    report.heading("Backward invariants of batch norm")
    st = {
        "bn_backward_sum_dx_zero": "For any upstream gradient dy, the batch sum of batch norm's "
                                   "input gradient is zero: sum_i dx_i = 0",
        "bn_backward_ones_dx_zero": "For dy = 1 everywhere, dx = 0",
        "bn_backward_ones_dgamma_zero": "For dy = 1 everywhere, dgamma = sum_i xhat_i = 0",
        "bn_backward_ones_dbeta_n": "For dy = 1 everywhere, dbeta = N (the batch size)",
    }
    tab = invariant_table(data, spec)
    if tab.empty:
        for id, s in st.items():
            _missing(report, id, s, "batch-norm networks")
        return
    eps = np.finfo(np.float64).eps
    where = (f"{tab.groupby(['data', 'widths', 'seed']).ngroups} networks at initialisation "
             f"({', '.join(sorted(set(tab['data'] + ' ' + tab['widths'])))}), every hidden layer; "
             f"layer inputs recomputed with simcore.layers match activation_inputs to "
             f"{tab['forward_check'].max():.2g}")
    tol = (f"round-off: {ROUNDOFF_C:g} n eps x sum of the magnitudes summed, per unit "
           f"(eps = {eps:.3g})")
    r = tab["sum_dx_ratio"].max()
    report.claim("bn_backward_sum_dx_zero", st["bn_backward_sum_dx_zero"], 0.0, tab["sum_dx_max"].max(),
                 tol, bool(r <= 1.0),
                 f"dy ~ N(0, 1); largest |sum_i dx| / its bound {r:.3g}, while |dx| itself reaches "
                 f"{tab['dx_scale'].max():.3g}; {where}")
    r = tab["ones_dx_ratio"].max()
    report.claim("bn_backward_ones_dx_zero", st["bn_backward_ones_dx_zero"], 0.0, tab["ones_dx_max"].max(),
                 tol, bool(r <= 1.0), f"largest |dx| / its bound {r:.3g}; {where}")
    r = tab["ones_dgamma_ratio"].max()
    report.claim("bn_backward_ones_dgamma_zero", st["bn_backward_ones_dgamma_zero"], 0.0,
                 tab["ones_dgamma_max"].max(), f"{ROUNDOFF_C:g} n eps sum_i |xhat_i|", bool(r <= 1.0),
                 f"largest |dgamma| / its bound {r:.3g}; {where}")
    n = tab.loc[tab["ones_dbeta_err"].idxmax()]
    r = tab["ones_dbeta_ratio"].max()
    ns = sorted(tab["n"].unique())
    report.claim("bn_backward_ones_dbeta_n", st["bn_backward_ones_dbeta_n"],
                 int(n["n"]) if len(ns) == 1 else "N = " + ", ".join(str(int(v)) for v in ns), float(n["dbeta_far"]),
                 f"{ROUNDOFF_C:g} N eps N", bool(r <= 1.0),
                 f"largest |dbeta - N| = {tab['ones_dbeta_err'].max():.3g} (a sum of N ones is exact "
                 f"in float64); {where}")
    report.table(tab.drop(columns=["forward_check"]),
                 "Measured invariants per network and hidden layer (max over units) and their ratio "
                 "to the round-off bound (<= 1 passes)")
