"""Steps and pipelines at module level, for the definition and cache-key tests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelyard.pipelines import pipeline, register_materializer, step


class Animal:
    pass


class Dog(Animal):
    pass


class Rock:
    pass


class Unstorable:
    pass


class _Objects:
    """Stores the test classes above as nothing (they hold no state)."""

    name = "test.defs-objects"
    version = 1

    def handles(self, tp: Any) -> bool:
        return isinstance(tp, type) and issubclass(tp, Animal | Rock)

    def save(self, value: Any, folder: Path) -> Mapping[str, Any]:
        return {"class": type(value).__name__}

    def load(self, folder: Path, meta: Mapping[str, Any], tp: Any) -> Any:
        return {"Dog": Dog, "Animal": Animal, "Rock": Rock}[meta["class"]]()


register_materializer(_Objects(), first=False)


@step
def load(path: Path) -> dict[str, list[float]]:
    return {"x": [float(len(path.name))]}


@step(outputs=("train", "test"))
def split(
    frame: dict[str, list[float]], test_month: int = 6
) -> tuple[dict[str, list[float]], list[int]]:
    return frame, [test_month]


@step(packages=("msgspec",), cache_version=1)
def train(train: dict[str, list[float]], max_depth: int = 6) -> float:
    return float(max_depth)


@step
def evaluate(model: float, test: list[int]) -> None:
    return None


@step
def untyped(x, y=2):  # type: ignore[no-untyped-def]
    return x + y


@step
def pair(a: int) -> tuple[int, str]:
    return a, str(a)


@step
def make_dog() -> Dog:
    return Dog()


@step
def make_rock() -> Rock:
    return Rock()


@step
def pet(animal: Animal) -> int:
    return 1


@step
def scale(x: float, by: float = 2.0, label: str = "s", path: Path | None = None) -> float:
    return x * by


@step
def number(n: int = 1) -> int:
    return n


@pipeline
def flights(data: Path = Path("flights.csv"), max_depth: int = 6, test_month: int = 6) -> None:
    """Train and evaluate on the flights."""
    frame = load(data)
    tr, te = split(frame, test_month=test_month)
    model = train(tr, max_depth=max_depth)
    evaluate(model, te)


@pipeline
def needs(count: int, ratio: float = 0.5, tags: list[str] = ["a"], name: str = "x") -> None:  # noqa: B006
    number(count)


@step
def make_unstorable() -> Unstorable:
    return Unstorable()
