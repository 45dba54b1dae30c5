"""The README's Python examples run as written (in a temporary folder), so the README stays true.

Blocks that need outside files (a TF checkpoint, a Keras or PyTorch model of the user's) are
covered by tests/test_convert.py instead; every other block is executed here.
"""
import os
import re

import pytest

README = os.path.join(os.path.dirname(__file__), "..", "README.md")
NEEDS_OUTSIDE_FILES = ("model.ckpt", "keras_lstm", "torch_lstm", "outputs, final_state, trace = npl")


def _blocks():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    return [b for b in re.findall(r"```python\n(.*?)```", text, re.S)
            if not any(m in b for m in NEEDS_OUTSIDE_FILES)]


def test_readme_has_runnable_examples():
    assert len(_blocks()) >= 6


def test_readme_examples_run(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    ns = {}
    for block in _blocks():          # one namespace: later blocks continue earlier ones
        exec(compile(block, "README.md", "exec"), ns)
    assert os.path.exists("loss.png") and os.path.exists("char.npz")
    assert os.path.exists("saturation.png") and os.path.exists("gradients.png")
