"""Behavioural tests of a model, declared in Python, and the gate that runs them.

Three kinds (after Ribeiro et al., "Beyond accuracy: behavioral testing of NLP models
with CheckList", 2020):

- :class:`InvarianceTest`: perturbing a column (a callable, ``{"add": x}``,
  ``{"set": v}`` or ``{"shuffle": True}``) keeps every row's score within ``epsilon``;
- :class:`DirectionalTest`: raising (or lowering) a column by ``delta`` must not move
  the score the wrong way by more than ``tolerance``;
- :class:`MinimumFunctionalityTest`: hand-written cases get the expected predictions
  (a list compared with ``predict``) or satisfy a predicate on their score.

A project declares them in a module (``gate_checks.py`` beside ``modelyard.yaml``)::

    from modelyard.gates import DirectionalTest, InvarianceTest
    checks = [
        InvarianceTest("carrier", {"shuffle": True}, epsilon=0.05),
        DirectionalTest("dep_delay", delta=30, direction="increase"),
    ]

and ``{type: behaviour, module: gate_checks}`` runs them on the evaluation rows. The
score is the probability of the positive class for a binary classifier, the prediction
otherwise (as every gate reads it). Failing rows or cases are listed (the first few).
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from modelyard.errors import InvalidInputError
from modelyard.gates.base import GateContext, GateResult
from modelyard.gates.champion import score_failure
from modelyard.models.package import PackagedModel

__all__ = [
    "BehaviourGate",
    "BehaviourOutcome",
    "BehaviourTest",
    "DirectionalTest",
    "InvarianceTest",
    "MinimumFunctionalityTest",
    "ModelScorer",
    "Scorer",
    "load_checks",
]

EXAMPLES = 5  # failing rows or cases listed per test


class Scorer(Protocol):
    """What a behavioural test scores rows with."""

    def scores(self, frame: pd.DataFrame) -> NDArray[np.float64]: ...

    def predict(self, frame: pd.DataFrame) -> NDArray[Any]: ...


@dataclass
class ModelScorer:
    """Scores of a packaged model.

    P(positive) for a binary classifier, the class probabilities (one column per class)
    for a multi-class one, the prediction for any other model.
    """

    model: PackagedModel

    def scores(self, frame: pd.DataFrame) -> NDArray[np.float64]:
        manifest = self.model.manifest
        if manifest.task == "classification" and manifest.classes:
            values = np.asarray(self.model.scores(frame), dtype=np.float64)
            if len(manifest.classes) == 2 and values.ndim == 2:
                return values[:, 1]
            return values
        predicted = np.asarray(self.model.predict(frame), dtype=np.float64)
        return predicted.reshape(len(frame), -1)[:, 0]

    def predict(self, frame: pd.DataFrame) -> NDArray[Any]:
        return np.asarray(self.model.predict(frame))


@dataclass(frozen=True)
class BehaviourOutcome:
    """One test's outcome: rows (or cases) checked, how many failed, the first few."""

    test: str
    kind: str
    passed: bool
    checked: int
    failed: int
    summary: str
    examples: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "kind": self.kind,
            "passed": self.passed,
            "checked": self.checked,
            "failed": self.failed,
            "summary": self.summary,
            "examples": [dict(e) for e in self.examples],
        }


class BehaviourTest(Protocol):
    """A behavioural test: a name, a kind and ``run(scorer, frame)``."""

    name: str
    kind: str

    def run(self, scorer: Scorer, frame: pd.DataFrame) -> BehaviourOutcome: ...


