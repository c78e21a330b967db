"""The perceptron study: Novikoff's mistake bound with the true margin, its tightness, and XOR.

Runs are recognised by their rows (not by sub-grid names):

* **separable**: perceptron runs on ``blobs``, separable by construction with a known margin.
* **tight construction**: perceptron runs on ``hadamard`` (:mod:`studies.perceptron_data`).
* **XOR perceptron**: perceptron runs on ``xor``.
* **XOR MLP**: 2-2-1 networks (``widths = [2]``, loss ``bce``) trained by full-batch gradient
  descent on ``xor``.

Conventions. The perceptron starts from w = 0, b = 0 and updates on every mistake
y (w.x + b) <= 0 (ties included). The bias is folded in as a constant input: z = (x, 1),
R = max ||z_i||, and the margin of a unit vector u in that space is min_i y_i u.z_i.

Novikoff (1962), with the true margin (checks, not counted). The maximum margin
gamma* = max_{||u|| = 1} min_i y_i u.z_i is the hard-margin SVM *without a free intercept* in the
augmented space (the bias is part of u and is penalised; scikit-learn's SVC, whose intercept is
free, answers a different question). :func:`max_margin` solves it exactly as least-distance
programming, min ||u|| s.t. y_i u.z_i >= 1 (gamma* = 1 / ||u||), by Lawson and Hanson's reduction
to non-negative least squares, and certifies it from both sides: the primal u gives
min_i y_i u.z_i / ||u|| <= gamma*, the NNLS multipliers give a convex combination
p = sum_i lambda_i y_i z_i with ||p|| >= gamma* (for any unit u, min_i y_i u.z_i <= u.p). Every
run makes at most (R / gamma*)^2 mistakes, and gamma* >= the construction's margin: engine checks.
The same reduction certifies that XOR is not separable (0 in the convex hull of the y_i z_i).

How tight the bound is on random data (mistakes / (R / gamma*)^2 over margins, dimensions, data
sets and visiting orders) has no theory that gives a number: an observation with its figure.

A construction that reaches the bound (prediction). Let H be the Sylvester-Hadamard matrix of
order k (k a power of two), whose first column is all ones, and take x_i = H[i, 1:], so that
the augmented inputs z_i = (x_i, 1) (a coordinate permutation of H's rows) are pairwise
orthogonal with ||z_i||^2 = k; labels y_i arbitrary. Then (R / gamma*)^2 = k and the perceptron
makes exactly k mistakes, in every visiting order:

* R^2 = k. For any unit u, write u = sum_i a_i y_i z_i / k + (a part orthogonal to all z_i, which
  does not change any y_i u.z_i and only adds norm); then y_i u.z_i = a_i and
  ||u||^2 >= sum_i a_i^2 / k, so min_i a_i <= sqrt(sum a_i^2 / k) <= 1: gamma* <= 1, with equality
  for u = sum_i y_i z_i / k. So (R / gamma*)^2 = k.
* From w = 0 every iterate is a sum of y_j z_j over points j already mistaken. When the
  perceptron reaches a point i not yet mistaken, y_i w.z_i = sum_j y_i y_j z_j.z_i = 0 (the z's
  are orthogonal): a mistake (ties count), so each point is mistaken on its first visit. A
  mistaken point i has y_i w.z_i = ||z_i||^2 = k > 0 from then on, so it is never mistaken
  again. Hence exactly k mistakes, all in the first epoch, whatever the order; the second epoch
  is mistake-free. The entries are +-1 and w stays an integer vector, so with a step size 1
  every inner product is exact in floating point (a tie is a true 0). This is the classical
  lower-bound argument for mistake bounds (orthogonal examples: any deterministic online learner
  can be forced into (R/gamma)^2 mistakes), made compatible with the folded-in bias.

The prediction can fail: a rule that skips ties, a bias not folded in, or a wrong margin
solver each break the equality.

XOR. Not linearly separable (check, certified above), so no epoch is ever mistake-free: the
perceptron never converges (a check). Its weights stay bounded (perceptron cycling theorem,
Block and Levin 1970), so the mistakes per epoch settle to a stationary rate and the cumulative
count grows linearly; the rate itself depends on the Markov chain of random visiting orders and
no theory here gives its value, so the rate (first half of the epochs against the second) is an
observation, not a band. The perceptron's final accuracy is at most the best accuracy any line
reaches on the same data (a check; :func:`best_linear_accuracy_2d` bounds it exactly by
enumerating the lines through two points).

A 2-2-1 MLP trained by gradient descent solves XOR from most starts (observation: the share per
configuration). The runs that stall are *not* in local minima: for the 2-2-1 XOR network every
stationary point at finite weights is a saddle or a global minimum (Sprinkhuizen-Kuyper and
Boers 1998; Hamey 1998). The brief's suggested test, "continuing training lets them escape",
is refuted by the data: the stalled share hardly changes between half the horizon and the
horizon, nor in 100,000-step runs tried while writing this study. What the stalled runs do
instead, and the statement tested here: some of the four corner clusters reach the same
saturated hidden code, the output can only give each such group one probability p, and the best
p is the group's share of positives; every other cluster is classified with growing confidence
as the weights grow without bound. The loss therefore tends, from above, to the level of a
plateau at infinity, the sum of the merged groups' entropies (:func:`xor_plateau_levels`):

    L_P = sum over merged groups g of n_g H(p_g) / n,   H(p) = -p ln p - (1 - p) ln(1 - p),

which for four equal clusters is (1/2) ln 2 (an opposite pair merged), (3/4) H(1/3) (three
clusters) or ln 2 (two pairs, or all four). Each level is reached only as the weights go to
infinity (a finite network never outputs exactly 0 or 1). Near it the remaining loss is a
logistic tail, which gradient descent drives to 0 like 1/t (as for logistic regression on
separable data; Soudry et al. 2018), the weight norm growing like ln t. Since there is no
minimum, a run may also leave a plateau (slowly: the merged codes separate only through the
exponentially small derivative of saturated units), and then its descent accelerates.

Prediction (can fail: a stalled run converging to a finite minimum at any level other than a
plateau's misses it): every stalled run either approaches the plateau level nearest its loss,
``|L_inf - L_P| <= L(t1) - L(T)`` with ``L_inf = (T L(T) - t1 L(t1)) / (T - t1)`` extrapolated under the
1/t approach from t1 ~ T/2, or accelerates away from a plateau (its loss falls more over the last
quarter of the horizon than over the quarter before; a 1/t approach halves the drop and a
finite minimum shrinks it geometrically), or is in transit between two plateaus (the level
nearest its loss at T/2 is not the one nearest at T: the saddle-to-saddle passage the theory
allows, to which the 1/t extrapolation over [T/2, T] does not apply; the full preset has one,
which left the ln 2 plateau near step 4,800 and is arriving at the three-cluster one). The
reported limit per level is the median over the runs approaching it. The exponent of the approach, the growth of the weight
norm from T/2 to T and the output layer's saturated share (half the samples saturate, the merged
half sits at p = 1/2) are observations beside it.

Why not SCIENCE.md's wording as it stands: "the runs that stall sit on saturated plateaus" is
right, but the saturated-unit telemetry cannot tell the stalled runs apart from the solved ones
(both saturate their hidden units as the weights grow); the plateau's level and the way the loss
approaches it can.
"""
import functools

