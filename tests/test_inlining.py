"""simcore's formulas are inlined into the loops that call them (``simcore._jit._inlined_always``):
after a cold compile and after a load from numba's cache alike, the BCE loss of the grid's lane
kernel keeps no call to ``softplus`` or ``bce_unit``, and the linking module of each formula's
build for compiled callers (its twin, ``simcore._jit.for_compiled_callers``) carries the
``alwaysinline`` mark (the one private numba method simcore relies on)."""
import json
import os
import subprocess
import sys

PROBE = """
import json, re, numpy as np
from simcore import losses, scalar
from simcore._jit import for_compiled_callers
from simcore.grid import cpu
nl = cpu.LANES
z = np.linspace(-3, 3, 2 * nl).reshape((2, 1, nl))
Y = (z > 0).astype(np.float64)
delta, loss, acc = np.empty_like(z), np.zeros(nl), np.zeros((3, nl))
cpu._loss_lanes(losses.BCE, z, Y, delta, loss, acc, 2)
(kernel,) = cpu._loss_lanes.overloads.values()
ir = str(kernel.library._get_module_for_linking())  # what numba caches and links: cold or warm, the same
defined = re.findall(r"^define .*?@\\"?([^\\"(]+)", ir, flags=re.M)
marks = {}
for name, disp, sig in (("softplus", scalar.softplus, "float64(float64)"),
                        ("bce_unit", losses.bce_unit, "UniTuple(float64, 2)(float64, float64)")):
    twin = for_compiled_callers(disp)
    assert twin is not disp
    twin.compile(sig)  # compiled for _loss_lanes above, or loaded from the cache
    (cres,) = twin.overloads.values()
    fn = cres.library._get_module_for_linking().get_function(cres.fndesc.mangled_name)
    marks[name] = "alwaysinline" in " ".join(str(a) for a in fn.attributes)
print(json.dumps({"calls": [d for d in defined if "softplus" in d or "bce_unit" in d], "marks": marks,
                  "loss": float(loss.sum())}))
"""


def _run(cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_formulas_are_inlined_cold_and_from_the_cache(tmp_path):
    cold = _run(tmp_path)
    warm = _run(tmp_path)  # the same kernels, loaded from the cache
    for r in (cold, warm):
        assert r["marks"] == {"softplus": True, "bce_unit": True}
        assert r["calls"] == [], f"not inlined: {r['calls']}"
    assert cold["loss"] == warm["loss"]
