"""``check_parity``: the one comparison the server's warm-up, batch scoring and
``load_model(runtime="serving")`` make between a runtime's scores and the native ones."""

from __future__ import annotations

import numpy as np
import pytest

from modelyard.errors import ModelError
from modelyard.models.serving_model import SERVING_PARITY_ATOL, check_parity

EXPECTED = np.array([[0.25, 0.75], [np.nan, 1.0]])


def test_equal_scores_and_matching_nans_pass() -> None:
    check_parity("onnx", EXPECTED + SERVING_PARITY_ATOL / 2, EXPECTED, where="m/1", refusal="x")


def test_a_nan_where_the_native_model_had_a_number_is_refused() -> None:
    # np.nanmax, which the server's warm-up used before, skipped exactly this row
    got = EXPECTED.copy()
    got[0, 1] = np.nan
    with pytest.raises(ModelError, match=r"m/1: .*'onnx' differs .*; not serving it"):
        check_parity("onnx", got, EXPECTED, where="m/1", refusal="not serving it")


def test_a_difference_over_the_tolerance_and_another_shape_are_refused() -> None:
    with pytest.raises(ModelError, match=r"differs from the native model by 0\.001"):
        check_parity("onnx", EXPECTED + 1e-3, EXPECTED, where="m/1", refusal="x")
    with pytest.raises(ModelError, match=r"shape \(2, 1\), the package recorded \(2, 2\); x"):
        check_parity("onnx", EXPECTED[:, :1], EXPECTED, where="m/1", refusal="x")
