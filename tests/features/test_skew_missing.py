"""Skew checks: a missing value is missing whatever pandas dtype holds it.

The offline answer comes back in pandas' nullable dtypes (``Int64``, ``boolean``,
``string``, ``Float64``), whose missing value is ``pd.NA``; the online store answers
``None``. Both are "no value": comparing them must never count a mismatch (an ``int``
feature past its ttl was reported as skewed: online ``None``, offline ``<NA>``).
"""

from __future__ import annotations

from datetime import UTC

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from modelyard.features.skew import _plain, _same

_VALUES = {
    "Int64": st.integers(-(2**40), 2**40),
    "boolean": st.booleans(),
    "string": st.text(max_size=5),
    "Float64": st.floats(allow_nan=False, allow_infinity=False),
    "float64": st.floats(allow_nan=False, allow_infinity=False),
    "object": st.integers(-5, 5),
    "datetime64[us, UTC]": st.datetimes(timezones=st.just(UTC)),
}


@given(
    dtype=st.sampled_from(sorted(_VALUES)),
    data=st.data(),
)
def test_every_missing_value_compares_equal_to_the_online_none(
    dtype: str, data: st.DataObject
) -> None:
    values = data.draw(st.lists(st.one_of(st.none(), _VALUES[dtype]), min_size=1, max_size=6))
    series = pd.Series(values, dtype=dtype)
    plain = [_plain(v) for v in series.tolist()]
    for value, got in zip(values, plain, strict=True):
        if value is None:
            assert got is None
            assert _same(None, got) and _same(got, None)
        else:
            assert got is not None and not _same(None, got)
