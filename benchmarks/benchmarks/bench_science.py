"""Science beside speed: a few of the studies' headline measurements at fixed seeds, tracked
commit by commit, so that a change which moves what simcore measures shows on the dashboard
next to the ones that move how fast it runs.

Each grid is a small TOML study in ``benchmarks/science/`` (a few seconds each), run once per
benchmark process through ``simstudy`` as a user would; the tracks read its ``claims.json``:

* the least-squares divergence threshold, measured (where the contraction per step crosses 1)
  over predicted (2 / lambda_max of the data's Hessian): 1 when theory and engine agree;
* batch norm's gradient growth per layer at initialisation (Yang et al. 2019), measured with
  Glorot weights, relu and tanh: theory 0.19 and 0.08 in the wide limit;
* the mean-field crossing of tanh networks (sigma_b^2 = 0.05): the sigma_w^2 where the
  measured gradient growth per layer crosses zero.

On a commit whose studies do not state a claim (older ones), its track is n/a.
"""
import json
import os
import tempfile
from pathlib import Path

SCIENCE = Path(__file__).resolve().parents[1] / "science"


def _claims(study):
    """The claims of ``benchmarks/science/<study>.toml`` by id, after one run of it."""
    from studies import cli
    out = Path(tempfile.mkdtemp(prefix=f"asv-science-{study}-")) / "run"
    code = cli.main(["run", str(SCIENCE / f"{study}.toml"), "--out", str(out), "--quiet", "--yes"])
    if code != 0:
        raise RuntimeError(f"simstudy run {study}.toml exited {code}")
    return {c["id"]: c for c in json.loads((out / "claims.json").read_text())["claims"]}


def _find(claims, prefix):
    """The one claim whose id starts with ``prefix`` (ids carry the data set or the setting)."""
    hits = [c for i, c in claims.items() if i.startswith(prefix)]
    if len(hits) != 1:
        raise NotImplementedError(f"no claim {prefix!r} on this commit")
    return hits[0]


class Science:
    """The headline measurements; ``setup_cache`` runs each grid once for all the tracks."""
    timeout = 900

    def setup_cache(self):
        os.environ.setdefault("MPLBACKEND", "Agg")
        return {study: _claims(study) for study in ("convergence", "vanishing-gradients")}

    def track_ls_threshold_measured_over_predicted(self, claims):
        c = _find(claims["convergence"], "ls_threshold_interpolated")
        return float(c["measured"]) / float(c["predicted"])
    track_ls_threshold_measured_over_predicted.unit = "ratio"

    def track_bn_growth_relu(self, claims):
        return float(_find(claims["vanishing-gradients"], "bn_growth_relu")["measured"]["glorot"])
    track_bn_growth_relu.unit = "ln ||dL/dW|| per layer"

    def track_bn_growth_tanh(self, claims):
        return float(_find(claims["vanishing-gradients"], "bn_growth_tanh")["measured"]["glorot"])
    track_bn_growth_tanh.unit = "ln ||dL/dW|| per layer"

    def track_mean_field_crossing_tanh(self, claims):
        return float(_find(claims["vanishing-gradients"], "mf_crossing_tanh")["measured"])
    track_mean_field_crossing_tanh.unit = "sigma_w^2"
