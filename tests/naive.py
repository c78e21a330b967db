"""Plain NumPy references of everything the tests check simcore against, in one place (as
stumpy's ``tests/naive.py``): written from the formulas, independently of simcore's kernels.

* elementwise activations, losses, dense and batch-norm layers: evaluated in ``np.longdouble``
  (``LD``) where rounding or overflow of the reference itself would matter (``exp(1e4) ~ 1e4343``
  is finite there); the tests round the results to the dtype under test;
* the optimizer updates (PyTorch's SGD with momentum, Kingma & Ba's Adam);
* a whole network: forward pass, outputs, loss and per-layer telemetry, in float64;
* the functions behind :mod:`simcore.fastmath`: NumPy's float64 ufuncs.

Batch norm uses PyTorch's defaults, written here rather than read from simcore:
``BN_EPS = 1e-5`` and a running-statistics momentum ``BN_MOMENTUM = 0.1``.
"""
import numpy as np

LD = np.longdouble
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def _ld(x):
    return np.asarray(x).astype(LD)


# --- activations f(z) and f'(z) (any float dtype; long double in the kernel tests) ----------

def ref_identity(z):
    """f(z) = z."""
    return z


def ref_sigmoid(z):
    """f(z) = 1 / (1 + e^-z)."""
    return 1 / (1 + np.exp(-z))


def ref_tanh(z):
    """f(z) = tanh z."""
    return np.tanh(z)


def ref_relu(z):
    """f(z) = z if z > 0 else 0."""
    return np.where(z > 0, z, 0)


def ref_leaky_relu(z):
    """f(z) = z if z > 0 else 0.01 z (0.01 in z's dtype)."""
    return np.where(z > 0, z, z.dtype.type(0.01) * z)


def ref_softplus(z):
    """f(z) = log(1 + e^z)."""
    return np.log1p(np.exp(z))


def ref_identity_grad(z):
    """f'(z) = 1."""
    return np.ones_like(z)


def ref_sigmoid_grad(z):
    """f'(z) = e^-|z| / (1 + e^-|z|)^2 (= sigma(z) (1 - sigma(z)))."""
    e = np.exp(-np.abs(z))
    return e / (1 + e) ** 2


def ref_tanh_grad(z):
    """f'(z) = 1 / cosh^2 z."""
    return 1 / np.cosh(z) ** 2


def ref_relu_grad(z):
    """f'(z) = 1 if z > 0 else 0 (0 at the kink, as PyTorch)."""
    return np.where(z > 0, 1, 0).astype(z.dtype)


def ref_leaky_relu_grad(z):
    """f'(z) = 1 if z > 0 else 0.01."""
    return np.where(z > 0, 1, LD(0.01)).astype(z.dtype)


def ref_softplus_grad(z):
    """f'(z) = sigma(z)."""
    return ref_sigmoid(z)


# name -> (f, f'), in simcore's order of activations
REFS = {
    "identity": (ref_identity, ref_identity_grad),
    "sigmoid": (ref_sigmoid, ref_sigmoid_grad),
    "tanh": (ref_tanh, ref_tanh_grad),
    "relu": (ref_relu, ref_relu_grad),
    "leaky_relu": (ref_leaky_relu, ref_leaky_relu_grad),
    "softplus": (ref_softplus, ref_softplus_grad),
}