def _plain(value: Any) -> Any:
    """A JSON-able scalar (numpy scalars to Python, non-finite floats to None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


Perturbation = Callable[[pd.Series], Any] | Mapping[str, Any]


def _perturbed(column: pd.Series, perturb: Perturbation, seed: int) -> pd.Series:
    if callable(perturb):
        return pd.Series(np.asarray(perturb(column.copy())), index=column.index)
    if "add" in perturb:
        added: pd.Series = column + perturb["add"]
        return added
    if "set" in perturb:
        return pd.Series([perturb["set"]] * len(column), index=column.index)
    if perturb.get("shuffle"):
        order = np.random.default_rng(seed).permutation(len(column))
        return pd.Series(column.to_numpy()[order], index=column.index)
    raise InvalidInputError(  # checked in __init__; kept for direct calls
        f'Expected perturb as a callable or {{"add": x}}, {{"set": v}}, {{"shuffle": true}}, '
        f"got {perturb!r}",
        loc="perturb",
    )


def _check_perturb(perturb: Any) -> None:
    if callable(perturb):
        return
    ok = isinstance(perturb, Mapping) and len(perturb) == 1
    if ok and "shuffle" in perturb:
        ok = perturb["shuffle"] is True
    elif ok and "add" in perturb:
        ok = isinstance(perturb["add"], int | float) and not isinstance(perturb["add"], bool)
    elif ok:
        ok = "set" in perturb
    if not ok:
        raise InvalidInputError(
            f'Expected perturb as a callable or {{"add": x}}, {{"set": v}}, {{"shuffle": true}}, '
            f"got {perturb!r}",
            loc="perturb",
        )


def _missing(kind: str, name: str, column: str, frame: pd.DataFrame) -> BehaviourOutcome | None:
    if column in frame.columns:
        return None
    return BehaviourOutcome(
        name, kind, False, 0, 0, f"column {column!r} is not in the evaluation data"
    )


def _compare(
    name: str,
    kind: str,
    frame: pd.DataFrame,
    column: str,
    changed: pd.Series,
    before: NDArray[np.float64],
    after: NDArray[np.float64],
    bad: NDArray[np.bool_],
    rule: str,
) -> BehaviourOutcome:
    rows = np.flatnonzero(bad)
    examples = tuple(
        {
            "row": _plain(frame.index[i]),
            "column": column,
            "value": _plain(frame[column].iloc[i]),
            "perturbed": _plain(changed.iloc[i]),
            "score": _plain(before[i]),
            "perturbed_score": _plain(after[i]),
            "change": _plain(after[i] - before[i]),
        }
        for i in rows[:EXAMPLES]
    )
    failed = len(rows)
    summary = (
        f"{failed} of {len(frame)} rows break {rule}"
        if failed
        else f"all {len(frame)} rows keep {rule}"
    )
    return BehaviourOutcome(name, kind, failed == 0, len(frame), failed, summary, examples)


@dataclass
class InvarianceTest:
    """Perturbing ``column`` keeps each row's score within ``epsilon`` of the original."""

    column: str
    perturb: Perturbation
    epsilon: float = 1e-6
    name: str = ""
    seed: int = 0
    kind: str = field(default="invariance", init=False)

    def __post_init__(self) -> None:
        _check_perturb(self.perturb)
        if not (math.isfinite(self.epsilon) and self.epsilon >= 0):
            raise InvalidInputError(f"Expected epsilon >= 0, got {self.epsilon}", loc="epsilon")
        self.name = self.name or f"invariance:{self.column}"

    def run(self, scorer: Scorer, frame: pd.DataFrame) -> BehaviourOutcome:
        missing = _missing(self.kind, self.name, self.column, frame)
        if missing:
            return missing
        changed = _perturbed(frame[self.column], self.perturb, self.seed)
        before = scorer.scores(frame)
        after = scorer.scores(frame.assign(**{self.column: changed}))
        moved = np.abs(after - before)
        if moved.ndim == 2:  # class probabilities: the class that moved most per row
            rows, moved_most = np.arange(len(moved)), moved.argmax(axis=1)
            moved = moved[rows, moved_most]
            before, after = before[rows, moved_most], after[rows, moved_most]
        bad = ~(moved <= self.epsilon)  # NaN counts as a failure
        rule = f"|score change| <= {self.epsilon:g} when {self.column} is perturbed"
        return _compare(self.name, self.kind, frame, self.column, changed, before, after, bad, rule)


