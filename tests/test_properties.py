"""Property tests (hypothesis): shapes, dtypes and values thrown at MLP.loss_and_grad,
MLP.predict, train_grid and the perceptron. Every call either raises ValueError (the input
checks) or returns a finite result that agrees with a plain NumPy computation; no other
exception, whatever the input."""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import simcore
from conftest import ACTS, LOSSES
from naive import ref_loss, ref_output
from simcore import MLP, perceptron, train_grid

SETTINGS = settings(max_examples=int(os.environ.get("SIMCORE_HYPOTHESIS_EXAMPLES", 60)), deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def networks(draw):
    """A small MLP, its parameters, valid inputs and targets."""
    loss = draw(st.sampled_from(LOSSES))
    hidden = draw(st.lists(st.integers(1, 5), min_size=0, max_size=2))
    bn = bool(hidden) and draw(st.booleans())
    k = draw(st.integers(2, 3)) if loss == "ce" else draw(st.integers(1, 2))
    d = draw(st.integers(1, 4))
    n = draw(st.integers(2, 9))
    dtype = draw(st.sampled_from(["float64", "float32"]))
    net = MLP([d, *hidden, k], activation=draw(st.sampled_from(ACTS)), loss=loss, batchnorm=bn,
              dtype=dtype)
    params = net.init(seed=draw(st.integers(0, 2**32)), scale=draw(st.floats(0.1, 3.0)))
    X = draw(hnp.arrays(np.float64, (n, d), elements=st.floats(-4, 4, width=32)))
    if loss == "ce":
        y = draw(hnp.arrays(np.int64, n, elements=st.integers(0, k - 1)))
    elif loss == "bce":
        y = draw(hnp.arrays(np.int64, (n,) if k == 1 else (n, k), elements=st.integers(0, 1)))
    elif loss == "mse_sigmoid":
        y = draw(hnp.arrays(np.float64, (n,) if k == 1 else (n, k), elements=st.floats(0, 1)))
    else:
        y = draw(hnp.arrays(np.float64, (n,) if k == 1 else (n, k), elements=st.floats(-3, 3)))
    return net, params, X.astype(dtype), y


def _tol(net, X):
    # float32: rounding of inputs and of every layer; batch norm divides by a batch std that
    # can be small for a few samples
    return 1e-9 if net.dtype == np.float64 else 5e-3


@SETTINGS
@given(networks())
def test_loss_and_grad_and_predict_match_numpy(case):
    net, params, X, y = case
    # batch norm over a batch whose pre-activations are (nearly) equal: 1/sqrt(var + eps) makes
    # the float32 result ill-conditioned; that is a property of the input, not of the code
    assume(net.dtype == np.float64 or not net.batchnorm)
    loss, grads = net.loss_and_grad(params, X, y)
    want, logits = ref_loss(net, params, X.astype(np.float64), y)
    assert np.isfinite(loss)
    assert abs(loss - want) <= _tol(net, X) * max(1.0, abs(want))
    for g, p in zip(grads, params):
        assert g.keys() == p.keys()
        for key in p:
            assert g[key].shape == p[key].shape and g[key].dtype == p[key].dtype
            assert np.isfinite(g[key]).all()
    out = net.predict(params, X)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, ref_output(net, logits), rtol=_tol(net, X), atol=_tol(net, X))


def _arrays_any():
    """Arrays of any small shape and dtype, values including NaN, inf and huge ones."""
    dtypes = st.sampled_from([np.float64, np.float32, np.int64, np.bool_, np.complex128])
    return hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))


@SETTINGS
@given(X=_arrays_any(), y=_arrays_any(), loss=st.sampled_from(LOSSES), bn=st.booleans())
def test_any_arrays_give_value_error_or_a_finite_result(X, y, loss, bn):
    net = MLP([2, 3, 2 if loss == "ce" else 1], activation="tanh", loss=loss, batchnorm=bn)
    params = net.init(seed=0)
    for call in (lambda: net.loss_and_grad(params, X, y), lambda: net.predict(params, X)):
        try:
            out = call()
        except ValueError:
            continue
        value = out[0] if isinstance(out, tuple) else out
        assert np.isfinite(value).all()


