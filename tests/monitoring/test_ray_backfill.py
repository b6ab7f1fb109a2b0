"""Monitoring backfills with ``engine="ray"`` on a real two-node cluster: the windows are
computed in parallel as Ray tasks, and every stored window row equals the local engine's.

One project (the registered ``churn`` classifier and 12 days of logged traffic, some days
shifted, a record exactly on a day boundary) is copied twice per test: the local engine
runs in one copy, the Ray engine in the other, and the ``monitor_windows`` tables are
compared row by row. The range planning (cuts only at window boundaries) is checked with
generated cases without a cluster.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from modelyard.cli.app import main
from modelyard.config import Settings, load_settings
from modelyard.errors import InvalidInputError
from modelyard.monitoring.monitor import Monitor
from modelyard.monitoring.parallel import window_ranges
from modelyard.monitoring.windows import ORIGIN, utc_us
from modelyard.store.predlog import PredictionLog, PredictionRecord
from tests.monitoring.conftest import DAY0, NAME, Project, write_days

DAY = timedelta(days=1)
SHIFTED = [5, 6, 11]  # the latest day drifts: monitor run exits 1


@pytest.fixture(scope="module")
def logged_root(_base_project: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The base project with 12 days of logged traffic (and a record at midnight)."""
    base, model = _base_project
    root = tmp_path_factory.mktemp("ray-backfill") / "project"
    shutil.copytree(base, root)
    project = Project(load_settings(root, environ={}), model)
    write_days(project, range(12), shifted=SHIFTED, rows=120, per_request=10)
    # one record exactly on a window boundary (it belongs to the later window)
    with PredictionLog(project.log_dir) as log:
        log.append_blocking(
            PredictionRecord(
                request_id="boundary",
                time_us=utc_us(DAY0 + 4 * DAY),
                model=NAME,
                version=1,
                rows=1,
                inputs={"amount": [0.5], "age": [40], "plan": ["pro"]},
                outputs={"label": [1], "proba_0": [0.25], "proba_1": [0.75]},
                latency_us=500,
            )
        )
    return root


@pytest.fixture
def copies(
    logged_root: Path, tmp_path: Path, ray_address: str
) -> Callable[[], tuple[Settings, Settings]]:
    """Two fresh copies of the logged project: (local settings, ray settings)."""

    def make() -> tuple[Settings, Settings]:
        out = []
        for name in ("local", "ray"):
            root = tmp_path / name
            shutil.copytree(logged_root, root)
            settings = load_settings(root, environ={})
            out.append(
                msgspec.structs.replace(
                    settings, ray=msgspec.structs.replace(settings.ray, address=ray_address)
                )
            )
        return out[0], out[1]

    return make


def stored(settings: Settings) -> list[tuple[Any, ...]]:
    """Every stored window row, without its id and computing time, summaries parsed."""
    engine = sa.create_engine(settings.db_url)
    try:
        with engine.connect() as conn:
            table = sa.Table("monitor_windows", sa.MetaData(), autoload_with=conn)
            skip = {"id", "computed_at", "computed_at_us"}
            columns = [c for c in table.columns if c.name not in skip]
            rows = conn.execute(sa.select(*columns)).all()
    finally:
        engine.dispose()
    out = []
    for row in rows:
        values = dict(row._mapping)
        for key, value in values.items():
            if isinstance(value, str) and value[:1] in "{[":
                values[key] = json.loads(value)
        out.append(tuple(sorted(values.items())))
    return sorted(out, key=repr)


