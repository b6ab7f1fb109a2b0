"""Lineage over real pipeline runs (SQLite and PostgreSQL): backward from a model version
logged inside a step to the data file, code and params; forward from the data to the model."""

from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path

import msgspec
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sqlalchemy import insert

from modelyard.config import CONFIG_FILE, Settings, init_project, load_settings
from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.pipelines import PipelineRun, load_pipelines, run_pipeline
from modelyard.pipelines.cache import changed_parts
from modelyard.pipelines.executors import client_for
from modelyard.pipelines.lineage import Lineage, LineageNode, diff_parts, lineage_of
from modelyard.registry.client import ModelRegistry
from modelyard.store.schema import pipeline_inputs
from modelyard.tracking.client import TrackingClient
from modelyard.tracking.digest import digest_path

CLI_FLOW = """
from pathlib import Path

import pandas as pd
from sklearn.linear_model import LogisticRegression

import modelyard
from modelyard import log_metric, pipeline, step


@step
def load(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


@step(outputs=("train", "test"))
def split(frame: pd.DataFrame, test_month: int = 6) -> tuple[pd.DataFrame, pd.DataFrame]:
    return frame[frame.month < test_month], frame[frame.month >= test_month]


@step(packages=("scikit-learn",))
def train(train: pd.DataFrame, c: float = 1.0) -> dict[str, float]:
    model = LogisticRegression(C=c).fit(train[["x"]], train.y)
    modelyard.log_model(model, name="toy", training_frame=train[["x"]])
    return {"coef": float(model.coef_[0][0])}


@step
def evaluate(model: dict[str, float], test: pd.DataFrame) -> dict[str, float]:
    log_metric("rows", len(test))
    return {"rows": float(len(test))}


@pipeline
def flights(data: Path = Path("flights.csv"), c: float = 1.0, test_month: int = 6) -> None:
    frame = load(data)
    tr, te = split(frame, test_month=test_month)
    model = train(tr, c=c)
    evaluate(model, te)
"""


def cli_write_data(path: Path, seed: int = 0, rows: int = 120) -> None:
    rng = random.Random(seed)
    lines = ["month,x,y"]
    for i in range(rows):
        x = rng.random()
        lines.append(f"{1 + i % 12},{x:.6f},{int(x + rng.random() * 0.3 > 0.6)}")
    path.write_text("\n".join(lines) + "\n")


def cli_flow_project(tmp_path: Path, db_url: str) -> Settings:
    """A project with the flights pipeline, its data file, on ``db_url``."""
    root = tmp_path / "flow"
    init_project(root)
    (root / CONFIG_FILE).write_text(f"db_url: {db_url}\npipelines:\n  executor: inline\n")
    (root / "pipelines.py").write_text(textwrap.dedent(CLI_FLOW))
    cli_write_data(root / "flights.csv")
    return load_settings(root, environ={})


def cli_run(settings: Settings, params: dict[str, object] | None = None) -> PipelineRun:
    flights = load_pipelines(settings)["flights"]
    return run_pipeline(flights, params or {}, settings=settings, executor="inline")


def cli_find(node: LineageNode, node_kind: str, /, **details: object) -> list[LineageNode]:
    """The nodes under ``node`` of ``node_kind`` whose details hold ``details``."""
    return [
        n
        for n in node.walk()
        if n.kind == node_kind and all(n.details.get(k) == v for k, v in details.items())
    ]


@pytest.fixture
def flow(tmp_path: Path, db_url: str) -> Settings:
    return cli_flow_project(tmp_path, db_url)


