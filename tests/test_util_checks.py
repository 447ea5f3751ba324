"""labutils.util's argument checks: what they accept, what they return, and the one sentence they raise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labutils.util import check_choice, check_int, check_positive, check_probability


def test_check_int_accepts_integers_from_the_minimum_and_returns_a_python_int():
    assert check_int("epochs", 3) == 3
    value = check_int("depth", np.int64(4))
    assert value == 4 and type(value) is int
    assert check_int("t", 0, 0) == 0
    assert check_int("patience", None, allow_none=True) is None


@pytest.mark.parametrize("value", [0, -1, 2.0, True, "3", None])
def test_check_int_refuses_with_one_sentence(value):
    with pytest.raises(ValueError, match=rf"^epochs={value!r} is not possible: use an integer >= 1\.$"):
        check_int("epochs", value)


def test_check_choice():
    assert check_choice("norm", None, (None, "batch")) is None
    with pytest.raises(ValueError, match=r"^Unknown norm 'group': choose one of None, batch, layer\.$"):
        check_choice("norm", "group", (None, "batch", "layer"))


def test_check_positive():
    assert check_positive("lr", 3) == 3.0 and check_positive("lr", np.float32(0.5)) == 0.5
    for bad in (0, -0.1, math.inf, math.nan, True, "0.1"):
        with pytest.raises(ValueError, match=r"^lr=.* is not possible: use a finite number > 0\.$"):
            check_positive("lr", bad)


def test_check_probability_half_open_and_closed():
    assert check_probability("dropout", 0) == 0.0 and check_probability("dropout", 0.999) == 0.999
    with pytest.raises(ValueError, match=r"^dropout=1 is not possible: use a probability in \[0, 1\)\.$"):
        check_probability("dropout", 1)
    assert check_probability("p", 1, include_one=True) == 1.0
    for bad in (-0.1, 1.5, math.nan, True, None):
        with pytest.raises(ValueError, match=r"^p=.* is not possible: use a probability in \[0, 1\]\.$"):
            check_probability("p", bad, include_one=True)