import matplotlib.patheffects as pe
from matplotlib.collections import LineCollection
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from scipy import optimize

from .rows import data_set, integer_columns, of_kind, per_run

NAME = "perceptron"
TITLE = "Perceptron: Novikoff's mistake bound and XOR"
SUMMARY = ("Rosenblatt's perceptron on separable data against Novikoff's bound (R/gamma*)^2 with "
           "the maximum margin, on a construction that reaches it exactly, and on XOR beside "
           "2-2-1 MLPs whose stalled runs sit on a plateau at infinity.")

# A 2-2-1 net "solves" XOR when its training accuracy reaches this. With noise sigma <= 0.25
# around the corners (+-1, +-1), a point crosses an axis with probability P(|z| > 4) < 1e-4,
# so a solving net reaches 100%, while a stalled one gets two clusters right and the other two
# at a common probability (about 50-75%); any threshold between separates them.
SOLVED_ACCURACY = 0.99
# Relative precision of gamma* from the NNLS solution (its primal and dual bounds agree far
# closer than this); the tight construction's bound is compared to the mistakes within it.
MARGIN_RTOL = 1e-6
# XOR's corners in the order of simcore.datasets.xor (row i at corner i mod 4) and their labels.
XOR_LABELS = (0, 1, 1, 0)
# Pairs of corners with opposite labels that a 2-2-1 net can merge into one hidden code.
XOR_OPPOSITE_PAIRS = ((0, 1), (0, 2), (3, 1), (3, 2))


# --------------------------------------------------------------------------------------------
# theory

def augmented(X):
    """z_i = (x_i, 1): the bias folded in as a constant input."""
    X = np.asarray(X, dtype=np.float64)
    return np.hstack([X, np.ones((X.shape[0], 1))])


def max_margin(X, y):
    """Maximum margin gamma* of labelled data in the bias-augmented space, certified.

    gamma* = max_{||u|| = 1} min_i y_i u.z_i, z_i = (x_i, 1), y_i in {-1, +1}. Least-distance
    programming (Lawson and Hanson 1974, ch. 23): min ||u|| s.t. G u >= 1 with G = diag(y) Z is
    solved by the NNLS problem min_{a >= 0} ||E a - f||, E = [G^T; 1^T], f = (0, ..., 0, 1);
    with residual r = E a - f, u = -r[:-1] / r[-1] and gamma* = 1 / ||u||. A zero residual means
    the constraints are infeasible: 0 = sum_i lambda_i y_i z_i for lambda = a / sum(a) in the
    simplex, a certificate that no separator exists (gamma* = 0).

    Returns a dict: ``gamma`` (the primal margin min_i y_i u.z_i / ||u||, a lower bound),
    ``gamma_upper`` (||sum_i lambda_i y_i z_i||, an upper bound), ``u`` (w then b, unit norm),
    ``separable``.
    """
    Z = augmented(X)
    y = np.asarray(y, dtype=np.float64)
    G = y[:, None] * Z
    m = Z.shape[1]
    E = np.vstack([G.T, np.ones((1, len(y)))])
    f = np.zeros(m + 1)
    f[-1] = 1.0
    a, _ = optimize.nnls(E, f, maxiter=50 * E.shape[1])
    r = E @ a - f
    hull = G.T @ (a / a.sum()) if a.sum() > 0 else np.zeros(m)
    scale = np.sqrt(np.einsum("ij,ij->i", Z, Z).max())
    if abs(r[-1]) < 1e-12 or np.linalg.norm(hull) < 1e-9 * scale:
        return {"gamma": 0.0, "gamma_upper": float(np.linalg.norm(hull)), "u": np.zeros(m),
                "separable": False}
    u = -r[:-1] / r[-1]
    u = u / np.linalg.norm(u)
    return {"gamma": float(np.min(G @ u)), "gamma_upper": float(np.linalg.norm(hull)), "u": u,
            "separable": bool(np.min(G @ u) > 0)}


def best_linear_accuracy_2d(X, y):
    """An upper bound, attained up to points on the line, on the training accuracy of any
    linear classifier sign(w.x + b) on 2-D data.

    Any line can be translated until it touches a point and turned about it until it touches a
    second, without a point crossing from one open side to the other; so the best accuracy is
    at most the best, over lines through two data points and both orientations, of the points
    strictly on their correct side plus the points on the line (counted as correct). Constant
    classifiers (the larger class) are included.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y) > 0
    n = len(y)
    best = max(y.mean(), 1 - y.mean())
    i, j = np.triu_indices(n, 1)
    for s in range(0, len(i), 4096):
        a, b = i[s:s + 4096], j[s:s + 4096]
        d = X[b] - X[a]
        normal = np.stack([-d[:, 1], d[:, 0]], axis=1)
        side = np.einsum("pk,pnk->pn", normal, X[None, :, :] - X[a][:, None, :])
        tol = 1e-12 * (1 + np.abs(normal).sum(1, keepdims=True) * np.abs(X).max())
        on = np.abs(side) <= tol
        pos = (side > tol) & y[None, :]
        neg = (side < -tol) & ~y[None, :]
        pos2 = (side < -tol) & y[None, :]
        neg2 = (side > tol) & ~y[None, :]
        k_on = on.sum(1)
        c = np.maximum((pos | neg).sum(1), (pos2 | neg2).sum(1)) + k_on
        best = max(best, c.max() / n)
    return float(best)


def plateau_loss(n_a, n_b, n):
    """BCE (nats, mean over n samples) of the plateau where two clusters of n_a and n_b samples
    with opposite labels share one output p and every other sample is classified exactly:
    the best p is n_a / (n_a + n_b), and

        L = [n_a ln((n_a + n_b) / n_a) + n_b ln((n_a + n_b) / n_b)] / n.
    """
    n_a, n_b = float(n_a), float(n_b)
    s = n_a + n_b
    return (n_a * np.log(s / n_a) + n_b * np.log(s / n_b)) / n


def xor_plateau_losses(n):
    """The plateau level for each pair of XOR corners with opposite labels, for ``n`` samples
    laid out as simcore's ``xor`` does (row i at corner i mod 4)."""
    counts = np.bincount(np.arange(n) % 4, minlength=4)
    return {f"{a}-{b}": plateau_loss(counts[a], counts[b], n) for a, b in XOR_OPPOSITE_PAIRS}


