"""runtime.evaluation.compare: one measure of how far two runs of a model are, and it never passes on NaN."""

import numpy as np
import pytest

from runtime.evaluation.compare import relative_difference


def test_relative_difference_by_hand():
    assert relative_difference(np.array([2.0, -4.0]), np.array([2.0, -3.0])) == (1.0, 0.25)
    assert relative_difference(np.zeros(3), np.zeros(3)) == (0.0, 0.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_infinitely_far(bad):
    values = np.array([1.0, 2.0, 3.0])
    broken = values.copy()
    broken[1] = bad
    assert relative_difference(values, broken) == (float("inf"), float("inf"))
    assert relative_difference(broken, broken) == (float("inf"), float("inf"))  # NaN == NaN is no agreement
