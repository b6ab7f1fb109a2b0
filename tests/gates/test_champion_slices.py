"""Champion and slice gates on real packaged sklearn models trained where the answer is known.

The data: ``y`` follows ``2 x1`` everywhere except region 3, where it follows ``3 x2``.
A model given the region-3 interaction (``x2_r3``) is right everywhere; one without it
is wrong in region 3 only; one given only ``x2`` is worse overall.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

from modelyard.config import DEFAULT_TRUSTED_TYPES, Settings, init_project, load_settings
from modelyard.errors import InvalidInputError
from modelyard.gates.base import GateContext
from modelyard.gates.champion import ChampionGate
from modelyard.gates.slices import SliceGate
from modelyard.gates.statistics import paired_delong
from modelyard.models.flavors import LoadOptions
from modelyard.models.package import PackagedModel, load_package, save_package
from modelyard.models.signature import infer_signature
from modelyard.registry.entities import ModelVersion
from modelyard.store.artifacts import ArtifactStore

LABEL = "y"
Models = dict[str, tuple[object, list[str]]]


def stats_data(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x1": rng.normal(size=rows),
            "x2": rng.normal(size=rows),
            "region": rng.integers(0, 5, rows),
            "distance": rng.uniform(0, 3000, rows),
        }
    )
    frame["x2_r3"] = frame["x2"] * (frame["region"] == 3)
    logit = np.where(frame["region"] == 3, 3 * frame["x2"], 2 * frame["x1"])
    frame[LABEL] = (rng.uniform(size=rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


def stats_model(train: pd.DataFrame, features: list[str]) -> LogisticRegression:
    return LogisticRegression(max_iter=1000).fit(train[features], train[LABEL])


def stats_settings(tmp_path: Path) -> Settings:
    root = tmp_path / "project"
    init_project(root)
    return load_settings(root, environ={})


def stats_package(
    model: object, train: pd.DataFrame, features: list[str], tmp: Path
) -> PackagedModel:
    artifacts = ArtifactStore(str(tmp / "artifacts"))
    # slice columns that are no feature of the model ride along in the evaluation rows
    signature = infer_signature(train[features], extra_columns="ignore")
    saved = save_package(
        model, artifacts, training_frame=train[features], signature=signature, profile=False
    )
    return load_package(artifacts, saved.id, LoadOptions(trusted_types=DEFAULT_TRUSTED_TYPES))


def stats_context(
    tmp_path: Path,
    frame: pd.DataFrame,
    candidate: tuple[object, list[str]],
    champion: tuple[object, list[str]] | None,
    train: pd.DataFrame,
) -> GateContext:
    def version(number: int, package: PackagedModel) -> ModelVersion:
        return ModelVersion("m", number, package.id, None, "active", None, "t", 0)

    cand = stats_package(candidate[0], train, candidate[1], tmp_path)
    champ = None if champion is None else stats_package(champion[0], train, champion[1], tmp_path)
    return GateContext(
        settings=stats_settings(tmp_path),
        candidate=version(2, cand),
        candidate_model=cand,
        champion=None if champ is None else version(1, champ),
        champion_model=champ,
        frame=frame,
        label=LABEL,
        eval_digest="d",
    )


ALL = ["x1", "x2", "x2_r3", "region"]
NO_R3 = ["x1", "x2", "region"]
ONLY_X2 = ["x2"]


@pytest.fixture(scope="module")
def stats_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    return stats_data(6000, 0), stats_data(8000, 1)


@pytest.fixture(scope="module")
def stats_models(
    stats_frames: tuple[pd.DataFrame, pd.DataFrame],
) -> dict[str, tuple[object, list[str]]]:
    train = stats_frames[0]
    return {
        "all": (stats_model(train, ALL), ALL),
        "no_r3": (stats_model(train, NO_R3), NO_R3),
        "only_x2": (stats_model(train, ONLY_X2), ONLY_X2),
    }


def test_champion_gate_passes_a_better_candidate_and_fails_a_worse_one(
    tmp_path: Path, stats_frames: tuple[pd.DataFrame, pd.DataFrame], stats_models: Models
) -> None:
    train, evaluation = stats_frames
    better = stats_context(
        tmp_path, evaluation, stats_models["all"], stats_models["only_x2"], train
    )
    result = ChampionGate("auc", margin=0.01).evaluate(better)
    y = evaluation[LABEL].to_numpy()
    a, b = better.scores("candidate"), better.scores("champion")
    oracle = paired_delong(y, a, b)
    assert result.passed and result.kind == "champion" and result.gate == "champion:auc"
    assert result.numbers["candidate"] == pytest.approx(roc_auc_score(y, a))
    assert result.numbers["champion"] == pytest.approx(roc_auc_score(y, b))
    assert result.ci == (oracle.low, oracle.high)
    assert result.numbers["p_value"] == oracle.p_value and result.numbers["method"] == "delong"
    assert "vs champion v1" in result.summary
    json.dumps(result.to_dict(), allow_nan=False)  # stored as JSON: finite numbers only

    worse = stats_context(tmp_path, evaluation, stats_models["only_x2"], stats_models["all"], train)
    failed = ChampionGate("auc", margin=0.01).evaluate(worse)
    assert not failed.passed and failed.ci is not None and failed.ci[0] <= -0.01
    assert failed.numbers["diff"] < 0


def test_champion_gate_equal_models_pass_within_the_margin(
    tmp_path: Path, stats_frames: tuple[pd.DataFrame, pd.DataFrame], stats_models: Models
) -> None:
    train, evaluation = stats_frames
    same = stats_context(tmp_path, evaluation, stats_models["no_r3"], stats_models["no_r3"], train)
    result = ChampionGate("auc", margin=0.0001).evaluate(same)
    assert result.passed and result.numbers["diff"] == 0.0 and result.numbers["p_value"] == 1.0


def test_champion_gate_bootstraps_losses_with_the_sign_flipped(
    tmp_path: Path, stats_frames: tuple[pd.DataFrame, pd.DataFrame], stats_models: Models
) -> None:
    train, evaluation = stats_frames
    y = evaluation[LABEL].to_numpy()
    better = stats_context(tmp_path, evaluation, stats_models["all"], stats_models["no_r3"], train)
    result = ChampionGate("log_loss", margin=0.0, n_boot=300).evaluate(better)
    expected = log_loss(y, better.scores("candidate")) - log_loss(y, better.scores("champion"))
    assert result.passed and result.numbers["method"] == "bootstrap (percentile)"
    assert result.numbers["diff"] == pytest.approx(expected, abs=1e-9) and expected < 0
    assert result.ci is not None and result.ci[1] < 0
    worse = stats_context(tmp_path, evaluation, stats_models["no_r3"], stats_models["all"], train)
    failed = ChampionGate("log_loss", margin=0.01, n_boot=300).evaluate(worse)
    assert not failed.passed and failed.ci is not None and failed.ci[1] >= 0.01
    bca = ChampionGate("log_loss", margin=0.01, n_boot=300, interval="bca").evaluate(worse)
    assert not bca.passed and bca.numbers["method"] == "bootstrap (bca)"
    assert bca.numbers["diff"] == failed.numbers["diff"] and bca.ci != failed.ci
    accuracy = ChampionGate("accuracy", margin=0.0, n_boot=300).evaluate(worse)
    assert not accuracy.passed and accuracy.numbers["higher_is_better"] is True


def test_champion_gate_without_a_champion_fails_as_not_applicable(
    tmp_path: Path, stats_frames: tuple[pd.DataFrame, pd.DataFrame], stats_models: Models
) -> None:
    train, evaluation = stats_frames
    ctx = stats_context(tmp_path, evaluation, stats_models["all"], None, train)
    result = ChampionGate().evaluate(ctx)
    assert not result.passed and result.numbers["applicable"] is False
    assert result.summary.startswith("no holder of")
    one_class = stats_context(
        tmp_path, evaluation.assign(y=0), stats_models["all"], stats_models["no_r3"], train
    )
    undefined = ChampionGate().evaluate(one_class)
    assert not undefined.passed and "one class" in undefined.summary
    holes = evaluation.assign(y=evaluation[LABEL].where(evaluation["x1"] > -2))
    unlabelled = stats_context(tmp_path, holes, stats_models["all"], stats_models["no_r3"], train)
    for gate in (ChampionGate(), SliceGate(by=["region"])):
        result = gate.evaluate(unlabelled)
        assert not result.passed and "missing - at y" in result.summary, result.summary
        json.dumps(result.to_dict(), allow_nan=False)


def test_champion_gate_rejects_bad_settings() -> None:
    with pytest.raises(InvalidInputError, match="metric"):
        ChampionGate("auroc")
    with pytest.raises(InvalidInputError, match="margin"):
        ChampionGate(margin=-0.1)
    with pytest.raises(InvalidInputError, match="alpha"):
        ChampionGate(alpha=1.5)
    with pytest.raises(InvalidInputError, match="seed"):
        ChampionGate(seed=-1)


def stats_slice_oracle(frame: pd.DataFrame, scores: np.ndarray, mask: np.ndarray) -> float:
    return float(roc_auc_score(frame[LABEL][mask], scores[mask]))


def test_slice_gate_names_the_region_that_regressed_against_the_champion(
    tmp_path: Path, stats_frames: tuple[pd.DataFrame, pd.DataFrame], stats_models: Models
) -> None:
    train, evaluation = stats_frames
    ctx = stats_context(tmp_path, evaluation, stats_models["no_r3"], stats_models["all"], train)
    gate = SliceGate(by=["region"], buckets={"distance": [0, 500, 1500]}, min_rows=1300)
    result = gate.evaluate(ctx)
    assert not result.passed and result.numbers["reference"] == "champion"
    worst = result.details[0]
    assert worst["slice"] == "region=3" and worst["drop"] > 0.05
    mask = (evaluation["region"] == 3).to_numpy()
    assert worst["rows"] == int(mask.sum())
    assert worst["candidate"] == pytest.approx(
        stats_slice_oracle(evaluation, ctx.scores("candidate"), mask), abs=1e-12
    )
    assert worst["reference"] == pytest.approx(
        stats_slice_oracle(evaluation, ctx.scores("champion"), mask), abs=1e-12
    )
    drops = [d["drop"] for d in result.details if "skipped" not in d]
    assert drops == sorted(drops, reverse=True)
    names = {d["slice"] for d in result.details}
    assert {"500 <= distance < 1500", "distance >= 1500"} <= names
    # 0..500 holds ~1/6 of the rows (< 1300): skipped, not judged
    assert "0 <= distance < 500" in result.numbers["skipped_slices"]
    assert result.numbers["worst_slice"] == "region=3"
    json.dumps(result.to_dict(), allow_nan=False)
    regions = [d for d in result.details if d["column"] == "region"]
    assert [d["slice"] for d in regions if d["drop"] > 0.05] == ["region=3"]


def test_slice_gate_passes_a_candidate_as_good_as_the_champion_everywhere(
    tmp_path: Path, stats_frames: tuple[pd.DataFrame, pd.DataFrame], stats_models: Models
) -> None:
    train, evaluation = stats_frames
    ctx = stats_context(tmp_path, evaluation, stats_models["all"], stats_models["no_r3"], train)
    result = SliceGate(by=["region"], buckets={"distance": [1000, 2000]}).evaluate(ctx)
    assert result.passed and result.numbers["failing"] == 0 and result.numbers["skipped"] == 0
    assert result.numbers["slices"] == 8


def test_slice_gate_without_a_champion_compares_with_the_overall_metric(
    tmp_path: Path, stats_frames: tuple[pd.DataFrame, pd.DataFrame], stats_models: Models
) -> None:
    train, evaluation = stats_frames
    weak = stats_context(tmp_path, evaluation, stats_models["no_r3"], None, train)
    result = SliceGate(by=["region"]).evaluate(weak)
    overall = roc_auc_score(evaluation[LABEL], weak.scores("candidate"))
    assert not result.passed and result.numbers["reference"] == "overall"
    assert result.details[0]["slice"] == "region=3"
    assert result.details[0]["reference"] == pytest.approx(overall, abs=1e-12)
    # a loss metric: per-slice log loss rises where the model is wrong
    brier = SliceGate(by=["region"], metric="brier", max_drop=0.02).evaluate(weak)
    assert not brier.passed and brier.details[0]["slice"] == "region=3"


def test_slice_gate_reports_missing_columns_missing_values_and_bad_edges(
    tmp_path: Path, stats_frames: tuple[pd.DataFrame, pd.DataFrame], stats_models: Models
) -> None:
    train, evaluation = stats_frames
    ctx = stats_context(tmp_path, evaluation, stats_models["all"], None, train)
    missing = SliceGate(by=["origin"]).evaluate(ctx)
    assert not missing.passed and "origin" in missing.summary
    holes = evaluation.assign(distance=evaluation["distance"].where(evaluation["x1"] > -1))
    with_nan = stats_context(tmp_path, holes, stats_models["all"], None, train)
    result = SliceGate(buckets={"distance": [1500]}).evaluate(with_nan)
    assert "distance is missing" in {d["slice"] for d in result.details}
    for edges in ([5, 1], [], [0, math.nan]):
        with pytest.raises(InvalidInputError, match="increasing"):
            SliceGate(buckets={"distance": edges})
    with pytest.raises(InvalidInputError, match="slice column"):
        SliceGate()


def test_slice_gate_on_100k_rows_and_5_slice_columns_is_fast(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = 100_000
    frame = pd.DataFrame({f"c{i}": rng.integers(0, 8, rows) for i in range(4)})
    frame["num"] = rng.uniform(0, 100, rows)
    frame[LABEL] = rng.integers(0, 2, rows)
    train = frame.iloc[:2000]
    features = ["c0", "num"]
    model = LogisticRegression().fit(train[features], train[LABEL])
    ctx = stats_context(tmp_path, frame, (model, features), (model, features), train)
    ctx.scores("candidate"), ctx.scores("champion")  # scoring is not the gate's cost
    gate = SliceGate(by=["c0", "c1", "c2", "c3"], buckets={"num": [10, 50, 90]})
    start = time.perf_counter()
    result = gate.evaluate(ctx)
    elapsed = time.perf_counter() - start
    assert result.passed and result.numbers["slices"] == 36
    assert elapsed < 0.5, elapsed
    assert all(math.isfinite(d["drop"]) for d in result.details)
