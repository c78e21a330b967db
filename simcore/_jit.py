"""The one place where numba decorators are applied.

Every compiled function in simcore goes through one of these, so cache and fastmath flags
are set once (see :mod:`simcore.config`).

``scalar``      a scalar formula (activation, its derivative, a stable exp/log); compiled for the
                CPU with :func:`numba.njit` and always inlined into the loops that call it.
``cpu_kernel``  a loop over arrays, compiled for the CPU.
``gpu_device``  the same formula compiled as a CUDA device function (numba-cuda, imported only
                when called), from the same Python source: see the GPU section below.
``gpu_kernel``  a CUDA kernel (:mod:`simcore.grid.cuda`).

The CPU ones use ``error_model="numpy"``: a float division by zero gives inf or NaN instead of raising.
That is what training needs (divergence is data), and it is also what lets LLVM vectorise a
loop containing ``/`` (numba's default "python" model puts a raising check on every division).

Each CPU function is two numba dispatchers of one Python function (:class:`_TwinDispatcher`):
the one its name holds, which Python calls, and a twin made on first use, which compiled code
calls. The twin is compiled without the wrapper that converts Python arguments (and neither has
numba's C-callback wrapper, which simcore never uses): those wrappers are much of the compile
time of a small function and of no use to a callee, and a cold first ``train_grid`` call
compiles about a hundred callees (docs/benchmarks.md, "Compile time").
"""
import types as pytypes

from numba import njit, types
from numba.core.registry import CPUDispatcher

from . import _cache  # noqa: F401  (its cache locators must be in place before any decorator runs)
from . import config


def _prefer_512_bit_vectors():
    """Let LLVM's loop vectoriser use whole AVX-512 registers; returns whether it was set.

    On CPUs with AVX-512 LLVM prefers 256-bit vectors for the loops it vectorises itself (its
    "prefer-256-bit" tuning), so an elementwise loop such as the activations' runs 4 float64 per
    instruction while the registers hold 8; the explicit vectors of :mod:`simcore.simd` are
    512-bit either way. Turning the preference off doubled the throughput of the tanh loop of
    the grid engine (docs/benchmarks.md, "Where the time went"). numba reads the CPU features once, when it
    builds its code generator for the first compilation, so this works only before numba has
    compiled anything in the process, and never overrides a user's ``NUMBA_CPU_NAME`` or
    ``NUMBA_CPU_FEATURES`` or ``NUMBA_ENABLE_AVX=0``. The grid kernels never reassociate
    (``cpu_kernel(ordered=True)``), so their lanes compute the same bits at any vector width;
    kernels that may reassociate (the single network's sums) vectorise their reductions at the
    width in force, so their last bits can differ between a process with the setting and one
    without (``SIMCORE_WIDE_VECTORS=0``, or numba used before simcore was imported). numba's
    cache keys every entry on the features it was compiled for, so it never mixes the two.
    numba re-reads its environment at each compilation: set ``NUMBA_*`` variables before
    importing simcore."""
    from numba.core import codegen, config as numba_config, registry

    if not config.WIDE_VECTORS or numba_config.CPU_NAME is not None or numba_config.CPU_FEATURES is not None:
        return False
    if not numba_config.ENABLE_AVX:  # the user's NUMBA_ENABLE_AVX=0, or numba's own safety switch
        return False
    if "_toplevel_target_context" in vars(registry.cpu_target):  # numba's code generator exists
        return False
    # numba's own reading of the host (it drops AVX where numba would, and is '' on error)
    features = codegen.get_host_cpu_features()
    if "+avx512f" not in features.split(","):
        return False
    numba_config.CPU_FEATURES = features + ",-prefer-256-bit"
    return True


WIDE_VECTORS = _prefer_512_bit_vectors()


def _at_simcore_opt_level(dispatcher):
    """``dispatcher`` (simcore's own), made to compile at LLVM optimisation level ``config.OPT``
    (``SIMCORE_OPT``) whatever numba's global level is; unchanged when that is None.

    Why: the grid kernels' hot loops are explicit vectors (:mod:`simcore.simd`) and short
    elementwise loops, which level 2 compiles to code as fast as level 3's, with the same
    results bit for bit, in less compile time (docs/benchmarks.md, "Compile time"). numba reads its level (``numba.core.config.OPT``) at
    every compilation, so it is set around this dispatcher's compilations only, under numba's
    compiler lock (no other thread compiles meanwhile), and the user's own ``@njit`` code keeps
    numba's level. Callees compiled for this dispatcher are simcore's too and set it themselves;
    a user's function that calls a simcore kernel is optimised as a whole at the user's level."""
    if config.OPT is None:
        return dispatcher
    from numba.core import config as numba_config
    from numba.core.compiler_lock import global_compiler_lock
    compile_at_numba_level = dispatcher.compile
    level = getattr(numba_config, "_OptLevel", int)(config.OPT)  # numba's int subclass, where it has one

    def compile(sig):
        with global_compiler_lock:
            saved = numba_config.OPT
            numba_config.OPT = level
            try:
                return compile_at_numba_level(sig)
            finally:
                numba_config.OPT = saved

    dispatcher.compile = compile
    return dispatcher


