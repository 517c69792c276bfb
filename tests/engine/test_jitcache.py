"""The engine's numba cache is keyed by all of its jitted sources, so an edit to one module never reuses
machine code compiled against the old version of another (it did: a segfault after editing kernels.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from beexformer.engine import jitcache

CALLEE = """
from pathlib import Path
from numba import njit
{setup}

{decorator}
def f():
    return {value}
"""

CALLER = """
from pathlib import Path
from numba import njit
import callee
{setup}

{decorator}
def g():
    return callee.f() + 10
"""

KEYED = """
from beexformer.engine.jitcache import cache_dir, keyed_cache_dir
_DIR = keyed_cache_dir(Path(__file__).parent, ("callee.py", "caller.py"))

def _cached(fn):
    with cache_dir(_DIR):
        return njit(cache=True)(fn)
"""


def _write(pkg: Path, keyed: bool, value: int) -> None:
    """Two modules, caller.g calling callee.f; cached by numba alone, or through the keyed directory."""
    setup, decorator = (KEYED, "@_cached") if keyed else ("", "@njit(cache=True)")
    (pkg / "callee.py").write_text(CALLEE.format(setup=setup, decorator=decorator, value=value))
    (pkg / "caller.py").write_text(CALLER.format(setup=setup, decorator=decorator))


def _run(pkg: Path) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pkg), *sys.path])}
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", "import caller; print(caller.g())"], env=env, cwd=pkg,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return int(out.stdout.strip())


def _edit_callee_then_rerun(pkg: Path, keyed: bool) -> tuple[int, int]:
    pkg.mkdir()
    _write(pkg, keyed, 1)
    first = _run(pkg)  # compiles both and writes the caches
    _write(pkg, keyed, 2)  # only the callee's module changes
    return first, _run(pkg)


def test_editing_a_callee_module_recompiles_its_callers(tmp_path):
    # numba alone keys caller.g's cache by caller.py only: it answers 11 again after the edit (the hazard).
    assert _edit_callee_then_rerun(tmp_path / "plain", keyed=False) == (11, 11)
    # keyed by both sources, the edit lands in a fresh cache directory.
    assert _edit_callee_then_rerun(tmp_path / "keyed", keyed=True) == (11, 12)


def test_every_jitted_engine_module_is_in_the_key():
    """A module that compiles functions must be hashed, and must compile through `jitcache.jit` (a bare
    `njit(cache=True)` would cache next to its own source again)."""
    for path in sorted(jitcache.ENGINE_DIR.glob("*.py")):
        source = path.read_text()
        if path.name != "jitcache.py":
            assert not re.search(r"njit\(cache=True", source), f"{path.name} caches outside the keyed directory"
        if "jitcache import jit" in source:
            assert path.name in jitcache.JIT_MODULES, f"{path.name} is jitted but not in jitcache.JIT_MODULES"


def test_cache_dir_follows_the_sources(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 1\n")
    before = jitcache.keyed_cache_dir(tmp_path, ("a.py", "b.py"))
    assert before.parent == tmp_path / "__pycache__" or before.parent == Path(os.environ.get("NUMBA_CACHE_DIR", ""))
    (tmp_path / "b.py").write_text("y = 2\n")
    assert jitcache.keyed_cache_dir(tmp_path, ("a.py", "b.py")) != before


def test_the_engine_kernels_are_cached_under_the_keyed_directory():
    from beexformer.engine import blocks, kernels

    expected = str(jitcache.engine_cache_dir())
    for dispatcher in (kernels.SERIAL.bgemm_affine, blocks.binary_block_serial, blocks.exit_head):
        assert dispatcher._cache._cache_path.startswith(expected), dispatcher.py_func.__name__


ZMM_PROBE = """
import numpy as np
from beexformer.engine import jitcache, kernels
kernels.SERIAL.gelu_rows(np.ones((2, 40), dtype=np.float32))
asm = "".join(kernels.SERIAL.gelu_rows.inspect_asm().values())
print(jitcache.PREFERS_512_BIT, "zmm" in asm)
"""


def test_avx512_hosts_get_512_bit_vectors(tmp_path):
    """LLVM's prefer-256-bit tuning is off for the engine, so its loops use zmm registers (fresh compile)."""
    import llvmlite.binding as llvm

    if "+avx512f" not in llvm.get_host_cpu_features().flatten().split(","):
        pytest.skip("the host has no AVX-512")
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")}
    env["NUMBA_CACHE_DIR"] = str(tmp_path)  # compiled here, so the assembly can be inspected
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    out = subprocess.run([sys.executable, "-c", ZMM_PROBE], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_each_kernel_flavour_has_a_cache_entry_of_its_own():
    """numba's cache key leaves out the compile options: under one name, the serial and the parallel build of
    a kernel shared one entry and each process loaded whichever was written last."""
    from beexformer.engine import kernels

    for name in kernels._BODIES:
        serial, parallel = getattr(kernels.SERIAL, name), getattr(kernels.PARALLEL, name)
        assert serial._cache._cache_file._index_path != parallel._cache._cache_file._index_path, name


CACHE_STAGE = """
import json, sys
import numba.np.ufunc.parallel as numba_parallel
import numpy as np
from beexformer.engine import blocks, kernels

rng = np.random.default_rng(0)
x = rng.standard_normal((7, 40)).astype(np.float32)
g, b = rng.standard_normal(40).astype(np.float32), rng.standard_normal(40).astype(np.float32)
eps = np.float32(1e-5)
if sys.argv[1] == "parallel kernels":
    kernels.PARALLEL.layernorm(x, g, b, eps)
    kernels.PARALLEL.embed_binary(np.zeros((1, 1), np.uint64), np.zeros(1, np.float32), np.zeros(1, np.int64), 40)
else:
    w1t, b1 = rng.standard_normal((40, 8)).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    w2t, b2 = rng.standard_normal((8, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    offsets = np.array([0, 3, 7], dtype=np.int64)
    head = blocks.exit_head(x, offsets, False, True, g, b, w1t, b1, w2t, b2)
    pool_after_serial = numba_parallel._is_initialized  # the serial flavour never starts the thread pool
    ids = np.array([1, 4, 6], dtype=np.int64)
    no_bits, no_scale = np.zeros((1, 1), np.uint64), np.zeros(1, np.float32)
    emb = blocks.embed_parallel(no_bits, no_scale, x, False, 40, ids, x, ids, False, x, ids, True, g, b, eps)
    print(json.dumps({"head": head.tolist(), "embed": emb.tolist(), "pool_after_serial": pool_after_serial}))
"""


def _numpy_layernorm(x, g, b, eps=1e-5):
    x = x.astype(np.float64)
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * g + b


def test_a_cache_filled_piecewise_by_several_processes_loads_and_runs(tmp_path):
    """Process 1 compiles parallel kernels; process 2 compiles a serial exit head and a parallel embedding
    against that cache; process 3 loads everything from the cache and must give the right numbers.

    This is the order two report workers compiling into one empty cache happened to produce. It used to
    leave entries that jumped to address 0 in every later process: the serial head had loaded the parallel
    layernorm (the flavours shared a cache entry) and the parallel embedding was cached without numba's step
    that starts the thread pool (jitcache.renamed, jitcache._EngineCache)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "NUMBA_NUM_THREADS": "2"}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)

    def stage(name: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", CACHE_STAGE, name], env=env, capture_output=True, text=True)

    assert stage("parallel kernels").returncode == 0
    outputs = []
    for _ in range(2):  # compiles against the cached kernels, then loads everything
        done = stage("blocks")
        assert done.returncode == 0, f"exit code {done.returncode}: {done.stderr[-2000:]}"
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1]
    out = outputs[1]
    assert out["pool_after_serial"] is False

    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 40)).astype(np.float32)
    g, b = rng.standard_normal(40).astype(np.float32), rng.standard_normal(40).astype(np.float32)
    w1t, b1 = rng.standard_normal((40, 8)).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    w2t, b2 = rng.standard_normal((8, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    pooled = np.stack([x[:3].mean(0), x[3:].mean(0)])
    head = np.maximum(_numpy_layernorm(pooled, g, b) @ w1t + b1, 0) @ w2t + b2
    np.testing.assert_allclose(out["head"], head, rtol=1e-4, atol=1e-4)
    rows = x[[1, 4, 6]]
    np.testing.assert_allclose(out["embed"], _numpy_layernorm(rows + rows + rows, g, b), atol=1e-4)


def _double(x):
    return x + x


def test_two_signatures_saved_at_once_get_data_files_of_their_own(tmp_path, monkeypatch):
    """numba numbers a function's data files by counting its index entries; two saves of different signatures
    that both read the index before either wrote it took the same file. Here both saves stretch the window
    between reading the index and writing it to 0.3 s; the engine's cache lets one save at a time through."""
    import threading
    import time

    from numba import njit, types
    from numba.core.caching import IndexDataCacheFile

    load_index = IndexDataCacheFile._load_index

    def slow_load_index(self):
        index = load_index(self)
        time.sleep(0.3)
        return index

    compiled = njit(_double)
    signatures = [(types.int64,), (types.float64,)]
    for sig in signatures:
        compiled.compile(sig)
    with jitcache.cache_dir(tmp_path):
        caches = [jitcache._EngineCache(_double) for _ in signatures]  # one per process, in effect
    monkeypatch.setattr(IndexDataCacheFile, "_load_index", slow_load_index)
    saves = [
        threading.Thread(target=cache.save_overload, args=(sig, compiled.overloads[sig]))
        for cache, sig in zip(caches, signatures, strict=True)
    ]
    for thread in saves:
        thread.start()
    for thread in saves:
        thread.join()
    monkeypatch.setattr(IndexDataCacheFile, "_load_index", load_index)

    with jitcache.cache_dir(tmp_path):
        fresh = jitcache._EngineCache(_double)
    index = fresh._cache_file._load_index()
    assert len(index) == 2 and len(set(index.values())) == 2
    for sig, value in zip(signatures, (21, 2.5), strict=True):
        loaded = fresh.load_overload(sig, compiled.targetctx)
        assert loaded is not None and loaded.signature.args == sig
        assert loaded.entry_point(value) == 2 * value
