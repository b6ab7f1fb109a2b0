"""``modelyard features ...`` run as a user runs it, in-process, with ``--json``."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from modelyard.cli.app import main
from modelyard.config import Settings

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
T0 = datetime(2013, 1, 1, tzinfo=UTC)

FEATURES = """\
from modelyard.features import Entity, Feature, FeatureService, FeatureView, FileSource

carrier = Entity("carrier", join_keys=["carrier"])
delays = FeatureView(
    "delays", entities=[carrier],
    source=FileSource("data/flights.parquet", timestamp_field="ts"),
    features=[Feature("delay", "float"), Feature("n", "int")],
)
model = FeatureService("model", features=[delays])
"""


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = _ANSI.sub("", out)
        self.err = _ANSI.sub("", err)

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """SQLite only: the CLI is a thin layer over the store, which every backend tests."""
    return f"sqlite:///{tmp_path / 'meta' / 'modelyard.db'}"


@pytest.fixture
def project(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [k for k in os.environ if k.startswith("MODELYARD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MODELYARD_DB_URL", settings.db_url)
    monkeypatch.chdir(settings.project_dir)
    root = settings.project_dir
    (root / "data").mkdir()
    pd.DataFrame(
        {
            "carrier": ["AA", "AA", "UA", 7 * "B"],
            "ts": pd.to_datetime(
                [T0, T0 + timedelta(hours=2), T0 + timedelta(hours=1), T0 + timedelta(days=9)],
                utc=True,
            ),
            "delay": [1.0, 5.0, 2.5, 0.0],
            "n": [1, 2, 3, 4],
        }
    ).to_parquet(root / "data" / "flights.parquet", index=False)
    (root / "features.py").write_text(FEATURES)
    return root


@pytest.fixture
def cli(project: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def test_plan_apply_list_show(cli: Any, project: Path) -> None:
    planned = cli("features", "plan", "--json")
    assert planned.code == 0, planned.err
    assert planned.json()["pending"] == 3
    assert [c["action"] for c in planned.json()["changes"]] == ["add"] * 3

    text = cli("features", "plan")
    assert "+ view delays (v- → v1)" in text.out and "Plan: 3 to add." in text.out

    applied = cli("features", "apply", "--json")
    assert applied.code == 0, applied.err
    assert cli("features", "plan", "--json").json()["pending"] == 0
    assert "No changes" in cli("features", "apply").out

    listed = cli("features", "list", "--json").json()
    assert [(v["name"], v["version"], v["features"]) for v in listed] == [
        ("delays", 1, ["delay", "n"])
    ]
    assert "delays" in cli("features", "list").out

    shown = cli("features", "show", "delays", "--json")
    assert shown.code == 0, shown.err
    data = shown.json()
    assert (data["version"], data["definition"]["source"]["path"]) == (
        1,
        "data/flights.parquet",
    )
    assert len(data["sha256"]) == 64
    assert "delay" in cli("features", "show", "delays").out


def test_materialize_then_online(cli: Any) -> None:
    assert cli("features", "apply").code == 0
    done = cli("features", "materialize", "--end", "2013-01-05T00:00:00+00:00", "--json")
    assert done.code == 0, done.err
    assert [(r["view"], r["rows"]) for r in done.json()] == [("delays", 2)]
    assert "delays" in cli("features", "list").out

    got = cli("features", "online", "carrier=AA", "carrier=ZZ", "-s", "model", "--json")
    assert got.code == 0, got.err
    rows = got.json()
    assert rows[0] == {
        "carrier": "AA",
        "features": {"delays:delay": 5.0, "delays:n": 2},
        "status": {"delays:delay": "present", "delays:n": "present"},
    }
    assert rows[1]["status"] == {"delays:delay": "missing", "delays:n": "missing"}
    table = cli("features", "online", "carrier=UA", "-f", "delays:delay")
    assert table.code == 0 and "2.5" in table.out

    incremental = cli("features", "materialize-incremental", "--json")
    assert incremental.code == 0, incremental.err
    # only the row after the first run's watermark (AA's newest event) is new
    assert [r["rows"] for r in incremental.json()] == [1]
    assert "materialized" in cli("features", "materialize", "--start", "2013-01-01T00:00Z").out


def test_historical_writes_a_training_set(cli: Any, project: Path, tmp_path: Path) -> None:
    assert cli("features", "apply").code == 0
    entities = tmp_path / "entities.csv"
    entities.write_text(
        "carrier,event_timestamp,label\n"
        "AA,2013-01-01T01:00:00+00:00,0\n"
        "AA,2013-01-02T00:00:00+00:00,1\n"
        "UA,2012-12-31T00:00:00+00:00,0\n"
    )
    out = tmp_path / "out" / "train.parquet"
    done = cli("features", "historical", str(entities), "--out", str(out), "-s", "model", "--json")
    assert done.code == 0, done.err
    assert done.json()["rows"] == 3
    frame = pd.read_parquet(out)
    assert frame["delay"].tolist()[:2] == [1.0, 5.0] and pd.isna(frame["delay"][2])
    assert frame["label"].tolist() == [0, 1, 0]
    csv = tmp_path / "train.csv"
    text = cli("features", "historical", str(entities), "-o", str(csv), "-f", "delays:n")
    assert text.code == 0 and "Wrote 3 rows" in text.out
    assert pd.read_csv(csv)["n"].tolist()[:2] == [1, 2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("online", "carrier"), "Expected KEY=VALUE, got 'carrier'"),
        (("online", "carrier=AA"), "Expected features: --features"),
        (("online", "carrier=AA", "-f", "nope:x"), "No feature view named 'nope'"),
        (("materialize", "--end", "2013-01-05"), "Expected an ISO time with a time zone"),
        (("materialize", "--end", "yesterday"), "Expected an ISO time with a time zone"),
        (("historical", "missing.csv", "--out", "x.parquet", "-s", "model"), "no such file"),
        (("historical", "e.csv", "--out", "x.txt", "-s", "model"), "Expected --out FILE"),
    ],
)
def test_bad_input_exits_2(cli: Any, args: tuple[str, ...], message: str) -> None:
    assert cli("features", "apply").code == 0
    result = cli("features", *args)
    assert result.code == 2, result.out
    assert message in result.err


def test_unknown_view_and_missing_module_exit_2(cli: Any, project: Path) -> None:
    assert cli("features", "apply").code == 0
    shown = cli("features", "show", "delay")
    assert shown.code == 2
    assert "Did you mean 'delays'?" in shown.err
    (project / "features.py").unlink()
    planned = cli("features", "plan")
    assert planned.code == 2 and "No feature definitions module" in planned.err


def test_a_broken_source_fails_apply_with_exit_2(cli: Any, project: Path) -> None:
    pd.DataFrame({"carrier": ["AA"], "ts": [T0]}).to_parquet(project / "data" / "flights.parquet")
    result = cli("features", "apply", "--json")
    assert result.code == 2
    assert "delays.delay: expected a float column, got no such column" in result.err
    assert "delays.n" in result.err


def test_check_skew_exit_codes(cli: Any, project: Path) -> None:
    assert cli("features", "apply").code == 0
    never = cli("features", "check-skew", "--json")
    assert never.code == 1
    assert never.json()[0]["as_of"] is None
    assert cli("features", "materialize", "--end", "2013-01-05T00:00Z").code == 0
    clean = cli("features", "check-skew", "--json")
    assert clean.code == 0, clean.err
    assert [(r["view"], r["entities"], r["ok"]) for r in clean.json()] == [("delays", 2, True)]
    assert "ok" in cli("features", "check-skew").out
    pd.DataFrame(
        {
            "carrier": ["AA", "UA"],
            "ts": pd.to_datetime([T0, T0], utc=True),
            "delay": [9.0, 2.5],
            "n": [1, 3],
        }
    ).to_parquet(project / "data" / "flights.parquet", index=False)
    skewed = cli("features", "check-skew")
    assert skewed.code == 1
    assert "SKEW" in skewed.out and "online 5.0, offline 9.0" in skewed.out


def test_check_skew_over_a_log_of_served_vectors(cli: Any, project: Path) -> None:
    assert cli("features", "apply").code == 0
    assert cli("features", "materialize", "--end", "2013-01-05T00:00Z").code == 0
    served = cli("features", "online", "carrier=AA", "carrier=UA", "-s", "model", "--json")
    assert served.code == 0, served.err
    rows = served.json()
    at = "2013-01-04T12:00:00+00:00"
    log = pd.DataFrame(
        {
            "time": [at, at],
            "carrier": [r["carrier"] for r in rows],
            "delays:delay": [r["features"]["delays:delay"] for r in rows],
            "delays:n": [r["features"]["delays:n"] for r in rows],
        }
    )
    log.to_csv(project / "served.csv", index=False)
    clean = cli("features", "check-skew", "served.csv", "--json")
    assert clean.code == 0, clean.out + clean.err
    assert clean.json()["features"]["delays:n"] == {
        "checked": 2,
        "mismatches": 0,
        "served_null": 0,
        "offline_null": 0,
    }
    log.loc[0, "delays:delay"] = 99.0
    log.to_json(project / "served.jsonl", orient="records", lines=True)
    skewed = cli("features", "check-skew", "served.jsonl")
    assert skewed.code == 1
    assert "SKEW" in skewed.out and "served 99.0, offline 5.0" in skewed.out
    missing = cli("features", "check-skew", "nowhere.parquet")
    assert missing.code == 2 and "no such file" in missing.err


def test_csv_keys_01_and_1_are_distinct_offline_and_online(cli: Any, project: Path) -> None:
    """Issue 11: pandas reads 01 and 1 as the integer 1; the keys are read as text."""
    pd.DataFrame(
        {
            "carrier": ["01", "1"],
            "ts": pd.to_datetime([T0, T0], utc=True),
            "delay": [1.0, 2.0],
            "n": [1, 2],
        }
    ).to_parquet(project / "data" / "flights.parquet", index=False)
    assert cli("features", "apply").code == 0
    assert cli("features", "materialize", "--end", "2013-01-05T00:00Z").code == 0
    entities = project / "entities.csv"
    # two UTC offsets in one column: each converted to UTC (both are 2013-01-02 00:00Z)
    entities.write_text(
        "carrier,event_timestamp\n01,2013-01-02T01:00:00+01:00\n1,2013-01-01T19:00:00-05:00\n"
    )
    out = project / "train.parquet"
    done = cli("features", "historical", str(entities), "-o", str(out), "-s", "model")
    assert done.code == 0, done.err
    offline = pd.read_parquet(out)
    assert offline["carrier"].tolist() == ["01", "1"]
    served = cli("features", "online", "carrier=01", "carrier=1", "-s", "model", "--json")
    assert served.code == 0, served.err
    online = [r["features"]["delays:delay"] for r in served.json()]
    assert offline["delay"].tolist() == online == [1.0, 2.0]


INT_FEATURES = """\
from modelyard.features import Entity, Feature, FeatureView, FileSource

