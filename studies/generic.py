"""The report of a plain grid (a user's TOML without ``study = ...``): what was trained and how
it went, by every axis that varies within each sub-grid. It states no claims (there is no
theory to check)."""
import matplotlib.pyplot as plt
import seaborn as sns

from . import rows as rows_of

NAME = None
TITLE = "Grid"
SUMMARY = "Final loss, divergence and loss curves of every configuration in the grid."

# configuration columns that never act as axes to group by
_NOT_AXES = {"point", "kind", "grid", "seed", "data_seed", "depth"}


def varying_axes(data):
    """Configuration columns (:func:`studies.rows.varying_axes`) that take more than one value
    in ``data``."""
    return rows_of.varying_axes(data, _NOT_AXES)


def outcome(per_net):
    """One sentence on how the trainings (one row each) ended: how many diverged."""
    n, d = len(per_net), int(per_net["diverged"].sum())
    if n == 1:
        return ("A single training: the medians below are its values"
                + (", and it diverged (its loss went non-finite or past 10^6 times its initial loss; "
                   "no accuracy is reported)." if d else "."))
    if d == n:
        return (f"Every one of the {n} trainings diverged (a loss non-finite or past 10^6 times its "
                f"initial value): there is no accuracy to report (try smaller learning rates).")
    return f"{d} of {n} trainings diverged ({d / n:.0%})."


def analyse(data, spec, report):
    for gname, rows in data.groupby("grid", sort=False):
        # configuration columns of the other sub-grids are empty here; result columns stay,
        # even empty (every network diverged: no accuracy)
        rows = rows.drop(columns=[c for c in rows.columns
                                  if c not in rows_of.RESULT_COLUMNS and rows[c].isna().all()])
        axes = varying_axes(rows)
        keys = axes or ["grid"]
        per_net = rows.drop_duplicates("point")
        report.heading(f"Sub-grid {gname!r} ({rows['kind'].iloc[0]}, {len(per_net)} "
                       f"training{'s' if len(per_net) != 1 else ''})")
        if rows["kind"].iloc[0] == "mlp":
            report.text(outcome(per_net))
            summary = (per_net.groupby(keys, dropna=False)
                       .agg(trainings=("point", "size"), final_loss_median=("final_loss", "median"),
                            diverged_share=("diverged", "mean"),
                            accuracy_median=("final_accuracy", "median"))
                       .reset_index())
            report.table(summary, "Median over seeds; diverged networks count in the share "
                                  "(their final loss is where training stopped: huge, inf or NaN)")
            hue = axes[0] if axes else None
            fig, ax = plt.subplots(figsize=(7, 4.2))
            sns.lineplot(rows[rows["layer"] == 1], x="step", y="loss", hue=hue, estimator="median",
                         errorbar=("pi", 50), ax=ax)
            ax.set_yscale("log")
            ax.set_xlabel("step (updates)")
            ax.set_ylabel("training loss (log scale)")
            report.figure(f"loss_curves_{gname}", fig,
                          f"Sub-grid {gname}: training loss against steps, median and 25-75% band "
                          f"over the other axes{', by ' + hue if hue else ''}.")
        else:
            report.table(per_net.groupby(keys, dropna=False)
                         .agg(runs=("point", "size"), mistakes_median=("total_mistakes", "median"),
                              converged_share=("converged", "mean"), bound_median=("bound", "median"))
                         .reset_index(), "Perceptron updates (mistakes) and Novikoff's bound (R/gamma)^2")
