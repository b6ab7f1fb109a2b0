"""Text columns reach a runtime as object arrays of str and None, whatever they came as.

A batch's checked text columns are already that, and skip the per-value loop; the class
of inputs that are not (NaN, numbers, NumPy's str subclass, plain lists) still goes
through it. Both must give exactly what the loop gives.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.models.runtimes import _column, _missing
from modelyard.models.signature import ColumnSpec


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.text(max_size=4), st.none(), st.just(float("nan")), st.integers(-5, 5),
                  st.floats(allow_nan=False, width=32), st.builds(np.str_, st.text(max_size=3))),
        max_size=30,
    ),
    dtype=st.sampled_from(["string", "category"]),
    as_array=st.booleans(),
)  # fmt: skip
def test_text_columns_convert_like_the_value_by_value_loop(
    values: list[object], dtype: str, as_array: bool
) -> None:
    """A text column given as an object array of str and None skips the per-value loop;
    anything else (NaN, numbers, str subclasses, lists) is converted value by value: both
    give exactly what the loop gives."""
    spec = ColumnSpec(name="c", dtype=dtype)
    given_values = np.array(values, dtype=object) if as_array else values
    got = _column(spec, given_values)
    want = [None if _missing(v) else str(v) for v in values]
    assert got.dtype == object and got.tolist() == want
    assert all(type(v) in (str, type(None)) for v in got.tolist())
