r"""Theory values that the study reports set beside their measurements.

Every number here is computed from the data and the configuration a study runs (activation,
:math:`\sigma_w^2`, :math:`\sigma_b^2`, the design matrix, the network and its parameters), never
typed in; see ``shared/design/SCIENCE.md`` for the claims they serve. Plain NumPy/SciPy, float64.

Three groups:

* **Mean-field signal propagation** (Poole et al. 2016; Schoenholz et al. 2017): the variance map
  :math:`\mathcal{V}(q)`, its fixed point :math:`q^*`, the gradient growth factor
  :math:`\chi_1` and the critical :math:`\sigma_w^2` where :math:`\chi_1 = 1`.
* **Least squares** (full-batch gradient descent on a linear model with MSE): the Hessian, its
  extreme eigenvalues, the stability threshold :math:`2/\lambda_{max}`, the best fixed step and
  the contraction per step.
* **Sharpness** of any loss given its gradient: Lanczos on Hessian-vector products by central
  differences for :math:`\lambda_{max}`, the dense Hessian of a small network (the batchnorm
  study's sharpness at initialisation; the tests' power-iteration reference is in
  ``tests/naive.py``).

Novikoff's perceptron bound lives in :mod:`simcore.perceptron` (``novikoff_bound``, ``margin``,
``radius``) and is not repeated here.

Every public function checks its arguments and raises ``ValueError`` naming the bad one.

Gaussian expectations
---------------------
:math:`E_{z \sim N(0,1)}[g(\sqrt{q} z)]` is computed by :func:`gaussian_expectation`: the
integrand is folded onto :math:`z \ge 0` (:math:`g(\sqrt q z) + g(-\sqrt q z)`), so the kink
of relu and leaky relu at 0 sits on the end of the range, and the half line
:math:`[0, 13]` is cut into panels at two scales (width 0.25 in :math:`z`, where the Gaussian
changes, and width 0.25 in :math:`x = \sqrt q z` near 0, where the activation changes), each
integrated by 20-point Gauss-Legendre. For all six activations and any :math:`q` from 0 to
1e300 it matches the closed forms (relu, leaky relu, identity) and the large-q asymptotics to
about 1e-15 relative, and scipy's adaptive ``quad`` to 1e-10 (where they differ, at q ~ 1e6,
``quad`` is the one that is off). Plain Gauss-Hermite quadrature
(``hermegauss``) is not: with 200 nodes its node spacing near 0 is about 0.16, so for
:math:`q \gtrsim 4` it misses the peak of :math:`\tanh'(\sqrt q z)^2` of width
:math:`1/\sqrt q` (relative error 1e-6 at q = 4, 1e-3 at q = 10, 60 % at q = 100), which is where
the critical :math:`\sigma_w^2` of sigmoid (about 16-100) lies.
"""
import math
import numbers
from collections import namedtuple

import numpy as np
from scipy import optimize
from scipy.sparse.linalg import LinearOperator, eigsh

from simcore import _validate
from simcore.init import INITS, weight_std
from simcore.mlp import MLP
from simcore.scalar import LEAKY_SLOPE

__all__ = [
    "ACTIVATION_FUNCS", "gaussian_expectation", "variance_map", "variance_trajectory", "q_star",
    "chi_1", "critical_sigma_w2", "depth_scale", "log_gradient_growth", "finite_width_log_growth",
    "correlation_map", "c_star", "chi_c", "correlation_depth_scale", "sigma_w2_of_init",
    "sigmoid_derivative_bound", "sigmoid_gradient_bound", "bn_gradient_factor",
    "bn_log_gradient_growth", "random_mlp_telemetry",
    "ls_design", "ls_hessian", "ls_spectrum", "ls_threshold", "ls_optimal_step",
    "ls_contraction", "ls_optimal_contraction", "ls_condition_number", "ls_solution",
    "LSSolution", "heavy_ball_factor", "heavy_ball_contraction", "heavy_ball_threshold",
    "heavy_ball_optimal", "heavy_ball_excess", "sigmoid_escape_time",
    "exact_hessian", "sharpness_lanczos",
    "mlp_grad_fn", "mlp_sharpness",
    # batchnorm
    "bn_scale_variant_mask", "hessian_block_sharpness", "bn_scale_variant_sharpness",
    "bn_weight_norm_growth",
]


# ============================================================================================
# Activations: vectorised NumPy twins of simcore.scalar's formulas
# ============================================================================================

def _identity(z):
    return np.asarray(z, dtype=np.float64) * 1.0


def _identity_grad(z):
    return np.ones_like(np.asarray(z, dtype=np.float64))


