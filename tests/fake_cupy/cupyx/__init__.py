"""Fake ``cupyx`` beside the fake CuPy (tests/fake_cupy/cupy): ``scatter_add`` only."""
import cupy as _cupy


def __getattr__(name):
    if name in _cupy.API["cupyx"]:
        raise AttributeError("fake CuPy: cupyx.%s exists in CuPy but not in the stand-in" % name)
    raise AttributeError("fake CuPy: CuPy %s has no cupyx.%s" % (_cupy.API["cupy_version"], name))


def scatter_add(a, slices, value):
    """cupyx.scatter_add(a, slices, value): a[slices] += value, repeated indices accumulating."""
    _cupy.add.at(a, slices, value)
