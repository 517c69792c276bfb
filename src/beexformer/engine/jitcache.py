"""Where numba caches the engine's compiled kernels: a directory keyed by a hash of the engine's jitted sources.

Why: numba keys a function's on-disk cache (`cache=True`) by the content of the one file that defines it.
`blocks.py` compiles functions that call, and inline, the kernels of `kernels.py`; when only `kernels.py`
changed (an edit in an editable checkout, or an upgrade that kept `blocks.py` byte for byte), numba reused the
old machine code of the blocks, compiled against the old kernels' signatures and layouts: wrong results or a
segfault, until the *.nbi / *.nbc files were deleted by hand. Here every jitted function of the engine is
cached under `<base>/numba-<hash of all JIT_MODULES>`, so a change to any of them starts from an empty cache.

`base` is `NUMBA_CACHE_DIR` when the user set one, else the engine's own `__pycache__` (numba's default place),
else a per-user cache directory when the package folder is read-only. Directories of older sources are left
in place (a few MB each; deleting them is always safe when no engine process runs): pruning them here could
pull the cache from under another process still running the older code.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import llvmlite.binding as llvm
from numba import config, njit

try:
    import fcntl
except ImportError:  # Windows: the engine's cache saves are not serialized there
    fcntl = None
from numba.core.caching import FunctionCache
from numba.core.registry import cpu_target

ENGINE_DIR = Path(__file__).resolve().parent
# The engine modules that define jitted functions (tests/engine/test_jitcache.py checks that the list is
# complete), and this file, which decides where they go.
JIT_MODULES = ("jitcache.py", "simd.py", "kernels.py", "amx.py", "blocks.py")


def source_digest(paths: Iterable[Path]) -> str:
    """A short hash of the files' names and bytes, in the given order."""
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
        return True
    except OSError:
        return False


def keyed_cache_dir(directory: Path, modules: Iterable[str]) -> Path:
    """`<base>/numba-<hash of the modules' sources>` for the jitted modules of `directory`."""
    digest = source_digest(directory / name for name in modules if (directory / name).exists())
    if config.CACHE_DIR:
        base = Path(config.CACHE_DIR)
    elif _writable(directory / "__pycache__"):
        base = directory / "__pycache__"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "beexformer"
    return base / f"numba-{digest}"


@cache
def engine_cache_dir() -> Path:
    """The cache directory of this version of the engine's sources (computed once per process)."""
    return keyed_cache_dir(ENGINE_DIR, JIT_MODULES)


@contextmanager
def cache_dir(directory: Path) -> Iterator[None]:
    """numba's CACHE_DIR set to `directory` while functions are decorated inside the block.

    numba reads CACHE_DIR once, when `njit(cache=True)` wraps a function (the locator keeps the path), so
    setting it around the decoration only moves the engine's caches; other numba users of the process keep
    theirs."""
    old = config.CACHE_DIR
    config.CACHE_DIR = str(directory)
    try:
        yield
    finally:
        config.CACHE_DIR = old


def prefer_512_bit_vectors() -> bool:
    """Let LLVM vectorize with 512-bit registers on AVX-512 hosts; True if the setting took effect.

    LLVM tunes Intel's AVX-512 server cores with "prefer-256-bit" (to avoid the clock drop of early AVX-512
    parts), so numba's loops came out as ymm code: VPOPCNTQ on 4 words instead of 8, 8 float lanes instead of
    16. Turning that preference off made the MiniLM blocks 15-25 % faster on this Xeon (docs/engine.md).
    numba reads the features once, when its CPU target is first created (at the first `njit` of the
    process), so this runs before the engine defines any jitted function; the features are the host's own
    plus this one tuning flag (nothing the CPU lacks), and numba's cache keys include them. It does nothing
    when NUMBA_CPU_NAME / NUMBA_CPU_FEATURES are set (the tests' AVX2 and baseline builds) or when another
    library created the CPU target first (the code is then the same, with 256-bit vectors)."""
    if config.CPU_NAME or config.CPU_FEATURES is not None or "_toplevel_target_context" in vars(cpu_target):
        return False
    features = llvm.get_host_cpu_features().flatten()
    if "+avx512f" not in features.split(","):
        return False
    config.CPU_FEATURES = features + ",-prefer-256-bit"
    return True


PREFERS_512_BIT = prefer_512_bit_vectors()


class _EngineCache(FunctionCache):
    """numba's on-disk cache with one repair: a function loaded from it keeps, on its library, what must run
    before its code does (numba's `reload_init`: starting the thread pool, for code with prange).

    numba 0.68 runs those steps when it loads an entry but leaves them off the loaded library, where a caller
    compiled against it looks for them. So a fused block compiled in a process whose parallel kernels came from
    the cache was cached calling into numba's thread pool without the step that starts it, and a later process
    that called that block first jumped to address 0."""

    def load_overload(self, sig, target_context):
        cres = super().load_overload(sig, target_context)
        if cres is not None:
            cres.library._reload_init.update(cres.reload_init)
        return cres

    def save_overload(self, sig, data):
        """numba's save, one process at a time per cache directory. numba reads the function's index, adds the
        entry and names its data file by counting the entries: two processes saving two signatures of one
        function at once both wrote file 1, and the index that survived could point at the other's code."""
        if fcntl is None:
            return super().save_overload(sig, data)
        self._impl.locator.ensure_cache_path()
        with open(os.path.join(self._cache_path, "save.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
            super().save_overload(sig, data)


def jit(**options) -> Callable:
    """`numba.njit(cache=True, **options)` with the cache under `engine_cache_dir()`: the decorator every
    cached function of the engine uses."""

    def decorate(fn):
        with cache_dir(engine_cache_dir()):
            dispatcher = njit(cache=True, **options)(fn)
            dispatcher._cache = _EngineCache(dispatcher.py_func)  # what enable_caching() set, repaired
            return dispatcher

    return decorate


def renamed(fn: Callable, name: str, scope: dict | None = None) -> Callable:
    """A copy of `fn` called `name` (with `scope` as its globals if given), to compile it once more with other
    options or other globals under a cache entry of its own.

    Why: numba keys a cache entry by the function's name, its signature, the CPU and its bytecode, not by the
    compile options. Compiled twice under one name (`parallel=True` and not), both flavours shared one entry:
    each process loaded whichever flavour was written last, and a serial caller compiled against a cached
    parallel callee was cached with calls into numba's thread pool but without numba's note to start that
    pool when the entry is loaded, so a later process that loaded it jumped to address 0 (docs/engine.md)."""
    copy = types.FunctionType(fn.__code__, fn.__globals__ if scope is None else scope, name, fn.__defaults__)
    copy.__qualname__ = name
    copy.__module__ = fn.__module__
    return copy
