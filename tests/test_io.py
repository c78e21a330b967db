"""simcore.io and GridResult.save/load: bitwise round trips, and a clear ValueError naming the
file for every kind of bad file (another version, not ours, truncated, corrupt, a key missing)."""
import dataclasses
import json

import numpy as np
import pytest

import simcore
from conftest import assert_same_result
from simcore import io


def bitwise_equal(a, b):
    """Two nested lists/dicts of arrays hold the same dtypes, shapes and bytes."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(bitwise_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(bitwise_equal, a, b))
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def trained_state(net, params, seed=0):
    """Batch-norm statistics moved off their initial values by two training passes."""
    state = net.init_state()
    rng = np.random.default_rng(seed)
    for _ in range(2):
        X = rng.normal(size=(8, net.sizes[0])).astype(net.dtype)
        net.loss_and_grad(params, X, rng.integers(0, 2, 8), state=state)
    return state


def rewrite(path, edit_header=None, drop=()):
    """Rewrite the archive at ``path`` with its header edited by ``edit_header(dict)`` and the
    arrays ``drop`` left out (a pooled one by its entry in the header's ``pooled``)."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k not in drop}
    header = json.loads(arrays[io.HEADER_KEY].tobytes())
    for key in drop:
        header["pooled"].pop(key, None)
    if edit_header is not None:
        edit_header(header)
    arrays[io.HEADER_KEY] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


# --- parameters of one network --------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_params_round_trip_bitwise(tmp_path, dtype, batchnorm):
    net = simcore.MLP([3, 4, 5, 2], activation="relu", loss="ce", batchnorm=batchnorm,
                      init="he", dtype=dtype)
    params = net.init(seed=5, bias_scale=0.3)
    state = trained_state(net, params) if batchnorm else None
    path = tmp_path / "net.npz"
    simcore.save_params(path, net, params, state)
    net2, params2, state2 = simcore.load_params(path)
    assert repr(net2) == repr(net)
    assert bitwise_equal(params2, params)
    if batchnorm:
        assert bitwise_equal(state2, state)
        assert not np.array_equal(state[0]["running_var"], np.ones(4))  # the test moved them
        X = np.random.default_rng(1).normal(size=(6, 3)).astype(dtype)
        assert np.array_equal(net2.predict(params2, X, state=state2), net.predict(params, X, state=state))
    else:
        assert state2 is None


def test_params_loaded_are_usable_and_state_optional(tmp_path):
    net = simcore.MLP([2, 3, 1], batchnorm=True, dtype="float32")
    params = net.init(seed=0)
    simcore.save_params(str(tmp_path / "p"), net, params)  # a str path, no suffix added
    assert (tmp_path / "p").is_file() and not (tmp_path / "p.npz").exists()
    net2, params2, state2 = simcore.load_params(str(tmp_path / "p"))
    assert state2 is None
    X = np.random.default_rng(0).normal(size=(5, 2))
    state = net2.init_state()
    net2.loss_and_grad(params2, X, [0, 1, 1, 0, 1], state=state)  # loaded arrays train in place


def test_save_params_checks_its_arguments(tmp_path):
    net = simcore.MLP([2, 3, 1], batchnorm=True)
    params = net.init(seed=0)
    with pytest.raises(TypeError, match="net must be an MLP"):
        simcore.save_params(tmp_path / "x", "net", params)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        simcore.save_params(3, net, params)
    with pytest.raises(ValueError, match=r"params\[0\]\['W'\] must have shape \(2, 3\)"):
        simcore.save_params(tmp_path / "x", net, [{"W": np.zeros((3, 3)), "b": np.zeros(3),
                                                   "gamma": np.ones(3), "beta": np.zeros(3)},
                                                  params[1]])
    with pytest.raises(ValueError, match="state must be a list"):
        simcore.save_params(tmp_path / "x", net, params, state={})
    with pytest.raises(ValueError, match=r"state\[0\]\['running_var'\] must be >= 0"):
        simcore.save_params(tmp_path / "x", net, params,
                            [{"running_mean": np.zeros(3), "running_var": -np.ones(3)}, {}])
    with pytest.raises(ValueError, match=r"state\[0\]\['running_mean'\] must hold real numbers"):
        simcore.save_params(tmp_path / "x", net, params, [{"running_var": np.ones(3)}, {}])
    assert not list(tmp_path.iterdir())  # nothing written, not even a temporary file


# --- GridResult --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def moons():
    return simcore.datasets.moons(24, seed=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_grid_result_round_trip_one_architecture(tmp_path, moons, dtype, batchnorm):
    X, y = moons
    net = simcore.MLP([2, 4, 1], batchnorm=batchnorm, dtype=dtype)
    # lr 1e9 diverges: inf/NaN losses and a shortened history must survive the file too
    res = simcore.train_grid(net, X, y, lr=[0.1, 1.0, 1e9], steps=6, record_every=4)
    assert res.diverged.any()
    assert [repr(m) for m in res.nets] == [repr(net)] * 3  # train_grid records the networks
    for r in (res, dataclasses.replace(res, nets=None)):
        path = tmp_path / "grid.npz"
        r.save(path)
        back = simcore.GridResult.load(path)
        assert_same_result(back, r)
        assert bitwise_equal(back.params, r.params) and bitwise_equal(back._groups, r._groups)
        assert bitwise_equal(back.final_loss, r.final_loss)
        assert back.history().equals(r.history())
        assert back.config.equals(r.config) and list(back.config.dtypes) == list(r.config.dtypes)
        if r.nets is None:
            assert back.nets is None
        else:
            assert [repr(m) for m in back.nets] == [repr(net)] * 3
            assert back.nets[0] is back.nets[2]  # one MLP per architecture


def test_grid_result_round_trip_list_of_architectures(tmp_path, moons):
    X, y = moons
    nets = [simcore.MLP([2, 3, 1]), simcore.MLP([2, 5, 2, 1]), simcore.MLP([2, 3, 1]),
            simcore.MLP([2, 4, 1], activation="relu")]
    res = simcore.train_grid(nets, X, y, lr=0.5, steps=3, record_every=2)
    res = dataclasses.replace(res, nets=nets)
    res.save(tmp_path / "grid.npz")
    back = simcore.GridResult.load(tmp_path / "grid.npz")
    assert_same_result(back, res)
    assert bitwise_equal(back.params, res.params)  # a list of G per-network lists
    assert [repr(m) for m in back.nets] == [repr(m) for m in nets]
    assert back.config.equals(res.config)
    assert "G=4, 3 architectures (2-3-1 tanh, 2-5-2-1 tanh, 2-4-1 relu)" in repr(back)


def test_grid_result_repr_is_one_short_line(moons):
    X, y = moons
    res = simcore.train_grid(simcore.MLP([2, 4, 1]), X, y, lr=[0.1, 0.2, 1e9], steps=6,
                             record_every=2)
    text = repr(res)
    assert text == str(res) and "\n" not in text and "array" not in text and len(text) < 200
    ok = res.final_loss[~res.diverged]
    assert text == (f"GridResult(G=3, 1 architecture (2-4-1 tanh), 6 steps, 4 records, "
                    f"{res.diverged.sum()} diverged, final loss {ok.min():.4g} to {ok.max():.4g})")


# --- bad files ---------------------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    """A parameters file and a GridResult file, written fresh for each test."""
    net = simcore.MLP([2, 3, 1], batchnorm=True)
    params = net.init(seed=0)
    simcore.save_params(tmp_path / "params.npz", net, params, net.init_state())
    X, y = simcore.datasets.moons(16, seed=0)
    simcore.train_grid(net, X, y, lr=0.1, steps=2).save(tmp_path / "grid.npz")
    return tmp_path / "params.npz", tmp_path / "grid.npz"


LOADERS = [simcore.load_params, simcore.GridResult.load]


@pytest.mark.parametrize("which", [0, 1])
def test_another_format_version_is_refused(saved, which):
    path = rewrite(saved[which], lambda h: h.update(format_version=3, simcore_version="9.0"))
    with pytest.raises(ValueError, match=rf"{path}: format version 3 \(written by simcore 9.0\); "
                                         rf"simcore .* reads versions 1, 2"):
        LOADERS[which](path)


def test_the_other_format_is_refused_with_its_loader_named(saved):
    params_file, grid_file = saved
    with pytest.raises(ValueError, match="holds 'simcore.params', not 'simcore.grid_result' "
                                         r"\(read it with simcore.load_params\)"):
        simcore.GridResult.load(params_file)
    with pytest.raises(ValueError, match=r"read it with simcore.GridResult.load"):
        simcore.load_params(grid_file)


@pytest.mark.parametrize("load", LOADERS)
def test_files_that_are_not_ours_are_refused(tmp_path, load):
    text = tmp_path / "notes.txt"
    text.write_text("not an archive\n")
    npy = tmp_path / "a.npy"
    np.save(npy, np.arange(3))
    other = tmp_path / "other.npz"
    np.savez(other, x=np.arange(3))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    for path, why in [(text, "not a simcore file, or a corrupt"), (npy, r"not a simcore file \(a single .npy array"),
                      (other, r"not a simcore file \(an .npz archive without 'simcore_header'\)"),
                      (empty, "not a simcore file, or a corrupt")]:
        with pytest.raises(ValueError, match=f"{path}: {why}"):
            load(path)


def test_a_pickled_array_is_never_unpickled(saved, tmp_path):
    params_file, _ = saved
    with np.load(params_file) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["params/0/W"] = np.array([object()], dtype=object)  # np.savez pickles object arrays
    with open(params_file, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ValueError, match="not a simcore file, or a corrupt .*pickle"):
        simcore.load_params(params_file)


@pytest.mark.parametrize("which", [0, 1])
def test_a_truncated_file_is_refused(saved, which):
    path = saved[which]
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=f"{path}: not a simcore file, or a corrupt or truncated one"):
        LOADERS[which](path)


@pytest.mark.parametrize("which,key", [(0, "pool/float64"), (1, "pool/float64"), (1, "config/1")])
def test_a_corrupt_array_is_caught_by_its_crc(saved, which, key):
    path = saved[which]
    with np.load(path) as z:
        data = z[key].tobytes()
    raw = bytearray(path.read_bytes())
    at = raw.find(data) + len(data) // 2
    assert raw.find(data) > 0
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=f"{path}: not a simcore file, or a corrupt .*CRC"):
        LOADERS[which](path)