def _sigmoid(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(-np.abs(z))  # never overflows
    r = 1.0 / (1.0 + e)
    return np.where(z >= 0, r, e * r)


def _sigmoid_grad(z):
    s = _sigmoid(z)
    return s * (1.0 - s)


def _tanh(z):
    return np.tanh(np.asarray(z, dtype=np.float64))


def _tanh_grad(z):
    t = _tanh(z)
    return 1.0 - t * t


def _relu(z):
    z = np.asarray(z, dtype=np.float64)
    return np.where(z > 0, z, 0.0)


def _relu_grad(z):
    z = np.asarray(z, dtype=np.float64)
    return np.where(z > 0, 1.0, 0.0)  # 0 at z = 0, PyTorch's convention


def _leaky_relu(z):
    z = np.asarray(z, dtype=np.float64)
    return np.where(z > 0, z, LEAKY_SLOPE * z)


def _leaky_relu_grad(z):
    z = np.asarray(z, dtype=np.float64)
    return np.where(z > 0, 1.0, LEAKY_SLOPE)


def _softplus(z):
    z = np.asarray(z, dtype=np.float64)
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


#: name -> (f, f') as vectorised NumPy functions of the pre-activation z (float64), with the same
#: formulas and conventions as :mod:`simcore.scalar` (leaky slope ``LEAKY_SLOPE`` = 0.01,
#: relu'(0) = 0, softplus' = sigmoid).
ACTIVATION_FUNCS = {
    "identity": (_identity, _identity_grad),
    "sigmoid": (_sigmoid, _sigmoid_grad),
    "tanh": (_tanh, _tanh_grad),
    "relu": (_relu, _relu_grad),
    "leaky_relu": (_leaky_relu, _leaky_relu_grad),
    "softplus": (_softplus, _sigmoid),
}


# ============================================================================================
# Argument checks
# ============================================================================================

def _activation(name):
    return _validate.choice("activation", name, ACTIVATION_FUNCS)


def _nonneg(name, value):
    return _validate.real(name, value, 0.0)


def _positive(name, value):
    return _validate.real(name, value, 0.0, strict_minimum=True)


def _q_value(name, q):
    """A variance: a real number in [0, inf] (inf allowed, NaN not)."""
    if isinstance(q, bool) or not isinstance(q, numbers.Real) or math.isnan(q) or q < 0:
        raise ValueError(f"{name} must be a real number >= 0 (inf allowed), got {q!r}")
    return float(q)


# ============================================================================================
# Gaussian expectations
# ============================================================================================

_GL_X, _GL_W = np.polynomial.legendre.leggauss(20)
_Z_MAX = 13.0        # phi(13) ~ 1e-37: the Gaussian tail beyond is negligible for any f^2 here
_PANEL = 0.25        # panel width, in z (Gaussian scale) and in x = sqrt(q) z (activation scale)
_X_EDGES = np.concatenate([np.arange(0.0, 8.0, _PANEL), np.geomspace(8.0, 128.0, 17)])
_Z_EDGES = np.linspace(0.0, _Z_MAX, int(round(_Z_MAX / _PANEL)) + 1)
_Q_TINY = float(np.finfo(np.float64).tiny)  # q -> 0+ limit
_Q_HUGE = 1e300                              # q -> inf limit


def _half_line_rule(sqrt_q):
    """Nodes z in (0, Z_MAX) and weights w (Gauss-Legendre weight times phi(z)) on the panels."""
    edges = _Z_EDGES
    if sqrt_q > 0:
        fine = _X_EDGES / sqrt_q
        edges = np.union1d(edges, fine[fine < _Z_MAX])
    a, b = edges[:-1, None], edges[1:, None]
    half = 0.5 * (b - a)
    z = (a + b) * 0.5 + half * _GL_X
    w = half * _GL_W * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return z.ravel(), w.ravel()


def gaussian_expectation(func, q=1.0):
    r"""The Gaussian average :math:`E_{z \sim N(0,1)}[g(\sqrt{q}\, z)]`.

    .. math::
        E[g(\sqrt q z)] = \int_0^\infty \big(g(\sqrt q z) + g(-\sqrt q z)\big)\,
        \frac{e^{-z^2/2}}{\sqrt{2\pi}}\, dz,

    by composite Gauss-Legendre quadrature on panels at the Gaussian's scale and at the
    activation's scale (see the module docstring); a kink of ``func`` at 0 (relu) sits on the
    end of the range, so it costs no accuracy. For ``q = 0`` the value is ``g(0)``.

    Parameters
    ----------
    func : callable
        Vectorised: maps a float64 array to an array of the same shape.
    q : float >= 0
        Variance of the argument, up to 1e300 (finite).

    Returns
    -------
    float
    """
    if not callable(func):
        raise ValueError(f"func must be a callable of an array, got {type(func).__name__}")
    q = _q_value("q", q)
    if not q <= _Q_HUGE:
        raise ValueError(f"q must be finite and <= {_Q_HUGE:g}, got {q}")
    if q == 0.0:
        return float(np.asarray(func(np.zeros(1)), dtype=np.float64).reshape(-1)[0])
    s = math.sqrt(q)
    z, w = _half_line_rule(s)
    x = s * z
    vals = np.asarray(func(x), dtype=np.float64) + np.asarray(func(-x), dtype=np.float64)
    return float(np.dot(w, vals))


def _mean_f2(activation, q):
    f = ACTIVATION_FUNCS[activation][0]
    return gaussian_expectation(lambda x: f(x) ** 2, q)


def _mean_df2(activation, q):
    """E[f'(sqrt(q) z)^2], with q = 0 and q = inf read as the limits q -> 0+ and q -> inf."""
    df = ACTIVATION_FUNCS[activation][1]
    q = min(max(q, _Q_TINY), _Q_HUGE)
    return gaussian_expectation(lambda x: df(x) ** 2, q)


# ============================================================================================
# Mean-field theory
# ============================================================================================

def variance_map(activation, q, sigma_w2, sigma_b2):
    r"""The length map of mean-field theory (Poole et al. 2016, eq. 3).

    .. math:: \mathcal{V}(q) = \sigma_w^2\, E_{z \sim N(0,1)}\big[f(\sqrt{q}\, z)^2\big] + \sigma_b^2

    the variance of a pre-activation of layer :math:`l+1` when those of layer :math:`l` have
    variance :math:`q`, for weights :math:`N(0, \sigma_w^2/\text{fan\_in})` and biases
    :math:`N(0, \sigma_b^2)` in the wide limit.

    Parameters
    ----------
    activation : str
        A key of :data:`ACTIVATION_FUNCS`.
    q : float >= 0 or array_like of them
    sigma_w2, sigma_b2 : float >= 0

    Returns
    -------
    float, or an array shaped like ``q``.
    """
    activation = _activation(activation)
    sigma_w2 = _nonneg("sigma_w2", sigma_w2)
    sigma_b2 = _nonneg("sigma_b2", sigma_b2)
    if np.ndim(q) == 0:
        q = _q_value("q", q.item() if isinstance(q, np.generic) else q)
        if math.isinf(q):
            raise ValueError("q must be finite")
        return sigma_w2 * _mean_f2(activation, q) + sigma_b2
    qs = _validate.array("q", q, min_rows=0, dtype=np.float64)
    if (qs < 0).any():
        raise ValueError("q must hold values >= 0")
    out = np.array([sigma_w2 * _mean_f2(activation, float(v)) + sigma_b2 for v in qs.ravel()])
    return out.reshape(qs.shape)


def variance_trajectory(activation, sigma_w2, sigma_b2, q0, depth):
    r"""The pre-activation variances :math:`q^0, q^1 = \mathcal{V}(q^0), \dots, q^{depth}`.

    The finite-depth prediction: :math:`q^0` is the variance of the first layer's
    pre-activations (for inputs :math:`x` it is :math:`\sigma_w^2 \|x\|^2/d + \sigma_b^2`).

    Returns
    -------
    (depth + 1,) float64 array
    """
    activation = _activation(activation)
    sigma_w2 = _nonneg("sigma_w2", sigma_w2)
    sigma_b2 = _nonneg("sigma_b2", sigma_b2)
    q0 = _nonneg("q0", q0)
    depth = _validate.integer("depth", depth, minimum=0)
    qs = np.empty(depth + 1)
    qs[0] = q0
    for l in range(depth):
        qs[l + 1] = (sigma_w2 * _mean_f2(activation, qs[l]) + sigma_b2
                     if qs[l] <= _Q_HUGE else np.inf)
    return qs


_FIXED_RTOL = 1e-13  # |V(q0) - q0| <= this * q0 reads as "q0 is a fixed point"


def q_star(activation, sigma_w2, sigma_b2, q0=1.0, q_floor=1e-10, q_ceiling=1e8):
    r"""The fixed point :math:`q^* = \mathcal{V}(q^*)` that the iteration
    :math:`q^{l+1} = \mathcal{V}(q^l)` reaches from :math:`q^0` (Poole et al. 2016).

    :math:`\mathcal{V}` is non-decreasing in :math:`q` for all six activations, so the iterates
    move monotonically towards the nearest fixed point in the direction of
    :math:`\mathcal{V}(q^0) - q^0`. That root is bracketed by geometric steps and refined by
    Brent's method (no slow iteration near criticality).

    What it returns:

    * a finite :math:`q^* > 0`: the attracting fixed point (for tanh, sigmoid and softplus with
      :math:`\sigma_b^2 > 0`, and relu-like maps with :math:`\sigma_w^2 c < 1`, it is unique);
    * ``0.0`` when the iterates decay to 0: :math:`f(0) = 0`, :math:`\sigma_b^2 = 0` and the map
      contracts (tanh with :math:`\sigma_w^2 \le 1`, relu with :math:`\sigma_w^2 < 2`, identity
      with :math:`\sigma_w^2 < 1`); fixed points below ``q_floor`` are also reported as 0;
    * ``np.inf`` when the iterates grow without bound (no finite fixed point above
      :math:`q^0`): relu with :math:`\sigma_w^2 > 2`, or :math:`\sigma_w^2 = 2` and
      :math:`\sigma_b^2 > 0`; softplus with :math:`\sigma_w^2 \ge 2` (at 2,
      :math:`\mathcal{V}(q) - q \sim C/\sqrt{q} > 0`: slow but unbounded growth); identity with
      :math:`\sigma_w^2 > 1`. A fixed point above ``q_ceiling`` is reported as ``inf`` too;
    * ``q0`` itself when :math:`\mathcal{V}(q^0) = q^0` to 1e-13 relative: in particular when
      every :math:`q` is a fixed point (relu with :math:`\sigma_w^2 = 2, \sigma_b^2 = 0`, He's
      initialisation; leaky relu at :math:`\sigma_w^2 = 2/(1 + 0.01^2)`; identity with
      :math:`\sigma_w^2 = 1, \sigma_b^2 = 0`), the variance stays where it started.

    Parameters
    ----------
    activation : str
    sigma_w2, sigma_b2 : float >= 0
    q0 : float >= 0
        Variance of the first layer's pre-activations (the start of the iteration).
    q_floor, q_ceiling : float
        ``0 < q_floor < q_ceiling``: the range in which a fixed point is resolved.

    Returns
    -------
    float in [0, inf]
    """
    activation = _activation(activation)
    sigma_w2 = _nonneg("sigma_w2", sigma_w2)
    sigma_b2 = _nonneg("sigma_b2", sigma_b2)
    q0 = _nonneg("q0", q0)
    q_floor = _positive("q_floor", q_floor)
    q_ceiling = _positive("q_ceiling", q_ceiling)
    if q_ceiling <= q_floor:
        raise ValueError(f"q_ceiling must be > q_floor={q_floor}, got {q_ceiling}")

    def V(q):
        return sigma_w2 * _mean_f2(activation, q) + sigma_b2

    def g(q):
        return V(q) - q

    def root(lo, hi):
        return optimize.brentq(g, lo, hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=300)

    g0 = g(q0)
    if abs(g0) <= _FIXED_RTOL * q0:  # V = identity map (to rounding): q stays at q0
        return q0
    if g0 > 0:  # the iterates increase: smallest fixed point above q0
        lo, hi = q0, max(q0 + g0, 2.0 * q0)
        while hi <= q_ceiling:
            ghi = g(hi)
            if ghi == 0.0:
                return hi
            if ghi < 0:
                return root(lo, hi)
            lo, hi = hi, max(2.0 * hi, hi + ghi)
        return math.inf
    # the iterates decrease: largest fixed point below q0; V(q) >= q* for q >= q*
    hi, lo = q0, min(0.5 * q0, q0 + g0)
    while lo >= q_floor:
        glo = g(lo)
        if glo == 0.0:
            return lo
        if glo > 0:
            return root(lo, hi)
        hi, lo = lo, min(0.5 * lo, lo + glo)
    if g(0.0) > 0:  # f(0) != 0 or sigma_b2 > 0: a fixed point in (0, hi)
        return root(0.0, hi)
    return 0.0


def chi_1(activation, sigma_w2, sigma_b2, q=None):
    r"""The gradient growth factor per layer (Schoenholz et al. 2017, eq. 5; Poole et al.'s
    :math:`\chi_1`):

    .. math:: \chi_1 = \sigma_w^2\, E_{z \sim N(0,1)}\big[f'(\sqrt{q^*}\, z)^2\big]

    the factor that multiplies the expected squared norm of the backpropagated gradient per
    layer. :math:`\chi_1 < 1`: ordered phase, gradients vanish; :math:`> 1`: chaotic, they
    explode. At :math:`q^* = 0` (or ``inf``) the limit :math:`q \to 0^+` (:math:`\to \infty`)
    is used: :math:`\sigma_w^2 f'(0)^2` for smooth f, and :math:`\sigma_w^2 (1 + a^2)/2` for
    (leaky) relu on every branch.

    Parameters
    ----------
    activation : str
    sigma_w2, sigma_b2 : float >= 0
    q : float >= 0 or inf, optional
        The variance to evaluate at; default :func:`q_star` ``(activation, sigma_w2, sigma_b2)``.

    Returns
    -------
    float
    """
    activation = _activation(activation)
    sigma_w2 = _nonneg("sigma_w2", sigma_w2)
    sigma_b2 = _nonneg("sigma_b2", sigma_b2)
    q = q_star(activation, sigma_w2, sigma_b2) if q is None else _q_value("q", q)
    return sigma_w2 * _mean_df2(activation, q)


def critical_sigma_w2(activation, sigma_b2, max_sigma_w2=1e6):
    r"""The edge of chaos: the :math:`\sigma_w^2` at which :math:`\chi_1 = 1`, by Brent's method.

    .. math:: \sigma_w^2\, E\big[f'(\sqrt{q^*(\sigma_w^2, \sigma_b^2)}\, z)^2\big] = 1

    tanh with :math:`\sigma_b^2 = 0`: 1; relu: 2 for any :math:`\sigma_b^2` (He's
    initialisation), since :math:`E[\mathrm{relu}'^2] = 1/2` at every q; identity: 1;
    leaky relu: :math:`2/(1 + 0.01^2)`; tanh with :math:`\sigma_b^2 > 0`: above 1.

    Parameters
    ----------
    activation : str
    sigma_b2 : float >= 0
    max_sigma_w2 : float
        Search bound; ValueError if :math:`\chi_1 < 1` up to it.

    Returns
    -------
    float
    """
    activation = _activation(activation)
    sigma_b2 = _nonneg("sigma_b2", sigma_b2)
    max_sigma_w2 = _positive("max_sigma_w2", max_sigma_w2)

    def h(sw):
        return chi_1(activation, sw, sigma_b2) - 1.0

    lo, hi = 0.0, 1.0  # chi_1 = 0 at sigma_w2 = 0
    while h(hi) < 0:
        lo, hi = hi, 2.0 * hi
        if hi > max_sigma_w2:
            raise ValueError(f"chi_1 stays below 1 for sigma_w2 up to max_sigma_w2={max_sigma_w2} "
                             f"(activation={activation!r}, sigma_b2={sigma_b2})")
    return optimize.brentq(h, lo, hi, xtol=1e-13, rtol=4 * np.finfo(float).eps, maxiter=300)


def depth_scale(activation, sigma_w2, sigma_b2):
    r"""The gradient depth scale :math:`\xi_\nabla = -1/\ln \chi_1` (Schoenholz et al. 2017).

    :math:`E\|\nabla_{W_l}\|^2 \propto \chi_1^{L-l} = e^{-(L-l)/\xi_\nabla}`: positive in the
    ordered phase (gradients decay over :math:`\xi_\nabla` layers), negative in the chaotic
    phase (they grow over :math:`|\xi_\nabla|` layers), ``inf`` at :math:`\chi_1 = 1`.
    """
    c = chi_1(activation, sigma_w2, sigma_b2)
    if c == 1.0:
        return math.inf
    if c == 0.0:
        return 0.0
    return -1.0 / math.log(c)


def log_gradient_growth(activation, sigma_w2, sigma_b2):
    r"""The predicted slope of :math:`\ln \|\partial L/\partial W_l\|` per layer, moving from the
    output towards the input: :math:`\ln\sqrt{\chi_1} = \tfrac12 \ln \chi_1`.

    Negative in the ordered phase (vanishing), positive in the chaotic phase (exploding), 0 at
    the edge of chaos; ``-inf`` when :math:`\chi_1 = 0`.
    """
    c = chi_1(activation, sigma_w2, sigma_b2)
    return 0.5 * math.log(c) if c > 0 else -math.inf


def sigma_w2_of_init(init, fan_in, fan_out=None, scale=1.0):
    r"""The :math:`\sigma_w^2` (weight variance times fan-in) of simcore's initialisations.

    .. math:: \sigma_w^2 = \text{fan\_in} \cdot \mathrm{Var}(W_{ij})

    glorot: :math:`2\,\text{fan\_in}/(\text{fan\_in} + \text{fan\_out})` (1 for square layers),
    he: 2, lecun and normal: 1, uniform :math:`U[\pm 1/\sqrt{\text{fan\_in}}]`: 1/3; all times
    ``scale**2`` (``MLP.init(scale=...)``). From :func:`simcore.init.weight_std`.

    Parameters
    ----------
    init : str
        One of ``simcore.init.INITS``.
    fan_in : int >= 1
    fan_out : int >= 1, optional
        Defaults to ``fan_in`` (a square hidden layer).
    scale : float >= 0
    """
    init = _validate.choice("init", init, INITS)
    fan_in = _validate.integer("fan_in", fan_in, minimum=1)
    fan_out = fan_in if fan_out is None else _validate.integer("fan_out", fan_out, minimum=1)
    scale = _nonneg("scale", scale)
    return fan_in * (scale * weight_std(init, fan_in, fan_out)) ** 2


def sigmoid_derivative_bound():
    r"""The maximum of :math:`\sigma'(z) = \sigma(z)(1 - \sigma(z))`: :math:`\sigma'(0) = 1/4`.

    :math:`\sigma(1-\sigma)` is a downward parabola in :math:`\sigma \in (0,1)` with its top at
    :math:`\sigma = 1/2`, i.e. :math:`z = 0`; evaluated here through :data:`ACTIVATION_FUNCS`.
    """
    return float(_sigmoid_grad(0.0))


def sigmoid_gradient_bound(n_layers, weight_norms=None):
    r"""Upper bound on how much backprop through ``n_layers`` sigmoid layers can scale a gradient.

    With :math:`\delta_{l-1} = (\delta_l W_l^T) \odot \sigma'(z_{l-1})` (rows are samples) and
    :math:`0 < \sigma' \le 1/4`,

    .. math::
        \|\delta_{l-n}\|_F \le \Big(\tfrac14\Big)^{n} \prod_{k} \|W_k\|_2\; \|\delta_l\|_F,

    the product running over the ``n`` weight matrices crossed (spectral norms). For one sample,
    :math:`\partial L/\partial b_l = \delta_l`, so this bounds
    :math:`\|\partial L/\partial b_{early}\| / \|\partial L/\partial b_{late}\|`;
    :math:`\|\partial L/\partial W_l\| = \|a_{l-1}^T \delta_l\|` carries the activations' norms
    besides. For an MLP with L dense layers, the output delta reaches layer 1 through
    ``n_layers = L - 1`` sigmoid layers and the weights :math:`W_2, \dots, W_L`.

    Parameters
    ----------
    n_layers : int >= 0
    weight_norms : sequence of n_layers floats >= 0, optional
        Spectral norms :math:`\|W_k\|_2` of the weight matrices crossed; default 1 each, giving
        the pure :math:`(1/4)^n`.

    Returns
    -------
    float
    """
    n_layers = _validate.integer("n_layers", n_layers, minimum=0)
    bound = sigmoid_derivative_bound() ** n_layers
    if weight_norms is not None:
        norms = _validate.array("weight_norms", weight_norms, ndim=1, dtype=np.float64, min_rows=0)
        if norms.shape != (n_layers,):
            raise ValueError(f"weight_norms must have {n_layers} entries (one per layer crossed), "
                             f"got shape {norms.shape}")
        if (norms < 0).any():
            raise ValueError("weight_norms must be >= 0")
        bound *= float(np.prod(norms))
    return bound


# ============================================================================================
# vanishing-gradients: finite-width gradient growth, the correlation depth scale, batch norm's
# gradient explosion, and random networks simulated at the grid's own width and batch
# ============================================================================================

def _mean_df4(activation, q):
    df = ACTIVATION_FUNCS[activation][1]
    q = min(max(q, _Q_TINY), _Q_HUGE)
    return gaussian_expectation(lambda x: df(x) ** 4, q)


def finite_width_log_growth(activation, sigma_w2, sigma_b2, width, q=None):
    r"""The expected per-layer growth of :math:`\ln\|\delta_l\|` (towards the input) at finite
    width N, to first order in 1/N:

    .. math::
        E \ln\frac{\|\delta_l\|}{\|\delta_{l+1}\|} = \tfrac12 \ln\chi_1
        - \frac{1}{4N}\Big(\frac{3\,E[f'(u)^4]}{E[f'(u)^2]^2} - 1\Big),\qquad u \sim N(0, q).

    Why: :math:`\delta_l = f'(z_l) \odot (W_{l+1}^T \delta_{l+1})`, and (gradient independence)
    :math:`(W^T\delta_{l+1})_i \sim N(0, \sigma_w^2\|\delta_{l+1}\|^2/N)` independently of
    :math:`z_l`, so the squared ratio :math:`r = (\sigma_w^2/N)\sum_i f'(z_i)^2 g_i^2` has mean
    :math:`\chi_1` and relative variance :math:`(3E f'^4/(E f'^2)^2 - 1)/N`; and
    :math:`E\ln r = \ln E r - \mathrm{Var}\, r/(2 (E r)^2) + O(N^{-2})` (Jensen). relu: 5/(4N);
    tanh at :math:`q \to 0`: 1/(2N).

    Parameters
    ----------
    activation : str
    sigma_w2, sigma_b2 : float >= 0
    width : int >= 1
        N, the fan-in of the layer the gradient crosses.
    q : float >= 0, optional
        Variance of the pre-activations; default :func:`q_star`.
    """
    activation = _activation(activation)
    sigma_w2 = _nonneg("sigma_w2", sigma_w2)
    sigma_b2 = _nonneg("sigma_b2", sigma_b2)
    width = _validate.integer("width", width, minimum=1)
    q = q_star(activation, sigma_w2, sigma_b2) if q is None else _q_value("q", q)
    m2 = _mean_df2(activation, q)
    if m2 <= 0 or sigma_w2 == 0:
        return -math.inf
    kurt = 3.0 * _mean_df4(activation, q) / m2 ** 2
    return 0.5 * math.log(sigma_w2 * m2) - (kurt - 1.0) / (4.0 * width)


# tensor-product Gauss-Legendre on [-12, 12]^2 with the Gaussian weight: node spacing ~0.06,
# which resolves tanh'(sqrt(q) z)^2 (width 1/sqrt(q)) for q up to about 25
_BIV_NODES, _BIV_W = np.polynomial.legendre.leggauss(400)
_BIV_Z = 12.0 * _BIV_NODES
_BIV_W = 12.0 * _BIV_W * np.exp(-0.5 * _BIV_Z ** 2) / math.sqrt(2 * math.pi)
_BIV_QMAX = 25.0


def _bivariate(g1, g2, q, c):
    """E[g1(u1) g2(u2)] for (u1, u2) Gaussian with variances q and correlation c."""
    s = math.sqrt(q)
    z1 = _BIV_Z[:, None]
    z2 = _BIV_Z[None, :]
    u1 = s * z1
    u2 = s * (c * z1 + math.sqrt(max(0.0, 1.0 - c * c)) * z2)
    return float(_BIV_W @ (np.asarray(g1(u1)) * np.asarray(g2(u2))) @ _BIV_W)


def _fixed_q(activation, sigma_w2, sigma_b2):
    q = q_star(activation, sigma_w2, sigma_b2)
    if not 0 < q <= _BIV_QMAX:
        raise ValueError(f"the correlation map needs a finite q* in (0, {_BIV_QMAX:g}]; "
                         f"{activation} with sigma_w2={sigma_w2}, sigma_b2={sigma_b2} has q*={q}")
    return q


def correlation_map(activation, c, sigma_w2, sigma_b2):
    r"""The correlation map of mean-field theory (Poole et al. 2016; Schoenholz et al. 2017, eq. 4):

    .. math:: \mathcal{C}(c) = \frac{\sigma_w^2\, E[f(u_1) f(u_2)] + \sigma_b^2}{q^*},

    :math:`(u_1, u_2)` Gaussian with variances :math:`q^*` and correlation c: the correlation of
    two inputs' pre-activations one layer deeper. Needs :math:`0 < q^* \le 25` (the quadrature's
    range); raises ValueError otherwise.
    """
    activation = _activation(activation)
    c = _validate.real("c", c, -1.0)
    if c > 1:
        raise ValueError(f"c must be in [-1, 1], got {c}")
    q = _fixed_q(activation, _nonneg("sigma_w2", sigma_w2), _nonneg("sigma_b2", sigma_b2))
    f = ACTIVATION_FUNCS[activation][0]
    return (sigma_w2 * _bivariate(f, f, q, c) + sigma_b2) / q


def c_star(activation, sigma_w2, sigma_b2):
    r"""The stable fixed point :math:`c^*` of :func:`correlation_map`: 1 in the ordered phase
    (:math:`\chi_1 \le 1`, every pair of inputs becomes aligned), and below 1 in the chaotic phase
    (:math:`\chi_1 > 1`, where :math:`\mathcal{C}'(1) = \chi_1` makes c = 1 unstable): the root of
    :math:`\mathcal{C}(c) = c` in [0, 1) by Brent's method."""
    if chi_1(activation, sigma_w2, sigma_b2) <= 1.0:
        return 1.0

    def g(c):
        return correlation_map(activation, c, sigma_w2, sigma_b2) - c

    hi = 1.0 - 1e-6
    if g(0.0) <= 0.0:          # odd f with sigma_b2 = 0: C(0) = 0
        return 0.0
    return optimize.brentq(g, 0.0, hi, xtol=1e-12)


def chi_c(activation, sigma_w2, sigma_b2):
    r""":math:`\chi_c = \sigma_w^2 E[f'(u_1) f'(u_2)]` at :math:`(q^*, c^*)`: the slope of the
    correlation map at its fixed point (Schoenholz et al. 2017, eq. 8); equals :math:`\chi_1` in
    the ordered phase (:math:`c^* = 1`)."""
    cs = c_star(activation, sigma_w2, sigma_b2)
    if cs == 1.0:
        return chi_1(activation, sigma_w2, sigma_b2)
    q = _fixed_q(activation, sigma_w2, sigma_b2)
    df = ACTIVATION_FUNCS[activation][1]
    return sigma_w2 * _bivariate(df, df, q, cs)


def correlation_depth_scale(activation, sigma_w2, sigma_b2):
    r"""The depth scale of correlation propagation, :math:`\xi_c = -1/\ln\chi_c` (Schoenholz et
    al. 2017, eq. 9): :math:`|c^l - c^*| \sim e^{-l/\xi_c}`. It diverges at the edge of chaos;
    networks are trainable to depths of about :math:`6\xi_c`. In the ordered phase it equals
    :func:`depth_scale`."""
    x = chi_c(activation, sigma_w2, sigma_b2)
    if x >= 1.0:
        return math.inf
    if x <= 0.0:
        return 0.0
    return -1.0 / math.log(x)


def bn_gradient_factor(activation):
    r"""Batch norm's per-layer gradient factor at initialisation (Yang et al. 2019, "A mean field
    theory of batch normalization"), in the wide, large-batch limit:

    .. math:: \lambda_{BN}(f) = \frac{E[f'(z)^2]}{\mathrm{Var}[f(z)]},\qquad z \sim N(0, 1),

    by quadrature: a batch-normalised layer's input has unit variance whatever the weights'
    scale, and backprop through the normalisation divides by the std of the layer below,
    :math:`\sqrt{\sigma_w^2 \mathrm{Var} f}`, while the dense layer multiplies by
    :math:`\sigma_w^2 E f'^2`: :math:`\sigma_w^2` cancels. relu: 1/(1 - 1/pi) = 1.467.
    """
    activation = _activation(activation)
    f, df = ACTIVATION_FUNCS[activation]
    var = gaussian_expectation(lambda x: f(x) ** 2, 1.0) - gaussian_expectation(f, 1.0) ** 2
    return gaussian_expectation(lambda x: df(x) ** 2, 1.0) / var


def bn_log_gradient_growth(activation):
    r"""The predicted growth of :math:`\ln\|\partial L/\partial W_l\|` per batch-normalised layer,
    towards the input: :math:`\tfrac12 \ln \lambda_{BN}(f)` (:func:`bn_gradient_factor`)."""
    return 0.5 * math.log(bn_gradient_factor(activation))


def random_mlp_telemetry(activation, X, y, width, depth, sigma_w2=1.0, sigma_b2=0.0,
                         batchnorm=False, seeds=16, seed=0, bn_eps=1e-5, first_sigma_w2=None):
    r"""Monte Carlo of the mean-field recursions at finite width and batch: ``seeds`` random MLPs
    (weights :math:`N(0, \sigma_w^2/\text{fan\_in})`, biases :math:`N(0, \sigma_b^2)`; ``depth``
    dense layers, hidden ones of ``width`` units, optionally batch-normalised before the
    activation with :math:`\gamma = 1, \beta = 0`; identity output, MSE loss
    :math:`\frac1{nk}\sum (\hat y - y)^2`) on the data (X, y), in plain NumPy, independent of
    simcore. It is the finite-size counterpart of the wide-limit formulas: the same network at the
    grid's width and batch, with Gaussian weights.
    ``first_sigma_w2`` (default ``sigma_w2``) is that of the first layer, whose fan-in is the data's.

    Returns
    -------
    dict of (seeds, depth) arrays: ``grad_norm`` (:math:`\|\partial L/\partial W_l\|_F`) and
    ``preact_std`` (std over samples and units of each layer's activation input: the
    batch-normalised value with batch norm; the output itself for the last layer).
    """
    activation = _activation(activation)
    f, df = ACTIVATION_FUNCS[activation]
    X = _validate.array("X", X, ndim=2, dtype=np.float64)
    Y = np.asarray(y, dtype=np.float64).reshape(X.shape[0], -1)
    width = _validate.integer("width", width, minimum=1)
    depth = _validate.integer("depth", depth, minimum=1)
    seeds = _validate.integer("seeds", seeds, minimum=1)
    n, k = Y.shape
    sizes = [X.shape[1]] + [width] * (depth - 1) + [k]
    sigma_w2 = _nonneg("sigma_w2", sigma_w2)
    sw2s = [sigma_w2 if first_sigma_w2 is None else _nonneg("first_sigma_w2", first_sigma_w2)]
    sw2s += [sigma_w2] * (depth - 1)
    rng = np.random.default_rng(seed)
    grad = np.empty((seeds, depth))
    pstd = np.empty((seeds, depth))
    for s in range(seeds):
        Ws = [rng.normal(0.0, math.sqrt((sw2s[l]) / sizes[l]), (sizes[l], sizes[l + 1])) for l in range(depth)]
        bs = [rng.normal(0.0, math.sqrt(sigma_b2), sizes[l + 1]) for l in range(depth)]
        acts, posts, cache = [X], [], []
        for l in range(depth):
            z = acts[-1] @ Ws[l] + bs[l]
            if batchnorm and l < depth - 1:
                mu = z.mean(axis=0)
                inv = 1.0 / np.sqrt(z.var(axis=0) + bn_eps)
                xhat = (z - mu) * inv
                cache.append((xhat, inv))
                z = xhat
            else:
                cache.append(None)
            posts.append(z)
            pstd[s, l] = z.std()
            if l < depth - 1:
                acts.append(f(z))
        d = 2.0 * (posts[-1] - Y) / (n * k)
        for l in range(depth - 1, -1, -1):
            grad[s, l] = np.linalg.norm(acts[l].T @ d)
            if l == 0:
                break
            d = (d @ Ws[l].T) * df(posts[l - 1])
            if cache[l - 1] is not None:
                xhat, inv = cache[l - 1]
                d = inv * (d - d.mean(axis=0) - xhat * (d * xhat).mean(axis=0))
    return {"grad_norm": grad, "preact_std": pstd}


# ============================================================================================
# Least squares: a linear model with MSE, full-batch gradient descent
# ============================================================================================

def ls_design(X):
    """The design matrix with a bias column appended: ``X_aug = [X, 1]``, shape (N, d + 1).

    The column order matches the flat parameters of ``simcore.MLP([d, k], activation=
    "identity", loss="mse")``: the weights then the bias.
    """
    X = _validate.array("X", X, ndim=2, dtype=np.float64)
    return np.hstack([X, np.ones((X.shape[0], 1))])


def _ls_gram(X, n_out):
    """(2 / (N k)) X_aug^T X_aug: the Hessian block of one output."""
    Xa = ls_design(X)
    n_out = _validate.integer("n_out", n_out, minimum=1)
    return (2.0 / (Xa.shape[0] * n_out)) * (Xa.T @ Xa), n_out


def ls_hessian(X, n_out=1):
    r"""Hessian of the MSE of a linear model :math:`\hat Y = X W + b` with respect to (W, b).

    With the loss :math:`L = \frac{1}{Nk} \sum_{i,j} (\hat Y_{ij} - Y_{ij})^2` (the mean over all
    :math:`N k` elements, PyTorch's and simcore's ``mse``), each output column j is an independent
    least-squares problem with Hessian block

    .. math:: H_j = \frac{2}{N k}\, X_{aug}^T X_{aug}, \qquad X_{aug} = [X, 1],

    constant in the parameters (the loss is quadratic). For k = 1 this is SCIENCE.md's
    :math:`(2/N) X^T X`. The full matrix is returned in the order of ``MLP.pack`` for
    ``MLP([d, k], "identity", "mse")``: W row-major (index :math:`i k + j`), then b (index
    :math:`d k + j`), i.e. :math:`H = \frac{2}{Nk} X_{aug}^T X_{aug} \otimes I_k`.

    Parameters
    ----------
    X : (N, d) array_like
    n_out : int >= 1
        Number of outputs k.

    Returns
    -------
    ((d + 1) k, (d + 1) k) float64 array
    """
    G, n_out = _ls_gram(X, n_out)
    return np.kron(G, np.eye(n_out))


def ls_spectrum(X, n_out=1):
    r"""Extreme eigenvalues :math:`(\lambda_{min}, \lambda_{max})` of :func:`ls_hessian`.

    The eigenvalues of :math:`\frac{2}{Nk} X_{aug}^T X_{aug}` (each k-fold in the full Hessian);
    :math:`\lambda_{min} = 0` when :math:`X_{aug}` has rank below d + 1 (negative rounding is
    clipped to 0).

    Returns
    -------
    (float, float)
    """
    G, _ = _ls_gram(X, n_out)
    ev = np.linalg.eigvalsh(G)
    return max(float(ev[0]), 0.0), float(ev[-1])


def ls_threshold(X, n_out=1):
    r"""The stability threshold of full-batch GD on least squares: :math:`\eta_c = 2/\lambda_{max}`.

    The error along eigenvector i is multiplied by :math:`1 - \eta \lambda_i` per step, so GD
    converges iff :math:`\eta < 2/\lambda_{max}`.
    """
    return 2.0 / ls_spectrum(X, n_out)[1]


def ls_optimal_step(X, n_out=1):
    r"""The best fixed step :math:`\eta^* = 2 / (\lambda_{min} + \lambda_{max})`, which equalises
    :math:`|1 - \eta\lambda_{min}| = |1 - \eta\lambda_{max}|`."""
    lmin, lmax = ls_spectrum(X, n_out)
    return 2.0 / (lmin + lmax)


def _ls_lambdas(lambda_min, lambda_max):
    lambda_min = _nonneg("lambda_min", lambda_min)
    lambda_max = _positive("lambda_max", lambda_max)
    if lambda_max < lambda_min:
        raise ValueError(f"lambda_max must be >= lambda_min={lambda_min}, got {lambda_max}")
    return lambda_min, lambda_max


def ls_contraction(eta, lambda_min, lambda_max):
    r"""The worst contraction per GD step on least squares:

    .. math:: \rho(\eta) = \max\big(|1 - \eta\lambda_{min}|,\ |1 - \eta\lambda_{max}|\big)

    the factor by which the error :math:`\|\theta_t - \theta^*\|` shrinks (< 1) or grows (> 1)
    per step in the slowest direction; the error along eigenvector i scales by exactly
    :math:`|1 - \eta\lambda_i|` (take ``lambda_min = lambda_max = lambda_i`` for one direction).

    Parameters
    ----------
    eta : float >= 0 or array_like of them
    lambda_min, lambda_max : float, ``0 <= lambda_min <= lambda_max``, ``lambda_max > 0``

    Returns
    -------
    float, or an array shaped like ``eta``.
    """
    lambda_min, lambda_max = _ls_lambdas(lambda_min, lambda_max)
    if np.ndim(eta) == 0:
        eta = _nonneg("eta", eta.item() if isinstance(eta, np.generic) else eta)
        return max(abs(1.0 - eta * lambda_min), abs(1.0 - eta * lambda_max))
    etas = _validate.array("eta", eta, min_rows=0, dtype=np.float64)
    if (etas < 0).any():
        raise ValueError("eta must hold values >= 0")
    return np.maximum(np.abs(1.0 - etas * lambda_min), np.abs(1.0 - etas * lambda_max))


def ls_optimal_contraction(lambda_min, lambda_max):
    r"""The contraction at the best fixed step :math:`\eta^*`:

    .. math:: \rho^* = \frac{\lambda_{max} - \lambda_{min}}{\lambda_{max} + \lambda_{min}}
              = \frac{\kappa - 1}{\kappa + 1}, \qquad \kappa = \lambda_{max}/\lambda_{min}.
    """
    lambda_min, lambda_max = _ls_lambdas(lambda_min, lambda_max)
    return (lambda_max - lambda_min) / (lambda_max + lambda_min)


def ls_condition_number(lambda_min, lambda_max):
    r"""The condition number :math:`\kappa = \lambda_{max}/\lambda_{min}` (``inf`` if
    :math:`\lambda_{min} = 0`)."""
    lambda_min, lambda_max = _ls_lambdas(lambda_min, lambda_max)
    return lambda_max / lambda_min if lambda_min > 0 else math.inf


class LSSolution(namedtuple("LSSolution", ["W", "b", "loss"])):
    """The least-squares fit: ``W`` (d, k), ``b`` (k,), ``loss`` the minimal MSE."""

    __slots__ = ()

    @property
    def params(self):
        """The fit as simcore parameters: ``[{"W": W, "b": b}]`` for ``MLP([d, k], "identity")``."""
        return [{"W": self.W, "b": self.b}]


def ls_solution(X, Y):
    r"""The least-squares minimiser and the minimal loss (``numpy.linalg.lstsq``).

    .. math::
        (W^*, b^*) = \arg\min \frac{1}{Nk} \|X W + 1 b^T - Y\|_F^2, \qquad
        L^* = \frac{1}{Nk} \|X_{aug}\theta^* - Y\|_F^2

    (the minimum-norm minimiser if :math:`X_{aug}` is rank deficient). The excess loss of a
    trained linear model is its loss minus ``loss``.

    Parameters
    ----------
    X : (N, d) array_like
    Y : (N,) or (N, k) array_like

    Returns
    -------
    LSSolution(W (d, k), b (k,), loss float)
    """
    Xa = ls_design(X)
    Y = _validate.array("Y", Y, ndim=(1, 2), dtype=np.float64)
    if Y.shape[0] != Xa.shape[0]:
        raise ValueError(f"Y must have {Xa.shape[0]} rows to match X, got shape {Y.shape}")
    Y2 = Y.reshape(Y.shape[0], -1)
    theta, *_ = np.linalg.lstsq(Xa, Y2, rcond=None)
    loss = float(np.mean((Xa @ theta - Y2) ** 2))
    return LSSolution(theta[:-1].copy(), theta[-1].copy(), loss)


# ============================================================================================
# convergence: heavy-ball momentum on least squares, and the escape of a saturated sigmoid unit
# ============================================================================================

def _hb_args(eta, beta):
    eta = _nonneg("eta", eta)
    beta = _nonneg("beta", beta)
    if beta >= 1.0:
        raise ValueError(f"beta must be < 1, got {beta}")
    return eta, beta


def heavy_ball_factor(eta, beta, lam):
    r"""Spectral radius of heavy-ball momentum along one eigen-direction of curvature
    :math:`\lambda`.

    Polyak's heavy ball, :math:`\theta_{t+1} = \theta_t - \eta\nabla L(\theta_t) + \beta(\theta_t -
    \theta_{t-1})` (simcore's ``momentum``: :math:`v \leftarrow \beta v + g,\ \theta \leftarrow
    \theta - \eta v`, the same iteration), moves the error :math:`d` along an eigenvector of a
    quadratic by :math:`d_{t+1} = (1 + \beta - \eta\lambda) d_t - \beta d_{t-1}`; its factor per
    step is the largest modulus of the roots of

    .. math:: x^2 - (1 + \beta - \eta\lambda)\,x + \beta = 0,

    :math:`\sqrt\beta` when the roots are complex, else :math:`(|a| + \sqrt{a^2 - 4\beta})/2`
    with :math:`a = 1 + \beta - \eta\lambda`.

    Parameters
    ----------
    eta : float >= 0, or array_like of them broadcastable against ``lam``
    beta : float in [0, 1)
    lam : float or array_like of curvatures >= 0

    Returns
    -------
    float, or an array shaped like ``eta * lam``.
    """
    eta_arr = np.asarray(eta, dtype=np.float64)
    if not np.all(np.isfinite(eta_arr)) or (eta_arr < 0).any():
        raise ValueError(f"eta must hold finite values >= 0, got {eta!r}")
    _, beta = _hb_args(0.0, beta)
    lam_arr = np.asarray(lam, dtype=np.float64)
    if (lam_arr < 0).any() or not np.all(np.isfinite(lam_arr)):
        raise ValueError("lam must hold finite curvatures >= 0")
    a = 1.0 + beta - eta_arr * lam_arr
    disc = a * a - 4.0 * beta
    real = (np.abs(a) + np.sqrt(np.maximum(disc, 0.0))) / 2.0
    out = np.where(disc >= 0, real, math.sqrt(beta))
    return float(out) if out.ndim == 0 else out


def heavy_ball_contraction(eta, beta, lambdas):
    r"""The worst factor per step of heavy-ball momentum on a quadratic with curvatures
    ``lambdas``: :math:`\rho(\eta, \beta) = \max_i` :func:`heavy_ball_factor` :math:`(\eta, \beta,
    \lambda_i)`; the error shrinks iff :math:`\rho < 1`. A float for a scalar ``eta``, an array
    shaped like ``eta`` otherwise."""
    lam = _validate.array("lambdas", lambdas, ndim=1, dtype=np.float64)
    if np.ndim(eta) == 0:
        return float(np.max(heavy_ball_factor(eta, beta, lam)))
    eta = np.asarray(eta, dtype=np.float64)
    return np.max(heavy_ball_factor(eta[..., None], beta, lam), axis=-1)


def heavy_ball_threshold(beta, lambda_max):
    r"""The stability threshold of heavy-ball momentum: :math:`\eta_c = 2(1 + \beta)/\lambda_{max}`.

    At :math:`\eta\lambda = 2(1 + \beta)` a root of :math:`x^2 - (1 + \beta - \eta\lambda)x + \beta`
    reaches -1 (for :math:`\beta = 0` it is gradient descent's :math:`2/\lambda_{max}`).
    """
    _, beta = _hb_args(0.0, beta)
    return 2.0 * (1.0 + beta) / _positive("lambda_max", lambda_max)


def heavy_ball_optimal(lambda_min, lambda_max):
    r"""Polyak's best (eta, beta) on a quadratic with curvatures in
    :math:`[\lambda_{min}, \lambda_{max}]` and the factor per step it gives:

    .. math::
        \eta^* = \frac{4}{(\sqrt{\lambda_{max}} + \sqrt{\lambda_{min}})^2}, \qquad
        \beta^* = \Big(\frac{\sqrt\kappa - 1}{\sqrt\kappa + 1}\Big)^2, \qquad
        \rho^* = \sqrt{\beta^*} = \frac{\sqrt\kappa - 1}{\sqrt\kappa + 1}.

    Returns
    -------
    (eta, beta, rho) floats
    """
    lambda_min, lambda_max = _ls_lambdas(lambda_min, lambda_max)
    a, b = math.sqrt(lambda_max), math.sqrt(lambda_min)
    rho = (a - b) / (a + b)
    return 4.0 / (a + b) ** 2, rho * rho, rho


def heavy_ball_excess(lambdas, c0, eta, beta, steps):
    r"""Exact excess loss :math:`L_t - L^* = \sum_i \frac{\lambda_i}{2} d_{i,t}^2` of heavy-ball
    momentum on a quadratic, from the error :math:`c_0` along each eigenvector and zero velocity
    (simcore starts with :math:`v = 0`): :math:`v_{t+1} = \beta v_t + \lambda d_t`,
    :math:`d_{t+1} = d_t - \eta v_{t+1}`. With ``beta = 0`` it is gradient descent's
    :math:`\sum_i \frac{\lambda_i}{2} c_i^2 (1 - \eta\lambda_i)^{2t}`.

    Parameters
    ----------
    lambdas, c0 : (n,) array_like, the curvatures (>= 0) and the initial error along each
    eta, beta : floats, ``eta >= 0``, ``0 <= beta < 1``
    steps : int >= 0

    Returns
    -------
    (steps + 1,) float64 array, the excess at steps 0..steps (inf once it overflows)
    """
    eta, beta = _hb_args(eta, beta)
    lam = _validate.array("lambdas", lambdas, ndim=1, dtype=np.float64)
    d = _validate.array("c0", c0, ndim=1, dtype=np.float64).copy()
    if d.shape != lam.shape:
        raise ValueError(f"c0 must have shape {lam.shape} to match lambdas, got {d.shape}")
    steps = _validate.integer("steps", steps, minimum=0)
    v = np.zeros_like(d)
    out = np.empty(steps + 1)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps + 1):
            out[t] = float(np.sum(lam / 2.0 * d * d))
            v = beta * v + lam * d
            d = d - eta * v
    return np.where(np.isfinite(out), out, np.inf)