def ref_apply(name, z, grad=False):
    """f(z) (or f'(z)) of activation ``name`` in long double, rounded to z's dtype."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        r = REFS[name][1 if grad else 0](np.asarray(z).astype(LD))
    return np.asarray(r).astype(np.asarray(z).dtype)


# --- losses: (mean loss, dL/dz) of logits z, in long double --------------------------------

def ref_mse(z, y):
    """L = mean((z - y)^2), dL/dz = 2 (z - y) / m."""
    z, y = _ld(z), _ld(y).reshape(np.shape(z))
    m = z.size
    return np.mean((z - y) ** 2), 2 * (z - y) / m


def ref_mse_sigmoid(z, y):
    """L = mean((s - y)^2) with s = sigma(z), dL/dz = 2 (s - y) s (1 - s) / m."""
    z, y = _ld(z), _ld(y).reshape(np.shape(z))
    s = 1 / (1 + np.exp(-z))
    return np.mean((s - y) ** 2), 2 * (s - y) * s * (1 - s) / z.size


def ref_bce(z, y):
    """L = mean(log(1 + e^z) - y z), dL/dz = (sigma(z) - y) / m."""
    z, y = _ld(z), _ld(y).reshape(np.shape(z))
    s = 1 / (1 + np.exp(-z))
    return np.mean(np.log1p(np.exp(z)) - y * z), (s - y) / z.size


def ref_ce(z, y):
    """L = mean(log sum_j e^z_j - z_y), dL/dz = (softmax(z) - onehot(y)) / n."""
    z = _ld(z)
    n, k = z.shape
    onehot = np.zeros((n, k), LD)
    onehot[np.arange(n), np.asarray(y)] = 1
    e = np.exp(z)
    lse = np.log(e.sum(axis=1))
    softmax = e / e.sum(axis=1, keepdims=True)
    return np.mean(lse - z[np.arange(n), np.asarray(y)]), (softmax - onehot) / n


LOSS_REFS = {"mse": ref_mse, "mse_sigmoid": ref_mse_sigmoid, "bce": ref_bce, "ce": ref_ce}


# --- dense layer ----------------------------------------------------------------------------

def ref_dense_forward(a_prev, W, b):
    """z = a_prev W + b, in long double."""
    return a_prev.astype(LD) @ W.astype(LD) + b.astype(LD)


def ref_dense_backward(a_prev, W, delta):
    """(dW, db, da_prev) = (a_prev^T delta, sum_n delta, delta W^T), in long double."""
    a_prev, W, delta = a_prev.astype(LD), W.astype(LD), delta.astype(LD)
    return a_prev.T @ delta, delta.sum(axis=0), delta @ W.T


# --- batch normalisation --------------------------------------------------------------------

def ref_bn_train(z, gamma, beta):
    """y = gamma (z - mu) / sqrt(var + eps) + beta over the batch (biased var); returns
    (y, xhat, 1 / sqrt(var + eps), mu, var) in long double."""
    z = z.astype(LD)
    mu = z.mean(axis=0)
    var = ((z - mu) ** 2).mean(axis=0)  # biased, for normalising
    xhat = (z - mu) / np.sqrt(var + LD(BN_EPS))
    return gamma.astype(LD) * xhat + beta.astype(LD), xhat, 1 / np.sqrt(var + LD(BN_EPS)), mu, var


def ref_bn_eval(z, gamma, beta, rm, rv):
    """y = gamma (z - running_mean) / sqrt(running_var + eps) + beta, in long double."""
    z = z.astype(LD)
    return gamma.astype(LD) * (z - rm.astype(LD)) / np.sqrt(rv.astype(LD) + LD(BN_EPS)) + beta.astype(LD)


def ref_bn_running(rm, rv, mu, var, n):
    """torch's update: rm <- (1 - m) rm + m mu, rv <- (1 - m) rv + m var n / (n - 1), m = 0.1."""
    return ((1 - LD(BN_MOMENTUM)) * rm + LD(BN_MOMENTUM) * mu,
            (1 - LD(BN_MOMENTUM)) * rv + LD(BN_MOMENTUM) * var * n / (n - 1))


def ref_bn_backward(dy, z, gamma):
    """(dz, dgamma, dbeta) by backprop through the graph stage by stage (Ioffe & Szegedy 2015,
    Alg. 1), independently of the compact formula simcore uses."""
    dy, z, gamma = dy.astype(LD), z.astype(LD), gamma.astype(LD)
    n = z.shape[0]
    mu = z.mean(axis=0)
    var = ((z - mu) ** 2).mean(axis=0)
    inv = 1 / np.sqrt(var + LD(BN_EPS))
    xhat = (z - mu) * inv
    dxhat = dy * gamma
    dvar = np.sum(dxhat * (z - mu), axis=0) * LD(-0.5) * inv ** 3
    dmu = -np.sum(dxhat * inv, axis=0) + dvar * np.mean(-2 * (z - mu), axis=0)
    dz = dxhat * inv + dvar * 2 * (z - mu) / n + dmu / n
    return dz, np.sum(dy * xhat, axis=0), np.sum(dy, axis=0)


# --- optimizer updates ----------------------------------------------------------------------

def ref_gd(theta, g, eta):
    """theta <- theta - eta g."""
    return theta - eta * g