driver = Entity("driver", join_keys=["driver"])
trips = FeatureView(
    "trips", entities=[driver],
    source=FileSource("data/trips.parquet", timestamp_field="ts"),
    features=[Feature("rides", "int")],
)
"""


def test_integer_keys_from_text_must_be_written_canonically(cli: Any, project: Path) -> None:
    pd.DataFrame(
        {"driver": [1, 10], "ts": pd.to_datetime([T0, T0], utc=True), "rides": [3, 4]}
    ).to_parquet(project / "data" / "trips.parquet", index=False)
    (project / "features.py").write_text(INT_FEATURES)
    assert cli("features", "apply").code == 0
    assert cli("features", "materialize", "--end", "2013-01-01T12:00Z").code == 0
    good = cli("features", "online", "driver=10", "driver=1", "-f", "trips:rides", "--json")
    assert good.code == 0, good.err
    assert [r["features"]["trips:rides"] for r in good.json()] == [4, 3]
    for bad in ("01", "1.0", " 1", "\u0661"):
        result = cli("features", "online", f"driver={bad}", "-f", "trips:rides")
        assert result.code == 2, result.out
        assert "Expected an integer key written like 17 in 'driver'" in result.err
        assert "Traceback" not in result.err
    entities = project / "entities.csv"
    entities.write_text("driver,event_timestamp\n1,2013-01-01T06:00Z\n01,2013-01-01T06:00Z\n")
    result = cli("features", "historical", str(entities), "-o", "x.parquet", "-f", "trips:rides")
    assert result.code == 2 and "got '01'" in result.err


def test_csv_times_mixing_offsets_and_none_are_refused(cli: Any, project: Path) -> None:
    assert cli("features", "apply").code == 0
    entities = project / "entities.csv"
    entities.write_text("carrier,event_timestamp\nAA,2013-01-02T01:00:00+01:00\nUA,2013-01-02\n")
    result = cli("features", "historical", str(entities), "-o", "x.parquet", "-s", "model")
    assert result.code == 2, result.out
    assert "all with a UTC offset or all without" in result.err
    assert "'2013-01-02'" in result.err


def test_a_missing_source_is_one_line_naming_its_path(cli: Any, project: Path) -> None:
    assert cli("features", "apply").code == 0
    (project / "data" / "flights.parquet").unlink()
    for args in (("apply",), ("materialize", "--end", "2013-01-05T00:00Z")):
        result = cli("features", *args)
        assert result.code == 2, result.out
        assert "flights.parquet does not exist" in result.err and "delays" in result.err
        assert "LINE 1" not in result.err and "read_parquet" not in result.err
