"""``modelyard.predict_batch`` on the local engine, against the native models as oracles.

Every input row ends in exactly one of predictions.parquet and rejects.parquet; scored
rows carry the native model's probabilities (exactly for a native runtime, to the
package's parity tolerance for ONNX); the manifest's digests and counts are recomputed
here from the files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.batch.fixtures import CHURN, HGB, NUMERIC, BatchProject, churn_frame, hgb_frame

import modelyard
from modelyard.batch import MANIFEST, predict_batch
from modelyard.batch.scoring import PARITY_ATOL
from modelyard.errors import InvalidInputError
from modelyard.monitoring.windows import read_log
from modelyard.store.predlog import read_predictions


def _read(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    predictions = pq.read_table(out / "predictions.parquet").to_pandas()
    rejects = pq.read_table(out / "rejects.parquet").to_pandas()
    manifest = json.loads((out / MANIFEST).read_text())
    return predictions, rejects, manifest


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_parquet_scored_like_the_native_model(batch_project: BatchProject, tmp_path: Path) -> None:
    frame = churn_frame(250, seed=1)
    frame.insert(0, "customer", [f"c{i}" for i in range(len(frame))])
    source = tmp_path / "in.parquet"
    frame.to_parquet(source)
    result = modelyard.predict_batch(
        f"{CHURN}@production", source, tmp_path / "out", settings=batch_project.settings,
        batch_rows=64,
    )  # fmt: skip
    predictions, rejects, manifest = _read(tmp_path / "out")
    assert list(predictions.columns) == [
        "customer",
        "label",
        "proba_0",
        "proba_1",
        "model",
        "version",
    ]
    assert predictions["customer"].tolist() == frame["customer"].tolist()
    expected = batch_project.proba(CHURN, frame.drop(columns="customer"))
    # the native runtime is the model itself: exactly its probabilities
    np.testing.assert_array_equal(predictions[["proba_0", "proba_1"]].to_numpy(), expected)
    assert predictions["label"].tolist() == [str(int(p > 0.5)) for p in expected[:, 1]]
    assert set(predictions["model"]) == {CHURN} and set(predictions["version"]) == {1}
    assert len(rejects) == 0
    assert manifest["rows_total"] == manifest["rows_scored"] == 250
    assert manifest["rows_rejected"] == 0
    assert manifest["inputs"] == [
        {"path": str(source), "sha256": _sha(source), "rows": 250, "scored": 250, "rejected": 0}
    ]
    assert manifest["package_id"] == result.package_id and manifest["runtime"] == "native"
    assert manifest["started_at"] <= manifest["finished_at"]


def test_optimized_model_scores_with_the_onnx_runtime(
    batch_project: BatchProject, tmp_path: Path
) -> None:
    frame = hgb_frame(3000, seed=2)
    frame.to_parquet(tmp_path / "in.parquet")
    result = predict_batch(
        f"{HGB}/1", tmp_path / "in.parquet", tmp_path / "out", settings=batch_project.settings
    )
    assert result.runtime.startswith("onnxruntime")
    predictions, _, _ = _read(tmp_path / "out")
    expected = batch_project.proba(HGB, frame)
    got = predictions[["proba_0", "proba_1"]].to_numpy()
    assert np.abs(got - expected).max() <= PARITY_ATOL
    # --native scores with the logged model itself: exactly its probabilities
    native = predict_batch(
        f"{HGB}/1", tmp_path / "in.parquet", tmp_path / "native", settings=batch_project.settings,
        runtime="native",
    )  # fmt: skip
    assert native.runtime == "native"
    np.testing.assert_array_equal(
        _read(tmp_path / "native")[0][["proba_0", "proba_1"]].to_numpy(), expected
    )


def _corrupt_csv(path: Path, frame: pd.DataFrame, bad: dict[int, tuple[str, str, str]]) -> None:
    """Write ``frame`` as CSV with row i's column replaced by a raw text (``""``: empty)."""
    text = frame.astype(object).copy()
    for row, (column, raw, _) in bad.items():
        text.loc[row, column] = raw
    text.to_csv(path, index=False)