def ref_momentum(theta, g, v, eta, mu, nesterov):
    """PyTorch's SGD: v <- mu v + g; theta <- theta - eta (g + mu v) (Nesterov) or - eta v."""
    v = mu * v + g
    return theta - eta * (g + mu * v if nesterov else v), v


def ref_adam(theta, g, m, v, t, eta, b1, b2, eps):
    """Kingma & Ba (2015), Algorithm 1: theta <- theta - eta m_hat / (sqrt(v_hat) + eps)."""
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat = m / (1 - b1 ** t)
    v_hat = v / (1 - b2 ** t)
    return theta - eta * m_hat / (np.sqrt(v_hat) + eps), m, v


# --- a whole network, in float64 ------------------------------------------------------------

# the hidden activations of a network; softplus as log(e^0 + e^z), which does not overflow in
# float64 for z > 709 as log1p(exp(z)) does (the long-double kernel references need not care)
REF_ACT = {**{name: f for name, (f, _) in REFS.items()}, "softplus": lambda z: np.logaddexp(0, z)}


def ref_forward(net, params, X, state=None, update=False):
    """z_l = a_{l-1} W_l + b_l (then batch norm), a_l = f(z_l); returns (logits, the list of
    activation inputs: hidden pre-activations after batch norm).

    ``state`` given and ``update`` False: eval-mode batch norm; ``update`` True: training mode
    and ``state`` is moved like torch (momentum 0.1, unbiased variance)."""
    a = np.asarray(X, np.float64)
    hidden = []
    for l, p in enumerate(params):
        z = a @ p["W"] + p["b"]
        if l == len(params) - 1:
            return z, hidden
        if "gamma" in p:
            if state is not None and not update:
                rm, rv = state[l]["running_mean"], state[l]["running_var"]
                z = p["gamma"] * (z - rm) / np.sqrt(rv + BN_EPS) + p["beta"]
            else:
                mu, var = z.mean(axis=0), z.var(axis=0)
                if update:
                    n = z.shape[0]
                    state[l]["running_mean"] = (1 - BN_MOMENTUM) * state[l]["running_mean"] + BN_MOMENTUM * mu
                    state[l]["running_var"] = ((1 - BN_MOMENTUM) * state[l]["running_var"]
                                               + BN_MOMENTUM * var * n / (n - 1))
                z = p["gamma"] * (z - mu) / np.sqrt(var + BN_EPS) + p["beta"]
        hidden.append(z)
        a = REF_ACT[net.activation](z)


def _output(loss, logits):
    """The output function of ``loss``: softmax (ce), identity (mse), sigma (the others)."""
    if loss == "ce":
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if loss == "mse":
        return logits
    return ref_sigmoid(logits)


def ref_output(net, logits):
    """What ``net.predict`` gives: softmax(z) (ce), z (mse), sigma(z) (the others); shape (n,)
    for one output."""
    out = _output(net.loss, logits)
    return out[:, 0] if out.shape[1] == 1 else out


def ref_loss(net, params, X, y):
    """L = the mean loss of ``net`` (``LOSS_REFS[net.loss]``) at the logits of ``ref_forward``;
    returns (L as a float64, logits)."""
    logits, _ = ref_forward(net, [{k: np.asarray(v, np.float64) for k, v in p.items()} for p in params], X)
    return np.float64(LOSS_REFS[net.loss](logits, y)[0]), logits


# the telemetry's f'(z) of a hidden layer, from z and a = f(z) (as the grid computes it)
_TELEMETRY_GRAD = {
    "tanh": lambda z, a: 1.0 - a * a,
    "sigmoid": lambda z, a: a * (1.0 - a),
    "relu": lambda z, a: (z > 0).astype(float),
}


def ref_telemetry(net, params, X):
    """Per-layer telemetry of one network on X: ||W||, mean and std of z and of a = f(z), and
    the share of units with |f'(z)| < 0.01 (the output layer: its output function)."""
    a = X
    rows = []
    for l, p in enumerate(params):
        z = a @ p["W"] + p["b"]
        if "gamma" in p:
            z = (z - z.mean(0)) / np.sqrt(z.var(0) + BN_EPS) * p["gamma"] + p["beta"]
        if l < net.n_layers - 1:
            out = REF_ACT[net.activation](z)
            deriv = _TELEMETRY_GRAD[net.activation](z, out)
        else:
            out = _output(net.loss, z)
            deriv = np.ones_like(z) if net.loss == "mse" else out * (1.0 - out)
        rows.append({"weight_norm": np.linalg.norm(p["W"]), "preact_mean": z.mean(),
                     "preact_std": z.std(), "act_mean": out.mean(), "act_std": out.std(),
                     "saturated": np.mean(np.abs(deriv) < 0.01)})
        a = out
    return rows