@pytest.mark.parametrize("which,key", [(0, "params/1/W"), (0, "state/0/running_var"),
                                       (1, "params/0/gamma"), (1, "_groups/0/2"), (1, "config/3"),
                                       (1, "final_loss")])
def test_a_missing_array_is_named(saved, which, key):
    path = rewrite(saved[which], drop=(key,))
    with pytest.raises(ValueError, match=f"{path}: the array '{key}' is missing"):
        LOADERS[which](path)


@pytest.mark.parametrize("which", [0, 1])
def test_a_missing_or_short_pool_is_named(saved, which):
    path = saved[which]
    with np.load(path) as z:
        short = z["pool/float64"][:-1]
    intact = path.read_bytes()
    rewrite(path, lambda h: h["pooled"].update(x=[1, 2]))
    with pytest.raises(ValueError, match=r"malformed header \(pooled entry of 'x'\)"):
        LOADERS[which](path)
    path.write_bytes(intact)
    rewrite(path, drop=("pool/float64",))
    with pytest.raises(ValueError, match=f"{path}: the array '.*' is missing \\(its pool 'pool/float64' is absent"):
        LOADERS[which](path)
    with np.load(path) as z:
        arrays = {**{k: z[k] for k in z.files}, "pool/float64": short}
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ValueError, match="is absent or too short"):
        LOADERS[which](path)


