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

``differences`` lives in :mod:`modelyard.models.signature` (promotion gates use it too)
and is re-exported here.
"""

from __future__ import annotations

from modelyard.errors import ModelError
from modelyard.models.runtimes import Inputs
from modelyard.models.signature import Signature, differences
from modelyard.serving.codecs.columns import assemble

__all__ = ["adapt", "differences"]


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
