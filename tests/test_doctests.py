"""The examples in the public docstrings run and print what they say."""
import doctest

import pytest

import npl.array_ops
import npl.rnn_ops


@pytest.mark.parametrize("module", [npl.array_ops, npl.rnn_ops])
def test_docstring_examples(module):
    res = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0
    assert res.failed == 0