@pytest.mark.ray
def test_run_on_ray_stores_exactly_the_local_windows(
    copies: Callable[[], tuple[Settings, Settings]],
) -> None:
    local, ray = copies()
    with Monitor(local) as monitor:
        expected = monitor.run(f"{NAME}/1", window="1d", notify=False)
    seen: list[tuple[int, int]] = []
    with Monitor(ray, engine="ray") as monitor:
        got = monitor.run(
            f"{NAME}/1", window="1d", notify=False, progress=lambda d, t: seen.append((d, t))
        )
    assert len(expected.drift) == 12 and len(expected.performance) == 12
    assert [(w.start_us, w.rows, w.summary) for w in got.drift] == [
        (w.start_us, w.rows, w.summary) for w in expected.drift
    ]
    assert [(w.start_us, w.summary) for w in got.performance] == [
        (w.start_us, w.summary) for w in expected.performance
    ]
    assert [w.alarm for w in got.drift] == [w.alarm for w in expected.drift]
    assert [w.rows for w in got.drift][4] == 121  # the boundary record is day 4's
    assert [e.to_dict() for e in got.events] == [e.to_dict() for e in expected.events]
    assert stored(ray) == stored(local)
    assert len(stored(ray)) == 24
    assert seen and seen[-1][0] == seen[-1][1] == 12


@pytest.mark.ray
def test_clipped_ranges_and_single_kinds_equal_local(
    copies: Callable[[], tuple[Settings, Settings]],
) -> None:
    local, ray = copies()
    # both cut a day's rows (logged from 00:01 to 00:06:30)
    since, until = DAY0 + 2 * DAY + timedelta(minutes=3), DAY0 + 9 * DAY + timedelta(minutes=3)
    with Monitor(local) as monitor:
        model = monitor.model(NAME)
        drift = monitor.drift(model, window="2d", since=since, until=until)
        performance = monitor.performance(model, window="6h", since=since)
    with Monitor(ray, engine="ray") as monitor:
        model = monitor.model(NAME)
        assert monitor.drift(model, window="2d", since=since, until=until) == drift
        assert monitor.performance(model, window="6h", since=since) == performance
    assert drift[0].start_us == utc_us(since) and drift[-1].end_us == utc_us(until)
    assert stored(ray) == stored(local)


@pytest.mark.ray
def test_batch_scored_rows_alone_are_windows_on_both_engines(
    copies: Callable[[], tuple[Settings, Settings]],
) -> None:
    """A range holding only rows that batch scoring logged: the Ray engine's span used to
    look at served rows only, found none, and stored nothing where the local engine
    computed windows (a plausible wrong answer: "no traffic")."""
    local, ray = copies()
    later = DAY0 + 20 * DAY
    for settings in (local, ray):
        with PredictionLog(settings.prediction_log_dir) as log:
            for i in range(30):
                log.append_blocking(
                    PredictionRecord(
                        request_id=f"batch-{i}",
                        time_us=utc_us(later + i * timedelta(hours=1)),
                        model=NAME,
                        version=1,
                        rows=1,
                        inputs={"amount": [0.1 * i], "age": [30 + i], "plan": ["pro"]},
                        outputs={"label": [i % 2], "proba_0": [0.4], "proba_1": [0.6]},
                        latency_us=0,
                        route="batch",
                    )
                )
    with Monitor(local) as monitor:
        model = monitor.model(NAME)
        expected = monitor.drift(model, window="1d", since=later)
    with Monitor(ray, engine="ray") as monitor:
        got = monitor.drift(monitor.model(NAME), window="1d", since=later)
    assert [w.rows for w in expected] == [24, 6]
    assert got == expected
    assert stored(ray) == stored(local)


@pytest.mark.ray
def test_an_empty_range_stores_nothing_and_bad_input_is_named(
    copies: Callable[[], tuple[Settings, Settings]],
) -> None:
    _, ray = copies()
    with Monitor(ray, engine="ray") as monitor:
        model = monitor.model(NAME)
        later = DAY0 + 100 * DAY
        assert monitor.drift(model, window="1d", since=later) == []
        with pytest.raises(InvalidInputError, match="zone"):
            monitor.drift(model, window="1d", since=datetime(2024, 3, 5))
    assert stored(ray) == []
    with pytest.raises(InvalidInputError, match="local or ray") as info:
        Monitor(ray, engine="spark")
    assert info.value.loc == "engine"