def _partitions(items):
    """Every partition of the list ``items`` into non-empty groups."""
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _partitions(rest):
        yield [[first]] + part
        for i in range(len(part)):
            yield part[:i] + [[first] + part[i]] + part[i + 1:]


def group_loss(counts_pos, counts_neg, n):
    """BCE (nats, mean over n) of a group of samples sharing one output p: the best p is the
    group's share of positives, and the loss is the group's entropy, n_g H(p) / n."""
    a, b = float(counts_pos), float(counts_neg)
    if a == 0 or b == 0:
        return 0.0
    return plateau_loss(a, b, n)


def xor_plateau_levels(n):
    """The loss levels of the plateaus at infinity of a network on XOR: the four corner clusters
    (simcore's layout, row i at corner i mod 4) partitioned into groups that share one saturated
    hidden code; each group with both labels costs its entropy (:func:`~studies.perceptron.group_loss`), the others
    0. Returns {description: level} for every partition with a positive level, the clusters
    named by corner (0: (-1,-1), 1: (-1,1), 2: (1,-1), 3: (1,1)); for n divisible by 4 the
    levels are (1/2) ln 2 (an opposite pair merged), (3/4) H(1/3) (three clusters) and ln 2
    (two opposite pairs, or all four)."""
    counts = np.bincount(np.arange(n) % 4, minlength=4)
    out = {}
    for part in _partitions([0, 1, 2, 3]):
        level = 0.0
        for g in part:
            pos = sum(counts[c] for c in g if XOR_LABELS[c] == 1)
            neg = sum(counts[c] for c in g if XOR_LABELS[c] == 0)
            level += group_loss(pos, neg, n)
        if level > 0:
            out[" ".join("{" + ",".join(map(str, g)) + "}" for g in part if len(g) > 1)] = level
    return out


def level_kind(description):
    """A short name for a plateau by the sizes of its merged groups: "2 merged", "3 merged",
    "2+2 merged", "4 merged"."""
    sizes = sorted((g.count(",") + 1 for g in description.split()), reverse=True)
    return "+".join(map(str, sizes)) + " merged"


def richardson_limit(t1, L1, t2, L2):
    """Limit of L(t) = L_inf + c / t from two times t1 < t2: (t2 L2 - t1 L1) / (t2 - t1)."""
    return (t2 * L2 - t1 * L1) / (t2 - t1)


# --------------------------------------------------------------------------------------------
# selecting the runs

# configuration columns that hold integers (studies.rows.integer_columns restores them)
_INT_COLS = ("data_d", "data_n", "data_k", "data_seed", "seed", "epochs", "epochs_run",
             "total_mistakes", "steps", "point")


def _runs(rows):
    """One row per training (its last stored row: per-run values repeat on every row)."""
    return integer_columns(per_run(rows, keep="last").reset_index(drop=True), _INT_COLS)


def _perceptron(data, name):
    runs = of_kind(data, "perceptron")
    return integer_columns(runs[runs["data"] == name], _INT_COLS)


def separable_rows(data):
    """Perceptron runs on ``blobs`` (separable by construction, margin stored)."""
    return _perceptron(data, "blobs")


def hadamard_rows(data):
    return _perceptron(data, "hadamard")


def xor_perceptron_rows(data):
    return _perceptron(data, "xor")


def xor_mlp_rows(data):
    """2-2-1 networks (one hidden layer of 2 units) trained with BCE on ``xor``."""
    if "widths" not in data.columns:
        return data.iloc[0:0]
    return integer_columns(data[(data["kind"] == "mlp") & (data["data"] == "xor") & (data["widths"] == "2")
                                   & (data["loss_fn"] == "bce")], _INT_COLS)


def _xor_data_cols(df):
    return [c for c in ("data_n", "data_noise", "data_seed") if c in df.columns]


# --------------------------------------------------------------------------------------------
# the data sets of the runs, from their stored data_args

def _dataset(row):
    """``(X, y)`` of the run in ``row``, labels as -1/+1."""
    from simcore import datasets
    X, y = data_set(row)
    return X, datasets.to_pm1(y)


@functools.lru_cache(maxsize=64)
def _margin(name, args):
    """:func:`max_margin` of data set ``name`` with the JSON arguments ``args`` (solved once per
    data set: many runs share one)."""
    return max_margin(*_dataset({"data": name, "data_args": args}))


def _margin_of(row):
    return _margin(row["data"], row["data_args"])


def with_max_margin(runs):
    """``runs`` with gamma_star, gamma_upper (the certificate) and bound_star = (R/gamma*)^2."""
    m = [_margin_of(r) for _, r in runs.iterrows()]
    out = runs.assign(gamma_star=[x["gamma"] for x in m], gamma_upper=[x["gamma_upper"] for x in m])
    return out.assign(bound_star=(out["radius"] / out["gamma_star"]) ** 2,
                      ratio_star=out["total_mistakes"] / (out["radius"] / out["gamma_star"]) ** 2)


# --------------------------------------------------------------------------------------------
# analysis

ASSUMES_TIGHT = ("perceptron from w = 0 with ties counted as mistakes and step size 1, bias "
                 "folded in; Hadamard rows as augmented inputs (pairwise orthogonal, entries +-1)")
ASSUMES_PLATEAU = ("full-batch GD on a 2-2-1 BCE network; stalled = training accuracy < "
                   f"{SOLVED_ACCURACY}; XOR's four clusters, some merged in a shared saturated "
                   "hidden code; a 1/t approach between T/2 and T")


def analyse(data, spec, report):
    sep, had = separable_rows(data), hadamard_rows(data)
    xp, xm = xor_perceptron_rows(data), xor_mlp_rows(data)
    report.text(
        "The perceptron starts from w = 0, b = 0 and updates on every mistake y (w.x + b) <= 0; "
        "the bias is folded in as a constant input 1, so R = max ||(x, 1)|| and gamma* is the "
        "maximum margin in that augmented space (a hard-margin SVM without a free intercept, "
        "solved exactly by least-distance programming and certified from both sides). "
        "'Mistakes' counts updates over all epochs of a run.")
    sruns = with_max_margin(_runs(sep)) if not sep.empty else None
    hruns = with_max_margin(_runs(had)) if not had.empty else None
    _novikoff(sruns, hruns, report)
    _xor(xp, xm, report)
    _figures(sruns, hruns, sep, xp, xm, report)