@dataclass
class DirectionalTest:
    """Moving ``column`` by ``delta`` must not move the score against ``direction``.

    ``direction="increase"``: the score may not fall by more than ``tolerance``;
    ``"decrease"``: it may not rise by more than ``tolerance``.
    """

    column: str
    delta: float
    direction: str = "increase"
    tolerance: float = 0.0
    name: str = ""
    kind: str = field(default="directional", init=False)

    def __post_init__(self) -> None:
        if self.direction not in ("increase", "decrease"):
            raise InvalidInputError(
                f"Expected direction 'increase' or 'decrease', got {self.direction!r}",
                loc="direction",
            )
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise InvalidInputError(
                f"Expected tolerance >= 0, got {self.tolerance}", loc="tolerance"
            )
        if not math.isfinite(self.delta) or self.delta == 0:
            raise InvalidInputError(f"Expected a non-zero delta, got {self.delta}", loc="delta")
        self.name = self.name or f"directional:{self.column}"

    def run(self, scorer: Scorer, frame: pd.DataFrame) -> BehaviourOutcome:
        missing = _missing(self.kind, self.name, self.column, frame)
        if missing:
            return missing
        changed = frame[self.column] + self.delta
        before = scorer.scores(frame)
        after = scorer.scores(frame.assign(**{self.column: changed}))
        if np.ndim(before) != 1:
            return BehaviourOutcome(
                self.name,
                self.kind,
                False,
                0,
                0,
                "directional tests need one score per row (a binary classifier or a "
                f"regressor), got {np.shape(before)[1]} class probabilities",
            )
        change = after - before
        if self.direction == "increase":
            bad = ~(change >= -self.tolerance)
        else:
            bad = ~(change <= self.tolerance)
        rule = (
            f"score {'not falling' if self.direction == 'increase' else 'not rising'} "
            f"(tolerance {self.tolerance:g}) when {self.column} moves by {self.delta:+g}"
        )
        return _compare(self.name, self.kind, frame, self.column, changed, before, after, bad, rule)


@dataclass
class MinimumFunctionalityTest:
    """Hand-written ``cases`` (row dicts) get the ``expected`` answers.

    ``expected`` is a list (one per case, compared with the model's ``predict``, as text
    for classes and within ``atol`` for numbers) or a predicate on each case's score (a
    float; the row of class probabilities for a multi-class model).
    """

    cases: Sequence[Mapping[str, Any]]
    expected: Sequence[Any] | Callable[[Any], bool]
    name: str = "minimum_functionality"
    atol: float = 1e-9
    kind: str = field(default="minimum_functionality", init=False)

    def __post_init__(self) -> None:
        if not self.cases:
            raise InvalidInputError("Expected at least one case", loc="cases")
        if not callable(self.expected) and len(self.expected) != len(self.cases):
            raise InvalidInputError(
                f"Expected one expected answer per case ({len(self.cases)}), "
                f"got {len(self.expected)}",
                loc="expected",
            )

    def run(self, scorer: Scorer, frame: pd.DataFrame) -> BehaviourOutcome:
        cases = pd.DataFrame([dict(c) for c in self.cases])
        failures: list[dict[str, Any]] = []
        if callable(self.expected):
            predicate = self.expected
            scores = scorer.scores(cases)
            for i, score in enumerate(scores):
                if not predicate(float(score) if np.ndim(score) == 0 else score):
                    failures.append({"case": i, "score": _plain(score)})
        else:
            predicted = scorer.predict(cases)
            for i, (got, want) in enumerate(zip(predicted, self.expected, strict=True)):
                if not _same(got, want, self.atol):
                    failures.append({"case": i, "expected": _plain(want), "got": _plain(got)})
        for failure in failures:
            failure["input"] = {k: _plain(v) for k, v in self.cases[failure["case"]].items()}
        total, failed = len(self.cases), len(failures)
        summary = f"{failed} of {total} cases fail" if failed else f"all {total} cases as expected"
        return BehaviourOutcome(
            self.name, self.kind, not failed, total, failed, summary, tuple(failures[:EXAMPLES])
        )