def test_rejects_name_row_column_and_reason(batch_project: BatchProject, tmp_path: Path) -> None:
    frame = churn_frame(40, seed=5)
    frame.insert(0, "id", range(40))
    bad = {
        3: ("amount", "twelve", "expected float, got 'twelve'"),
        7: ("age", "", "expected int (no missing values), got null"),
        11: ("plan", "gold",
             "expected one of the training categories (basic, max, pro), got 'gold'"),
        12: ("age", "140", "expected number in [18, 89], got 140"),
    }  # fmt: skip
    source = tmp_path / "in.csv"
    _corrupt_csv(source, frame, bad)
    settings = batch_project.with_value_checks("reject")
    result = predict_batch(CHURN + "/1", source, tmp_path / "out", settings=settings, batch_rows=5)
    predictions, rejects, manifest = _read(tmp_path / "out")
    assert result.rows_rejected == 4 and result.rows_scored == 36 and result.rows_total == 40
    assert manifest["rows_scored"] + manifest["rows_rejected"] == manifest["rows_total"]
    assert rejects["row"].tolist() == sorted(bad)
    assert rejects["file"].tolist() == [str(source)] * 4
    assert rejects["column"].tolist() == [bad[r][0] for r in sorted(bad)]
    assert rejects["reason"].tolist() == [bad[r][2] for r in sorted(bad)]
    values = [json.loads(v) for v in rejects["values"]]
    assert [v["id"] for v in values] == [str(r) for r in sorted(bad)]  # CSV columns are text
    assert values[0]["amount"] == "twelve"
    good = frame.drop(index=list(bad))
    assert predictions["id"].astype(int).tolist() == good["id"].tolist()
    expected = batch_project.proba(CHURN, good.drop(columns="id"))
    np.testing.assert_allclose(
        predictions["proba_1"].to_numpy(), expected[:, 1], rtol=0, atol=1e-12
    )


def test_value_checks_other_than_reject_score_out_of_range_rows(
    batch_project: BatchProject, tmp_path: Path
) -> None:
    frame = churn_frame(10, seed=6)
    frame.loc[2, "age"] = 140  # out of the trained range: scored unless value_checks: reject
    frame.to_parquet(tmp_path / "in.parquet")
    result = predict_batch(
        CHURN + "/1", tmp_path / "in.parquet", tmp_path / "out",
        settings=batch_project.with_value_checks("log"),
    )  # fmt: skip
    assert result.rows_rejected == 0 and result.rows_scored == 10


def test_batches_files_and_globs_give_the_same_rows(
    batch_project: BatchProject, tmp_path: Path
) -> None:
    parts = [hgb_frame(n, seed=10 + n) for n in (17, 1, 40)]
    folder = tmp_path / "parts"
    folder.mkdir()
    for i, part in enumerate(parts):
        if i == 1:
            part.to_csv(folder / f"p{i}.csv", index=False)
        else:
            part.to_parquet(folder / f"p{i}.parquet")
    whole = pd.concat(parts, ignore_index=True)
    outs = []
    for rows, source in ((3, folder / "p*"), (100_000, folder)):
        out = tmp_path / f"out-{rows}"
        predict_batch(HGB + "/1", source, out, settings=batch_project.settings, batch_rows=rows)
        outs.append(_read(out))
    assert outs[0][0].equals(outs[1][0])
    assert [i["rows"] for i in outs[0][2]["inputs"]] == [17, 1, 40]
    got = outs[0][0][["proba_0", "proba_1"]].to_numpy()
    assert np.abs(got - batch_project.proba(HGB, whole)).max() <= PARITY_ATOL


