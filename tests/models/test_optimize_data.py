"""``models optimize --data FILE`` and the MLflow input example: parity rows where none are.

A model imported from MLflow has no held-out rows, so before this it could neither be
optimized ("the package has no held-out rows") nor served (the server warms up on them).
The directories are laid out as MLflow 3.17.2 writes them (``tests/models/
test_mlflow_import.py``), with the input example MLflow saves beside the model
(``input_example.json``, pandas ``split`` orient, named in ``MLmodel`` under
``saved_input_example_info``: the layout was checked against a directory
``mlflow.sklearn.save_model(..., input_example=frame.head(5))`` wrote with MLflow 3.17.2).
The oracle is the native model in the directory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import modelyard.cli.models_optimize  # noqa: F401 - registers `models optimize`
from modelyard.cli import models_import  # noqa: F401 - registers `models import-mlflow`
from modelyard.cli.app import main
from modelyard.config import init_project, load_settings
from modelyard.errors import InvalidInputError
from modelyard.models.mlflow_import import read_input_example
from modelyard.models.optimize import DEFAULT_ATOL, _supplied_rows, read_parity_rows
from modelyard.models.package import read_holdout
from modelyard.models.signature import ColumnSpec, Signature
from modelyard.registry.client import ModelRegistry
from modelyard.serving.loaded import load_version
from tests.models.test_mlflow_import import _data, _logistic, _sklearn_dir

NAMES = ["tenure", "spend", "visits"]


def _with_example(root: Path, frame: pd.DataFrame, orient: str = "split") -> Path:
    """Add the input example MLflow saves (``saved_input_example_info``) to a model dir."""
    if orient == "split":
        payload: Any = {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}
    else:
        payload = frame.to_dict(orient="records")
    (root / "input_example.json").write_text(json.dumps(payload))
    mlmodel = yaml.safe_load((root / "MLmodel").read_text())
    mlmodel["saved_input_example_info"] = {
        "artifact_path": "input_example.json",
        "pandas_orient": orient,
        "serving_input_path": "serving_input_example.json",
        "type": "dataframe",
    }
    (root / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    init_project(root)
    return root


@pytest.fixture
def cli(project: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str]]:
    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(["--project", str(project), "models", *args])
        out, err = capsys.readouterr()
        return code, out + err

    return run


def _registry(project: Path) -> ModelRegistry:
    return ModelRegistry(load_settings(project, environ={}))


def _imported(tmp_path: Path, cli: Callable[..., tuple[int, str]], example: int | None) -> Any:
    model, frame = _logistic()
    path = _sklearn_dir(tmp_path / "mlflow-model", model, "skops")
    if example is not None:
        _with_example(path, frame.head(example))
    code, out = cli("import-mlflow", str(path), "--name", "churn", "--json")
    assert code == 0, out
    return model, frame, path


@pytest.mark.parametrize("orient", ["split", "records"])
def test_the_input_example_reads_as_mlflow_wrote_it(tmp_path: Path, orient: str) -> None:
    model, frame = _logistic()
    path = _with_example(_sklearn_dir(tmp_path / "m", model, "skops"), frame.head(5), orient)
    read = read_input_example(path)
    pd.testing.assert_frame_equal(read, frame.head(5), check_dtype=False)
    assert read_input_example(_sklearn_dir(tmp_path / "bare", model, "skops")) is None


def test_an_imported_model_gets_onnx_from_its_input_example_and_then_serves(
    tmp_path: Path, project: Path, cli: Callable[..., tuple[int, str]]
) -> None:
    model, frame, _ = _imported(tmp_path, cli, example=5)
    code, out = cli("optimize", "churn/1", "--json")
    assert code == 0, out
    result = json.loads(out)
    assert result["serving_runtime"] == "onnxruntime-float32"
    checked = {r["name"]: r for r in result["runtimes"]}
    assert checked["onnxruntime-float32"]["rows_checked"] == 5
    assert checked["onnxruntime-float32"]["max_abs_diff"] <= DEFAULT_ATOL
    with _registry(project) as registry:
        manifest = registry.manifest("churn/1")
        held, scores = read_holdout(registry.artifacts, manifest)
        pd.testing.assert_frame_equal(held, frame.head(5), check_dtype=False)
        np.testing.assert_array_equal(scores, model.predict_proba(frame.head(5)))
        # the server warms up (and checks parity again) on the rows the example gave
        loaded = load_version(registry, "churn", 1)
        assert loaded.runtime.name == "onnxruntime-float32"


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_data_file_supplies_the_parity_rows(
    tmp_path: Path,
    project: Path,
    cli: Callable[..., tuple[int, str]],
    suffix: str,
) -> None:
    model, _, _ = _imported(tmp_path, cli, example=None)
    code, out = cli("optimize", "churn/1")
    assert code == 2
    assert "no held-out rows" in out and "--data" in out
    rows, _ = _data(n=300, seed=11)
    rows = rows.assign(label=1)[["label", "visits", "spend", "tenure"]]  # any order, extras
    file = tmp_path / f"rows{suffix}"
    rows.to_csv(file, index=False) if suffix == ".csv" else rows.to_parquet(file)
    code, out = cli("optimize", "churn/1", "--data", str(file), "--json")
    assert code == 0, out
    result = json.loads(out)
    assert result["serving_runtime"] == "onnxruntime-float32"
    assert {r["rows_checked"] for r in result["runtimes"]} == {300}
    with _registry(project) as registry:
        held, scores = read_holdout(registry.artifacts, registry.manifest("churn/1"))
        assert list(held.columns) == NAMES
        np.testing.assert_array_equal(scores, model.predict_proba(rows[NAMES]))


def test_bad_data_files_are_named_and_change_nothing(
    tmp_path: Path, project: Path, cli: Callable[..., tuple[int, str]]
) -> None:
    _imported(tmp_path, cli, example=None)
    with _registry(project) as registry:
        before = registry.get_version("churn/1").package_id
    short = tmp_path / "short.csv"
    pd.DataFrame({"tenure": [1.0], "spend": [2.0]}).to_csv(short, index=False)
    text = tmp_path / "text.csv"
    pd.DataFrame({"tenure": ["a"], "spend": [2.0], "visits": [1]}).to_csv(text, index=False)
    empty = tmp_path / "empty.csv"
    pd.DataFrame({n: pd.Series([], dtype=float) for n in NAMES}).to_csv(empty, index=False)
    cases = {
        str(short): "missing column 'visits'",
        str(text): "tenure: expected float, got a column of string",
        str(empty): "at least one parity row",
        str(tmp_path / "nothing.csv"): "no file at",
        str(tmp_path / "rows.json"): "Parquet (.parquet) or CSV (.csv)",
    }
    for file, expected in cases.items():
        code, out = cli("optimize", "churn/1", "--data", file)
        assert code == 2, out
        assert expected in out, out
        assert "Traceback" not in out
    with _registry(project) as registry:
        assert registry.get_version("churn/1").package_id == before


_SIG = Signature(
    columns=[ColumnSpec(name=n, dtype="float", nullable=True) for n in ("a", "b", "c")]
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.data(),
    rows=st.integers(1, 30),
    suffix=st.sampled_from([".csv", ".parquet"]),
)
def test_supplied_rows_are_the_signature_columns_in_order_whatever_the_file(
    tmp_path: Path, data: st.DataObject, rows: int, suffix: str
) -> None:
    """Any column order and any extra columns, through either format: the same rows."""
    values = st.floats(-1e9, 1e9) | st.just(float("nan"))
    frame = pd.DataFrame(
        {n: data.draw(st.lists(values, min_size=rows, max_size=rows)) for n in ("a", "b", "c")}
    )
    extras = data.draw(st.lists(st.sampled_from(["x", "label", "id"]), unique=True))
    written = frame.assign(**dict.fromkeys(extras, 1))
    order = data.draw(st.permutations(list(written.columns)))
    file = tmp_path / f"rows{suffix}"
    written[order].to_csv(file, index=False) if suffix == ".csv" else written[order].to_parquet(
        file
    )
    got = _supplied_rows(_SIG, read_parity_rows(file), "--data")
    assert list(got.columns) == ["a", "b", "c"]
    # CSV writes floats with repr precision: they read back exactly
    np.testing.assert_array_equal(got.to_numpy(), frame.to_numpy())


def test_python_data_argument_is_checked_like_the_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="pandas frame") as refused:
        _supplied_rows(_SIG, [[1.0, 2.0, 3.0]], "data")
    assert refused.value.loc == "data"
