"""npl's benchmark suite: npl against TensorFlow (TF1 graph and Keras) and PyTorch on the CPU.

One command runs it from the repository root::

    python -m benchmarks.run            # the full table (several minutes on 2 cores)
    python -m benchmarks.run --quick    # C1 and C4, few repeats (under a minute)
    python -m benchmarks.run --sweep-T  # time and memory against sequence length
    python -m benchmarks.run --sweep B  # ... against the batch (--sweep H: hidden units)
    python -m benchmarks.run --long     # T=10000 runs, no recursion, linear cost

Modules: :mod:`benchmarks.spec` (configurations, FLOP counts, validation),
:mod:`benchmarks.measure` (timing loop, peak memory, BLAS and environment facts),
:mod:`benchmarks.worker` (the per-framework subprocess), :mod:`benchmarks.frameworks`
(one module per framework), :mod:`benchmarks.report` (tables, JSON, charts) and
:mod:`benchmarks.run` (the command line).
"""