def _novikoff(sruns, hruns, report):
    report.heading("Novikoff's bound with the maximum margin")
    st_tight = ("On the Hadamard construction every run makes exactly (R/gamma*)^2 mistakes, "
                "in every visiting order")
    if hruns is None:
        report.missing("novikoff_tight_construction", st_tight,
                       "perceptron runs on data set 'hadamard'", assumes=ASSUMES_TIGHT)
    else:
        exact = bool((np.abs(hruns["total_mistakes"] - hruns["bound_star"])
                      <= MARGIN_RTOL * hruns["bound_star"]).all())
        by_k = hruns.groupby("data_k")
        pred = {f"k={k}": float(g["bound_star"].median()) for k, g in by_k}
        meas = {f"k={k}": float(g["total_mistakes"].mean()) for k, g in by_k}
        worst = float(np.abs(hruns["total_mistakes"] - hruns["bound_star"]).max())
        report.prediction(
            "novikoff_tight_construction", st_tight, pred, meas,
            f"exact: every run's mistakes equal its (R/gamma*)^2 (gamma* to {MARGIN_RTOL:g} "
            "relative)", exact, assumes=ASSUMES_TIGHT, figure="mistakes_vs_bound",
            note=f"{len(hruns)} runs ({hruns['data_k'].nunique()} sizes k, "
                 f"{hruns['data_seed'].nunique()} label draws, {hruns['seed'].nunique()} visiting "
                 f"orders); largest |mistakes - bound| {worst:.3g}; gamma* from the solver "
                 f"{hruns['gamma_star'].min():.12g} to {hruns['gamma_star'].max():.12g} (theory 1); "
                 f"epochs run {int(hruns['epochs_run'].min())}-{int(hruns['epochs_run'].max())} "
                 "(theory 2: one with every mistake, one without)")
    runs = pd.concat([r for r in (sruns, hruns) if r is not None], ignore_index=True) \
        if (sruns is not None or hruns is not None) else None
    st_bound = ("Every perceptron run on separable data makes at most (R/gamma*)^2 mistakes, "
                "gamma* the maximum margin (count of runs over their bound)")
    st_ratio = "Largest ratio of mistakes to (R/gamma*)^2 over all separable runs"
    st_cert = ("The maximum margin is certified (primal and dual bounds agree) and is at least "
               "the construction's margin")
    st_conv = ("Every perceptron run on separable data converges, within (R/gamma*)^2 + 1 epochs")
    if runs is None:
        for id, st in (("novikoff_bound", st_bound), ("novikoff_max_ratio", st_ratio),
                       ("max_margin_certified", st_cert), ("separable_converged", st_conv)):
            report.missing(id, st, "perceptron runs on separable data", kind="check")
        return
    slack = 1 + MARGIN_RTOL
    over = int((runs["total_mistakes"] > runs["bound_star"] * slack).sum())
    report.check("novikoff_bound", st_bound, 0, over, over == 0,
                 note=f"{len(runs)} runs; the construction's margin gives the looser bound "
                      "(R/gamma)^2 that the runner stores")
    rmax = float(runs["ratio_star"].max())
    report.check("novikoff_max_ratio", st_ratio, "<= 1", rmax, rmax <= slack)
    gap = float(((runs["gamma_upper"] - runs["gamma_star"]) / runs["gamma_star"]).abs().max())
    below = 0
    if sruns is not None:
        below = int((sruns["gamma_star"] < sruns["margin"] * (1 - MARGIN_RTOL)).sum())
    report.check("max_margin_certified", st_cert, {"relative gap": f"<= {MARGIN_RTOL:g}",
                                                   "runs below construction": 0},
                 {"relative gap": gap, "runs below construction": below},
                 gap <= MARGIN_RTOL and below == 0 and bool((runs["gamma_star"] > 0).all()),
                 note="gamma*/construction margin: median "
                      + (f"{(sruns['gamma_star'] / sruns['margin']).median():.3g}, max "
                         f"{(sruns['gamma_star'] / sruns['margin']).max():.3g}"
                         if sruns is not None else "n/a"))
    conv = runs["converged"].astype(bool) & (runs["epochs_run"] <= np.floor(runs["bound_star"] * slack) + 1)
    report.check("separable_converged", st_conv, 1.0, float(conv.mean()), bool(conv.all()),
                 note=f"longest run {int(runs['epochs_run'].max())} epochs; epoch caps "
                      f"{int(runs['epochs'].min())}-{int(runs['epochs'].max())}")
    if sruns is not None:
        q = sruns["ratio_star"]
        report.observation(
            "novikoff_tightness", "How tight (R/gamma*)^2 is on random separable blobs: "
                                  "mistakes / bound over data sets and visiting orders",
            {"median": float(q.median()), "p90": float(q.quantile(0.9)), "max": float(q.max())},
            figure="novikoff_tightness" if "data_margin" in sruns.columns else "",
            note=f"{len(sruns)} runs"
                 + ("; by dimension (median ratio): "
                    + ", ".join(f"d={d} {g.median():.3g}" for d, g in q.groupby(sruns["data_d"]))
                    if "data_d" in sruns.columns else "")
                 + "; with the construction's margin the median ratio would be "
                 f"{(sruns['total_mistakes'] / sruns['bound']).median():.3g}")
        keys = [c for c in ("data_margin", "data_d") if c in sruns.columns] or ["grid"]
        table = (sruns.groupby(keys)
                 .agg(runs=("point", "size"), gamma_construction=("margin", "median"),
                      gamma_star=("gamma_star", "median"), R=("radius", "median"),
                      bound_star=("bound_star", "median"),
                      mistakes_median=("total_mistakes", "median"),
                      mistakes_max=("total_mistakes", "max"),
                      ratio_median=("ratio_star", "median"), ratio_max=("ratio_star", "max"),
                      epochs_max=("epochs_run", "max"))
                 .reset_index())
        report.table(table, "Separable blobs by requested margin and dimension: the construction's "
                            "margin, the maximum margin gamma*, R (bias folded in), the bound "
                            "(R/gamma*)^2 and the mistakes (over data sets and visiting orders)")
    if hruns is not None:
        t = (hruns.groupby("data_k")
             .agg(runs=("point", "size"), R=("radius", "median"), gamma_star=("gamma_star", "median"),
                  bound_star=("bound_star", "median"), mistakes_min=("total_mistakes", "min"),
                  mistakes_max=("total_mistakes", "max"), epochs_max=("epochs_run", "max"))
             .reset_index().rename(columns={"data_k": "k"}))
        report.table(t, "The Hadamard construction (k points in k - 1 dimensions): R = sqrt(k), "
                        "gamma* = 1, so (R/gamma*)^2 = k, and the mistakes made")


