"""``predict_batch(engine="ray")`` on a real two-node Ray cluster equals the local engine.

Same inputs (Parquet and CSV, with rows that fail the signature), both engines: the
predictions and the rejects are equal table for table (every value, every row, in
order), the manifests' counts and digests too; the actor pool scores many batches with
one model load per actor.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import msgspec
import numpy as np
import pyarrow.parquet as pq
import pytest
from tests.batch.fixtures import CHURN, HGB, BatchProject, churn_frame, hgb_frame

from modelyard.batch import MANIFEST, predict_batch
from modelyard.config import RaySettings, Settings
from modelyard.engine import connect_ray, import_ray
from modelyard.store.predlog import read_predictions

pytestmark = [
    pytest.mark.ray,
]


def _on_ray(settings: Settings, address: str) -> Settings:
    return msgspec.structs.replace(settings, ray=RaySettings(address=address))


def _same_run(local: Path, ray: Path) -> None:
    for name in ("predictions.parquet", "rejects.parquet"):
        a, b = pq.read_table(local / name), pq.read_table(ray / name)
        assert a.schema.equals(b.schema), name
        assert a.equals(b), name
    mine, theirs = (json.loads((p / MANIFEST).read_text()) for p in (local, ray))
    for key in ("rows_total", "rows_scored", "rows_rejected", "inputs", "package_id", "runtime"):
        assert mine[key] == theirs[key], key


def test_ray_equals_local_with_rejects_csv_and_parquet(
    batch_project: BatchProject, ray_address: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    first = churn_frame(300, seed=21)
    first.insert(0, "id", [f"a{i}" for i in range(len(first))])
    first.loc[[5, 77, 299], "amount"] = np.nan  # no missing values in training: rejected
    first.to_parquet(data / "a.parquet")
    second = churn_frame(120, seed=22).astype(object)
    second.insert(0, "id", [f"b{i}" for i in range(len(second))])
    second.loc[3, "age"] = "old"
    second.loc[64, "city"] = None
    second.to_csv(data / "b.csv", index=False)
    settings = _on_ray(batch_project.settings, ray_address)
    local = predict_batch(CHURN + "/1", data, tmp_path / "local", settings=settings, batch_rows=50)
    connect_ray(settings)
    with warnings.catch_warnings():  # Ray Data's own deprecated settings, as it builds them
        warnings.simplefilter("ignore", DeprecationWarning)
        context = import_ray().data.DataContext.get_current()
    before = (context.execution_options.preserve_order, context.target_max_block_size)
    ray = predict_batch(
        CHURN + "/1", data, tmp_path / "ray", settings=settings, batch_rows=50, engine="ray",
        workers=2,
    )  # fmt: skip
    assert ray.engine == "ray" and local.engine == "local"
    # the driver's own Ray Data settings are as they were
    assert (context.execution_options.preserve_order, context.target_max_block_size) == before
    assert ray.rows_rejected == local.rows_rejected == 5
    assert ray.rows_total == 420
    _same_run(tmp_path / "local", tmp_path / "ray")
    # a pool of two actors, each loading the model once, scored all 9 batches
    assert 1 <= ray.model_loads <= 2 and ray.workers == ray.model_loads


def test_ray_onnx_runtime_and_log_equal_local(
    batch_project: BatchProject, ray_address: str, tmp_path: Path
) -> None:
    frame = hgb_frame(5000, seed=23)
    frame["key"] = np.arange(len(frame))
    frame.to_parquet(tmp_path / "in.parquet", row_group_size=700)
    settings = _on_ray(batch_project.settings, ray_address)
    local = predict_batch(
        HGB + "/1", tmp_path / "in.parquet", tmp_path / "local", settings=settings
    )
    ray = predict_batch(
        HGB + "/1", tmp_path / "in.parquet", tmp_path / "ray", settings=settings, engine="ray",
        batch_rows=1000, log=True,
    )  # fmt: skip
    assert ray.runtime == local.runtime and ray.runtime.startswith("onnxruntime")
    ours = pq.read_table(tmp_path / "local" / "predictions.parquet")
    theirs = pq.read_table(tmp_path / "ray" / "predictions.parquet")
    # the logged run carries record ids; every other column equals the local run's
    assert theirs.drop_columns(["record_id", "row"]).equals(ours)
    logged = read_predictions(settings.prediction_log_dir).to_pandas()
    assert len(logged) == 5000 and set(logged["route"]) == {"batch"}
    merged = theirs.to_pandas().merge(logged, on=["record_id", "row"], validate="1:1")
    np.testing.assert_array_equal(merged["output.proba_1"], merged["proba_1"])


def test_a_pool_asked_for_every_cpu_still_reads_and_scores(
    batch_project: BatchProject, ray_address: str, tmp_path: Path
) -> None:
    """``--workers`` as many as the cluster's CPUs: the actors reserve half of them at most.

    A pool holding (nearly) every CPU left Ray Data no CPU for its read tasks, and the
    run waited for ever (two actors on a two-CPU cluster hung).
    """
    frame = hgb_frame(2000, seed=24)
    frame.to_parquet(tmp_path / "in.parquet", row_group_size=250)
    settings = _on_ray(batch_project.settings, ray_address)
    connect_ray(settings)
    cpus = int(import_ray().cluster_resources()["CPU"])
    local = predict_batch(
        HGB + "/1", tmp_path / "in.parquet", tmp_path / "local", settings=settings
    )
    ray = predict_batch(
        HGB + "/1", tmp_path / "in.parquet", tmp_path / "ray", settings=settings, engine="ray",
        batch_rows=250, workers=cpus,
    )  # fmt: skip
    assert ray.rows_scored == local.rows_scored == 2000
    _same_run(tmp_path / "local", tmp_path / "ray")