def test_backward_from_a_model_version_reaches_the_file_code_and_params(flow: Settings) -> None:
    first = cli_run(flow, {"c": 0.5})
    registry = ModelRegistry(flow)
    try:
        version = registry.get_version("toy@latest")
    finally:
        registry.close()
    train_run = first.steps["train"].run_id
    assert version.run_id == train_run  # log_model inside the step: the step's run
    found = lineage_of(flow, "toy@latest")
    assert isinstance(found, Lineage) and found.direction == "backward"
    root = found.root
    assert (root.kind, root.id) == ("model", f"toy/{version.version}")
    step = root.children[0]
    assert (step.kind, step.id) == ("step", train_run)
    assert step.details["params"] == {"c": "0.5"}
    flights = load_pipelines(flow)["flights"]
    graph = flights.build({"c": 0.5})
    assert step.details["source_hash"] == graph.nodes["train"].step.source_hash(flow.project_dir)
    assert "git_commit" in step.details and "git_dirty" in step.details
    assert step.details["cache_parts"]["params"] == {"c": 0.5}
    # down to the data file, whose digest is the file's own
    files = cli_find(root, "data", kind="file")
    assert [f.id for f in files] == [digest_path(flow.project_dir / "flights.csv").digest]
    loads = cli_find(root, "step", step="load")
    assert len(loads) == 1 and loads[0].children == files
    # the chain in between: train <- split.train <- split <- load.output <- load
    split_in = step.children[0]
    assert split_in.details["as"] == "train" and split_in.details["output"] == "train"
    assert split_in.id == first.steps["split"].outputs["train"].digest
    assert cli_find(root, "step", step="split")[0].details["params"] == {"test_month": "6"}
    # the same walk by other refs
    for ref in (f"toy/{version.version}", f"toy:{version.version}", train_run[:10]):
        again = lineage_of(flow, ref)
        assert [n.id for n in again.root.walk() if n.kind == "data"] == [
            n.id for n in root.walk() if n.kind == "data"
        ]


def test_forward_from_the_data_digest_reaches_every_model_made_from_it(flow: Settings) -> None:
    first = cli_run(flow)
    second = cli_run(flow, {"c": 0.25})  # load and split cached, train reruns
    assert second.steps["load"].status == "cached"
    data = digest_path(flow.project_dir / "flights.csv").digest
    found = lineage_of(flow, data[:12], forward=True)
    assert found.root.kind == "data" and found.root.id == data
    models = {n.id for n in found.root.walk() if n.kind == "model" and not n.seen}
    assert models == {"toy/1", "toy/2"}
    trains = {n.id for n in cli_find(found.root, "step", step="train") if not n.seen}
    assert {first.steps["train"].run_id, second.steps["train"].run_id} <= trains
    # every node is shown in full once: a diamond is not walked twice
    full = [(n.kind, n.id) for n in found.root.walk() if not n.seen]
    assert len(full) == len(set(full))
    # a changed file is other data: its forward lineage has no model yet
    cli_write_data(flow.project_dir / "flights.csv", seed=1)
    other = digest_path(flow.project_dir / "flights.csv").digest
    with pytest.raises(NotFoundError, match="Nothing matches"):
        lineage_of(flow, other)


def test_a_pipeline_run_and_an_output_digest_have_lineage(flow: Settings) -> None:
    run = cli_run(flow)
    whole = lineage_of(flow, run.run_id)
    assert whole.root.kind == "pipeline"
    assert {n.details["step"] for n in cli_find(whole.root, "step")} == set(run.steps)
    out = run.steps["split"].outputs["test"].digest
    back = lineage_of(flow, out)
    assert back.root.details["output"] == "test"
    assert cli_find(back.root, "step", step="split")[0].id == run.steps["split"].run_id
    forward = lineage_of(flow, run.run_id, forward=True)
    assert "toy/1" in {n.id for n in forward.root.walk() if n.kind == "model"}
    assert json.loads(json.dumps(forward.to_dict()))["direction"] == "forward"