def _halves(rows):
    """Per run: mistakes in the first and in the last floor(E/2) epochs, and the slope of a
    least-squares line through the cumulative mistakes (mistakes per epoch)."""
    out = []
    for point, r in rows.groupby("point", sort=False):
        m = r.sort_values("epoch")["mistakes"].to_numpy()
        h = len(m) // 2
        e = np.arange(1, len(m) + 1)
        slope = np.polyfit(e, np.cumsum(m), 1)[0] if len(m) >= 2 else np.nan
        out.append({"point": point, "epochs_run": len(m),
                    "first_half": m[:h].sum() if h else np.nan,
                    "second_half": m[len(m) - h:].sum() if h else np.nan, "slope": slope,
                    "last_epoch_mistakes": m[-1]})
    df = pd.DataFrame(out)
    df["ratio"] = df["second_half"] / df["first_half"]
    return df


def _at(steps, loss, t):
    """(step, loss) at the last recorded step <= t, or NaNs when that is step 0 or none."""
    k = np.flatnonzero(steps <= t)
    if not len(k) or steps[k[-1]] <= 0:
        return np.nan, np.nan
    return steps[k[-1]], loss[k[-1]]


def stalled_runs(xm):
    """Per 2-2-1 run: solved or not; the loss at the horizon T and at the recorded steps nearest
    below T/2 and 3T/4; the limit extrapolated from T/2 and T under a 1/t approach and its step
    L(T/2) - L(T); the plateau level nearest L(T) (:func:`xor_plateau_levels`); whether the run is
    approaching it (on the same plateau at T/2, |L_inf - level| <= step), moving from one
    plateau to the next (the level nearest the loss changed between T/2 and T and the loss is
    still falling towards the new one from above: a transit, to which the 1/t extrapolation
    does not apply) or accelerating away from a plateau (its loss falls
    faster over the last quarter of the horizon than over the one before, which neither a 1/t
    approach, whose drops halve, nor convergence to a finite minimum allows); the exponent of
    the approach, the weight-norm growth, the output layer's saturated share and the gradient
    norm at T."""
    L1 = xm[xm["layer"] == 1]
    out = []
    for point, r in L1.groupby("point", sort=False):
        r = r.sort_values("step")
        steps, loss = r["step"].to_numpy(), r["loss"].to_numpy()
        T = steps[-1]
        t1, l1 = _at(steps, loss, T / 2)
        t2, l2 = _at(steps, loss, 3 * T / 4)
        levels = xor_plateau_levels(int(r["data_n"].iloc[0]))
        limit = richardson_limit(t1, l1, T, loss[-1]) if np.isfinite(t1) else np.nan
        # the plateau the run is on: the level nearest its loss at T
        name = min(levels, key=lambda k: abs(levels[k] - loss[-1]))
        # the plateau it was on at T/2 (a run may move from one plateau to the next)
        name1 = min(levels, key=lambda k: abs(levels[k] - l1)) if np.isfinite(l1) else name
        out.append({"point": point, "T": T, "t1": t1, "t2": t2, "loss_T": loss[-1],
                    "loss_t1": l1, "loss_t2": l2, "limit": limit,
                    "plateau": levels[name], "plateau_kind": level_kind(name),
                    "plateau_t1": levels[name1]})
    df = pd.DataFrame(out)
    runs = _runs(xm).set_index("point")
    df["final_accuracy"] = runs.loc[df["point"], "final_accuracy"].to_numpy()
    df["diverged"] = runs.loc[df["point"], "diverged"].astype(bool).to_numpy()
    df["solved"] = df["final_accuracy"] >= SOLVED_ACCURACY
    df["step"] = df["loss_t1"] - df["loss_T"]
    # between plateaus: the level nearest the loss changed from T/2 to T, so a 1/t approach
    # to one level over [T/2, T] is not what the theory predicts for it
    # and still arriving: falling over the last quarter, above the level it is arriving at
    same = np.isclose(df["plateau_t1"], df["plateau"], rtol=1e-9, atol=0)
    df["moving"] = ~same & (df["loss_t2"] > df["loss_T"]) & (df["loss_T"] > df["plateau"])
    df["approaching"] = same & (df["step"] > 0) \
        & ((df["limit"] - df["plateau"]).abs() <= df["step"])
    drop1, drop2 = df["loss_t1"] - df["loss_t2"], df["loss_t2"] - df["loss_T"]
    df["drop_ratio"] = drop2 / drop1
    df["leaving"] = ~df["approaching"] & (drop1 > 0) & (drop2 > drop1)
    with np.errstate(invalid="ignore", divide="ignore"):
        df["exponent"] = np.log((df["loss_t1"] - df["plateau"]) / (df["loss_T"] - df["plateau"])) \
            / np.log(df["T"] / df["t1"])
    last = xm[xm["step"] == xm.groupby("point")["step"].transform("max")]
    top = last[last["layer"] == last["layer"].max()].set_index("point")
    df["out_saturated"] = top.loc[df["point"], "saturated"].to_numpy()
    W = np.sqrt((xm["weight_norm"] ** 2).groupby([xm["point"], xm["step"]]).sum())
    df["weight_norm_T"] = [W.loc[(p, T)] for p, T in zip(df["point"], df["T"])]
    df["weight_growth"] = [W.loc[(p, T)] - W.loc[(p, t1)] if np.isfinite(t1) else np.nan
                           for p, T, t1 in zip(df["point"], df["T"], df["t1"])]
    df["grad_norm_T"] = np.sqrt((last["grad_norm"] ** 2).groupby(last["point"]).sum()) \
        .loc[df["point"]].to_numpy()
    # a run whose loss at T/2 was nearer the lowest plateau than 0, that ends solved
    lowest = np.array([min(xor_plateau_levels(int(n)).values())
                       for n in runs.loc[df["point"], "data_n"]])
    df["escaped"] = (df["loss_t1"] > lowest / 2) & df["solved"]
    return df


