"""The flat parameter layout every kernel reads: one row per dense layer, one column each.

A network's parameters live in one flat array ``theta``; ``layout[l]`` gives layer l's
``FAN_IN`` and ``FAN_OUT`` and the offsets of its tensors in ``theta``: ``OFF_W`` (W, fan_in x
fan_out, row-major), ``OFF_B`` (b), ``OFF_GAMMA`` and ``OFF_BETA`` (batch norm's scale and
shift, -1 when the layer has none) and ``OFF_RUN`` (its running statistics in a separate
array). The single-network API (:class:`simcore.MLP`) builds the layout; the CPU and GPU grid
engines and the Hessian kernels read it. A module of its own, so that none of them imports
another's internals to learn the column order.
"""
FAN_IN, FAN_OUT, OFF_W, OFF_B, OFF_GAMMA, OFF_BETA, OFF_RUN = range(7)
N_COLUMNS = 7

__all__ = ["FAN_IN", "FAN_OUT", "OFF_W", "OFF_B", "OFF_GAMMA", "OFF_BETA", "OFF_RUN", "N_COLUMNS"]
