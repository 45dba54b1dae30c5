"""Fake ``cupyx`` beside the fake CuPy (tests/fake_cupy/cupy): ``scatter_add`` only."""
import cupy as _cupy


def scatter_add(a, slices, value):
    """cupyx.scatter_add(a, slices, value): a[slices] += value, repeated indices accumulating."""
    _cupy.add.at(a, slices, value)
