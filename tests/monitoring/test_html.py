"""The HTML report: one offline page, every section, every user string escaped."""

from __future__ import annotations

import html
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

from modelyard.monitoring import ColumnDrift, DriftReport, Reference
from modelyard.monitoring.html import render_report, write_report

SEED = 20131
PLOTLY_BANNER = "* plotly.js v"  # the version banner at the top of the bundle
VOID = {"meta", "br", "img", "hr", "input", "link"}
FEATURES = ["temp", "dep_delay", "distance", "carrier"]
LEVELS = np.array(["UA", "B6", "EV", "DL"])


class _Page(HTMLParser):
    """Checks that tags nest and collects each table's cell texts, by table id."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.ids: set[str] = set()
        self._table: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(str(found["id"]))
        if tag == "table":
            self._table = str(found.get("id"))
            self.tables[self._table] = []
        if tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        if tag == "td" and self._table is not None:
            self.tables[self._table][-1].append("")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()
        if tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._table is not None and self.stack and self.stack[-1] == "td":
            self.tables[self._table][-1][-1] += data


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert parser.errors == [], parser.errors[:5]
    assert parser.stack == [], parser.stack
    return parser


def _frame(rng: np.random.Generator, n: int, shift: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    temp = rng.normal(15.0 + shift, 5.0, n)
    features = pd.DataFrame(
        {
            "temp": temp,
            "dep_delay": rng.exponential(12.0, n),
            "distance": rng.normal(1000.0, 300.0, n),
            "carrier": pd.Series(rng.choice(LEVELS, n, p=[0.4, 0.3, 0.2, 0.1]), dtype=object),
        }
    )
    # The model leans on temp, so its score moves with the shift.
    proba = 1.0 / (1.0 + np.exp(-(temp - 15.0) / 5.0))
    return features, pd.DataFrame({"proba_1": proba})


def _histogram(ref: np.ndarray, cur: np.ndarray) -> dict[str, Any]:
    edges = np.quantile(ref, np.linspace(0.0, 1.0, 11))
    edges[0], edges[-1] = min(edges[0], cur.min()), max(edges[-1], cur.max())
    reference = np.histogram(ref, edges)[0] / ref.size
    current = np.histogram(cur, edges)[0] / cur.size
    return {
        "kind": "numeric",
        "edges": edges.tolist(),
        "reference": reference.tolist(),
        "current": current.tolist(),
    }


def _shares(ref: pd.Series, cur: pd.Series) -> dict[str, Any]:
    categories = [str(level) for level in LEVELS]
    return {
        "kind": "categorical",
        "categories": categories,
        "reference": [float((ref == c).mean()) for c in categories],
        "current": [float((cur == c).mean()) for c in categories],
    }


@pytest.fixture(scope="module")
def realistic() -> dict[str, Any]:
    """Four weekly windows from the real engine; temp shifts more every week."""
    rng = np.random.default_rng(SEED)
    ref_x, ref_y = _frame(rng, 20_000, 0.0)
    reference = Reference.from_data(ref_x, ref_y, importance={"temp": 0.4, "dep_delay": 0.3})
    windows, performance = [], []
    report: DriftReport | None = None
    cur_x = ref_x
    for week in range(4):
        cur_x, cur_y = _frame(rng, 1_400, 2.0 * week)
        report = reference.compare(cur_x, cur_y)
        start, end = f"2013-03-{1 + 7 * week:02d}", f"2013-03-{8 + 7 * week:02d}"
        windows.append(
            {
                "start": f"{start}T00:00:00+00:00",
                "end": f"{end}T00:00:00+00:00",
                "rows": 1_400,
                "alarm": report.prediction_drift,
                "prediction_drift": report.prediction_drift,
                "drift": report.to_dict(),
            }
        )
        matured = week < 2
        auc = {"value": 0.71 - 0.01 * week, "low": 0.68, "high": 0.74}
        performance.append(
            {
                "start": f"{start}T00:00:00+00:00",
                "end": f"{end}T00:00:00+00:00",
                "rows": 1_400,
                "labelled": 1_300 if matured else 200,
                "coverage": 0.93 if matured else 0.14,
                "matured": matured,
                "metrics": {"auc": auc, "log_loss": {"value": 0.5}} if matured else {},
                "estimated": {"auc": 0.70 - 0.01 * week, "accuracy": 0.8},
            }
        )
    assert report is not None
    causes = [
        {key: column.to_dict()[key] for key in ColumnDrift.__dataclass_fields__}
        for column in report.ranked()
    ]
    distributions = {
        name: _histogram(ref_x[name].to_numpy(), cur_x[name].to_numpy())
        for name in ("temp", "dep_delay", "distance")
    }
    distributions["carrier"] = _shares(ref_x["carrier"], cur_x["carrier"])
    return {
        "model": "flights-delay",
        "version": 1,
        "generated_at": "2026-11-28T18:00:00+00:00",
        "reference": {"rows": 20_000, "source": "package profile"},
        "windows": windows,
        "performance": performance,
        "causes": causes,
        "distributions": distributions,
        "domain_classifier": {
            "auc": 0.93,
            "ci_low": 0.92,
            "ci_high": 0.94,
            "drifted": True,
            "importances": {"temp": 0.3, "distance": 0.01},
        },
        "incidents": [
            {
                "rule": "prediction-drift",
                "cause": "prediction",
                "state": "open",
                "opened_at": "2013-03-15T00:00:00+00:00",
                "updated_at": "2013-03-22T00:00:00+00:00",
                "detail": {"outputs": ["proba_1"]},
            }
        ],
        "findings": ["temp drifts upward every week"],
    }


def _outside_plotlyjs(page: str) -> str:
    return page.replace(get_plotlyjs(), "")


def test_realistic_report_renders_every_section(realistic: dict[str, Any]) -> None:
    page = render_report(realistic)
    parsed = _parse(page)
    assert page.count(PLOTLY_BANNER) == 1
    assert "<script src=" not in page
    rest = _outside_plotlyjs(page)
    assert "http://" not in rest
    assert "https://" not in rest
    assert "flights-delay v1" in page
    for name in [*FEATURES, "proba_1"]:
        assert name in rest
    assert {"drift", "causes", "distributions", "performance", "incidents", "findings"} <= (
        parsed.ids
    )
    # the engine ranked the shifted column first; the table keeps that order
    causes = [row for row in parsed.tables["causes-table"] if row]
    assert causes[0][1] == "temp", f"seed {SEED}: {causes}"
    assert causes[0][-1] == "yes"
    assert [row[1] for row in causes] == [c["name"] for c in realistic["causes"]]
    assert "ALARM in the latest window" in page  # the score follows temp: prediction drift
    assert "1 open incident" in page
    assert "estimated (CBPE)" in page
    assert "No data" not in page
    assert "No drift windows" not in page


def test_distributions_put_drifted_features_first(realistic: dict[str, Any]) -> None:
    page = render_report(realistic)
    positions = {name: page.index(f"<h3>{name}</h3>") for name in realistic["distributions"]}
    assert min(positions, key=positions.__getitem__) == "temp"


def test_empty_input_renders_a_page_of_notes() -> None:
    page = render_report({})
    parsed = _parse(page)
    assert page.startswith("<!DOCTYPE html>")
    assert page.count(PLOTLY_BANNER) == 1
    for note in (
        "No windows monitored yet",
        "No drift windows",
        "No ranked causes",
        "No domain classifier result",
        "No distributions",
        "No performance windows",
        "No incidents",
        "No findings",
    ):
        assert note in page
    assert "plotly-graph-div" not in page
    assert parsed.tables == {}


def test_empty_parts_and_odd_values_do_not_crash() -> None:
    data: dict[str, Any] = {
        "windows": [{"drift": {}}, {"alarm": True, "drift": {"columns": {}, "outputs": {}}}],
        "performance": [{"matured": True, "metrics": {"auc": {"value": None}}}],
        "causes": [{"name": "x"}],
        "distributions": {
            "x": {"kind": "numeric", "edges": [0.0], "reference": [1.0, 0.0], "current": []},
            "y": {"kind": "categorical"},
        },
        "domain_classifier": None,
        "incidents": [{}],
        "findings": [],
        "reference": None,
    }
    page = render_report(data)
    _parse(page)
    assert "No model outputs were compared" in page
    assert "ALARM in the latest window" in page


def test_user_strings_are_escaped(realistic: dict[str, Any]) -> None:
    evil = '<script>alert("feature")</script>'
    model = '<script>alert("model")</script>'
    data = dict(realistic, model=model, findings=[evil])
    data["causes"] = [dict(realistic["causes"][0], name=evil), *realistic["causes"][1:]]
    data["distributions"] = {evil: realistic["distributions"]["temp"]}
    data["incidents"] = [{"rule": evil, "state": "open", "detail": {"note": evil}}]
    window = realistic["windows"][-1]
    columns = dict(window["drift"]["columns"])
    columns[evil] = columns.pop("temp")
    data["windows"] = [dict(window, drift=dict(window["drift"], columns=columns))]
    page = render_report(data)
    assert evil not in page
    assert model not in page
    # the only script tags: plotly's config, plotly.js, and one per figure
    figures = page.count('class="plotly-graph-div"')
    assert _outside_plotlyjs(page).count("<script") == 2 + figures
    assert html.escape(model) in page
    assert html.escape(evil) in page
    _parse(page)


def _wide_data(features: int, windows: int) -> dict[str, Any]:
    """Many features and windows, built from ColumnDrift values without the engine."""
    rng = np.random.default_rng(SEED)
    names = [f"feature_{i:02d}" for i in range(features)]

    def column(name: str, effect: float) -> ColumnDrift:
        return ColumnDrift(
            name=name, kind="numeric", test="ks", statistic=effect, p_value=1e-3,
            effect_name="wasserstein", effect=effect, p_adjusted=0.01, threshold=0.1,
            drifted=effect > 0.1, score=effect * 10,
        )  # fmt: skip

    window_list = []
    report = DriftReport(n_reference=20_000, n_current=0)
    for i in range(windows):
        report = DriftReport(
            n_reference=20_000,
            n_current=1_400,
            columns={n: column(n, float(rng.gamma(1.0, 0.05))) for n in names},
            outputs={"proba_1": column("proba_1", float(rng.gamma(1.0, 0.05)))},
        )
        window_list.append(
            {"start": f"2013-{1 + i // 28:02d}-{1 + i % 28:02d}", "alarm": report.prediction_drift,
             "drift": report.to_dict()}
        )  # fmt: skip
    edges = np.linspace(-3.0, 3.0, 21).tolist()
    shares = (np.ones(20) / 20).tolist()
    performance = [
        {"start": w["start"], "matured": True, "coverage": 0.9, "rows": 1_400, "labelled": 1_260,
         "metrics": {"auc": {"value": 0.7, "low": 0.68, "high": 0.72}},
         "estimated": {"auc": 0.71}}
        for w in window_list
    ]  # fmt: skip
    return {
        "model": "wide",
        "windows": window_list,
        "performance": performance,
        "causes": [c.to_dict() for c in report.ranked()],
        "distributions": {
            n: {"kind": "numeric", "edges": edges, "reference": shares, "current": shares}
            for n in names
        },
    }


def test_write_report_creates_folders_and_writes_utf8(tmp_path: Path) -> None:
    data = _wide_data(25, 20)
    data["model"] = "Wetter über Zürich ✓"
    target = tmp_path / "nested" / "folders" / "report.html"
    written = write_report(data, target)
    assert written == target
    text = target.read_bytes().decode("utf-8")  # strict: fails on anything but UTF-8
    assert html.escape("Wetter über Zürich ✓") in text
    size = target.stat().st_size
    plotly_size = len(get_plotlyjs().encode("utf-8"))
    assert plotly_size < size < 8_000_000, f"{size:,} bytes, plotly.js {plotly_size:,}"


def test_rendering_25_features_by_30_windows_is_fast() -> None:
    data = _wide_data(25, 30)
    render_report(data)  # warm plotly's lazy imports and validators
    started = time.perf_counter()
    page = render_report(data)
    elapsed = time.perf_counter() - started
    assert elapsed < 3.0, f"{elapsed:.2f} s"
    assert page.count("plotly-graph-div") >= 25 + 2
