"""Rollback undoes the alias's last move whatever made it: a plain move, a promotion
(gated or forced) or another rollback. (It used to look at plain moves and rollbacks
only, so after a promotion it answered "no previous holder", or refused.)"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from modelyard.errors import ConflictError
from modelyard.registry.store import SQLRegistryStore
from modelyard.store.database import Database, open_database

VERSIONS = 3


@pytest.fixture(scope="module")
def store() -> Iterator[SQLRegistryStore]:
    db: Database = open_database("sqlite://")
    yield SQLRegistryStore(db)
    db.close()


def _model(store: SQLRegistryStore) -> str:
    name = f"m{uuid.uuid4().hex[:12]}"
    for v in range(1, VERSIONS + 1):
        package = uuid.uuid4().hex * 2
        store.record_package(package, flavor="custom", model_class="X", run_id=None, now=v)
        store.create_version(name, package, run_id=None, description=None, actor="t", now=v)
    return name


def _promote(action: str) -> Callable[[int | None], tuple[str, str | None]]:
    """The check a promotion passes: it records ``action`` (promote or promote_forced)."""
    return lambda _holder: (action, "because")


def test_rollback_after_a_promotion_returns_to_the_champion(store: SQLRegistryStore) -> None:
    name = _model(store)
    store.set_alias(name, "production", 1, actor="t", reason=None, now=10)
    store.move_alias_checked(name, "production", 2, check=_promote("promote"), actor="t", now=11)
    assert store.rollback(name, "production", actor="t", reason=None, now=12) == 1


moves = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["alias", "promote", "promote_forced"]),
            st.integers(1, VERSIONS),
        ),
        st.just(("rollback", 0)),
    ),
    min_size=1,
    max_size=12,
)


@hsettings(max_examples=40, deadline=None)
@given(steps=moves)
def test_rollback_undoes_the_last_move_of_any_kind(
    store: SQLRegistryStore, steps: list[tuple[str, int]]
) -> None:
    name = _model(store)
    holder: int | None = None
    history: list[tuple[int | None, int]] = []  # (from, to) of every move, in order
    for now, (kind, version) in enumerate(steps, start=10):
        if kind == "rollback":
            if holder is None:
                continue  # no alias yet: nothing to roll back (a NotFoundError)
            previous = history[-1][0]
            if previous is None:
                with pytest.raises(ConflictError):
                    store.rollback(name, "production", actor="t", reason=None, now=now)
                continue
            assert store.rollback(name, "production", actor="t", reason=None, now=now) == previous
            history.append((holder, previous))
            holder = previous
        elif kind == "alias":
            assert (
                store.set_alias(name, "production", version, actor="t", reason=None, now=now)
                == holder
            )
            history.append((holder, version))
            holder = version
        else:
            done = store.move_alias_checked(
                name, "production", version, check=_promote(kind), actor="t", now=now
            )
            assert done == holder
            history.append((holder, version))
            holder = version
