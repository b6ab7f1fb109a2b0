"""Steps and pipelines the runner tests run (importable, so pool workers find them)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import modelyard
from modelyard.pipelines import current_step, pipeline, step


@step
def numbers(n: int = 5) -> list[int]:
    return list(range(n))


@step
def nap(values: list[int], seconds: float = 0.0, add: int = 0) -> list[int]:
    time.sleep(seconds)
    return [v + add for v in values]


@step
def combine(a: list[int], b: list[int]) -> dict[str, int]:
    modelyard.log_metric("total", sum(a) + sum(b))
    return {"total": sum(a) + sum(b), "count": len(a) + len(b)}


@pipeline
def diamond(n: int = 5, seconds: float = 0.0) -> None:
    """numbers -> (left, right) -> combine; left and right may run at once."""
    values = numbers(n)
    left = nap.with_options(id="left")(values, seconds=seconds, add=1)
    right = nap.with_options(id="right")(values, seconds=seconds, add=2)
    combine(left, right)


@step
def boom(values: list[int], message: str = "bad value") -> list[int]:
    print("about to fail")
    raise ValueError(message)


@step
def after_boom(values: list[int]) -> int:
    return len(values)


@pipeline
def failing(message: str = "bad value") -> None:
    """A failing branch (boom -> after_boom -> combine) and an independent one (side)."""
    values = numbers(3)
    broken = boom(values, message=message)
    after_boom(broken)
    side = nap.with_options(id="side")(values, add=10)
    combine(side, broken)


@step
def chatty(values: list[int]) -> int:
    print("python-level print")
    sys.stdout.flush()
    os.write(1, b"fd-level stdout\n")
    os.write(2, b"fd-level stderr\n")
    subprocess.run([sys.executable, "-c", "print('from a subprocess')"], check=True)
    return len(values)


@step
def records_features(values: list[int]) -> int:
    here = current_step()
    here.record_input("training_set", "ab" * 32, kind="features", description="churn:v1")
    modelyard.log_metric("rows", len(values))
    modelyard.set_tag("seen_step", here.step)
    return len(values)


@pipeline
def observed() -> None:
    values = numbers(4)
    chatty(values)
    records_features(values)


@step
def crash(values: list[int]) -> int:
    os._exit(3)


@pipeline
def crashing() -> None:
    crash(numbers(2))


@step
def empty() -> None:
    return None


@pipeline
def empty_chain(n: int = 20) -> None:
    previous = None
    for i in range(n):
        after = [] if previous is None else [previous]
        previous = empty.with_options(id=f"e{i}", after=after)()


@step
def stage(values: list[int], scale: int = 1, hold: str = "") -> list[int]:
    """Sleeps while the file ``hold`` exists (the kill test holds step 3 there)."""
    if hold:
        Path(hold + ".started").write_text(str(os.getpid()))
        while Path(hold).exists():
            time.sleep(0.05)
    return [v * scale for v in values]


@pipeline
def chain(hold: str = "") -> None:
    """s1 -> s2 -> s3 (may hold) -> s4."""
    v = numbers(6)
    v = stage.with_options(id="s2")(v, scale=2)
    v = stage.with_options(id="s3")(v, scale=3, hold=hold)
    stage.with_options(id="s4")(v, scale=5)


@step
def load(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()]


@pipeline
def fixed(path: Path = Path("data.txt")) -> None:
    load(path)


@step
def summary(result: dict[str, int]) -> str:
    return f"{result['total']}/{result['count']}"


@pipeline
def five(n: int = 5) -> None:
    """numbers -> (left, right) -> combine -> summary."""
    values = numbers(n)
    left = nap.with_options(id="left")(values, add=1)
    right = nap.with_options(id="right")(values, add=2)
    summary(combine(left, right))


@step(outputs=("low", "high"))
def halves(values: list[int]) -> tuple[list[int], list[int]]:
    return values  # type: ignore[return-value] - wrong on purpose: one list, not two


@pipeline
def wrong_shape() -> None:
    halves(numbers(4))


@step
def fit(values: list[int]) -> str:
    from sklearn.linear_model import LogisticRegression

    x = [[float(v)] for v in values]
    y = [v % 2 for v in values]
    model = LogisticRegression().fit(x, y)
    logged = modelyard.log_model(model, name="parity", no_signature=True)
    return logged.ref


@pipeline
def trains() -> None:
    fit(numbers(6))


@step
def interrupted(values: list[int]) -> int:
    raise KeyboardInterrupt


@pipeline
def ctrl_c() -> None:
    interrupted(numbers(2))


@step
def work(tag: str, fail: bool = False, a: int = 0, b: int = 0) -> int:
    if fail:
        raise ValueError(f"{tag} fails on purpose")
    return a + b + len(tag)


@pipeline
def random_dag(spec: list[list[int]] = [], failing: list[int] = []) -> None:  # noqa: B006
    """Node i takes the outputs of spec[i][0:2] as a and b and runs after spec[i][2:]."""
    refs: list[object] = []
    for i, ins in enumerate(spec):
        kwargs = {slot: refs[j] for slot, j in zip(("a", "b"), ins[:2], strict=False)}
        after = [f"n{j}" for j in ins[2:]]
        node = work.with_options(id=f"n{i}", after=after)
        refs.append(node(tag=f"n{i}", fail=i in failing, **kwargs))


@dataclass
class Box:
    value: int


@step
def make_box(n: int = 3) -> Box:
    return Box(n)


@step
def open_box(box: Box) -> int:
    return box.value * 10


@pipeline
def boxes() -> None:
    open_box(make_box())


@step(name="make_box")
def make_box_untyped(n: int = 3):  # type: ignore[no-untyped-def] - no annotation: "auto"
    return Box(n)


@pipeline
def boxes_untyped() -> None:
    open_box(make_box_untyped())


def _broken_fingerprint(params: object) -> dict[str, str]:
    raise KeyError("feature_store_url")


@step(fingerprint=_broken_fingerprint)
def fingerprinted(values: list[int]) -> int:
    return len(values)


@pipeline
def bad_fingerprint() -> None:
    values = numbers(3)
    fingerprinted(values)
    nap.with_options(id="other")(values)