_CORRUPTIONS = {
    "amount": [("abc", "expected float, got 'abc'"),
               ("", "expected float (no missing values), got null")],
    "age": [("x1", "expected int, got 'x1'"), ("", "expected int (no missing values), got null")],
    "plan": [("", "expected category (no missing values), got null")],
    "city": [("", "expected string (no missing values), got null")],
}  # fmt: skip


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=st.integers(1, 60),
    batch_rows=st.integers(1, 70),
    data=st.data(),
)
def test_every_row_is_scored_or_rejected_once(
    batch_project: BatchProject, tmp_path_factory: pytest.TempPathFactory, rows: int,
    batch_rows: int, data: st.DataObject,
) -> None:  # fmt: skip
    """Generated CSVs with generated bad cells: the rejects are exactly the corrupted rows
    (first bad column in signature order), the rest equal the native model's scores."""
    tmp = tmp_path_factory.mktemp("gen")
    frame = churn_frame(rows, seed=rows)
    frame.insert(0, "id", range(rows))
    corrupted = data.draw(st.sets(st.integers(0, rows - 1), max_size=rows))
    bad: dict[int, tuple[str, str, str]] = {}
    expected_reason: dict[int, tuple[str, str]] = {}
    text = frame.astype(object).copy()
    order = ["amount", "age", "plan", "city"]
    for row in sorted(corrupted):
        columns = data.draw(st.sets(st.sampled_from(order), min_size=1))
        first = min(columns, key=order.index)
        for column in columns:
            raw, reason = data.draw(st.sampled_from(_CORRUPTIONS[column]))
            text.loc[row, column] = raw
            if column == first:
                expected_reason[row] = (column, reason)
        bad[row] = ("", "", "")
    source = tmp / "in.csv"
    text.to_csv(source, index=False)
    result = predict_batch(
        CHURN + "/1", source, tmp / "out", settings=batch_project.settings, batch_rows=batch_rows
    )
    predictions, rejects, manifest = _read(tmp / "out")
    assert result.rows_total == rows == manifest["rows_total"]
    assert result.rows_scored + result.rows_rejected == rows
    assert rejects["row"].tolist() == sorted(bad)
    assert list(zip(rejects["column"], rejects["reason"], strict=True)) == [
        expected_reason[r] for r in sorted(bad)
    ]
    kept = frame.drop(index=sorted(bad))
    assert predictions["id"].astype(int).tolist() == kept["id"].tolist()
    if len(kept):
        expected = batch_project.proba(CHURN, kept.drop(columns="id"))
        np.testing.assert_allclose(
            predictions["proba_1"].to_numpy(), expected[:, 1], rtol=0, atol=1e-12
        )


def test_log_goes_to_the_prediction_log_as_batch(
    batch_project: BatchProject, tmp_path: Path
) -> None:
    frame = hgb_frame(2500, seed=7)
    frame["key"] = np.arange(len(frame))
    frame.to_parquet(tmp_path / "in.parquet")
    result = predict_batch(
        HGB + "/1", tmp_path / "in.parquet", tmp_path / "out", settings=batch_project.settings,
        log=True,
    )  # fmt: skip
    assert result.logged_records == 3  # 1000 rows per record
    predictions, _, _ = _read(tmp_path / "out")
    logged = read_predictions(batch_project.settings.prediction_log_dir).to_pandas()
    assert len(logged) == 2500 and set(logged["route"]) == {"batch"}
    assert set(logged["model"]) == {HGB} and set(logged["version"]) == {1}
    merged = predictions.merge(logged, on=["record_id", "row"], how="inner", validate="1:1")
    assert len(merged) == 2500
    np.testing.assert_array_equal(merged["output.proba_1"], merged["proba_1"])
    np.testing.assert_array_equal(
        merged["input.x1"], frame.set_index("key").loc[merged["key"], "x1"]
    )
    # monitoring reads the log's batch rows with its default routes
    table = read_log(
        batch_project.settings.prediction_log_dir, HGB, 1, inputs=NUMERIC, outputs=["proba_1"]
    )
    assert table.num_rows == 2500