def _inlined_always(dispatcher):
    """``dispatcher``, its compiled function marked ``alwaysinline`` in the module that numba
    links into its callers, so LLVM inlines it wherever it is called.

    Why: numba compiles a callee on its own and links a copy into each caller, whose optimiser
    then inlines it only below a size threshold. A formula left as a call in an elementwise
    loop keeps the loop scalar: the BCE loss (``softplus`` and ``bce_unit``) was a quarter of
    the float32 W1 kernel's time that way, and the optimizer's step a call per parameter
    (docs/benchmarks.md, "Where the time went, session 10"). Inlined, the formula's code is one copy, so a
    result no longer depends on which build of a callee a process happens to call. The mark
    goes on numba's linking module (``_get_module_for_linking``, the one private numba method
    simcore uses, ``tests/test_inlining.py`` checks it); it is also what numba caches, and a
    callee loaded from the cache is marked again here."""
    compile_marking_nothing = dispatcher.compile
    marked = set()

    def compile(sig):
        entry = compile_marking_nothing(sig)
        for cres in list(dispatcher.overloads.values()):
            if id(cres.library) in marked:
                continue
            marked.add(id(cres.library))
            fn = cres.library._get_module_for_linking().get_function(cres.fndesc.mangled_name)
            fn.add_function_attribute("alwaysinline")
        return entry

    dispatcher.compile = compile
    return dispatcher


class _TwinDispatcher(CPUDispatcher):
    """A simcore CPU dispatcher: Python's calls compile and run this one; compiled code that
    calls it (simcore's kernels, or a user's ``@njit`` function) types the call as a call of its
    twin (``_numba_type_``), made on first use by ``_make_twin``: the same Python function, the
    same options, compiled without the Python-argument wrapper, and cached apart
    (:mod:`simcore._cache` gives it its own file name). Nothing else differs, so the twin computes
    what this one does, bit for bit. A dispatcher rebuilt by pickle has no twin and is its own
    callee, as any numba dispatcher."""

    @property
    def _numba_type_(self):
        twin = self.__dict__.get("_twin")
        if twin is None:
            make = self.__dict__.get("_make_twin")
            if make is None:
                return types.Dispatcher(self)
            twin = self._twin = make()
        return types.Dispatcher(twin)


def for_compiled_callers(dispatcher):
    """The dispatcher that compiled code calls in place of simcore's ``dispatcher`` (its twin;
    ``dispatcher`` itself for any other)."""
    numba_type = getattr(dispatcher, "_numba_type_", None)
    return numba_type.dispatcher if isinstance(numba_type, types.Dispatcher) else dispatcher


def _cpu_compiled(func, finish, **options):
    """``func`` compiled by ``njit(**options)`` at simcore's level for Python's calls, with its
    twin for compiled callers (:class:`_TwinDispatcher`), which ``finish`` completes."""
    public = _at_simcore_opt_level(njit(no_cfunc_wrapper=True, **options)(func))

    def make_twin():
        twin = pytypes.FunctionType(func.__code__, func.__globals__, func.__name__, func.__defaults__,
                                    func.__closure__)
        twin.__qualname__, twin.__module__, twin.__doc__ = func.__qualname__, func.__module__, func.__doc__
        twin.__kwdefaults__ = func.__kwdefaults__
        twin.simcore_twin = True  # read by simcore._cache: a cache file of its own
        return finish(_at_simcore_opt_level(njit(no_cfunc_wrapper=True, no_cpython_wrapper=True,
                                                 **options)(twin)))

    public.__class__ = _TwinDispatcher
    public._make_twin = make_twin
    return public


def scalar(func):
    """Compile a scalar formula for the CPU, inlined into every caller (:func:`_inlined_always`)."""
    return _cpu_compiled(func, _inlined_always, cache=config.CACHE, fastmath=config.FASTMATH,
                         error_model="numpy")