# each argument's valid values, and values that break a rule (or may)
TRAIN_GRID_ARGS = {
    "lr": (st.one_of(st.floats(0, 3), st.lists(st.floats(0, 3), min_size=1, max_size=5)),
           st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.lists(st.floats(-1, 10), max_size=5))),
    "steps": (st.integers(1, 6), st.one_of(st.integers(-2, 0), st.floats(-1, 6), st.none())),
    "batch_size": (st.one_of(st.none(), st.integers(1, 24)), st.integers(-1, 30)),
    "record_every": (st.integers(1, 7), st.integers(-1, 0)),
    "optimizer": (st.sampled_from(["gd", "sgd", "momentum", "nesterov", "adam"]), st.just("rmsprop")),
    "momentum": (st.one_of(st.none(), st.floats(0, 0.99)), st.floats(-0.5, 1.5)),  # valid with momentum/nesterov only
    "seeds": (st.one_of(st.none(), st.integers(0, 2**63 - 1), st.lists(st.integers(0, 9), min_size=1, max_size=5)),
              st.one_of(st.integers(-3, 2**64), st.lists(st.integers(-1, 9), max_size=5))),
}


@SETTINGS
@given(data=st.data(), broken=st.sampled_from([None, None, None, *TRAIN_GRID_ARGS]),
       strategy=st.sampled_from(["auto", "lanes", "gemm"]))
def test_train_grid_arguments(data, broken, strategy):
    """Valid arguments, or one argument drawn from values that break (or may break) a rule."""
    kw = {k: data.draw(bad if k == broken else good, label=k) for k, (good, bad) in TRAIN_GRID_ARGS.items()}
    check_train_grid(strategy=strategy, **kw)


def check_train_grid(lr, steps, batch_size, record_every, optimizer, momentum, seeds, strategy):
    """ValueError exactly when an argument breaks the documented rules; otherwise a result
    whose every network either diverged (flagged) or ends at its final parameters' loss."""
    X, y = simcore.datasets.moons(24, seed=1)
    net = MLP([2, 4, 1], activation="tanh", loss="bce")
    lr_arr, seed_arr = np.atleast_1d(np.asarray(lr, float)), np.atleast_1d(np.asarray(seeds if seeds is not None else 0))
    lengths = {lr_arr.size} | ({seed_arr.size} if seeds is not None else set())
    invalid = (lr_arr.size == 0 or not np.isfinite(lr_arr).all() or (lr_arr < 0).any()
               or not isinstance(steps, int) or steps < 1
               or not (batch_size is None or 1 <= batch_size <= 24)
               or record_every < 1 or optimizer == "rmsprop"
               or (momentum is not None and (optimizer not in ("momentum", "nesterov") or not 0 <= momentum < 1))
               or (seeds is not None and (seed_arr.size == 0 or (seed_arr < 0).any() or (seed_arr > 2**63 - 1).any()))
               or len(lengths - {1}) > 1)
    call = lambda: train_grid(net, X, y, lr=lr, steps=steps, batch_size=batch_size,  # noqa: E731
                              record_every=record_every, optimizer=optimizer, momentum=momentum,
                              seeds=seeds, strategy=strategy)
    event("invalid" if invalid else "valid")
    if invalid:
        with pytest.raises(ValueError):
            call()
        return
    res = call()
    G = res.final_loss.size
    assert G == max(lengths)
    assert res.diverged.shape == res.diverged_at.shape == (G,)
    # a network that did not diverge ends finite, at the loss its final parameters give
    for g in np.flatnonzero(~res.diverged):
        params = [{k: v[g] for k, v in layer.items()} for layer in res.params]
        loss, _ = net.loss_and_grad(params, X, y)
        assert np.isfinite(res.final_loss[g])
        assert res.final_loss[g] == pytest.approx(loss, rel=1e-12)
    assert (res.diverged_at[res.diverged] >= 0).all() and (res.diverged_at[~res.diverged] == -1).all()


@SETTINGS
@given(X=hnp.arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(1, 3)),
                    elements=st.floats(-5, 5, width=32)),
       data=st.data(), lr=st.floats(-1, 3), epochs=st.integers(-1, 40), seed=st.integers(-1, 99))
def test_perceptron_value_error_or_a_correct_result(X, data, lr, epochs, seed):
    y = data.draw(hnp.arrays(np.int64, X.shape[0], elements=st.sampled_from([-1, 1, 0])))
    try:
        r = perceptron.train(X, y, lr=lr, max_epochs=epochs, seed=seed)
    except ValueError:
        assert lr <= 0 or epochs < 1 or seed < 0 or (y == 0).any()
        return
    assert 1 <= r.epochs <= epochs and r.mistakes == r.mistakes_per_epoch.sum()
    assert np.isfinite(r.w).all() and np.isfinite(r.b)
    if r.converged:  # the last epoch made no mistake: every sample is on its side
        assert r.mistakes_per_epoch[-1] == 0
        assert (y * (X @ r.w + r.b) > 0).all()
        assert (r.predict(X) == y).all()
