"""`beex serve`: packed models behind HTTP, with dynamic micro-batching, limits and Prometheus metrics.

Torch is never imported on this path (the server runs packed files on numpy + numba only).
"""