def _escape_primitive(loss, z):
    # antiderivatives of 1/delta(z) for y = 0: mse_sigmoid's delta = 2 s^2 (1 - s) with
    # 1/(s^2 (1 - s)) = e^z + 3 + 3 e^-z + e^-2z; bce's delta = s with 1/s = 1 + e^-z
    if loss == "mse_sigmoid":
        return (np.exp(z) + 3.0 * z - 3.0 * np.exp(-z) - 0.5 * np.exp(-2.0 * z)) / 2.0
    return z - np.exp(-z)


def sigmoid_escape_time(loss, z0, eta_eff, z_target=0.0):
    r"""Steps a sigmoid unit needs, in the gradient-flow limit, to bring its logit from a start
    :math:`z_0` on the wrong side (label 0, :math:`z_0 > 0`) down to ``z_target``.

    One sample, a linear unit, logit :math:`z = w^T x + b`: gradient descent moves it by
    :math:`z \leftarrow z - \eta_{eff}\,\delta(z)`, :math:`\eta_{eff} = \eta(\|x\|^2 + 1)`, with
    :math:`\delta = 2\sigma^2(1 - \sigma)` for MSE on the sigmoid and :math:`\delta = \sigma` for
    cross-entropy (Nielsen, ch. 3). The flow :math:`\dot z = -\eta_{eff}\delta(z)` integrates to

    .. math::
        t_{mse} = \frac{F(z_0) - F(z_T)}{2\eta_{eff}}, \quad F(z) = e^z + 3z - 3e^{-z} - \tfrac12 e^{-2z};
        \qquad t_{bce} = \frac{G(z_0) - G(z_T)}{\eta_{eff}}, \quad G(z) = z - e^{-z},

    so MSE's time grows like :math:`e^{z_0}/(2\eta_{eff})` and cross-entropy's like
    :math:`z_0/\eta_{eff}`. A start with label 1 at :math:`-z_0` is the mirror image.

    Parameters
    ----------
    loss : {"mse_sigmoid", "bce"}
    z0 : float or array_like, initial logits >= z_target
    eta_eff : float > 0
    z_target : float

    Returns
    -------
    float, or an array shaped like ``z0``.
    """
    loss = _validate.choice("loss", loss, ("mse_sigmoid", "bce"))
    eta_eff = _positive("eta_eff", eta_eff)
    z = np.asarray(z0, dtype=np.float64)
    if not np.all(np.isfinite(z)) or (z < z_target).any():
        raise ValueError(f"z0 must hold finite logits >= z_target={z_target}")
    t = (_escape_primitive(loss, z) - _escape_primitive(loss, float(z_target))) / eta_eff
    return float(t) if np.ndim(z0) == 0 else t


