"""The host workspace pool (npl.workspace): reuse across passes, never while an array is alive."""
import numpy as np
import pytest

import npl
from npl import workspace as ws
from helpers import randomize_params


@pytest.fixture
def fresh_pool():
    old = ws.set_limit(0)          # drops the free buffers
    ws.set_limit(1 << 30)
    yield
    ws.set_limit(old)


def test_buffer_reused_only_after_release(fresh_pool):
    a = ws.empty(np, (64, 1024), np.float32)
    b = ws.empty(np, (64, 1024), np.float32)
    assert not np.shares_memory(a, b)
    view = a[3:7].T                                   # a view keeps a's buffer alive
    del a
    c = ws.empty(np, (64, 1024), np.float32)
    assert not np.shares_memory(c, view) and not np.shares_memory(c, b)
    addr = c.__array_interface__["data"][0]
    del c
    d = ws.empty(np, (64, 1024), np.float32)          # c's buffer is free now and is reused
    assert d.__array_interface__["data"][0] == addr
    assert d.flags.c_contiguous and d.dtype == np.float32 and d.shape == (64, 1024)
    z = ws.zeros(np, (300, 100), np.float64)
    assert not z.any()


def test_small_and_oversized_requests_bypass_the_pool(fresh_pool):
    before = ws.stats()["buffers"]
    ws.empty(np, (10,), np.float32)                   # below MIN_BYTES
    assert ws.stats()["buffers"] == before
    ws.set_limit(1 << 20)
    big = ws.empty(np, (1 << 19,), np.float32)        # 2 MiB > limit: plain allocation
    assert big.nbytes == 2 << 20 and ws.stats()["nbytes"] <= 1 << 20


def test_sequence_passes_reuse_memory_and_keep_earlier_results(fresh_pool):
    """Two passes in a row: the second reuses pooled slabs, and the first pass's outputs, trace
    and gradients (still referenced) are untouched by it; results equal a pool-off run."""
    rng = np.random.default_rng(0)
    cell = npl.rnn.BasicLSTMCell(64, input_size=16, seed=0)
    randomize_params(cell, rng)
    x1 = rng.standard_normal((32, 20, 16)).astype(np.float32)
    x2 = rng.standard_normal((32, 20, 16)).astype(np.float32)
    g = rng.standard_normal((32, 20, 64)).astype(np.float32)

    def run(x):
        out, st, tr = npl.nn.dynamic_rnn(cell, x, return_trace=True)
        dx, _ = tr.backward(g, None)
        return out, st, tr, dx

    out1, st1, tr1, dx1 = run(x1)
    saved = [a.copy() for a in (out1, st1.h, dx1, tr1.records[0].slabs["gates"])]
    hits = ws.stats()["hits"]
    out2, _, tr2, dx2 = run(x2)
    del out2, tr2, dx2
    run(x2)
    assert ws.stats()["hits"] > hits                  # the third pass reused the second's slabs
    for a, b in zip(saved, (out1, st1.h, dx1, tr1.records[0].slabs["gates"])):
        np.testing.assert_array_equal(a, b)
    ws.set_limit(0)
    out_ref, _, _, dx_ref = run(x1)
    np.testing.assert_array_equal(out_ref, out1)
    np.testing.assert_array_equal(dx_ref, dx1)


def test_small_request_does_not_pin_a_large_buffer_and_a_miss_releases_smaller_ones(fresh_pool):
    big = ws.empty(np, (1 << 20,), np.float32)                # 4 MiB
    big_addr = big.__array_interface__["data"][0]
    del big
    small = ws.empty(np, (64 * 1024,), np.float32)            # 256 KiB: not served by the 4 MiB one
    assert small.__array_interface__["data"][0] != big_addr
    assert ws.stats()["buffers"] == 2                         # the larger free buffer is kept
    del small
    bigger = ws.empty(np, (96 * 1024,), np.float32)           # 384 KiB: a miss; the free 256 KiB
    s = ws.stats()                                            # buffer is smaller and goes back
    assert s["buffers"] == 2 and s["nbytes"] == (4 << 20) + bigger.nbytes + 2 * ws.ALIGN
    again = ws.empty(np, (900 * 1024,), np.float32)           # 3.5 MiB: served by the 4 MiB one
    assert again.__array_interface__["data"][0] == big_addr


@pytest.mark.parametrize("shape, dtype", [((64, 1024), np.float32), ((5, 40000), np.float32),
                                          ((8193,), np.float64)])
def test_arrays_start_on_a_cache_line(fresh_pool, shape, dtype):
    """Pooled requests (MIN_BYTES and more): 64-byte aligned, so that batch slices of 16 floats
    never share a cache line; a reused buffer is aligned the same way, and so is a request over
    the pool's limit."""
    arrays = [ws.empty(np, shape, dtype) for _ in range(3)] + [ws.zeros(np, shape, dtype)]
    for a in arrays:
        assert a.__array_interface__["data"][0] % 64 == 0
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
    del arrays
    again = ws.empty(np, shape, dtype)
    assert again.__array_interface__["data"][0] % 64 == 0
    ws.set_limit(1 << 16)
    over = ws.empty(np, (1 << 17,), np.float32)               # 512 KiB over the limit: allocated
    assert over.__array_interface__["data"][0] % 64 == 0 and over.nbytes == 1 << 19


def test_clear_releases_only_free_buffers(fresh_pool):
    keep = ws.empty(np, (256, 256), np.float32)
    tmp = ws.empty(np, (128, 256), np.float32)
    del tmp
    ws.clear()
    s = ws.stats()
    assert s["buffers"] == 1 and s["in_use"] == 1 and s["nbytes"] == keep.nbytes + ws.ALIGN


@pytest.mark.parametrize("value, exc", [(-1, ValueError), (1.5, TypeError), ("1", TypeError),
                                        (True, TypeError)])
def test_set_limit_rejects_bad_values(value, exc):
    with pytest.raises(exc, match="nbytes"):
        ws.set_limit(value)


def test_env_limit_is_validated(monkeypatch):
    monkeypatch.setenv("NPL_WORKSPACE_BYTES", "lots")
    with pytest.raises(ValueError, match="NPL_WORKSPACE_BYTES"):
        ws._limit_from_env()
    monkeypatch.setenv("NPL_WORKSPACE_BYTES", "0")
    assert ws._limit_from_env() == 0