def _xor(xp, xm, report):
    report.heading("XOR: the perceptron against a 2-2-1 MLP")
    pr = _runs(xp)
    st_sep = "XOR is not linearly separable: 0 lies in the convex hull of the y_i (x_i, 1)"
    st_never = "The perceptron never converges on XOR (count of converged runs)"
    st_acc = ("The perceptron's final accuracy on XOR is at most the best accuracy of any line "
              "on the same data (computed exactly by enumeration)")
    if pr.empty:
        for id, st in (("xor_not_separable", st_sep), ("xor_perceptron_never_converges", st_never),
                       ("xor_perceptron_accuracy", st_acc)):
            report.missing(id, st, "perceptron runs on data set 'xor'", kind="check")
    else:
        seps = [_margin_of(r)["separable"] for _, r in pr.iterrows()]
        report.check("xor_not_separable", st_sep, 0, int(np.sum(seps)), not any(seps),
                     note=f"{len(pr)} runs on {pr[_xor_data_cols(pr)].drop_duplicates().shape[0]} "
                          "data set(s); count of data sets found separable")
        n_conv = int(pr["converged"].astype(bool).sum())
        report.check("xor_perceptron_never_converges", st_never, 0, n_conv, n_conv == 0,
                     note=f"{len(pr)} runs of {int(pr['epochs'].min())}-{int(pr['epochs'].max())} "
                          "epochs")
        best = {}
        for _, r in pr.iterrows():
            key = (r["data"], r["data_args"])
            if key not in best:
                best[key] = best_linear_accuracy_2d(*_dataset(r))
        ceiling = np.array([best[(n, a)] for n, a in zip(pr["data"], pr["data_args"])])
        worst = float((pr["final_accuracy"].to_numpy() - ceiling).max())
        report.check("xor_perceptron_accuracy", st_acc, "<= 0", worst, worst <= 1e-12,
                     note=f"largest (perceptron accuracy - best linear accuracy); best linear "
                          f"accuracy {ceiling.min():.3g}-{ceiling.max():.3g}, perceptron median "
                          f"{pr['final_accuracy'].median():.3g}")
        h = _halves(xp)
        report.observation(
            "xor_perceptron_mistake_rate",
            "The perceptron's mistakes per epoch on XOR settle to a stationary rate (cumulative "
            "count linear in epochs): second-half over first-half mistakes",
            {"median ratio": float(h["ratio"].median()), "min": float(h["ratio"].min()),
             "max": float(h["ratio"].max())},
            figure="xor",
            note=f"{len(h)} runs; slope of the cumulative count {h['slope'].median():.3g} "
                 f"mistakes/epoch (median) for {int(pr['data_n'].median())} samples; the cycling "
                 "theorem bounds the weights but gives no value for the rate")
    mr = _runs(xm)
    st_plat = ("Stalled 2-2-1 runs sit on plateaus at infinity: each one's loss, extrapolated "
               "from L(T/2) and L(T), tends to a plateau level of merged clusters, or falls "
               "away from one faster and faster; none converges to another level")
    if mr.empty:
        report.missing("xor_stalled_plateau_limit", st_plat,
                       "2-2-1 MLP runs (widths = [2], loss 'bce') on data set 'xor'",
                       assumes=ASSUMES_PLATEAU)
        return
    s = stalled_runs(xm)
    cfg = [c for c in ("activation", "lr", "init", "steps", *_xor_data_cols(mr))
           if c in mr.columns and mr[c].nunique() > 1]
    mrs = mr.set_index("point").loc[s["point"]].reset_index()
    s = pd.concat([s, mrs[cfg]], axis=1) if cfg else s.assign(grid="all")
    per_cfg = s.groupby(cfg or ["grid"])["solved"].mean()
    report.observation(
        "xor_mlp_solves", "Share of 2-2-1 MLPs trained by full-batch GD that solve XOR "
                          f"(training accuracy >= {SOLVED_ACCURACY})",
        float(s["solved"].mean()), figure="xor",
        note=f"{int(s['solved'].sum())} of {len(s)} networks; per configuration "
             f"{per_cfg.min():.3g} to {per_cfg.max():.3g} over {len(per_cfg)} configuration(s); "
             f"{int(s['diverged'].sum())} diverged; runs stalled at T/2 that solve it by T: "
             f"{int(s['escaped'].sum())}")
    st = s[~s["solved"] & ~s["diverged"]]
    if st.empty or st["limit"].isna().all():
        report.missing("xor_stalled_plateau_limit", st_plat,
                       "stalled 2-2-1 runs with recorded steps at or below T/2 and 3T/4",
                       assumes=ASSUMES_PLATEAU)
    else:
        st_n = int(mr["data_n"].median())
        levels = xor_plateau_levels(st_n)
        kinds = {}
        for k, v in levels.items():
            kinds.setdefault(level_kind(k), v)
        appr = st[st["approaching"]]
        other = st[~st["approaching"] & ~st["leaving"] & ~st["moving"]]
        meas = {k: float(g["limit"].median()) for k, g in appr.groupby("plateau_kind")}
        report.prediction(
            "xor_stalled_plateau_limit", st_plat,
            {k: kinds[k] for k in sorted(kinds, key=kinds.get) if k in meas or k == "2 merged"},
            meas,
            "per run on one plateau from T/2 to T: |L_inf - its level| <= its extrapolation step "
            "L(T/2) - L(T), or the drop over the last quarter of the horizon larger than over "
            "the one before",
            other.empty, assumes=ASSUMES_PLATEAU, figure="xor_plateau",
            note=f"{len(st)} stalled runs: "
                 + ", ".join(f"{len(g)} approaching '{k}'" for k, g in appr.groupby("plateau_kind"))
                 + f", {int(st['leaving'].sum())} leaving a plateau, "
                 f"{int((st['moving'] & ~st['leaving']).sum())} moving between plateaus, "
                 f"{len(other)} neither"
                 + (f" (L(T) {', '.join(f'{v:.4g}' for v in other['loss_T'][:5])})"
                    if len(other) else "")
                 + f"; L_inf median over '2 merged' runs vs (1/2) ln 2 = {np.log(2) / 2:.4f}; "
                 f"largest |L_inf - level| / step among approaching runs "
                 f"{((appr['limit'] - appr['plateau']).abs() / appr['step']).max():.3g}; plateau "
                 f"levels for n = {int(st_n)}: "
                 + ", ".join(f"{k} {v:.4f}" for k, v in sorted(kinds.items(), key=lambda x: x[1])))
        two = appr[appr["plateau_kind"] == "2 merged"]
        report.observation(
            "xor_stalled_signature", "Stalled runs approaching the lowest plateau: exponent p of "
                                     "L - level ~ t^-p (1 for a logistic tail), weight-norm "
                                     "growth from T/2 to T (a constant per doubling of t if the "
                                     "norm grows like ln t), output saturated share (1/2: the "
                                     "merged half sits at p = 1/2)",
            {"exponent p": float(two["exponent"].median()),
             "weight growth": float(two["weight_growth"].median()),
             "output saturated": float(two["out_saturated"].median())},
            figure="xor_plateau",
            note=f"{len(two)} runs; drop ratio (L(3T/4) - L(T)) / (L(T/2) - L(3T/4)) median "
                 f"{two['drop_ratio'].median():.3g} (1/2 for an exact 1/t approach); solved runs, "
                 "for comparison: output saturated "
                 f"{s.loc[s['solved'], 'out_saturated'].median():.3g}, weight growth "
                 f"{s.loc[s['solved'], 'weight_growth'].median():.3g}; stalled gradient norm at T "
                 f"{st['grad_norm_T'].median():.3g} (median)")
    tab = (s.assign(stalled=~s["solved"] & ~s["diverged"]).groupby(cfg or ["grid"])
           .agg(networks=("point", "size"), solved_share=("solved", "mean"),
                stalled=("stalled", "sum"),
                accuracy_median=("final_accuracy", "median"))
           .reset_index())
    if not st.empty:
        tab = tab.merge(st.groupby(cfg or ["grid"])
                        .agg(stalled_loss_T=("loss_T", "median"), stalled_limit=("limit", "median"),
                             plateau=("plateau", "median"), exponent=("exponent", "median"),
                             out_saturated=("out_saturated", "median"))
                        .reset_index(), on=cfg or ["grid"], how="left")
    report.table(tab, "2-2-1 MLPs on XOR: share solving it, and for the stalled runs the loss at "
                      "T, its extrapolated limit beside the plateau level, the exponent of the "
                      "approach and the output layer's saturated share (medians)")
    if not pr.empty:
        cols = _xor_data_cols(pr)
        t = (pr.groupby(cols).agg(perceptron_runs=("point", "size"),
                                  perceptron_acc_median=("final_accuracy", "median"),
                                  perceptron_acc_max=("final_accuracy", "max")).reset_index())
        if set(cols) <= set(mr.columns):
            t = t.merge(mr.groupby(cols).agg(mlp_networks=("point", "size"),
                                             mlp_acc_median=("final_accuracy", "median"))
                        .reset_index(), on=cols, how="left")
        report.table(t, "Training accuracy on each XOR data set: perceptron (final iterate) "
                        "against the 2-2-1 MLPs")
    _XOR_CACHE["stalled"] = s