# ============================================================================================
# Sharpness: Hessian-vector products by central differences of a gradient
# ============================================================================================

_CBRT_EPS = float(np.cbrt(np.finfo(np.float64).eps))  # ~6e-6: the best central-difference step


def _theta(theta):
    return _validate.array("theta", theta, ndim=1, dtype=np.float64)


def _check_grad_fn(grad_fn):
    if not callable(grad_fn):
        raise ValueError(f"grad_fn must be a callable theta -> gradient, "
                         f"got {type(grad_fn).__name__}")


def _call_grad(grad_fn, theta):
    g = np.asarray(grad_fn(theta), dtype=np.float64)
    if g.shape != theta.shape:
        raise ValueError(f"grad_fn must return a vector of shape {theta.shape}, got {g.shape}")
    return g


def _default_eps(theta, eps):
    if eps is None:
        return _CBRT_EPS * max(1.0, float(np.max(np.abs(theta))) if theta.size else 1.0)
    return _positive("eps", eps)


def _hvp(grad_fn, theta, v, h):
    r"""The Hessian-vector product :math:`H v` by central differences of the gradient,

    .. math:: H v \approx \|v\| \frac{\nabla L(\theta + h \hat v) - \nabla L(\theta - h \hat v)}{2h},
              \qquad \hat v = v / \|v\|,

    with error :math:`O(h^2)` from the third derivatives and :math:`O(\epsilon/h)` from rounding;
    exact to rounding for a quadratic loss (the Lanczos iterations' matrix-vector product)."""
    norm = float(np.linalg.norm(v))
    if norm == 0.0:
        return np.zeros_like(theta)
    u = v / norm
    forward, backward = _call_grad(grad_fn, theta + h * u), _call_grad(grad_fn, theta - h * u)
    return (norm / (2.0 * h)) * (forward - backward)


