"""Versions of one model behind one URL: can they take the same request, and how.

A deployment serves a primary version and maybe a canary and a shadow (see
``deployments.py``). A client that calls ``/v1/models/NAME:predict`` does not know which
version answers, so every version must take every request the primary takes, and read it
the same way:

* ``differences(primary, other)`` lists why ``other`` could not (a missing or extra
  column, a type change, a column that may no longer be null, narrowed categories; and
  under ``value_checks: reject`` narrowed ranges and vocabularies). A traffic policy with
  any difference is refused when it is set, and a version whose alias moves to an
  incompatible one is not swapped in.
* ``adapt(inputs, signature)`` hands a request decoded with the primary's signature to
  another version: columns are taken **by name** and put in that version's own order.
  Positional rows (``[[1, "pro"], ...]``) are therefore always read in the order the
  model's metadata publishes (``GET /v2/models/NAME``: the primary's), whichever version
  answers; a request pinned to a version (``/v2/models/NAME/versions/3/infer``) is
  decoded with that version's own signature and order (``GET .../versions/3``).

>>> from modelyard.models.signature import ColumnSpec, Signature
>>> a = Signature(columns=[ColumnSpec(name="x", dtype="float"), ColumnSpec(name="k", dtype="int")])
>>> b = Signature(columns=[ColumnSpec(name="k", dtype="float"), ColumnSpec(name="y", dtype="int")])
>>> for line in differences(a, b):
...     print(line)
column 'x' is missing (the primary takes it)
column 'y' (int) is new: requests to the primary do not send it
column 'k' changed type: int in the primary, float here
"""

from __future__ import annotations

from modelyard.errors import ModelError
from modelyard.models.runtimes import Inputs
from modelyard.models.signature import ColumnSpec, Signature
from modelyard.serving.codecs.columns import allows_null, assemble

__all__ = ["adapt", "differences"]


def _listed(values: list[str]) -> str:
    shown = ", ".join(repr(v) for v in values[:5])
    return shown + (f" and {len(values) - 5} more" if len(values) > 5 else "")


def _narrowed_range(base: ColumnSpec, other: ColumnSpec) -> str | None:
    low_base = float("-inf") if base.min is None else base.min
    high_base = float("inf") if base.max is None else base.max
    low = float("-inf") if other.min is None else other.min
    high = float("inf") if other.max is None else other.max
    if low > low_base or high < high_base:
        return (
            f"column {base.name!r} takes a narrower range: [{low}, {high}] here, "
            f"[{low_base}, {high_base}] in the primary (value_checks: reject)"
        )
    return None


def _column_differences(
    base_sig: Signature, base: ColumnSpec, sig: Signature, other: ColumnSpec, strict: bool
) -> list[str]:
    name = base.name
    if base.dtype != other.dtype:
        return [f"column {name!r} changed type: {base.dtype} in the primary, {other.dtype} here"]
    out = []
    if allows_null(base_sig, base) and not allows_null(sig, other):
        out.append(f"column {name!r} may be null in the primary, not here")
    if other.categories is not None and (other.dtype == "category" or strict):
        missing = [c for c in (base.categories or []) if c not in set(other.categories)]
        if base.categories is None:
            out.append(f"column {name!r} takes any value in the primary, only listed ones here")
        elif missing:
            out.append(
                f"column {name!r} has narrowed categories: {_listed(missing)} "
                "taken by the primary, not here"
            )
    if strict and base.dtype in ("int", "float"):
        narrowed = _narrowed_range(base, other)
        if narrowed is not None:
            out.append(narrowed)
    return out


def differences(primary: Signature, other: Signature, *, strict_values: bool = False) -> list[str]:
    """Why ``other`` could not take every request ``primary`` takes (empty: it can).

    ``strict_values`` (the server's ``value_checks: reject``) also counts narrowed ranges
    and vocabularies of text columns, since a value outside them is then refused.
    """
    base = {spec.name: spec for spec in primary.columns}
    mine = {spec.name: spec for spec in other.columns}
    out = []
    for name in base:
        if name not in mine and other.extra_columns == "reject":
            out.append(f"column {name!r} is missing (the primary takes it)")
    for name, spec in mine.items():
        if name not in base:
            out.append(
                f"column {name!r} ({spec.dtype}) is new: requests to the primary do not send it"
            )
    for name, spec in mine.items():
        if name in base:
            out += _column_differences(primary, base[name], other, spec, strict_values)
    return out


def adapt(inputs: Inputs, signature: Signature) -> Inputs:
    """``inputs`` (decoded for another version) in ``signature``'s columns and order, by name.

    Only for versions ``differences`` found compatible: a column it cannot find is a
    server error, never a silent guess.
    """
    names = tuple(signature.names)
    if names == inputs.names:
        return inputs
    where = {name: i for i, name in enumerate(inputs.names)}
    columns = []
    for name in names:
        index = where.get(name)
        if index is None:
            raise ModelError(
                f"Column {name!r} of this version is not in the decoded request "
                f"({', '.join(inputs.names)}): the versions of this model are not compatible"
            )
        columns.append(inputs.columns[index])
    return assemble(signature, columns)