def cpu_kernel(func=None, *, parallel=False, ordered=False, inline=False):
    """Compile an array kernel for the CPU (releasing the GIL, so Python threads can run
    kernels side by side).

    ``ordered=True`` compiles without reassociation or reciprocal rewriting
    (``config.FASTMATH_ORDERED``), for kernels that vectorise across independent lanes and need
    neither. Why it matters: numba compiles a callee on its own, then links a copy into each
    caller, where LLVM optimises it again and often does not inline it; a call binds to
    whichever definition of the symbol the process loaded first (the callee's own build in a
    process that compiled it, the caller's copy in one that loaded the caller from the cache).
    With reassociation allowed the two copies can round differently, and a result then depends
    on the process's history (seen: a cross-entropy loss 1 ulp apart).

    ``inline=True`` marks the kernel for inlining into its callers, as every ``scalar`` is: for
    the small formulas (a loss unit, an optimizer's step) that loops call per element."""
    flags = config.FASTMATH_ORDERED if ordered else config.FASTMATH

    def wrap(f):
        return _cpu_compiled(f, _inlined_always if inline else (lambda d: d), cache=config.CACHE,
                             fastmath=flags, parallel=parallel, error_model="numpy", nogil=True)
    return wrap if func is None else wrap(func)


# --- the GPU (numba-cuda), imported lazily: importing simcore never needs CUDA ---------------
#
# ``gpu_device(f)`` compiles a scalar formula for the GPU from the *same* Python source as the
# CPU build (docs/architecture.md, *Write the math once*). Given a CPU-compiled function (``@scalar`` or
# ``@cpu_kernel``) it takes its ``py_func`` and rebinds the names it calls, so that inside the
# GPU build every call of another CPU-compiled formula calls that formula's GPU build, and every
# call of one of :mod:`simcore.fastmath`'s CPU-only primitives (vectorisable exp/log/tanh written
# with LLVM intrinsics, meaningless on the GPU) calls the GPU's libm (libdevice, through
# :mod:`math`) instead: ``_gpu_libm`` is that per-target table. A plain Python function (one
# written for the GPU only, e.g. in :mod:`simcore.grid.cuda`) is compiled as it is.

_GPU_DEVICE = {}


def _gpu_libm():
    """fastmath's CPU-only primitives -> the GPU's libm functions (libdevice via ``math``)."""
    import math
    from . import fastmath
    return {fastmath.exp: math.exp, fastmath.expm1: math.expm1, fastmath.log: math.log,
            fastmath.log1p: math.log1p, fastmath.tanh: math.tanh}


def _is_cpu_compiled(obj):
    from numba.core.registry import CPUDispatcher
    return isinstance(obj, CPUDispatcher)


def _for_gpu(obj):
    """What a global or free variable of a CPU formula stands for in its GPU build (``obj`` if
    it needs no change)."""
    if not _is_cpu_compiled(obj):
        return obj
    libm = _gpu_libm()
    if obj in libm:
        return libm[obj]
    return gpu_device(obj)


def _rebound(py):
    """A copy of the plain function ``py`` whose globals and closure cells call GPU builds."""
    import types as pytypes
    glob = dict(py.__globals__)
    for name in py.__code__.co_names:
        if name in glob:
            glob[name] = _for_gpu(glob[name])
    closure = None
    if py.__closure__:
        closure = tuple(pytypes.CellType(_for_gpu(c.cell_contents)) for c in py.__closure__)
    f = pytypes.FunctionType(py.__code__, glob, py.__name__, py.__defaults__, closure)
    f.__qualname__, f.__doc__, f.__module__ = py.__qualname__, py.__doc__, py.__module__
    f.__kwdefaults__ = py.__kwdefaults__
    return f


def gpu_device(func):
    """Compile a formula as a CUDA device function (``cuda.jit(device=True)``).

    ``func`` is either a CPU-compiled simcore function (its Python source is rebound to GPU
    builds, see above) or a plain Python function written for the GPU. IEEE arithmetic
    (no fastmath): the float64 oracle tests compare GPU and CPU at 1e-10."""
    from numba import cuda
    py = getattr(func, "py_func", func) if _is_cpu_compiled(func) else func
    dev = _GPU_DEVICE.get(py)
    if dev is None:
        dev = cuda.jit(device=True)(_rebound(py) if py is not func else py)
        _GPU_DEVICE[py] = dev
    return dev


def gpu_kernel(func):
    """Compile a CUDA kernel (``cuda.jit``) launched as ``kernel[blocks, threads, stream, shared]``."""
    from numba import cuda
    return cuda.jit(func)