def exact_hessian(grad_fn, theta, eps=None):
    r"""The dense Hessian by central differences, one column per parameter, symmetrised:

    .. math:: H_{:,j} = \frac{\nabla L(\theta + h e_j) - \nabla L(\theta - h e_j)}{2h},
              \qquad H \leftarrow (H + H^T)/2

    2n gradient evaluations: for small networks (:func:`sharpness_lanczos` uses it below 4
    parameters, where ARPACK cannot run). ``grad_fn``: flat float64 parameters (n,) -> flat
    gradient (n,); ``eps``: the step h, by default :math:`\epsilon_{mach}^{1/3}
    \max(1, \|\theta\|_\infty)` (about 6e-6).

    Returns
    -------
    (n, n) float64 array
    """
    _check_grad_fn(grad_fn)
    theta = _theta(theta)
    h = _default_eps(theta, eps)
    n = theta.size
    H = np.empty((n, n))
    e = np.zeros(n)
    for j in range(n):
        e[j] = h
        H[:, j] = (_call_grad(grad_fn, theta + e) - _call_grad(grad_fn, theta - e)) / (2.0 * h)
        e[j] = 0.0
    return 0.5 * (H + H.T)


def sharpness_lanczos(grad_fn, theta, tol=1e-10, seed=0, eps=None):
    r"""The sharpness :math:`\lambda_{max}(H)` by Lanczos (``scipy.sparse.linalg.eigsh``,
    ``which="LA"``) on central-difference Hessian-vector products.

    Converges in far fewer products than power iteration when the top eigenvalues are close,
    and finds the largest algebraic eigenvalue directly, whatever the signs. The batchnorm
    study calls it through :func:`mlp_sharpness` and :func:`hessian_block_sharpness`.

    Parameters
    ----------
    grad_fn : callable
        Flat float64 parameters (n,) -> flat gradient (n,) (e.g. :func:`mlp_grad_fn`).
    theta : (n,) array_like
    tol : float >= 0
        ARPACK's relative tolerance (0: machine precision).
    seed : int >= 0
        Seed of the random start vector.
    eps : float > 0, optional
        Finite-difference step of the Hessian-vector products, as :func:`exact_hessian`.

    Returns
    -------
    float
    """
    _check_grad_fn(grad_fn)
    theta = _theta(theta)
    tol = _nonneg("tol", tol)
    seed = _validate.integer("seed", seed, minimum=0)
    h = _default_eps(theta, eps)
    n = theta.size
    if n == 1:
        return float(_hvp(grad_fn, theta, np.ones(1), h)[0])
    if n <= 3:  # too small for ARPACK: the dense matrix
        return float(np.linalg.eigvalsh(exact_hessian(grad_fn, theta, h))[-1])
    op = LinearOperator((n, n), matvec=lambda x: _hvp(grad_fn, theta, np.ravel(x), h),
                        dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n)
    vals = eigsh(op, k=1, which="LA", tol=tol, v0=v0, return_eigenvectors=False,
                 maxiter=max(1000, 20 * n))
    return float(vals[0])


