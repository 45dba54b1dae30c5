"""The examples in the public docstrings run and print what they say."""
import doctest

import pytest

import npl.array_ops
import npl.cells
import npl.initializers
import npl.layers
import npl.legacy_seq2seq
import npl.rnn_ops


# (npl.gradcheck, npl.inspect.core and npl.seq2seq: in their own test files)
@pytest.mark.parametrize("module", [npl.array_ops, npl.rnn_ops, npl.cells, npl.layers, npl.initializers,
                                    npl.legacy_seq2seq],
                         ids=lambda m: m.__name__)
def test_docstring_examples(module):
    res = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0
    assert res.failed == 0