_XOR_CACHE = {}


# --------------------------------------------------------------------------------------------
# figures

def _figures(sruns, hruns, sep, xp, xm, report):
    if sruns is not None or hruns is not None:
        _fig_bound(sruns, hruns, report)
    if sruns is not None and "data_margin" in sruns.columns:
        _fig_tightness(sruns, report)
    if not xp.empty or not xm.empty:
        _fig_xor(sep, xp, xm, report)
    if "stalled" in _XOR_CACHE and not xm.empty:
        _fig_plateau(xm, _XOR_CACHE.pop("stalled"), report)


def _dimension_hue(runs):
    """(frame with a text column "dimension d", its order, a palette) or Nones without d."""
    if "data_d" not in runs.columns:
        return runs, None, None, None
    dims = sorted(runs["data_d"].unique())
    order = [str(d) for d in dims]
    return (runs.assign(**{"dimension d": runs["data_d"].astype(str)}), "dimension d", order,
            dict(zip(order, sns.color_palette("colorblind", len(order)))))


def _fig_bound(sruns, hruns, report):
    fig, ax = plt.subplots(figsize=(6.6, 5.2))
    both = pd.concat([r for r in (sruns, hruns) if r is not None])
    lo = max(0.5, min(both["total_mistakes"].clip(lower=1).min(), both["bound_star"].min()) / 2)
    hi = max(both["bound_star"].max(), both["total_mistakes"].max()) * 2
    if sruns is not None:
        df, hue, order, pal = _dimension_hue(sruns)
        sns.scatterplot(df, x="bound_star", y="total_mistakes", hue=hue, hue_order=order,
                        palette=pal, s=10, alpha=0.35, linewidth=0, ax=ax)
    if hruns is not None:
        ax.scatter(hruns["bound_star"], hruns["total_mistakes"], s=60, marker="D",
                   facecolor="none", edgecolor="black", lw=1.2,
                   label=f"Hadamard construction ({len(hruns)} runs)")
    ax.plot([lo, hi], [lo, hi], color="crimson", lw=1.5, label="theory: y = x, (R/gamma*)^2")
    ax.fill_between([lo, hi], [lo, hi], [hi, hi], color="crimson", alpha=0.06,
                    label="forbidden by Novikoff's bound")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(0.8, hi)
    ax.set_xlabel("Novikoff bound (R / gamma*)^2, gamma* the maximum margin (log scale)")
    ax.set_ylabel("mistakes made by the perceptron (updates, log scale)")
    leg = ax.legend(fontsize=8, loc="upper left", title="blobs by dimension d; construction",
                    title_fontsize=8)
    for h in leg.legend_handles:
        if hasattr(h, "set_alpha"):
            h.set_alpha(1)
    ax.set_title(f"{len(both):,} perceptron runs on separable data")
    report.figure("mistakes_vs_bound", fig,
                  "Each point is one run: total mistakes against its own bound (R/gamma*)^2 with "
                  "the maximum margin. The theory (red line y = x) is reached exactly by the "
                  "Hadamard construction (black diamonds, every visiting order); random blobs "
                  "(dots, by dimension) lie below it. Runs with zero mistakes are not drawn.")