def _same(got: Any, want: Any, atol: float) -> bool:
    if isinstance(want, int | float) and not isinstance(want, bool):
        try:
            return bool(abs(float(got) - float(want)) <= atol)
        except (TypeError, ValueError):
            return False
    return str(_plain(got)) == str(_plain(want))


def load_checks(name: str, project_dir: Path) -> list[BehaviourTest]:
    """``checks`` of the project's module ``name`` (imported with the project on sys.path)."""
    root = str(Path(project_dir).resolve())
    loaded = sys.modules.get(name)
    if loaded is not None and not str(getattr(loaded, "__file__", "") or "").startswith(root):
        del sys.modules[name]  # a module of that name from another project
    sys.path.insert(0, root)
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # the project's code: any failure is reported, not raised on
        raise InvalidInputError(
            f"Cannot import the behaviour module {name!r} from {root}: {type(exc).__name__}: {exc}",
            loc="module",
        ) from exc
    finally:
        sys.path.remove(root)
    checks = getattr(module, "checks", None)
    if not isinstance(checks, list | tuple) or not all(
        hasattr(c, "run") and hasattr(c, "name") for c in checks
    ):
        raise InvalidInputError(
            f"Expected module {name!r} to define checks = [InvarianceTest(...), ...], "
            f"got {type(checks).__name__}",
            loc=f"{name}.checks",
        )
    return list(checks)


class BehaviourGate:
    """Run behavioural tests (given, or ``checks`` of a project module) on the candidate."""

    kind = "behaviour"

    def __init__(
        self,
        tests: Sequence[BehaviourTest] | None = None,
        *,
        module: str | None = None,
        max_rows: int = 2000,
        name: str | None = None,
        required: bool = True,
    ) -> None:
        if (tests is None) == (module is None):
            raise InvalidInputError("Expected tests= or module=, exactly one", loc="module")
        if max_rows < 1:
            raise InvalidInputError(f"Expected max_rows >= 1, got {max_rows}", loc="max_rows")
        self.tests = None if tests is None else list(tests)
        self.module, self.max_rows = module, int(max_rows)
        self.name = name or (f"behaviour:{module}" if module else "behaviour")
        self.required = required

    def __repr__(self) -> str:
        return f"BehaviourGate(module={self.module!r}, tests={self.tests!r})"

    def _result(
        self, passed: bool, summary: str, numbers: dict[str, Any], details: tuple[Any, ...] = ()
    ) -> GateResult:
        return GateResult(
            self.name, self.kind, passed, self.required, summary, numbers, None, details
        )

    def evaluate(self, ctx: GateContext) -> GateResult:
        """Run every test on the first ``max_rows`` evaluation rows (features only)."""
        try:
            tests = (
                self.tests
                if self.tests is not None
                else load_checks(str(self.module), ctx.settings.project_dir)
            )
        except InvalidInputError as exc:
            return self._result(False, str(exc), {"tests": 0})
        frame = ctx.frame.drop(columns=[ctx.label], errors="ignore").head(self.max_rows)
        scorer = ModelScorer(ctx.candidate_model)
        outcomes: list[BehaviourOutcome] = []
        for test in tests:
            try:
                outcomes.append(test.run(scorer, frame))
            except score_failure as exc:
                outcomes.append(
                    BehaviourOutcome(test.name, test.kind, False, 0, 0, f"could not run: {exc}")
                )
        failed = [o for o in outcomes if not o.passed]
        numbers: dict[str, Any] = {
            "tests": len(outcomes),
            "failed_tests": len(failed),
            "rows": len(frame),
            "per_test": {o.test: {"checked": o.checked, "failed": o.failed} for o in outcomes},
        }
        details = tuple(o.to_dict() for o in sorted(outcomes, key=lambda o: o.passed))
        if not outcomes:
            return self._result(False, "no behavioural tests declared", numbers)
        if failed:
            shown = "; ".join(f"{o.test}: {o.summary}" for o in failed[:3])
            summary = f"{len(failed)} of {len(outcomes)} behavioural tests fail: {shown}"
        else:
            summary = f"all {len(outcomes)} behavioural tests pass on {len(frame)} rows"
        return self._result(not failed, summary, numbers, details)