# ============================================================================================
# simcore networks
# ============================================================================================

def mlp_grad_fn(net, X, y):
    r"""The gradient of ``net``'s mean training loss on (X, y) as a function of its flat
    parameters: ``theta (n_params,) -> grad (n_params,)``, both float64.

    ``theta`` is ``net.pack(params)`` (the layout of ``net.slots``, see :class:`simcore.MLP`); the batchnorm
    study's sharpness at initialisation differentiates it (:func:`mlp_sharpness`). The gradient is
    evaluated by a float64 twin of ``net`` (same sizes, activation, loss, batch norm), so finite
    differences of it are accurate whatever ``net.dtype`` is. With batch norm it uses the batch's
    statistics and updates nothing, so the function is deterministic.

    Parameters
    ----------
    net : simcore.MLP
    X : (N, sizes[0]) array_like
    y : targets as for ``net.loss_and_grad``
    """
    if not isinstance(net, MLP):
        raise ValueError(f"net must be a simcore.MLP, got {type(net).__name__}")
    twin = MLP(net.sizes, activation=net.activation, loss=net.loss, batchnorm=net.batchnorm,
               init=net.init_name, dtype="float64")
    X = _validate.array("X", X, ndim=2, dtype=np.float64)
    y = np.asarray(y)
    twin.loss_and_grad(twin.init(0), X, y)  # check X and y once, here, by the net's own rules
    n = twin.n_params

    def grad_fn(theta):
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (n,):
            raise ValueError(f"theta must have shape ({n},), got {theta.shape}")
        _, grads = twin.loss_and_grad(twin.unpack(theta), X, y)
        return twin.pack(grads, name="grads")

    return grad_fn


