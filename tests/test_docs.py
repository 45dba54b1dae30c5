"""docs/bptt.md cannot drift: its worked example is the script's output, its code references name
functions that exist, and the example's gradients agree with finite differences of npl's forward."""
import ast
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import npl
from npl.cells import LSTMStateTuple
from helpers import numpy_backend, numeric_grads, rel_err  # noqa: F401 (numpy_backend: autouse)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "bptt.md")
SCRIPT = os.path.join(ROOT, "examples", "bptt_worked_example.py")
BEGIN, END = "<!-- worked-example-output:begin -->", "<!-- worked-example-output:end -->"




@pytest.fixture(scope="module")
def script_output():
    r = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def doc():
    with open(DOC) as f:
        return f.read()


def quoted_block(doc):
    assert doc.count(BEGIN) == 1 and doc.count(END) == 1
    block = doc.split(BEGIN)[1].split(END)[0].strip()
    assert block.startswith("```text\n") and block.endswith("\n```")
    return block[len("```text\n"):-len("\n```")]


def test_doc_quotes_the_script_output_verbatim(doc, script_output):
    got = [line.rstrip() for line in quoted_block(doc).splitlines()]
    want = [line.rstrip() for line in script_output.strip().splitlines()]
    assert got == want
    assert want[-1].endswith("agrees to 1e-12: True")


def test_numbers_in_the_prose_come_from_the_output(doc, script_output):
    prose = doc.split(BEGIN)[0] + doc.split(END)[1]
    quoted = re.findall(r"-?\d+\.\d{6}\b", prose)
    assert len(quoted) >= 15                                    # the walk-through quotes the numbers
    printed = set(re.findall(r"-?\d+\.\d{6}\b", script_output))
    # a value may be quoted with its sign written apart ("0.057879 - 0.010272")
    missing = [q for q in quoted if not {q, q.lstrip("-"), "-" + q} & printed]
    assert not missing, "numbers in docs/bptt.md that the script does not print: %s" % missing


def _defined_names(path):
    """Top-level functions and classes of a module, and Class.method for their methods."""
    with open(path) as f:
        tree = ast.parse(f.read())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef):
                    names.add("%s.%s" % (node.name, sub.name))
    return names


def test_code_references_exist(doc):
    refs = re.findall(r"`(npl/[\w/]+\.py):([A-Za-z_][\w.]*)`", doc)
    assert len(refs) >= 25
    files = {p for p, _ in refs}
    assert {"npl/gates.py", "npl/cells.py", "npl/rnn_ops.py"} <= files
    bad = []
    for path, name in refs:
        full = os.path.join(ROOT, path)
        if not os.path.isfile(full) or name not in _defined_names(full):
            bad.append("%s:%s" % (path, name))
    assert not bad, "docs/bptt.md references that do not exist: %s" % bad


EQUATION = r"\(([FGRMBLUSN]\d+)\)"          # (F1), (L13), (U10), ...


def test_equation_labels_cited_in_the_code_are_defined_in_the_doc(doc):
    """Every equation label a comment or docstring of npl/ or examples/ cites, e.g. "(L10)", is
    one the doc defines (an equation line starting with it), so the code's pointers into the
    derivation cannot go stale."""
    defined = set(re.findall(r"^" + EQUATION + r" ", doc, flags=re.M))
    assert {"F1", "F8", "G3", "R1", "M2", "B2", "L16", "U10", "S3", "N1", "N17"} <= defined
    cited = {}
    for top in ("npl", "examples"):
        for dirpath, _, names in os.walk(os.path.join(ROOT, top)):
            for name in names:
                if name.endswith((".py", ".c", ".cu")):
                    path = os.path.join(dirpath, name)
                    with open(path) as f:
                        for label in re.findall(EQUATION, f.read()):
                            cited.setdefault(label, os.path.relpath(path, ROOT))
    assert len(cited) >= 10
    missing = {k: v for k, v in cited.items() if k not in defined}
    assert not missing, "cited but not defined in docs/bptt.md: %s" % missing


def _parse_vectors(text, label):
    """Rows printed as ``label = [ ... ]`` (or the matrix rows following ``label =``)."""
    m = re.search(re.escape(label) + r" = \[([^\]]*)\]", text)
    return np.array([float(v) for v in m.group(1).split(",")])


def test_printed_gradients_match_finite_differences(script_output):
    """Independent of both the hand backward and npl's backward: central differences of npl's
    forward with the script's weights, compared with the printed (6-decimal) gradients."""
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    try:
        import bptt_worked_example as ex
    finally:
        sys.path.pop(0)
    cell = npl.rnn.BasicLSTMCell(2, forget_bias=ex.FORGET_BIAS, dtype=np.float64)
    kernel, bias = ex.KERNEL.copy(), ex.BIAS.copy()
    cell.set_params({"kernel": kernel, "bias": bias})
    x, c0, h0 = ex.X[None].copy(), ex.C0[None].copy(), ex.H0[None].copy()

    def loss():
        y, _ = npl.nn.dynamic_rnn(cell, x, initial_state=LSTMStateTuple(c0, h0))
        return float((y[0] * ex.DY).sum())
    p = cell.params
    num = dict(zip(["kernel", "bias", "x", "c0", "h0"],
                   numeric_grads(loss, [p["kernel"], p["bias"], x, c0, h0])))
    rows = script_output.split("dL/dkernel =")[1].strip().splitlines()[:4]
    printed_kernel = np.array([[float(v) for v in r.strip(" []").split(",")] for r in rows])
    np.testing.assert_allclose(printed_kernel, num["kernel"], atol=6e-7)
    np.testing.assert_allclose(_parse_vectors(script_output, "dL/dbias"), num["bias"], atol=6e-7)
    np.testing.assert_allclose(_parse_vectors(script_output, "dL/dc_0"), num["c0"][0], atol=6e-7)
    np.testing.assert_allclose(_parse_vectors(script_output, "dL/dh_0"), num["h0"][0], atol=6e-7)
    for t in range(3):
        np.testing.assert_allclose(_parse_vectors(script_output, "dL/dx_%d" % (t + 1)),
                                   num["x"][0, t], atol=6e-7)
    # the loss itself, and the hand-computed forward, against npl's forward
    assert float(script_output.split("loss L = ")[1].split()[0]) == pytest.approx(loss(), abs=6e-7)
    steps = ex.forward()
    y, _ = npl.nn.dynamic_rnn(cell, x, initial_state=LSTMStateTuple(c0, h0))
    assert rel_err(np.stack([s["h"] for s in steps]), y[0]) < 1e-12