def test_manifest_sha256_and_counts_per_file(batch_project: BatchProject, tmp_path: Path) -> None:
    a, b = hgb_frame(5, seed=8), hgb_frame(9, seed=9)
    a.to_parquet(tmp_path / "a.parquet")
    b.loc[4, "x2"] = np.nan  # a missing value in a column trained without any
    b.to_parquet(tmp_path / "b.parquet")
    predict_batch(
        HGB + "/1", tmp_path / "*.parquet", tmp_path / "out", settings=batch_project.settings
    )
    _, rejects, manifest = _read(tmp_path / "out")
    fields = ("path", "sha256", "rows", "scored", "rejected")
    assert [tuple(i[f] for f in fields) for i in manifest["inputs"]] == [
        (str(tmp_path / "a.parquet"), _sha(tmp_path / "a.parquet"), 5, 5, 0),
        (str(tmp_path / "b.parquet"), _sha(tmp_path / "b.parquet"), 9, 8, 1),
    ]  # fmt: skip
    assert rejects[["file", "row", "column"]].values.tolist() == [
        [str(tmp_path / "b.parquet"), 4, "x2"]
    ]


def test_every_row_rejected_still_writes_both_files(
    batch_project: BatchProject, tmp_path: Path
) -> None:
    frame = hgb_frame(4, seed=11)
    frame["x1"] = np.nan
    frame.to_parquet(tmp_path / "in.parquet")
    result = predict_batch(
        HGB + "/1", tmp_path / "in.parquet", tmp_path / "out", settings=batch_project.settings
    )
    predictions, rejects, _ = _read(tmp_path / "out")
    assert result.rows_rejected == 4 and len(predictions) == 0 and len(rejects) == 4
    assert "proba_1" in predictions.columns


@pytest.mark.parametrize(
    ("kwargs", "loc"),
    [
        ({"batch_rows": 0}, "--batch-rows"),
        ({"engine": "spark"}, "--engine"),
        ({"keep": ["nope"]}, "--keep"),
        ({"keep": ["label"]}, "--keep"),
    ],
)
def test_bad_arguments_are_named(
    batch_project: BatchProject, tmp_path: Path, kwargs: dict[str, Any], loc: str
) -> None:
    hgb_frame(3).assign(label=1).to_parquet(tmp_path / "in.parquet")
    with pytest.raises(InvalidInputError) as caught:
        predict_batch(
            HGB + "/1", tmp_path / "in.parquet", tmp_path / "out", settings=batch_project.settings,
            **kwargs,
        )  # fmt: skip
    assert caught.value.loc == loc
    assert not (tmp_path / "out" / MANIFEST).exists()


def test_bad_inputs_are_named(batch_project: BatchProject, tmp_path: Path) -> None:
    settings = batch_project.settings
    hgb_frame(3).drop(columns="x3").to_parquet(tmp_path / "short.parquet")
    with pytest.raises(InvalidInputError, match=r"Expected a column 'x3' \(float\)") as caught:
        predict_batch(HGB + "/1", tmp_path / "short.parquet", tmp_path / "o1", settings=settings)
    assert caught.value.loc == "x3"
    with pytest.raises(InvalidInputError, match="Expected files matching") as caught:
        predict_batch(HGB + "/1", tmp_path / "none-*.parquet", tmp_path / "o2", settings=settings)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InvalidInputError, match="Cannot read") as caught:
        predict_batch(HGB + "/1", tmp_path / "junk.parquet", tmp_path / "o3", settings=settings)
    (tmp_path / "rows.json").write_text("[]")
    with pytest.raises(InvalidInputError, match=r"Expected a \.parquet or \.csv file"):
        predict_batch(HGB + "/1", tmp_path / "rows.json", tmp_path / "o4", settings=settings)
    hgb_frame(3).to_parquet(tmp_path / "ok.parquet")
    predict_batch(HGB + "/1", tmp_path / "ok.parquet", tmp_path / "o5", settings=settings)
    with pytest.raises(InvalidInputError, match="without an earlier run") as caught:
        predict_batch(HGB + "/1", tmp_path / "ok.parquet", tmp_path / "o5", settings=settings)
    assert caught.value.loc == "--output"