def mlp_sharpness(net, params, X, y, **kwargs):
    r"""The sharpness :math:`\lambda_{max}` of ``net``'s loss Hessian at ``params`` on (X, y),
    by :func:`sharpness_lanczos` on :func:`mlp_grad_fn` (``kwargs`` go to it).

    The batchnorm study compares it, at initialisation, with the scale-variant block's
    (:func:`bn_scale_variant_sharpness`); compare :math:`2/\lambda_{max}` with the measured
    divergence threshold of full-batch GD (the grid's own probe is the compiled
    :func:`simcore.hessian.sharpness`).

    Parameters
    ----------
    net : simcore.MLP
    params : list of dict
        As from ``net.init``.
    X, y : the full batch

    Returns
    -------
    float
    """
    grad_fn = mlp_grad_fn(net, X, y)
    return sharpness_lanczos(grad_fn, net.pack(params).astype(np.float64), **kwargs)


# ============================================================================================
# batchnorm: scale invariance and the Hessian block of the scale-variant parameters
# ============================================================================================

def bn_scale_variant_mask(net):
    r"""Which of ``net``'s flat parameters (``net.pack`` order) are *scale-variant*: the loss
    changes when they are scaled. With batch norm, a hidden layer's W and b feed a batch norm, so
    :math:`L(cW_l, c b_l) = L(W_l, b_l)` for every :math:`c > 0` (Arora, Li, Lyu 2019): only the
    output layer (W, b) and every gamma and beta are scale-variant. Without batch norm every
    parameter is.

    Returns
    -------
    (n_params,) bool array
    """
    if not isinstance(net, MLP):
        raise ValueError(f"net must be a simcore.MLP, got {type(net).__name__}")
    mask = np.zeros(net.n_params, bool)
    last = len(net.slots) - 1
    for l, slots in enumerate(net.slots):
        for key, (offset, size, _) in slots.items():
            if not net.batchnorm or l == last or key in ("gamma", "beta"):
                mask[offset:offset + size] = True
    return mask