@pytest.mark.parametrize("pool_below", [0, 10**9])
def test_round_trip_with_every_array_pooled_or_none(tmp_path, monkeypatch, moons, pool_below):
    monkeypatch.setattr(io, "POOL_BELOW", pool_below)
    X, y = moons
    nets = [simcore.MLP([2, 3, 1], batchnorm=True), simcore.MLP([2, 4, 4, 1])]
    res = simcore.train_grid(nets, X, y, lr=0.3, steps=2)
    res.save(tmp_path / "grid.npz")
    with np.load(tmp_path / "grid.npz") as z:
        assert ("params/0/0/W" in z.files) == (pool_below == 0)
    back = simcore.GridResult.load(tmp_path / "grid.npz")
    assert_same_result(back, res)
    assert bitwise_equal(back.params, res.params) and bitwise_equal(back._groups, res._groups)


@pytest.mark.parametrize("which,key", [(0, "network"), (0, "params"), (1, "fields"), (1, "config"),
                                       (1, "pooled")])
def test_a_missing_header_entry_is_named(saved, which, key):
    path = rewrite(saved[which], lambda h: h.pop(key))
    with pytest.raises(ValueError, match=f"{path}: the header lacks '{key}'"):
        LOADERS[which](path)


def test_edited_headers_are_refused(saved):
    params_file, grid_file = saved
    rewrite(params_file, lambda h: h["network"].update(sizes=[2, 4, 1]))
    with pytest.raises(ValueError, match=r"the stored arrays do not fit MLP\(\[2, 4, 1\].*must have shape \(2, 4\)"):
        simcore.load_params(params_file)
    rewrite(params_file, lambda h: h["network"].update(activation="swish"))
    with pytest.raises(ValueError, match="the stored network .* is not a valid MLP: activation"):
        simcore.load_params(params_file)
    rewrite(grid_file, lambda h: h["fields"].pop("record_steps"))
    with pytest.raises(ValueError, match="the attribute 'record_steps' is missing"):
        simcore.GridResult.load(grid_file)
    rewrite(grid_file, lambda h: h["fields"].update(record_steps={"weird": 1}))
    with pytest.raises(ValueError, match="malformed header"):
        simcore.GridResult.load(grid_file)
    rewrite(grid_file, lambda h: h["fields"].update(momentum_of_the_future={"array": "final_loss"}))
    with pytest.raises(ValueError, match=r"attributes this simcore does not know: \['momentum_of"):
        simcore.GridResult.load(grid_file)
    garbage = {io.HEADER_KEY: np.frombuffer(b"\xff{not json", np.uint8)}
    with open(grid_file, "wb") as f:
        np.savez(f, **garbage)
    with pytest.raises(ValueError, match="corrupt header"):
        simcore.GridResult.load(grid_file)


@pytest.mark.parametrize("load", LOADERS)
def test_bad_paths(tmp_path, load):
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        load(7)
    with pytest.raises(FileNotFoundError, match="is not a file"):
        load(tmp_path / "absent.npz")
    with pytest.raises(FileNotFoundError, match="is not a file"):
        load(tmp_path)


def test_a_value_the_format_cannot_store_is_a_type_error(tmp_path, moons):
    X, y = moons
    res = simcore.train_grid(simcore.MLP([2, 3, 1]), X, y, lr=0.1, steps=2)
    with pytest.raises(TypeError, match="record_steps holds a set"):
        dataclasses.replace(res, record_steps={1, 2}).save(tmp_path / "x.npz")
    with pytest.raises(TypeError, match="final_loss is an array of Python objects"):
        dataclasses.replace(res, final_loss=np.array([None], dtype=object)).save(tmp_path / "x.npz")
    assert not list(tmp_path.iterdir())
