"""The report of a plain grid (a user's TOML without ``study = ...``): what was trained and how
it went, by every axis that varies within each sub-grid. It states no claims (there is no
theory to check)."""
import matplotlib.pyplot as plt
import seaborn as sns

NAME = None
TITLE = "Grid"
SUMMARY = "Final loss, divergence and loss curves of every configuration in the grid."

# configuration columns that never act as axes to group by
_NOT_AXES = {"point", "kind", "grid", "seed", "data_seed", "depth"}
# result columns (everything else in the stored rows is configuration)
RESULTS = {"network", "step", "layer", "loss", "grad_norm", "weight_norm", "preact_mean", "preact_std",
           "act_mean", "act_std", "saturated", "final_loss", "diverged", "diverged_at",
           "final_accuracy", "epoch", "mistakes", "cumulative_mistakes", "total_mistakes",
           "converged", "epochs_run", "radius", "margin", "bound"}


def varying_axes(data):
    """Configuration columns that take more than one value in ``data``."""
    return [c for c in data.columns if c not in RESULTS and c not in _NOT_AXES
            and data[c].nunique(dropna=False) > 1]


def analyse(data, spec, report):
    for gname, rows in data.groupby("grid", sort=False):
        rows = rows.dropna(axis=1, how="all")
        axes = varying_axes(rows)
        keys = axes or ["grid"]
        per_net = rows.drop_duplicates("point")
        report.heading(f"Sub-grid {gname!r} ({rows['kind'].iloc[0]}, {len(per_net)} trainings)")
        if rows["kind"].iloc[0] == "mlp":
            summary = (per_net.groupby(keys, dropna=False)
                       .agg(trainings=("point", "size"), final_loss_median=("final_loss", "median"),
                            diverged_share=("diverged", "mean"),
                            accuracy_median=("final_accuracy", "median"))
                       .reset_index())
            report.table(summary, "Median over seeds; diverged networks count in the share "
                                  "(their loss is inf or NaN)")
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