def hessian_block_sharpness(grad_fn, theta, mask, tol=1e-10, seed=0, eps=None):
    r"""The largest eigenvalue of the Hessian block :math:`H_{SS}` of the coordinates
    :math:`S` = ``mask`` (the others held at ``theta``):

    .. math:: \lambda_{max}(H_{SS}) = \max_{v:\ v_i = 0\ (i \notin S)} \frac{v^T H v}{v^T v},

    by :func:`sharpness_lanczos` on the gradient restricted to :math:`S`,
    :math:`g_S(x) = \nabla_S L(\theta \text{ with } \theta_S = x)`, whose Jacobian is
    :math:`H_{SS}`. Gradient descent restricted to :math:`S` is stable near ``theta`` iff
    :math:`\eta < 2/\lambda_{max}(H_{SS})`. The batchnorm study calls it through
    :func:`bn_scale_variant_sharpness`.

    Parameters
    ----------
    grad_fn : callable
        Flat parameters (n,) -> flat gradient (n,) (e.g. :func:`mlp_grad_fn`).
    theta : (n,) array_like
    mask : (n,) array_like of bool, at least one True
    tol, seed, eps : as :func:`sharpness_lanczos`

    Returns
    -------
    float
    """
    _check_grad_fn(grad_fn)
    theta = _theta(theta)
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != theta.shape:
        raise ValueError(f"mask must be a bool array of shape {theta.shape}, got {mask.dtype} "
                         f"{mask.shape}")
    if not mask.any():
        raise ValueError("mask must select at least one parameter")

    def grad_block(x):
        full = theta.copy()
        full[mask] = x
        return _call_grad(grad_fn, full)[mask]

    return sharpness_lanczos(grad_block, theta[mask], tol=tol, seed=seed, eps=eps)


def bn_scale_variant_sharpness(net, params, X, y, **kwargs):
    r""":math:`\lambda_{max}` of the Hessian block of ``net``'s scale-variant parameters
    (:func:`bn_scale_variant_mask`) at ``params`` on the full batch (X, y). With batch norm the
    scale-invariant weights do not limit the step (their curvature falls as
    :math:`1/\|w\|^2` while gradient descent makes :math:`\|w\|` grow), so the local stability
    limit of gradient descent is :math:`2/\lambda_{max}` of this block; without batch norm it is
    the whole Hessian's. ``kwargs`` go to :func:`hessian_block_sharpness`."""
    grad_fn = mlp_grad_fn(net, X, y)
    theta = net.pack(params).astype(np.float64)
    return hessian_block_sharpness(grad_fn, theta, bn_scale_variant_mask(net), **kwargs)


def bn_weight_norm_growth(lr, grad_norms):
    r"""The growth of :math:`\|W\|^2` of a weight matrix feeding a batch norm under plain
    gradient descent, from the gradient norms of every step:

    .. math:: \|W_T\|^2 - \|W_0\|^2 = \eta^2 \sum_{t=0}^{T-1} \|\nabla_W L(W_t)\|^2,

    exact when :math:`\langle W, \nabla_W L\rangle = 0` (each unit's column is
    scale-invariant: :math:`\frac{d}{dc} L(cW)|_{c=1} = 0`), so
    :math:`\|W - \eta g\|^2 = \|W\|^2 + \eta^2\|g\|^2`. Batch norm's
    :math:`\epsilon` breaks the invariance slightly:
    :math:`w_j \cdot \nabla_{w_j} L = \frac{\epsilon}{\sigma_j^2 + \epsilon}\,\gamma_j
    \,\partial L/\partial\gamma_j`, which each step subtracts twice (times :math:`\eta`).

    Parameters
    ----------
    lr : float >= 0
    grad_norms : (T,) array_like of float >= 0
        :math:`\|\nabla_W L\|` at steps 0 .. T-1.

    Returns
    -------
    float
    """
    lr = _nonneg("lr", lr)
    g = np.asarray(grad_norms, dtype=np.float64)
    if g.ndim != 1 or not np.all(np.isfinite(g)) or (g < 0).any():
        raise ValueError("grad_norms must be a 1-D array of finite norms >= 0")
    return float(lr * lr * np.sum(g * g))