def test_refs_that_name_nothing_or_too_much_are_one_clear_error(flow: Settings) -> None:
    cli_run(flow)
    with pytest.raises(NotFoundError, match=r"No model named 'tyo'. Did you mean 'toy'"):
        lineage_of(flow, "tyo@production")
    with pytest.raises(NotFoundError, match=r"Model 'toy' has no alias 'production'"):
        lineage_of(flow, "toy@production")
    with pytest.raises(NotFoundError, match=r"Model 'toy' has no version 9"):
        lineage_of(flow, "toy/9")
    with pytest.raises(NotFoundError, match="Nothing matches 'nothing-here'"):
        lineage_of(flow, "nothing-here")
    with pytest.raises(InvalidInputError, match="empty string"):
        lineage_of(flow, "  ")
    # a prefix too short to be a digest, and unknown as a run, is not found
    with pytest.raises(NotFoundError):
        lineage_of(flow, "fffffff")


def test_a_prefix_shared_by_two_records_is_refused_as_ambiguous(flow: Settings) -> None:
    run = cli_run(flow)
    step_run = run.steps["load"].run_id
    # two recorded inputs whose digests share their first 12 characters
    shared = "abcdef012345"
    rows = [
        {
            "step_run_id": step_run,
            "name": f"extra{i}",
            "digest": shared + str(i) * 52,
            "kind": "file",
            "source_step_run_id": None,
            "description": f"extra{i}.csv",
        }
        for i in (1, 2)
    ]
    with client_for(flow).db.write() as conn:
        conn.execute(insert(pipeline_inputs), rows)
    with pytest.raises(InvalidInputError, match="matches more than one run or digest"):
        lineage_of(flow, shared)
    one = lineage_of(flow, shared + "1")  # one more character: unique
    assert (one.root.id, one.root.details["description"]) == (rows[0]["digest"], "extra1.csv")
    forward = lineage_of(flow, shared + "2", forward=True)
    assert [c.id for c in forward.root.children] == [step_run]


def test_a_plain_tracked_run_has_lineage_through_its_logged_data_sets(settings: Settings) -> None:
    """Outside pipelines: log_input + log_model in one run link the data set and the model."""
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "y": [0, 0, 1, 1]})
    client = TrackingClient(settings)
    registry = ModelRegistry(settings)
    try:
        with client.start_run("plain", name="fit") as run:
            logged = run.log_input(frame, name="train-set")
            model = LogisticRegression().fit(frame[["x"]], frame.y)
            registry.log_model(model, name="plain", run_id=run.id, training_frame=frame[["x"]])
    finally:
        registry.close()
        client.close()
    back = lineage_of(settings, "plain/1").root
    assert [c.id for c in back.children] == [run.id]
    assert back.children[0].kind == "run"
    [data] = back.children[0].children
    assert (data.id, data.details["kind"], data.details["as"]) == (
        logged.digest,
        "dataset",
        "train-set",
    )
    forward = lineage_of(settings, logged.digest, forward=True).root
    assert forward.details["kind"] == "training"
    assert [n.id for n in forward.walk() if n.kind == "model"] == ["plain/1"]


_PART = st.dictionaries(
    st.sampled_from(["x", "y", "z"]), st.one_of(st.integers(0, 3), st.text(max_size=2))
)
_PARTS = st.fixed_dictionaries(
    {},
    optional={
        "source": st.sampled_from(["a", "b"]),
        "cache_version": st.integers(0, 2),
        "params": _PART,
        "inputs": _PART,
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(old=_PARTS, new=_PARTS)
def test_diff_parts_is_empty_exactly_when_the_parts_are_equal(
    old: dict[str, object], new: dict[str, object]
) -> None:
    changed = diff_parts(old, new)
    assert (changed == []) == (
        msgspec.json.encode(old, order="sorted") == msgspec.json.encode(new, order="sorted")
    )
    assert changed == changed_parts(old, new)
    # each named part really differs
    for name in changed:
        top, _, sub = name.partition(".")
        a, b = old.get(top), new.get(top)
        if sub:
            assert isinstance(a, dict) and isinstance(b, dict)
            assert (sub in a, a.get(sub)) != (sub in b, b.get(sub))
        else:
            assert (top in old, a) != (top in new, b)
