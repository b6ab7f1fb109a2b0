"""``modelyard predict`` run as a user runs it (``modelyard.cli.app.main`` in-process).

Exit 0 with the counts printed when the run finished (rejected rows included), 2 with
one line naming the problem for bad files or arguments, never a traceback.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from modelyard.cli.app import main
from tests.batch.fixtures import (  # the fixtures, shared with tests/batch
    CHURN,
    HGB,
    BatchProject,
    _batch_base,
    batch_project,
    churn_frame,
    hgb_frame,
)

__all__ = ["_batch_base", "batch_project"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, _ANSI.sub("", out), _ANSI.sub("", err)


def test_predict_prints_counts_and_writes_the_folder(
    batch_project: BatchProject, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = churn_frame(30, seed=31).astype(object)
    frame.insert(0, "id", range(30))
    frame.loc[4, "amount"] = "lots"
    frame.to_csv(tmp_path / "in.csv", index=False)
    out = tmp_path / "out"
    code, stdout, stderr = _run(
        capsys, "-p", str(batch_project.root), "predict", f"{CHURN}@production",
        "--input", str(tmp_path / "in.csv"), "--output", str(out), "--batch-rows", "8",
    )  # fmt: skip
    assert code == 0, stderr
    assert "29 rows scored, 1 rejected of 30 in 1 file(s)" in " ".join(stdout.split())
    assert "rejects.parquet" in stdout.replace("\n", "")
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "predictions.parquet",
        "rejects.parquet",
    ]
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    assert [(r["row"], r["column"], r["reason"]) for r in rejects] == [
        (4, "amount", "expected float, got 'lots'")
    ]


def test_predict_json_keep_and_log(
    batch_project: BatchProject, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = hgb_frame(20, seed=32)
    frame["a"], frame["b"] = np.arange(20), np.arange(20) * 2
    frame.to_parquet(tmp_path / "in.parquet")
    code, stdout, stderr = _run(
        capsys, "-p", str(batch_project.root), "predict", f"{HGB}/1", "-i",
        str(tmp_path / "in.parquet"), "-o", str(tmp_path / "out"), "--keep", "b", "--log", "--json",
    )  # fmt: skip
    assert code == 0, stderr
    result: dict[str, Any] = json.loads(stdout)
    assert result["rows_scored"] == 20 and result["rows_rejected"] == 0
    assert result["key_columns"] == ["b"] and result["logged_records"] == 1
    assert result["runtime"].startswith("onnxruntime") and result["engine"] == "local"
    columns = pq.read_schema(tmp_path / "out" / "predictions.parquet").names
    assert columns[0] == "b" and "a" not in columns and "record_id" in columns


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--input", "{tmp}/missing-*.parquet"], "Expected files matching"),
        (["--input", "{tmp}/short.parquet"], "Expected a column 'x4' (float)"),
        (["--input", "{tmp}/ok.parquet", "--engine", "spark"], "Expected an engine (local or ray)"),
        (["--input", "{tmp}/ok.parquet", "--batch-rows", "0"], "Expected a number of rows >= 1"),
        (["--input", "{tmp}/ok.parquet", "--keep", "zzz"], "Expected the key column 'zzz'"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    batch_project: BatchProject,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    expected: str,
) -> None:
    hgb_frame(3).to_parquet(tmp_path / "ok.parquet")
    hgb_frame(3).drop(columns="x4").to_parquet(tmp_path / "short.parquet")
    filled = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, stdout, stderr = _run(
        capsys, "-p", str(batch_project.root), "predict", f"{HGB}/1", *filled,
        "--output", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2
    assert expected in stderr
    assert "Traceback" not in stderr + stdout
    assert len(stderr.strip().splitlines()) == 1


def test_unknown_model_exits_2(
    batch_project: BatchProject, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hgb_frame(3).to_parquet(tmp_path / "ok.parquet")
    code, _, stderr = _run(
        capsys, "-p", str(batch_project.root), "predict", "nope/1", "-i",
        str(tmp_path / "ok.parquet"), "-o", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2 and "nope" in stderr and "Traceback" not in stderr
