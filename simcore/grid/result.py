"""GridResult: what a grid of trainings returns, and its long-form telemetry."""
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .core import QUANTITIES


@dataclass
class GridResult:
    """The outcome of :func:`simcore.train_grid` for G networks.

    Attributes
    ----------
    final_loss : (G,) float64
        Mean loss at each network's parameters after the last step, on the full data set
        (for a diverged network: at its frozen, diverged parameters; may be inf or NaN).
    diverged : (G,) bool
    diverged_at : (G,) int64
        The step at which the loss became non-finite or exceeded 1e6 times its initial value;
        -1 if never. The network's parameters stay as they were at that step.
    params : list
        For one architecture: the MLP layout stacked on a leading G axis
        (``params[l]["W"]`` is (G, fan_in, fan_out)). For a list of networks: a list of G
        per-network parameter lists.
    record_steps : (R,) int64
        The steps at which telemetry was recorded (0, k, 2k, ..., and the last step).
    """

    final_loss: np.ndarray
    diverged: np.ndarray
    diverged_at: np.ndarray
    params: list
    record_steps: np.ndarray
    config: pd.DataFrame = field(repr=False)
    _groups: list = field(repr=False)   # [(network indices, rec_loss (R, Gg), rec_layer (R, L, NQ, Gg))]

    def history(self):
        """Long-form telemetry: one row per (network, recorded step, layer).

        Columns: ``network``, ``step``, ``layer`` (1-based, the output layer is L), ``loss`` (the
        mean loss of the batch used at that step), ``grad_norm`` (Frobenius norm of dL/dW_l),
        ``weight_norm`` (of W_l), ``preact_mean``/``preact_std`` (of the activation's input
        over samples and units: z_l, or its batch-normalised value), ``act_mean``/``act_std``
        (of a_l; for the output layer, the network's output), ``saturated`` (fraction of units
        and samples with ``|f'| < 0.01``; for the output layer the output function's derivative).
        Steps after a network diverged are absent.
        """
        frames = []
        R = len(self.record_steps)
        for idx, rec_loss, rec_layer in self._groups:
            L, Gg = rec_layer.shape[1], rec_layer.shape[3]
            cols = {
                "network": np.broadcast_to(idx[None, None, :], (R, L, Gg)).ravel(),
                "step": np.broadcast_to(self.record_steps[:, None, None], (R, L, Gg)).ravel(),
                "layer": np.broadcast_to(np.arange(1, L + 1)[None, :, None], (R, L, Gg)).ravel(),
                "loss": np.broadcast_to(rec_loss[:, None, :], (R, L, Gg)).ravel(),
            }
            for q, name in enumerate(QUANTITIES):
                cols[name] = rec_layer[:, :, q, :].ravel()
            frames.append(pd.DataFrame(cols))
        df = pd.concat(frames, ignore_index=True)
        after = self.diverged_at[df["network"].to_numpy()]
        df = df[(after < 0) | (df["step"].to_numpy() <= after)]
        return df.sort_values(["network", "step", "layer"], kind="stable").reset_index(drop=True)
