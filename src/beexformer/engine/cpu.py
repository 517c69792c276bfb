"""What the CPU offers the binary kernels, for reports and for the choice of popcount path.

numba compiles every kernel for the host CPU (LLVM target = host, features = host), so detection happens at
compile time: the XNOR-popcount loop becomes VPOPCNTQ on AVX-512 VPOPCNTDQ, a PSHUFB nibble-table popcount on
AVX2, scalar POPCNT below that, and a portable bit-trick sequence on a CPU without POPCNT. The source is the
same and exact on all of them (tests/engine run the GEMM with NUMBA_CPU_NAME=haswell, AVX2 only, and with a
generic x86-64 target). This module only reports what was chosen.
"""

from __future__ import annotations

import platform

INTERESTING = (
    "popcnt",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vpopcntdq",
    "avx512vpopcntdq",
)


def host_features() -> dict[str, bool]:
    """Features LLVM sees on this host (what numba compiles for), by LLVM's names."""
    import llvmlite.binding as llvm

    flat = llvm.get_host_cpu_features().flatten()
    return {item[1:]: item[0] == "+" for item in flat.split(",") if item}


def cpu_name() -> str:
    import llvmlite.binding as llvm

    return str(llvm.get_host_cpu_name())


def _cpuinfo_field(name: str) -> str | None:
    """The value of the first `name : value` line of /proc/cpuinfo (None off Linux or if absent)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def linux_flags() -> list[str]:
    """The `flags` line of /proc/cpuinfo (empty off Linux)."""
    return (_cpuinfo_field("flags") or "").split()


def model_name() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def popcount_path(features: dict[str, bool] | None = None) -> str:
    """Which popcount the vectorized XNOR loop compiles to on this host."""
    import os

    f = host_features() if features is None else features
    if os.environ.get("NUMBA_CPU_NAME"):
        return f"as compiled for NUMBA_CPU_NAME={os.environ['NUMBA_CPU_NAME']}"
    if f.get("avx512vpopcntdq") and f.get("avx512f"):
        from beexformer.engine.jitcache import PREFERS_512_BIT

        if PREFERS_512_BIT:
            return "AVX-512 VPOPCNTQ (8 words per instruction)"
        # numba's CPU target existed before the engine was imported: LLVM's 256-bit preference stayed on
        return "AVX-512 VPOPCNTQ on 256-bit vectors (4 words per instruction)"
    if f.get("avx2"):
        return "AVX2 PSHUFB nibble table (4 words per step)"
    if f.get("popcnt"):
        return "scalar POPCNT"
    return "portable bit tricks (no POPCNT)"


def summary() -> dict[str, object]:
    from beexformer.engine import amx

    flags = linux_flags()
    return {
        "model": model_name(),
        "llvm_cpu": cpu_name(),
        "popcount_path": popcount_path(),
        "amx_tiles": amx.usable(),  # the bit-serial linears run on AMX tiles (engine/amx.py)
        "flags": [f for f in flags if f in INTERESTING or f.startswith("avx512") or f.startswith("amx")],
    }