def test_a_failed_run_leaves_no_output(batch_project: BatchProject, tmp_path: Path) -> None:
    hgb_frame(3).to_parquet(tmp_path / "a.parquet")
    # the second file's key column has a type the first's cannot take
    hgb_frame(3).assign(k=["a", "b", "c"]).to_parquet(tmp_path / "b.parquet")
    pq.write_table(
        pa.table({**{c: pa.array([0.1, 0.2]) for c in NUMERIC}, "k": pa.array([1, 2])}),
        tmp_path / "a.parquet",
    )
    with pytest.raises(InvalidInputError, match="types of the first file"):
        predict_batch(
            HGB + "/1", tmp_path / "*.parquet", tmp_path / "out", settings=batch_project.settings
        )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


_GRAPH_ONLY = """
import sys
from modelyard.batch.scoring import BatchScorer
from modelyard.config import load_settings
from modelyard.registry import ModelRegistry
import pyarrow.parquet as pq, json
settings = load_settings(sys.argv[1], environ={})
with ModelRegistry(settings) as registry:
    version = registry.get_version(sys.argv[2])
scorer = BatchScorer(settings, package_id=version.package_id, name=version.name,
                     version=version.version, keys=[], runtime=sys.argv[4])
table = scorer(pq.read_table(sys.argv[3]))
print(json.dumps({
    "runtime": scorer.runtime_name,
    "native_loaded": [m for m in ("skops.io", "sklearn.ensemble") if m in sys.modules],
    "proba_1": table.column("proba_1").to_pylist(),
}))
"""


def _score_in_fresh_process(project: BatchProject, ref: str, source: Path, runtime: str) -> Any:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _GRAPH_ONLY, str(project.root), ref, str(source), runtime],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_onnx_package_scores_without_loading_the_native_model(
    batch_project: BatchProject, tmp_path: Path
) -> None:
    """Each Ray actor builds a scorer: with a graph runtime, the native model (and the
    seconds of scikit-learn and skops imports) is never loaded, and the scores are the
    same as the scorer that loads the whole package (runtime native as the oracle)."""
    frame = hgb_frame(500, seed=5)
    source = tmp_path / "in.parquet"
    frame.to_parquet(source)
    graph = _score_in_fresh_process(batch_project, f"{HGB}/1", source, "auto")
    assert graph["runtime"].startswith("onnxruntime")
    assert graph["native_loaded"] == []
    expected = batch_project.proba(HGB, frame)[:, 1]
    assert np.abs(np.asarray(graph["proba_1"]) - expected).max() <= PARITY_ATOL
    native = _score_in_fresh_process(batch_project, f"{HGB}/1", source, "native")
    assert native["runtime"] == "native" and "skops.io" in native["native_loaded"]
    np.testing.assert_array_equal(native["proba_1"], expected)


@pytest.mark.parametrize("what", ["graph", "holdout"])
def test_a_tampered_graph_or_holdout_is_refused_before_scoring(
    batch_project: BatchProject, tmp_path: Path, what: str
) -> None:
    from modelyard.errors import ArtifactIntegrityError
    from modelyard.registry import ModelRegistry

    with ModelRegistry(batch_project.settings) as registry:
        manifest = registry.manifest(f"{HGB}/1")
        artifacts = registry.artifacts
        if what == "graph":
            recorded = {r.name: r for r in manifest.runtimes}[manifest.serving_runtime]
            assert recorded.file is not None
            entry = manifest.file(recorded.file)
        else:
            assert manifest.holdout is not None
            entry = manifest.file(manifest.holdout)
        original = artifacts.get_bytes(entry.sha256)
        tampered = original[:-1] + bytes([original[-1] ^ 1])
        artifacts.fs.pipe_file(
            f"{artifacts.root}/objects/{entry.sha256[:2]}/{entry.sha256[2:]}", tampered
        )
    hgb_frame(10).to_parquet(tmp_path / "in.parquet")
    with pytest.raises(ArtifactIntegrityError, match=rf"'{entry.path}' is corrupted"):
        predict_batch(
            f"{HGB}/1", tmp_path / "in.parquet", tmp_path / "out", settings=batch_project.settings
        )
    assert not (tmp_path / "out" / "predictions.parquet").exists()
