"""Fused CUDA kernels for CuPy (the second executor of the formulas in :mod:`npl.gates`)."""
