"""search_runs against a brute-force oracle, on every metadata backend.

A seeded generator logs ~40 runs over two experiments; every filter is then run
twice, once as SQL through ``search_runs`` and once as plain Python over the runs
we logged, and the two answers must be the same set (or, with ``order_by``, the
same sequence).

Semantics the oracle encodes (and so the suite pins down):

- A comparison on ``metrics.K``, ``params.K`` or ``tags.K`` only matches runs that
  have ``K``; ``!=`` and ``not in`` do not match runs missing ``K``.
- A metric whose latest value is NaN has no number to compare: it matches no
  comparison (``!=`` included) and sorts with the missing values, last. An
  infinite metric is a number and compares as one (``1e999`` is infinity).
- ``like`` is case-sensitive and ``ilike`` is not, on every backend; ``%`` matches
  any text, ``_`` one character.
- A number written in a text comparison means its text as written:
  ``params.depth = 6`` matches the param ``"6"``, ``params.depth = 6.0`` does not.
- ``status`` values are case-insensitive for ``=``, ``!=``, ``in``, ``not in``.
- A missing attribute (``end_time`` of a running run) matches no comparison.
- Without ``order_by`` (and after its terms) runs come newest first, then by id.
"""

from __future__ import annotations

import math
import operator
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from modelyard.config import init_project
from modelyard.errors import FilterSyntaxError, InvalidInputError, NotFoundError
from modelyard.tracking.client import TrackingClient
from modelyard.tracking.entities import RunStatus
from modelyard.tracking.filters import (
    MAX_COMPARISONS,
    MAX_DEPTH,
    compile_filter,
    parse_filter,
    parse_order,
)

SEEDS = [20240611]
N_RUNS = 40
EXPERIMENTS = ("churn", "fraud")
NAME_PREFIXES = ("nightly", "Nightly", "adhoc", "sweep_a", "sweepxa")
MODELS = ("hgb", "rf", "lr")
TEAMS = ("risk", "ops", "growth")
ENVS = ("prod", "Prod", "dev")

Pred = Callable[["Expected"], bool]


# -- the data set and what we expect the store to hold --------------------------------


@dataclass
class Expected:
    """A run as the oracle sees it: what we logged plus the times the store chose."""

    id: str
    experiment: str
    experiment_id: str
    name: str
    status: str
    start_time: int
    end_time: int | None
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]  # latest value per key; may be NaN or infinite


@dataclass
class Dataset:
    seed: int
    rows: list[Expected]
    by_id: dict[str, Expected] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {r.id: r for r in self.rows}

    def where(self, pred: Pred) -> set[str]:
        return {r.id for r in self.rows if pred(r)}


def _history(rng: random.Random, final: float) -> list[tuple[int, float]]:
    """A few earlier points and ``final`` at the highest step, in shuffled order."""
    steps = rng.randint(0, 3)
    points = [(s, round(rng.uniform(0.0, 1.0), 2)) for s in range(steps)]
    points.append((steps, final))
    rng.shuffle(points)
    return points


def _log_runs(client: TrackingClient, seed: int) -> Dataset:
    rng = random.Random(seed)
    planned: dict[str, dict[str, Any]] = {}
    for i in range(N_RUNS):
        experiment = rng.choice(EXPERIMENTS)
        name = f"{rng.choice(NAME_PREFIXES)}-{i:03d}"
        status = rng.choice(list(RunStatus))
        params: dict[str, str] = {}
        if rng.random() < 0.9:
            params["model"] = rng.choice(MODELS)
        if rng.random() < 0.85:
            params["depth"] = str(rng.randint(2, 12))
        tags: dict[str, str] = {}
        if rng.random() < 0.8:
            tags["team"] = rng.choice(TEAMS)
        if rng.random() < 0.7:
            tags["env"] = rng.choice(ENVS)
        if rng.random() < 0.5:
            tags["data.version"] = rng.choice(("v1", "v2"))
        if rng.random() < 0.3:
            tags["note"] = rng.choice(("it's ok", "fine"))
        metrics: dict[str, float] = {}
        roll = rng.random()
        if roll < 0.12:
            metrics["auc"] = math.nan
        elif roll < 0.85:
            metrics["auc"] = round(rng.uniform(0.5, 0.99), 2)
        roll = rng.random()
        if roll < 0.08:
            metrics["loss"] = math.inf
        elif roll < 0.85:
            metrics["loss"] = round(rng.uniform(0.0, 2.0), 2)
        if rng.random() < 0.5:
            metrics["val auc"] = round(rng.uniform(0.5, 0.99), 2)

        run = client.start_run(experiment, name=name, tags=tags)
        client.log_params(run.id, params)
        for key, final in metrics.items():
            for step, value in _history(rng, final):
                run.log_metric(key, value, step=step)
        if status is not RunStatus.RUNNING:
            run.end(status)
        planned[run.id] = {
            "experiment": experiment,
            "name": name,
            "status": status.value,
            "params": params,
            "tags": tags,
            "metrics": metrics,
        }
    client.flush()

    stored = client.search_runs(max_results=1000)
    assert {r.id for r in stored} == set(planned), f"seed={seed}"
    rows = []
    for run_ in stored:
        plan = planned[run_.id]
        # what the store holds must be what we logged, or the oracle compares nonsense
        assert (run_.experiment, run_.name, run_.status.value) == (
            plan["experiment"],
            plan["name"],
            plan["status"],
        ), f"seed={seed}"
        assert run_.params == plan["params"], f"seed={seed}"
        assert run_.tags == plan["tags"], f"seed={seed}"
        assert set(run_.metrics) == set(plan["metrics"]), f"seed={seed}"
        for key, value in plan["metrics"].items():
            got = run_.metrics[key]
            assert got == value or (math.isnan(got) and math.isnan(value)), (
                f"seed={seed} run {run_.name} metric {key}: stored {got}, logged {value}"
            )
        rows.append(
            Expected(
                id=run_.id,
                experiment=run_.experiment,
                experiment_id=run_.experiment_id,
                name=run_.name,
                status=run_.status.value,
                start_time=run_.start_time,
                end_time=run_.end_time,
                params=plan["params"],
                tags=plan["tags"],
                metrics=plan["metrics"],
            )
        )
    return Dataset(seed, rows)