@pytest.mark.ray
def test_a_shipped_log_is_refused_not_half_counted(
    copies: Callable[[], tuple[Settings, Settings]],
) -> None:
    """The tasks read the local log folder only: a project whose replicas ship their logs
    would get windows counting only this host's rows, so the Ray engine refuses it."""
    local, ray = copies()
    with Monitor(local) as monitor:
        expected = monitor.drift(monitor.model(NAME), window="1d")
    assert expected  # the local engine still answers (it reads the shipped log too)
    (Path(ray.artifacts) / "predictions").mkdir(parents=True)  # a shipped log folder
    with Monitor(ray, engine="ray") as monitor:
        model = monitor.model(NAME)
        with pytest.raises(InvalidInputError, match="shipped log") as info:
            monitor.drift(model, window="1d")
    assert info.value.loc == "--engine"
    assert stored(ray) == []


@pytest.mark.ray
def test_cli_monitor_run_engine_ray_prints_the_local_windows(
    copies: Callable[[], tuple[Settings, Settings]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local, ray = copies()
    outputs = []
    for settings, engine in ((local, "local"), (ray, "ray")):
        monkeypatch.chdir(settings.project_dir)
        monkeypatch.setenv("RAY_ADDRESS", settings.ray.address or "")
        capsys.readouterr()
        code = main(["monitor", "run", NAME, "--window", "1d", "--json", "--no-notify",
                     "--engine", engine])  # fmt: skip
        out, err = capsys.readouterr()
        assert code == 1, err  # the latest windows drift
        outputs.append(json.loads(out))
    assert outputs[1] == outputs[0]
    assert stored(ray) == stored(local)
    capsys.readouterr()
    assert main(["monitor", "run", NAME, "--engine", "spark"]) == 2
    err = capsys.readouterr().err
    assert "--engine" in err and "local or ray" in err and "Traceback" not in err


@hsettings(max_examples=200, deadline=None)
@given(
    offsets=st.lists(st.integers(0, 40 * 86_400), min_size=1, max_size=60),
    length_s=st.sampled_from([60, 3600, 6 * 3600, 86_400, 2 * 86_400, 7 * 86_400]),
    parts=st.integers(1, 9),
    since_s=st.none() | st.integers(-86_400, 20 * 86_400),
    until_s=st.none() | st.integers(20 * 86_400, 42 * 86_400),
)
def test_ranges_cut_only_at_window_boundaries(
    offsets: list[int],
    length_s: int,
    parts: int,
    since_s: int | None,
    until_s: int | None,
) -> None:
    """Windows split per range are the windows of the whole (oracle: bucket each time)."""
    base = utc_us(DAY0) + 123_456_789
    origin = utc_us(ORIGIN)
    step = length_s * 1_000_000
    since = None if since_s is None else base + since_s * 1_000_000
    until = None if until_s is None else base + until_s * 1_000_000
    times = sorted(base + o * 1_000_000 for o in offsets)
    times = [t for t in times if (since is None or t >= since) and (until is None or t < until)]
    if not times:
        return
    ranges = window_ranges(times[0], times[-1], step, parts, since_us=since, until_us=until)
    assert 1 <= len(ranges) <= parts
    assert ranges[0][0] == since and ranges[-1][1] == until
    for (_, end), (start, _) in itertools.pairwise(ranges):
        assert end == start and end is not None and (end - origin) % step == 0
    whole = np.unique((np.array(times) - origin) // step).tolist()
    pieces: list[int] = []
    for start, end in ranges:
        inside = [t for t in times if (start is None or t >= start) and (end is None or t < end)]
        pieces += np.unique((np.array(inside, dtype=np.int64) - origin) // step).tolist()
    assert pieces == whole  # each window in exactly one range, in order
    assert datetime.fromtimestamp(origin / 1e6, UTC) == ORIGIN