# --- simcore.fastmath -----------------------------------------------------------------------

# NumPy's float64 ufuncs (glibc / numpy SIMD, themselves within ~1 ulp)
FASTMATH_REFS = {"exp": np.exp, "expm1": np.expm1, "log": np.log, "log1p": np.log1p,
                 "tanh": np.tanh}


def ref_fastmath32(name, x):
    """f(x) of float32 x: NumPy's float64 f of x widened to float64, rounded to float32."""
    with np.errstate(all="ignore"):
        return FASTMATH_REFS[name](x.astype(np.float64)).astype(np.float32)


def ref_forward_layers(net, params, X, state=None):
    """Every hidden layer's z_l = a_{l-1} W_l + b_l, y_l (batch-normalised z_l, or z_l), a_l =
    f(y_l) and batch norm's (mu_l, var_l) (the batch's, biased, or ``state``'s running ones),
    and the logits, in float64: a dict of lists ``z``, ``y``, ``a``, ``mean``, ``var`` and
    ``logits``, what ``MLP.forward`` returns."""
    a = np.asarray(X, np.float64)
    out = {"z": [], "y": [], "a": [], "mean": [], "var": []}
    for l, p in enumerate(params[:-1]):
        z = a @ p["W"] + p["b"]
        y = z
        if "gamma" in p:
            if state is None:
                mu, var = z.mean(axis=0), z.var(axis=0)
            else:
                mu, var = state[l]["running_mean"], state[l]["running_var"]
            y = p["gamma"] * (z - mu) / np.sqrt(var + BN_EPS) + p["beta"]
            out["mean"].append(mu)
            out["var"].append(var)
        a = REF_ACT[net.activation](y)
        for key, v in (("z", z), ("y", y), ("a", a)):
            out[key].append(v)
    out["logits"] = a @ params[-1]["W"] + params[-1]["b"]
    return out


# --- sharpness: power iteration on Hessian-vector products (a reference for studies.theory's
# Lanczos and exact Hessian) --------------------------------------------------------------

def ref_hessian_vector_product(grad_fn, theta, v, h=6e-6):
    """H v ~ (grad(theta + h v) - grad(theta - h v)) / (2 h) for a unit v, scaled back by |v|."""
    norm = np.linalg.norm(v)
    if norm == 0.0:
        return np.zeros_like(theta)
    step = h * np.asarray(v, np.float64) / norm
    return norm * (np.asarray(grad_fn(theta + step)) - np.asarray(grad_fn(theta - step))) / (2.0 * h)


def ref_sharpness_power_iteration(grad_fn, theta, iters=1000, tol=1e-6, seed=0, v0=None):
    """lambda_max(H), the largest eigenvalue (not the largest in magnitude), by power iteration
    v <- H v / |H v| until |H v - lambda v| <= tol |lambda|; when the Rayleigh quotient comes out
    negative, again on H + |lambda| I (all eigenvalues >= 0), minus |lambda|. Returns (lambda,
    unit eigenvector, Hessian-vector products, converged)."""
    theta = np.asarray(theta, np.float64)
    v = np.random.default_rng(seed).standard_normal(theta.size) if v0 is None else np.asarray(v0, float)
    v = v / np.linalg.norm(v)

    def power(matvec, v):
        lam = 0.0
        for k in range(1, iters + 1):
            w = matvec(v)
            lam = float(v @ w)
            if np.linalg.norm(w - lam * v) <= tol * abs(lam):
                return lam, v, k, True
            v = w / np.linalg.norm(w)
        return lam, v, iters, False

    def hv(x):
        return ref_hessian_vector_product(grad_fn, theta, x)

    lam, v, k, ok = power(hv, v)
    if lam < 0:
        shifted, v, k2, ok = power(lambda x: hv(x) - lam * x, v)
        lam, k = shifted + lam, k + k2
    return lam, v, k, ok
