"""Online stores: the latest feature values by entity key, for serving.

``open_online_store(url)`` picks the backend from the URL: ``sqlite:///path/online.db``
(the default, :class:`SQLiteOnlineStore`) or ``redis://host:port/db``
(:class:`RedisOnlineStore`, needs the ``redis`` extra). Every backend follows the rules in
:mod:`modelyard.features.online.base`: writes are monotonic, reads are one batch with a
status per key checked against the view's ttl at read time. ``get_online_features`` turns
feature refs and entity columns into one ``read_many`` on a store.

>>> store = open_online_store("sqlite:///:memory:")
>>> isinstance(store, OnlineStore)
True
"""

from __future__ import annotations

from modelyard.errors import InvalidInputError
from modelyard.features.online.base import FeatureStatus, OnlineResult, OnlineStore, ReadRequest
from modelyard.features.online.redis import RedisOnlineStore
from modelyard.features.online.retrieval import OnlineFeatures, get_online_features
from modelyard.features.online.sqlite import SQLiteOnlineStore
from modelyard.store.urls import redact_url

__all__ = [
    "FeatureStatus",
    "OnlineFeatures",
    "OnlineResult",
    "OnlineStore",
    "ReadRequest",
    "RedisOnlineStore",
    "SQLiteOnlineStore",
    "get_online_features",
    "open_online_store",
]


def open_online_store(url: str, *, prefix: str = "modelyard:") -> OnlineStore:
    """The online store at ``url``: ``sqlite:///...`` or ``redis://...``."""
    if url.startswith("sqlite:///"):
        return SQLiteOnlineStore(url)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisOnlineStore(url, prefix=prefix)
    shown = redact_url(url)  # never show credentials
    raise InvalidInputError(
        f"Expected an online store URL starting sqlite:/// or redis://, got {shown!r}",
        loc="online_store",
    )