def _fig_tightness(runs, report):
    fig, ax = plt.subplots(figsize=(7, 4.8))
    df, hue, order, pal = _dimension_hue(runs)
    sns.lineplot(df, x="data_margin", y="ratio_star", hue=hue, hue_order=order, palette=pal,
                 estimator="median", errorbar=("pi", 100), err_kws={"alpha": 0.12}, marker="o",
                 ax=ax)
    ax.axhline(1.0, color="crimson", lw=1.5, ls="--", label="bound reached (Hadamard)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ms = np.sort(runs["data_margin"].unique())
    ax.set_xticks(ms, [f"{m:.3g}" for m in ms])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xlabel("margin requested by the construction (input units, log scale)")
    ax.set_ylabel("mistakes / (R/gamma*)^2 (log scale)")
    ax.legend(fontsize=8, title=hue, title_fontsize=8)
    ax.set_title("Tightness of Novikoff's bound on random blobs")
    report.figure("novikoff_tightness", fig,
                  "Mistakes as a share of the bound (R/gamma*)^2 against the requested margin, by "
                  "input dimension (lines: median; bands: min-max over data sets and visiting "
                  "orders). The dashed line is the bound, reached by the Hadamard construction.")


def _fig_xor(sep, xp, xm, report):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.6))
    if not xp.empty:
        sns.lineplot(xp, x="epoch", y="cumulative_mistakes", estimator="median",
                     errorbar=("pi", 100), color="crimson", ax=a1, label="XOR (not separable)")
        n = int(xp["data_n"].median()) if "data_n" in xp.columns else None
        if not sep.empty:
            e_max = int(xp["epoch"].max())
            s = _runs(sep)
            med = (sep.pivot(index="epoch", columns="point", values="cumulative_mistakes")
                   .reindex(np.arange(1, e_max + 1)).ffill())
            a1.plot(med.index, med.median(axis=1), color="teal", lw=1.5,
                    label=f"separable blobs (median of {len(s):,} runs)")
        slope = _halves(xp)["slope"].median()
        a1.text(0.03, 0.62, f"slope {slope:.3g} mistakes/epoch (median)", transform=a1.transAxes,
                color="crimson", fontsize=9)
        a1.set_xlabel("epoch (passes over the data)")
        a1.set_ylabel("cumulative mistakes (updates)")
        a1.set_title("Perceptron" + (f" on XOR, n = {n}" if n else ""))
        a1.legend(fontsize=8)
    else:
        a1.set_axis_off()
    if not xm.empty:
        rows = xm[xm["layer"] == xm["layer"].min()].copy()
        ok = f"solved (acc >= {SOLVED_ACCURACY})"
        rows["outcome"] = np.where(rows["final_accuracy"] >= SOLVED_ACCURACY, ok, "stalled")
        sns.lineplot(rows, x="step", y="loss", units="point", estimator=None, hue="outcome",
                     hue_order=[ok, "stalled"], palette=["teal", "darkorange"], lw=0.6,
                     alpha=0.2, ax=a2, legend=False)
        for outcome, colour in zip([ok, "stalled"], ["teal", "darkorange"]):
            sub = rows[rows["outcome"] == outcome]
            if len(sub):
                med = sub.groupby("step")["loss"].median()
                a2.plot(med.index, med.to_numpy(), color=colour, lw=2.5,
                        path_effects=[pe.Stroke(linewidth=4.5, foreground="black"), pe.Normal()],
                        label=f"{outcome}: {sub['point'].nunique()} nets (bold: median)")
        a2.set_yscale("log")
        n = int(rows["data_n"].median())
        plateau = float(np.mean(list(xor_plateau_losses(n).values())))
        for level, text in ((np.log(2), "ln 2 (chance)"), (plateau, "plateau (1/2) ln 2")):
            a2.axhline(level, color="gray", ls=":", lw=1)
            a2.text(rows["step"].max(), level * 1.08, text, ha="right", fontsize=8, color="gray")
        a2.set_xlabel("gradient-descent step (full batch)")
        a2.set_ylabel("training BCE loss (nats, log scale)")
        acts = ", ".join(sorted(rows["activation"].unique())) if "activation" in rows else ""
        a2.set_title(f"2-2-1 MLP ({acts}) on the same XOR data, one line per network")
        a2.legend(fontsize=8, loc="lower left")
    else:
        a2.set_axis_off()
    fig.tight_layout()
    report.figure("xor", fig,
                  "Left: the perceptron's cumulative mistakes on XOR grow linearly with epochs "
                  "(median and range over runs), while on separable data they stop at "
                  "convergence. Right: training loss of 2-2-1 MLPs on the same XOR data; most "
                  "drive it towards 0, the stalled ones towards the plateau (1/2) ln 2.")


def _fig_plateau(xm, s, report):
    st = s[~s["solved"] & ~s["diverged"]]
    if st.empty:
        return
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.6))
    rows = xm[(xm["layer"] == 1) & xm["point"].isin(st["point"]) & (xm["step"] > 0)]
    info = st.set_index("point")
    T = float(st["T"].max())
    segs, colours = [], []
    for point, r in rows[rows["step"] >= T / 4].groupby("point"):
        colours.append("black" if info.loc[point, "leaving"] else (
            "darkorange" if info.loc[point, "approaching"] else (
                "steelblue" if info.loc[point, "moving"] else "magenta")))
        segs.append(np.column_stack([r["step"].to_numpy(), r["loss"].to_numpy()]))
    # one collection for all runs: hundreds of separate lines are slow to draw
    a1.add_collection(LineCollection(segs, colors=colours, linewidths=0.7, alpha=0.5))
    a1.autoscale_view()
    n = int(xm["data_n"].median())
    levels = {}
    for k, v in xor_plateau_levels(n).items():
        levels.setdefault(level_kind(k), v)
    top = float(st["loss_T"].max())
    for k, v in sorted(levels.items(), key=lambda x: x[1]):
        if v <= top + 0.02:
            a1.axhline(v, color="crimson", lw=1.2)
            a1.text(T / 4, v, f" theory: {k} {v:.4f}", va="bottom", fontsize=8, color="crimson")
    on = st[~st["moving"]]       # a run in transit has no 1/t limit to draw
    a1.scatter(on["T"] * 1.03, on["limit"], marker="<", color="black", s=20, zorder=3,
               label="limits extrapolated from L(T/2), L(T)")
    a1.plot([], [], color="darkorange", label="approaching a plateau")
    if st["leaving"].any():
        a1.plot([], [], color="black", label="accelerating away from one")
    if (st["moving"] & ~st["leaving"]).any():
        a1.plot([], [], color="steelblue", label="moving between plateaus")
    if (~st["approaching"] & ~st["leaving"] & ~st["moving"]).any():
        a1.plot([], [], color="magenta", label="neither (against the theory)")
    a1.set_xlabel("gradient-descent step (from T/4)")
    a1.set_ylabel("training BCE loss (nats)")
    a1.set_title(f"{len(st)} stalled 2-2-1 runs against the plateau levels")
    a1.legend(fontsize=8, loc="upper right")
    ap = info[info["approaching"]]
    excess = rows["loss"].to_numpy() - info.loc[rows["point"], "plateau"].to_numpy()
    rows = rows.assign(excess=excess)
    pos = rows[rows["point"].isin(ap.index) & (rows["excess"] > 0)]
    a2.add_collection(LineCollection(
        [np.column_stack([r["step"].to_numpy(), r["excess"].to_numpy()])
         for _, r in pos.groupby("point")], colors="darkorange", linewidths=0.7, alpha=0.5))
    if len(pos):
        t = np.geomspace(pos["step"].min(), pos["step"].max(), 50)
        anchor = pos[pos["step"] == pos["step"].max()]["excess"].median()
        a2.plot(t, anchor * pos["step"].max() / t, color="crimson", lw=1.5, ls="--",
                label="theory: ~ 1/t (logistic tail)")
    a2.set_xscale("log")
    a2.set_yscale("log")
    a2.set_xlabel("gradient-descent step (log scale)")
    a2.set_ylabel("L(t) - its plateau level (log scale)")
    a2.set_title("Approach to the plateau at infinity")
    a2.legend(fontsize=8)
    fig.tight_layout()
    report.figure("xor_plateau", fig,
                  "Stalled 2-2-1 runs on XOR. Left: the loss over the last three quarters of "
                  "training against the plateau levels of merged clusters (red lines), reached "
                  "only as the weights grow without bound; black marks: each run's limit "
                  "extrapolated under a 1/t approach. Right: for the runs approaching a plateau, "
                  "the excess over it falls like 1/t (dashed), a power law, not the geometric "
                  "convergence of gradient descent to a finite minimum.")