@pytest.fixture(params=SEEDS, ids=lambda s: f"seed={s}")
def dataset(request: pytest.FixtureRequest, client: TrackingClient) -> Dataset:
    return _log_runs(client, request.param)


# -- the oracle ----------------------------------------------------------------------

_ORDER_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _like(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """SQL LIKE as a regular expression: ``%``, ``_``, and a backslash escaping both."""
    parts = []
    chars = iter(pattern)
    for c in chars:
        if c == "\\":
            parts.append(re.escape(next(chars, "\\")))
        else:
            parts.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _compare(actual: Any, op: str, value: Any) -> bool:
    if actual is None:
        return False
    if op in _ORDER_OPS:
        return _ORDER_OPS[op](actual, value)
    if op in ("like", "ilike"):
        return _like(value, op == "ilike").fullmatch(actual) is not None
    if op == "in":
        return actual in value
    assert op == "not in"
    return actual not in value


def _number(run: Expected, key: str) -> float | None:
    value = run.metrics.get(key)
    return None if value is None or math.isnan(value) else value


def metric(key: str, op: str, value: Any) -> Pred:
    return lambda r: _compare(_number(r, key), op, value)


def param(key: str, op: str, value: Any) -> Pred:
    return lambda r: _compare(r.params.get(key), op, value)


def tag(key: str, op: str, value: Any) -> Pred:
    return lambda r: _compare(r.tags.get(key), op, value)


def attr(key: str, op: str, value: Any) -> Pred:
    return lambda r: _compare(getattr(r, key), op, value)


def all_of(*preds: Pred) -> Pred:
    return lambda r: all(p(r) for p in preds)


def any_of(*preds: Pred) -> Pred:
    return lambda r: any(p(r) for p in preds)


def everything(_: Expected) -> bool:
    return True


def _search_ids(client: TrackingClient, filter: str, **kwargs: Any) -> set[str]:
    return {r.id for r in client.search_runs(filter=filter, max_results=1000, **kwargs)}


def _describe(data: Dataset, ids: set[str]) -> list[str]:
    return sorted(data.by_id[i].name for i in ids)


def _mismatch(client: TrackingClient, data: Dataset, text: str, pred: Pred) -> str | None:
    got = _search_ids(client, text)
    want = data.where(pred)
    if got == want:
        return None
    return (
        f"filter {text!r}\n"
        f"  only in SQL:    {_describe(data, got - want)}\n"
        f"  only in oracle: {_describe(data, want - got)}"
    )


def _check_filters(
    client: TrackingClient, data: Dataset, cases: Sequence[tuple[str, Pred]]
) -> None:
    """Every filter gives the oracle's runs; a failure lists every filter that did not."""
    wrong = [m for text, pred in cases if (m := _mismatch(client, data, text, pred))]
    assert not wrong, f"seed={data.seed}: {len(wrong)} of {len(cases)} filters differ\n" + (
        "\n".join(wrong)
    )


# -- hand-written cases: each piece of the syntax at least once ------------------------


def _curated(data: Dataset) -> list[tuple[str, Pred]]:
    rows = data.rows
    aucs = sorted({v for r in rows if (v := _number(r, "auc")) is not None})
    auc = aucs[len(aucs) // 2]
    auc2 = aucs[len(aucs) // 3]
    times = sorted(r.start_time for r in rows)
    t1, t2 = times[len(times) // 3], times[2 * len(times) // 3]
    ends = sorted(r.end_time for r in rows if r.end_time is not None)
    t_end = ends[len(ends) // 2]
    some = rows[len(rows) // 2]
    churn_id = next(r.experiment_id for r in rows if r.experiment == "churn")
    is_hgb = param("model", "=", "hgb")
    risk_or_ops = any_of(tag("team", "=", "risk"), tag("team", "=", "ops"))
    return [
        ("", everything),
        ("   ", everything),
        ("metrics.auc > 0.8", metric("auc", ">", 0.8)),
        ("metrics.auc>0.8", metric("auc", ">", 0.8)),
        ("metrics.auc > .8", metric("auc", ">", 0.8)),
        ("metrics.auc > 8e-1", metric("auc", ">", 0.8)),
        (f"metrics.auc = {auc!r}", metric("auc", "=", auc)),
        (f"metrics.auc == {auc!r}", metric("auc", "=", auc)),
        (f"metrics.auc != {auc!r}", metric("auc", "!=", auc)),
        (f"metrics.auc <> {auc!r}", metric("auc", "!=", auc)),
        (f"metrics.auc < {auc!r}", metric("auc", "<", auc)),
        (f"metrics.auc <= {auc!r}", metric("auc", "<=", auc)),
        (f"metrics.auc >= {auc!r}", metric("auc", ">=", auc)),
        (f"metrics.auc in ({auc!r}, {auc2!r})", metric("auc", "in", (auc, auc2))),
        (f"metrics.auc not in ({auc!r})", metric("auc", "not in", (auc,))),
        ("metrics.loss > -1", metric("loss", ">", -1.0)),
        ("metrics.loss = 1e999", metric("loss", "=", math.inf)),
        ("metrics.loss > 1e308", metric("loss", ">", 1e308)),
        ("metrics.loss <= 0.5", metric("loss", "<=", 0.5)),
        ("metrics.`val auc` > 0.7", metric("val auc", ">", 0.7)),
        ("metric.auc < 0.7", metric("auc", "<", 0.7)),
        ("metrics.no_such_metric > -1", lambda r: False),
        ("metrics.auc >= 0.8 and params.model = 'hgb'", all_of(metric("auc", ">=", 0.8), is_hgb)),
        (
            "metrics.auc < 0.7 or metrics.loss <= 0.5",
            any_of(metric("auc", "<", 0.7), metric("loss", "<=", 0.5)),
        ),
        ("params.model = 'hgb'", is_hgb),
        ('params.model = "hgb"', is_hgb),
        ("param.model = 'hgb'", is_hgb),
        ("params.model != 'lr'", param("model", "!=", "lr")),
        ("params.model in ('hgb', 'rf')", param("model", "in", ("hgb", "rf"))),
        ("params.model not in ('lr')", param("model", "not in", ("lr",))),
        ("params.model like 'h%'", param("model", "like", "h%")),
        ("params.model like 'H%'", param("model", "like", "H%")),
        ("params.model ilike 'H%'", param("model", "ilike", "H%")),
        ("params.model like '_f'", param("model", "like", "_f")),
        ("params.depth = 6", param("depth", "=", "6")),
        ("params.depth = '6'", param("depth", "=", "6")),
        ("params.depth = 6.0", param("depth", "=", "6.0")),
        ("params.depth in (3, 4, '5')", param("depth", "in", ("3", "4", "5"))),
        ("params.depth like '1%'", param("depth", "like", "1%")),
        ("params.nope = 'x'", lambda r: False),
        ("tags.team = 'risk' or tags.team = 'ops'", risk_or_ops),
        (
            "(tags.team = 'risk' or tags.team = 'ops') and status != 'FAILED'",
            all_of(risk_or_ops, attr("status", "!=", "FAILED")),
        ),
        (
            "tags.team = 'risk' or tags.team = 'ops' and status != 'FAILED'",
            any_of(
                tag("team", "=", "risk"),
                all_of(tag("team", "=", "ops"), attr("status", "!=", "FAILED")),
            ),
        ),
        (
            "((tags.team = 'risk')) and ((params.model = 'hgb') or (metrics.auc > 0.9))",
            all_of(tag("team", "=", "risk"), any_of(is_hgb, metric("auc", ">", 0.9))),
        ),
        ("tags.env = 'Prod'", tag("env", "=", "Prod")),
        ("tags.env like 'p%'", tag("env", "like", "p%")),
        ("tags.env ilike 'PROD'", tag("env", "ilike", "PROD")),
        ("tags.env in ('prod', 'dev')", tag("env", "in", ("prod", "dev"))),
        ("tags.data.version = 'v2'", tag("data.version", "=", "v2")),
        ("tags.`data.version` != 'v2'", tag("data.version", "!=", "v2")),
        ("tags.note = 'it''s ok'", tag("note", "=", "it's ok")),
        ('tags.note = "it\'s ok"', tag("note", "=", "it's ok")),
        ("tags.note like '%''s%'", tag("note", "like", "%'s%")),
        ("status = 'FINISHED'", attr("status", "=", "FINISHED")),
        ("status = 'finished'", attr("status", "=", "FINISHED")),
        ("status in ('FAILED', 'killed')", attr("status", "in", ("FAILED", "KILLED"))),
        ("status not in ('RUNNING')", attr("status", "not in", ("RUNNING",))),
        ("attributes.status != 'running'", attr("status", "!=", "RUNNING")),
        ("status like 'F%'", attr("status", "like", "F%")),
        ("status like 'f%'", attr("status", "like", "f%")),
        ("status ilike 'f%'", attr("status", "ilike", "f%")),
        ("name like 'nightly-%'", attr("name", "like", "nightly-%")),
        ("name ilike 'nightly-%'", attr("name", "ilike", "nightly-%")),
        ("run.name like 'sweep_a%'", attr("name", "like", "sweep_a%")),
        # the filter's string unescapes once, so LIKE sees `sweep\_a%`: a literal _
        (r"name like 'sweep\\_a%'", attr("name", "like", r"sweep\_a%")),
        (r"name ilike 'SWEEP\\_A%'", attr("name", "ilike", r"SWEEP\_A%")),
        ("name like '%-01_'", attr("name", "like", "%-01_")),
        (f"name = '{some.name}'", attr("name", "=", some.name)),
        (f"run_name != '{some.name}'", attr("name", "!=", some.name)),
        (f"id = '{some.id}'", attr("id", "=", some.id)),
        (f"experiment_id = '{churn_id}'", attr("experiment_id", "=", churn_id)),
        (f"start_time > {t1}", attr("start_time", ">", t1)),
        (f"start_time <= {t1}", attr("start_time", "<=", t1)),
        (
            f"attr.start_time >= {t1} and start_time < {t2}",
            all_of(attr("start_time", ">=", t1), attr("start_time", "<", t2)),
        ),
        (f"end_time > {t_end}", attr("end_time", ">", t_end)),
        (f"end_time != {t_end}", attr("end_time", "!=", t_end)),
        (
            "metrics.auc > 0.8 AND params.model IN ('hgb') "
            "OR status NOT IN ('RUNNING', 'FINISHED')",
            any_of(
                all_of(metric("auc", ">", 0.8), is_hgb),
                attr("status", "not in", ("RUNNING", "FINISHED")),
            ),
        ),
        (
            "params.model LIKE 'h%' Or tags.env ILike 'prod'",
            any_of(param("model", "like", "h%"), tag("env", "ilike", "prod")),
        ),
    ]


def test_filters_match_the_oracle(client: TrackingClient, dataset: Dataset) -> None:
    cases = _curated(dataset)
    _check_filters(client, dataset, cases)
    # the cases must discriminate: most match some runs but not all of them
    sizes = [len(dataset.where(pred)) for _, pred in cases]
    assert sum(0 < n < N_RUNS for n in sizes) >= 0.75 * len(cases), f"seed={dataset.seed}"


# -- random filters: and/or trees rendered with only the parentheses precedence needs ---


@dataclass(frozen=True)
class Expr:
    text: str
    test: Pred
    kind: str  # "leaf", "and" or "or"


def _num_text(value: float, rng: random.Random) -> str:
    forms = [repr(value), f"{value:e}"]
    if 0 < value < 1:
        forms.append(repr(value)[1:])  # .85
    return rng.choice(forms)


def _quote(value: str, rng: random.Random) -> str:
    if "'" not in value and rng.random() < 0.5:
        return f"'{value}'"
    if '"' not in value and "\\" not in value and rng.random() < 0.5:
        return f'"{value}"'
    return "'" + value.replace("'", "''") + "'"


def _kw(word: str, rng: random.Random) -> str:
    return rng.choice([word, word.upper()])


def _leaf(rng: random.Random, data: Dataset) -> Expr:
    rows = data.rows
    kind = rng.choice(["metric", "metric", "param", "param", "tag", "status", "name", "time"])
    if kind == "metric":
        key = rng.choice(["auc", "loss", "val auc"])
        present = [v for r in rows if (v := _number(r, key)) is not None and math.isfinite(v)]
        op = rng.choice([*_ORDER_OPS, "in", "not in"])
        field_ = f"metrics.`{key}`" if " " in key else f"metrics.{key}"
        if op in ("in", "not in"):
            texts = [_num_text(rng.choice(present), rng) for _ in range(rng.randint(1, 3))]
            values = tuple(float(t) for t in texts)
            return Expr(
                f"{field_} {_kw(op, rng)} ({', '.join(texts)})", metric(key, op, values), "leaf"
            )
        pick = rng.choice(present) if rng.random() < 0.5 else round(rng.uniform(0, 1.5), 3)
        text = _num_text(pick, rng)
        space = rng.choice(["", " "])
        return Expr(f"{field_}{space}{op}{space}{text}", metric(key, op, float(text)), "leaf")
    if kind in ("param", "tag"):
        if kind == "param":
            key, pool = rng.choice([("model", [*MODELS, "HGB", "xgb"]), ("depth", ["3", "7"])])
        else:
            key, pool = rng.choice([("team", [*TEAMS, "Risk"]), ("env", list(ENVS))])
        prefix = "params" if kind == "param" else "tags"
        check = param if kind == "param" else tag
        op = rng.choice(["=", "!=", "in", "not in", "like", "ilike"])
        if op in ("in", "not in"):
            values = tuple(rng.sample(pool, rng.randint(1, 2)))
            listed = ", ".join(_quote(v, rng) for v in values)
            return Expr(f"{prefix}.{key} {_kw(op, rng)} ({listed})", check(key, op, values), "leaf")
        value = rng.choice(pool)
        if op in ("like", "ilike"):
            value = rng.choice([value[0] + "%", "%" + value[-1], "_" + value[1:]])
        return Expr(
            f"{prefix}.{key} {_kw(op, rng) if op in ('like', 'ilike') else op} "
            f"{_quote(value, rng)}",
            check(key, op, value),
            "leaf",
        )
    if kind == "status":
        op = rng.choice(["=", "!=", "in", "not in", "like", "ilike"])
        if op in ("in", "not in"):
            values = tuple(rng.sample([s.value for s in RunStatus], rng.randint(1, 3)))
            shown = ", ".join(_quote(rng.choice([v, v.lower()]), rng) for v in values)
            return Expr(f"status {_kw(op, rng)} ({shown})", attr("status", op, values), "leaf")
        if op in ("like", "ilike"):
            pattern = rng.choice(["F%", "f%", "%ED", "_UNNING"])
            return Expr(f"status {op} '{pattern}'", attr("status", op, pattern), "leaf")
        value = rng.choice(list(RunStatus)).value
        shown = rng.choice([value, value.lower(), value.title()])
        return Expr(f"status {op} '{shown}'", attr("status", op, value), "leaf")
    if kind == "name":
        op = rng.choice(["like", "ilike", "=", "!="])
        if op in ("=", "!="):
            value = rng.choice(rows).name
        else:
            value = rng.choice(["nightly%", "Nightly-%", "sweep_a%", "%1_", "%-00%", "ADHOC%"])
        return Expr(f"name {op} '{value}'", attr("name", op, value), "leaf")
    key = rng.choice(["start_time", "end_time"])
    op = rng.choice(list(_ORDER_OPS))
    moment = rng.choice(rows).start_time
    return Expr(f"{key} {op} {moment}", attr(key, op, moment), "leaf")


def _combine(op: str, parts: Sequence[Expr], rng: random.Random) -> Expr:
    texts = []
    for part in parts:
        # "and" binds tighter than "or": only an "or" inside an "and" needs parentheses
        needed = op == "and" and part.kind == "or"
        texts.append(f"({part.text})" if needed or rng.random() < 0.1 else part.text)
    tests = tuple(p.test for p in parts)
    if op == "and":
        return Expr(f" {_kw('and', rng)} ".join(texts), all_of(*tests), "and")
    return Expr(f" {_kw('or', rng)} ".join(texts), any_of(*tests), "or")


def _random_filter(rng: random.Random, data: Dataset, depth: int = 0) -> Expr:
    if depth >= 3 or rng.random() < 0.35:
        return _leaf(rng, data)
    op = rng.choice(["and", "or"])
    parts = [_random_filter(rng, data, depth + 1) for _ in range(rng.randint(2, 3))]
    return _combine(op, parts, rng)


def test_random_filters_match_the_oracle(client: TrackingClient, dataset: Dataset) -> None:
    rng = random.Random(dataset.seed + 1)
    exprs = [_random_filter(rng, dataset) for _ in range(80)]
    _check_filters(client, dataset, [(e.text, e.test) for e in exprs])
    sizes = [len(dataset.where(e.test)) for e in exprs]
    assert sum(0 < n < N_RUNS for n in sizes) >= 0.5 * len(exprs), f"seed={dataset.seed}"
    assert sum(e.kind != "leaf" and "(" in e.text for e in exprs) >= 10, f"seed={dataset.seed}"


# -- ordering and paging ----------------------------------------------------------------


def _order_key(term: str) -> tuple[Callable[[Expected], Any], bool]:
    field_, _, direction = term.rpartition(" ")
    if direction.upper() not in ("ASC", "DESC"):
        field_, direction = term, "ASC"
    descending = direction.upper() == "DESC"
    kind, _, key = field_.partition(".")
    key = key.strip("`")
    if kind == "metrics":
        return (lambda r: _number(r, key)), descending
    if kind == "params":
        return (lambda r: r.params.get(key)), descending
    if kind == "tags":
        return (lambda r: r.tags.get(key)), descending
    name = {"run_name": "name", "run_id": "id"}.get(field_, field_)
    return (lambda r: getattr(r, name)), descending


def _oracle_order(rows: Sequence[Expected], order_by: Sequence[str]) -> list[str]:
    """Stable sorts from the last key to the first; missing values last either way."""
    ordered = sorted(rows, key=lambda r: r.id)
    ordered = sorted(ordered, key=lambda r: r.start_time, reverse=True)
    for term in reversed(order_by):
        value, descending = _order_key(term)
        present = [r for r in ordered if value(r) is not None]
        missing = [r for r in ordered if value(r) is None]
        ordered = sorted(present, key=value, reverse=descending) + missing
    return [r.id for r in ordered]


# Text orderings only use values whose order is the same in every collation
# (lowercase letters, digits): PostgreSQL may sort text by the server's locale.
ORDERINGS: list[tuple[str, Pred, list[str]]] = [
    ("", everything, []),
    ("", everything, ["metrics.auc DESC"]),
    ("", everything, ["metrics.auc ASC"]),
    ("", everything, ["metrics.auc"]),
    ("", everything, ["metrics.loss desc"]),
    ("", everything, ["metrics.loss asc"]),
    ("", everything, ["metrics.`val auc` DESC"]),
    ("", everything, ["params.model", "metrics.auc DESC"]),
    ("", everything, ["params.depth DESC", "metrics.loss"]),
    ("", everything, ["tags.team ASC", "status DESC"]),
    ("", everything, ["start_time ASC"]),
    ("", everything, ["start_time"]),
    ("", everything, ["end_time DESC"]),
    ("", everything, ["end_time"]),
    ("", everything, ["status", "metrics.auc DESC"]),
    ("name like 'nightly-%'", attr("name", "like", "nightly-%"), ["name DESC"]),
    ("name like 'nightly-%'", attr("name", "like", "nightly-%"), ["run_name"]),
    (
        "params.model = 'hgb' or metrics.auc > 0.7",
        any_of(param("model", "=", "hgb"), metric("auc", ">", 0.7)),
        ["metrics.auc DESC", "params.depth"],
    ),
    ("status != 'RUNNING'", attr("status", "!=", "RUNNING"), ["metrics.no_such_metric DESC"]),
]


def _check_order(
    client: TrackingClient, data: Dataset, text: str, pred: Pred, order_by: Sequence[str]
) -> None:
    got = [r.id for r in client.search_runs(filter=text, order_by=order_by, max_results=1000)]
    want = _oracle_order([r for r in data.rows if pred(r)], order_by)
    assert got == want, (
        f"seed={data.seed} filter {text!r} order_by {order_by}\n"
        f"  SQL:    {[data.by_id[i].name for i in got]}\n"
        f"  oracle: {[data.by_id[i].name for i in want]}"
    )


def test_orderings_match_the_oracle(client: TrackingClient, dataset: Dataset) -> None:
    for text, pred, order_by in ORDERINGS:
        _check_order(client, dataset, text, pred, order_by)


def test_runs_without_a_number_sort_last_both_ways(
    client: TrackingClient, dataset: Dataset
) -> None:
    no_number = {r.id for r in dataset.rows if _number(r, "auc") is None}
    nan = {r.id for r in dataset.rows if math.isnan(r.metrics.get("auc", 0.0))}
    assert nan and nan < no_number and len(no_number) < N_RUNS, f"seed={dataset.seed}"
    cut = N_RUNS - len(no_number)
    for direction in ("DESC", "ASC"):
        found = client.search_runs(order_by=[f"metrics.auc {direction}"], max_results=1000)
        assert {r.id for r in found[cut:]} == no_number, f"seed={dataset.seed} {direction}"
        values = [r.metrics["auc"] for r in found[:cut]]
        assert values == sorted(values, reverse=direction == "DESC"), f"seed={dataset.seed}"
        # a single term may be given as a plain string
        as_text = client.search_runs(order_by=f"metrics.auc {direction}", max_results=1000)
        assert [r.id for r in as_text] == [r.id for r in found]


def test_pages_cover_the_ordering_once(client: TrackingClient, dataset: Dataset) -> None:
    order_by = ["params.model", "metrics.auc DESC"]
    want = _oracle_order(dataset.rows, order_by)
    for page in (1, 7, 13, N_RUNS, 1000):
        pages: list[list[str]] = []
        offset = 0
        while chunk := client.search_runs(order_by=order_by, max_results=page, offset=offset):
            pages.append([r.id for r in chunk])
            offset += page
        assert [i for p in pages for i in p] == want, f"seed={dataset.seed} page={page}"
        assert all(len(p) == page for p in pages[:-1]), f"page={page}"
        assert len(pages[-1]) == (N_RUNS % page or page if page <= N_RUNS else N_RUNS)
    assert client.search_runs(order_by=order_by, offset=N_RUNS) == []
    assert [r.id for r in client.search_runs(order_by=order_by, offset=N_RUNS - 3)] == want[-3:]


def test_max_results_out_of_range_is_invalid(client: TrackingClient) -> None:
    for bad in (0, -1, 50_001):
        with pytest.raises(
            InvalidInputError,
            match=rf"max_results between 1 and 50000, got {bad} - at max_results",
        ):
            client.search_runs(max_results=bad)


def test_experiment_selects_runs_by_name_or_names(client: TrackingClient, dataset: Dataset) -> None:
    by_experiment = {e: {r.id for r in dataset.rows if r.experiment == e} for e in EXPERIMENTS}
    assert all(by_experiment.values()), f"seed={dataset.seed}"
    for name, ids in by_experiment.items():
        assert {r.id for r in client.search_runs(name, max_results=1000)} == ids
        assert {r.id for r in client.search_runs([name], max_results=1000)} == ids
    everyone = {r.id for r in dataset.rows}
    assert {r.id for r in client.search_runs(list(EXPERIMENTS), max_results=1000)} == everyone
    assert {r.id for r in client.search_runs(None, max_results=1000)} == everyone
    # an experiment and a filter together: both must hold
    want = dataset.where(all_of(attr("experiment", "=", "fraud"), metric("auc", ">", 0.7)))
    assert _search_ids(client, "metrics.auc > 0.7", experiment="fraud") == want
    client.create_experiment("empty")
    assert client.search_runs("empty") == []
    assert {r.id for r in client.search_runs(["empty", "churn"], max_results=1000)} == (
        by_experiment["churn"]
    )


def test_unknown_experiment_suggests_a_known_one(client: TrackingClient) -> None:
    for name in EXPERIMENTS:
        client.create_experiment(name)
    with pytest.raises(
        NotFoundError,
        match=r"^No experiment named 'chrun'\. Did you mean 'churn'\? "
        r"Known experiments: churn, fraud\.$",
    ):
        client.search_runs("chrun")
    with pytest.raises(NotFoundError, match=r"'frod'\. Did you mean 'fraud'\?"):
        client.search_runs(["churn", "frod"])
    with pytest.raises(NotFoundError, match=r"'zzz'\. Known experiments: churn, fraud\.$"):
        client.search_runs("zzz")


# -- errors that point at the token ---------------------------------------------------


def _caret(text: str, position: int, length: int) -> str:
    """The two lines that end the message: the text, and carets under the token."""
    return re.escape(f"\n  {text}\n  {' ' * position}{'^' * length}") + "$"


# (filter, the offending token and which occurrence of it (-1: the end), message)
BAD_FILTERS: list[tuple[str, str, int, str]] = [
    ("metrics.auc >> 1", ">", 1, r"Expected a value after '>', got '>'"),
    ("metrics.auc > 'x'", "'x'", 0, r"Expected a number to compare metric 'auc' with, got 'x'"),
    (
        "params.depth > 3",
        ">",
        0,
        r"params are text: compare param 'depth' with =, !=, like, ilike or in, not '>'",
    ),
    ("foo = 1", "foo", 0, r"Unknown field 'foo': use metrics\.KEY, params\.KEY, tags\.KEY or"),
    (
        "metrics.auc > 0.8 and",
        "",
        -1,
        r"Expected a field such as metrics\.auc, params\.model or status, "
        r"got the end of the filter",
    ),
    ("(metrics.auc > 1", "", -1, r"Expected '\)', got the end of the filter"),
    (
        "status = 'DONE'",
        "'DONE'",
        0,
        r"Expected a status \(FAILED, FINISHED, KILLED, RUNNING\), got 'DONE'",
    ),
    ("status in ('FAILED', 'done')", "'done'", 0, r"Expected a status .*, got 'done'"),
    ("name = 'abc", "'", 0, r"Unexpected character \"'\""),
    ('tags.team = "risk', '"', 0, r"Unexpected character '\"'"),
    ("metrics.auc like '0.%'", "like", 0, r"'like' compares text, but metric 'auc' is a number"),
    (
        "start_time > 'yesterday'",
        "'yesterday'",
        0,
        r"Expected a number to compare attribute 'start_time' with, got 'yesterday'",
    ),
    ("metrics.auc 0.8", "0.8", 0, r"Expected a comparison operator .*, got '0\.8'"),
    ("metrics.auc", "", -1, r"Expected a comparison operator .*, got the end of the filter"),
    (
        "metrics.auc > 0.8 params.model = 'x'",
        "params.model",
        0,
        r"Expected 'and', 'or' or the end of the filter, got 'params\.model'",
    ),
    ("metrics.auc > 0.8)", ")", 0, r"Expected 'and', 'or' or the end of the filter, got '\)'"),
    ("params.model in ('a', 'b'", "", -1, r"Expected ',' or '\)' to close the list, got the end"),
    ("params.model in 'a'", "'a'", 0, r"Expected '\(' after 'in', got \"'a'\""),
    ("params.model not ('a')", "(", 0, r"Expected 'in' after 'not', got '\('"),
    ("metrics.auc > 0.8 and or x = 1", "or", 0, r"Expected a field .*, got 'or'"),
    ("metrics.auc is null", "is", 0, r"Expected a comparison operator .*, got 'is'"),
    ("metrics.auc > 1 & x", "&", 0, r"Unexpected character '&'"),
    ("metrics.auc > 1 or ()", ")", 0, r"Expected a field .*, got '\)'"),
]


def _bad_filter_pattern(text: str, token: str, nth: int, message: str) -> tuple[str, int]:
    """The whole message, up to the caret under the token; and the token's position."""
    if nth < 0:
        position, length = len(text), 1
    else:
        position = -1
        for _ in range(nth + 1):
            position = text.index(token, position + 1)
        length = len(token)
    return rf"^{message}.* \(column {position + 1}\){_caret(text, position, length)}", position


@pytest.mark.parametrize(("text", "token", "nth", "message"), BAD_FILTERS)
def test_bad_filter_points_at_the_token(text: str, token: str, nth: int, message: str) -> None:
    pattern, position = _bad_filter_pattern(text, token, nth, message)
    with pytest.raises(FilterSyntaxError, match=pattern) as info:
        parse_filter(text)
    assert info.value.position == position
    assert info.value.status == 422
    assert info.value.to_dict()["error"]["type"] == "invalid_filter"
    assert isinstance(info.value, ValueError)


def test_search_runs_raises_the_filter_errors(client: TrackingClient) -> None:
    with client.start_run("churn"):
        pass
    for text, token, nth, message in BAD_FILTERS:
        pattern, _ = _bad_filter_pattern(text, token, nth, message)
        with pytest.raises(FilterSyntaxError, match=pattern):
            client.search_runs("churn", filter=text)
    for term, token, length, message in BAD_ORDERS:
        pattern = _bad_order_pattern(term, token, length, message)
        with pytest.raises(FilterSyntaxError, match=pattern):
            client.search_runs("churn", order_by=["start_time DESC", term])


# (order term, the offending token, the caret's length, message)
BAD_ORDERS: list[tuple[str, str, int, str]] = [
    ("metrics.auc UP", "UP", 2, r"Expected ASC or DESC, got 'UP'"),
    ("metrics.auc DESC NULLS", "NULLS", 5, r"Expected the end of the order term, got 'NULLS'"),
    ("metrics.auc, start_time", ",", 1, r"Expected ASC or DESC, got ','"),
    ("metrics.auc DESC,", ",", 1, r"Expected the end of the order term, got ','"),
    ("'auc' DESC", "'auc'", 1, r"Expected a field to order by, such as 'metrics\.auc DESC'"),
    ("foo DESC", "foo", 3, r"Unknown field 'foo'"),
    ("", "", 1, r"Expected a field to order by"),
    ("   ", "", 1, r"Expected a field to order by"),
]


def _bad_order_pattern(term: str, token: str, length: int, message: str) -> str:
    position = term.index(token)
    return rf"^{message}.* \(column {position + 1}\){_caret(term, position, length)}"


@pytest.mark.parametrize(("term", "token", "length", "message"), BAD_ORDERS)
def test_bad_order_term_points_at_the_token(
    term: str, token: str, length: int, message: str
) -> None:
    with pytest.raises(FilterSyntaxError, match=_bad_order_pattern(term, token, length, message)):
        parse_order([term])


# -- searching never reads the metric history ------------------------------------------


@contextmanager
def _recorded_sql(client: TrackingClient) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = client._db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


_HISTORY = re.compile(r"\bmetrics\b", re.IGNORECASE)  # not latest_metrics: _ is a word char


def test_search_and_get_run_never_read_the_metric_history(client: TrackingClient) -> None:
    ids = []
    for i in range(3):
        with client.start_run("churn", name=f"r{i}") as run:
            for step in range(20):
                run.log_metric("auc", 0.5 + i / 10 + step / 100, step=step)
            run.log_param("model", "hgb")
        ids.append(run.id)
    client.flush()

    with _recorded_sql(client) as statements:
        found = client.search_runs(
            "churn",
            filter="metrics.auc > 0.7 and params.model = 'hgb'",
            order_by=["metrics.auc DESC"],
        )
        listed = client.search_runs()
        one = client.get_run(ids[0])
        by_prefix = client.get_run(ids[1][:8])
    assert [r.id for r in found] == [ids[2], ids[1]]
    assert len(listed) == 3
    assert one.metrics == {"auc": pytest.approx(0.69)}
    assert by_prefix.id == ids[1]
    assert statements, "the listener recorded nothing"
    assert any("latest_metrics" in s for s in statements)
    readers = [s for s in statements if _HISTORY.search(s)]
    assert not readers, "searching read the metric history:\n" + "\n".join(readers)

    with _recorded_sql(client) as statements:
        history = client.get_metric_history(ids[0], "auc")
    assert [m.step for m in history] == list(range(20))
    assert any(_HISTORY.search(s) for s in statements)


# -- limits: over-deep or over-long filters are refused, never a crash ------------------


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 100_000])
def test_over_deep_filter_is_refused_at_the_first_extra_parenthesis(depth: int) -> None:
    text = "(" * depth + "metrics.auc > 0.5" + ")" * depth
    # one line, at the first parenthesis over the limit
    message = (
        f"Expected a filter with at most {MAX_DEPTH} nested parentheses, "
        f"got more (column {MAX_DEPTH + 1}) - at filter"
    )
    with pytest.raises(InvalidInputError) as info:
        parse_filter(text)
    assert str(info.value) == message


def test_filter_at_the_limits_runs_on_the_store(client: TrackingClient) -> None:
    with client.start_run("churn") as run:
        run.log_metric("auc", 0.9)
    # MAX_DEPTH nested or-groups, then MAX_COMPARISONS comparisons in one flat 'or'
    nested = "(" * MAX_DEPTH + "metrics.auc < 0" + " or metrics.auc > 0.5)" * MAX_DEPTH
    flat = " or ".join(["metrics.auc < 0"] * (MAX_COMPARISONS - 1) + ["metrics.auc > 0.5"])
    for text in (nested, flat):
        assert [r.id for r in client.search_runs("churn", filter=text)] == [run.id]
    with pytest.raises(InvalidInputError, match=f"at most {MAX_COMPARISONS} comparisons"):
        client.search_runs("churn", filter=flat + " or metrics.auc = 1")


def test_cli_refuses_an_over_deep_filter_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "project"
    init_project(root)
    text = "(" * 500 + "metrics.auc > 0.5" + ")" * 500
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    done = subprocess.run(
        [sys.executable, "-m", "modelyard.cli.app", "runs", "list", "--filter", text],
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr
    [line] = done.stderr.strip().splitlines()  # one line, without the filter echoed
    assert f"at most {MAX_DEPTH} nested parentheses, got more (column 33)" in line


_FILTER_ALPHABET = "()'\",= <>!.-_`\\ \t\nandorinotlikeisnull metricsparamstagsstatus 0123456789eE+"
_FILTER_PIECES = st.sampled_from(
    [
        "(",
        ")",
        "metrics.auc",
        "params.model",
        "tags.team",
        "status",
        "name",
        "start_time",
        "bogus",
        " and ",
        " or ",
        " not ",
        " in ",
        " like ",
        " ilike ",
        "=",
        "!=",
        "<",
        ">=",
        "'hgb'",
        "'it''s'",
        "'unclosed",
        '"x"',
        "0.5",
        "1e999",
        "-3",
        ",",
        "`odd key`",
        "FINISHED",
        "%",
    ]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(alphabet=_FILTER_ALPHABET, max_size=200),
        st.text(max_size=80),
        st.lists(_FILTER_PIECES, max_size=60).map("".join),
        st.integers(0, 3000).map(lambda n: "(" * n + "metrics.auc > 0" + ")" * n),
        st.integers(0, 3000).map(lambda n: " and ".join(["metrics.auc > 0"] * max(1, n))),
    )
)
def test_random_filters_parse_or_raise_invalid_input(text: str) -> None:
    try:
        node = parse_filter(text)
    except InvalidInputError:
        return
    if node is not None:
        compile_filter(text)  # what parses also compiles to SQL
