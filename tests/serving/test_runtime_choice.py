"""Which runtime a version is served in: ``serve --runtime native|auto`` and ``serving.runtime``.

One optimized version (a HistGradientBoosting classifier over float and int columns, whose
package names a verified float32 onnxruntime graph as its serving runtime) is served by
``modelyard serve`` in a child process, as users start it. Oracles: the native model's
``predict_proba`` in this process, and the package's own ONNX runtime opened here.

- ``--runtime native`` answers with the native model's probabilities exactly (bit for bit:
  JSON carries float64 by its shortest exact repr);
- the default answers with the ONNX runtime's scores exactly, which differ from the
  native model's (float32) but within the parity tolerance ``models optimize`` verified;
- ``serving.runtime: native`` in ``modelyard.yaml`` does what ``--runtime native`` does,
  and the flag wins over the file;
- a runtime that is neither is refused with exit code 2 and one line naming the option,
  or the setting.

The class: for generated rows (hypothesis), the in-process server with
``serving.runtime: native`` equals the native model and the default equals the ONNX graph.
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.ensemble import HistGradientBoostingClassifier

from modelyard.cli.app import main
from modelyard.config import init_project, load_settings
from modelyard.errors import ModelyardError
from modelyard.models.optimize import DEFAULT_ATOL, optimize_package
from modelyard.models.runtimes import build_inputs, open_serving_runtime
from modelyard.registry import ModelRegistry
from modelyard.serving.app import create_app
from tests.serving.conftest import LiveServer, free_port, serving

NAME = "delays"
ROWS = 400
HELD = 100
_READY_TIMEOUT_S = 120.0


def _frame(seed: int, rows: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "distance": rng.integers(80, 2500, size=rows),
            "temp": rng.normal(50, 15, size=rows),
            "wind": rng.gamma(2.0, 5.0, size=rows),
        }
    )
    score = (frame["distance"] > 1000) * 0.8 + (frame["temp"] - 50) / 20 + frame["wind"] / 15
    labels = (score + rng.normal(scale=0.7, size=rows) > 1.0).astype(int).to_numpy()
    return frame, labels


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {"distance": int(r.distance), "temp": float(r.temp), "wind": float(r.wind)}
        for r in frame.itertuples(index=False)
    ]


class Optimized:
    """A project whose ``delays`` v1 (production) is served by onnxruntime by default."""

    def __init__(self, root: Path) -> None:
        init_project(root)
        frame, labels = _frame(7, ROWS)
        train, held = frame.iloc[:-HELD], frame.iloc[-HELD:].reset_index(drop=True)
        self.root = root
        self.model = HistGradientBoostingClassifier(max_iter=40, random_state=0)
        self.model.fit(train, labels[:-HELD])
        self.held = held
        registry = ModelRegistry(load_settings(root, environ={}))
        try:
            logged = registry.log_model(
                self.model, name=NAME, training_frame=train, holdout_frame=held
            )
            registry.set_alias(str(logged.ref), "production")
            manifest = optimize_package(registry, str(logged.ref))
            self.serving_runtime = str(manifest.serving_runtime)
            packaged = registry.load_package(registry.get_version(f"{NAME}/1").package_id)
            self.onnx = open_serving_runtime(packaged, registry.artifacts)
            self.signature = packaged.manifest.signature
        finally:
            registry.close()

    def native(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.model.predict_proba(frame)[:, 1])

    def graph(self, frame: pd.DataFrame) -> np.ndarray:
        """The package's serving runtime (the ONNX graph) on ``frame``."""
        return np.asarray(self.onnx.scores(build_inputs(self.signature, frame))[:, 1])


@pytest.fixture(scope="module")
def optimized(tmp_path_factory: pytest.TempPathFactory) -> Optimized:
    built = Optimized(tmp_path_factory.mktemp("runtime") / "project")
    assert built.serving_runtime.startswith("onnxruntime"), built.serving_runtime
    return built


def _post(port: int, path: str, body: Any) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        payload = msgspec.json.encode(body)
        connection.request("POST", path, payload, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, msgspec.json.decode(response.read())
    finally:
        connection.close()


def _proba(answer: Any) -> np.ndarray:
    return np.array([p["probabilities"]["1"] for p in answer["predictions"]], dtype=np.float64)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    """``served(project, *args)``: ``modelyard serve`` in a child process, ready; its port."""
    started: list[subprocess.Popen[bytes]] = []

    def start(project: Path, *extra: str) -> int:
        port = free_port()
        command = [
            sys.executable, "-m", "modelyard", "--project", str(project), "serve", NAME,
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1", *extra,
        ]  # fmt: skip
        with (tmp_path / f"serve-{port}.log").open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        started.append(process)
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / f"serve-{port}.log").read_text()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                connection.request("GET", "/v2/health/ready")
                if connection.getresponse().status == 200:
                    return port
            except OSError:
                pass
            finally:
                connection.close()
            time.sleep(0.1)
        raise AssertionError(f"modelyard serve {' '.join(extra)} was not ready")

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)


def test_runtime_native_answers_the_native_models_outputs_exactly(
    optimized: Optimized, served: Any
) -> None:
    port = served(optimized.root, "--runtime", "native")
    status, answer = _post(
        port, f"/v1/models/{NAME}:predict", {"instances": _records(optimized.held)}
    )
    assert status == 200, answer
    np.testing.assert_array_equal(_proba(answer), optimized.native(optimized.held))
    for i in range(5):  # one row per request, as the benchmark sends them
        row = optimized.held.iloc[[i]]
        status, answer = _post(port, f"/v1/models/{NAME}:predict", {"instances": _records(row)})
        assert status == 200, answer
        np.testing.assert_array_equal(_proba(answer), optimized.native(row))


def test_default_serves_the_verified_onnx_runtime(optimized: Optimized, served: Any) -> None:
    port = served(optimized.root)
    status, answer = _post(
        port, f"/v1/models/{NAME}:predict", {"instances": _records(optimized.held)}
    )
    assert status == 200, answer
    got, native = _proba(answer), optimized.native(optimized.held)
    np.testing.assert_array_equal(got, optimized.graph(optimized.held))
    assert np.abs(got - native).max() > 0, "float32 onnxruntime, not the native model"
    np.testing.assert_allclose(got, native, rtol=0, atol=DEFAULT_ATOL)


def test_serving_runtime_setting_and_the_flag_over_it(
    optimized: Optimized, served: Any, tmp_path: Path
) -> None:
    config = optimized.root / "modelyard.yaml"
    original = config.read_text()
    try:
        data = yaml.safe_load(original)
        data["serving"] = {**(data.get("serving") or {}), "runtime": "native"}
        config.write_text(yaml.safe_dump(data))
        body = {"instances": _records(optimized.held)}
        port = served(optimized.root)
        status, answer = _post(port, f"/v1/models/{NAME}:predict", body)
        assert status == 200, answer
        np.testing.assert_array_equal(_proba(answer), optimized.native(optimized.held))
        port = served(optimized.root, "--runtime", "auto")
        status, answer = _post(port, f"/v1/models/{NAME}:predict", body)
        assert status == 200, answer
        np.testing.assert_array_equal(_proba(answer), optimized.graph(optimized.held))
    finally:
        config.write_text(original)


def test_unknown_runtime_flag_is_a_usage_error(
    optimized: Optimized, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--project", str(optimized.root), "serve", NAME, "--runtime", "gpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--runtime" in err and "native" in err and "'gpu'" in err
    assert "Traceback" not in err


def test_unknown_runtime_setting_names_the_field(tmp_path: Path) -> None:
    root = tmp_path / "project"
    init_project(root)
    config = root / "modelyard.yaml"
    data = yaml.safe_load(config.read_text())
    data["serving"] = {"runtime": "gpu"}
    config.write_text(yaml.safe_dump(data))
    with pytest.raises(ModelyardError) as info:
        load_settings(root, environ={})
    assert "runtime" in str(info.value)


_finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=64)
_rows = st.lists(
    st.fixed_dictionaries(
        {
            "distance": st.integers(min_value=-(2**40), max_value=2**40),
            "temp": _finite,
            "wind": _finite,
        }
    ),
    min_size=1,
    max_size=8,
)


@pytest.fixture(scope="module")
def live_pair(optimized: Optimized) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two in-process servers of the same project: ``serving.runtime`` native and auto."""
    base = load_settings(optimized.root, environ={})
    native = LiveServer(_app(serving(base, runtime="native", value_checks="log"))).start()
    auto = LiveServer(_app(serving(base, runtime="auto", value_checks="log"))).start()
    yield native, auto
    native.stop()
    auto.stop()


def _app(settings: Any) -> Any:
    return create_app(settings, [NAME], environ={})


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=_rows)
def test_generated_rows_native_and_auto_each_equal_their_oracle(
    optimized: Optimized, live_pair: tuple[LiveServer, LiveServer], rows: list[dict[str, Any]]
) -> None:
    frame = pd.DataFrame(rows, columns=["distance", "temp", "wind"]).astype(
        {"distance": "int64", "temp": "float64", "wind": "float64"}
    )
    native, auto = live_pair
    for server, oracle in ((native, optimized.native(frame)), (auto, optimized.graph(frame))):
        with server.client() as client:
            response = client.post(f"/v1/models/{NAME}:predict", json={"instances": rows})
        assert response.status_code == 200, response.text
        np.testing.assert_array_equal(_proba(response.json()), oracle)


_LOAD_IN_FRESH_PROCESS = """
import json, sys
import pandas as pd
from modelyard.config import load_settings
from modelyard.registry import ModelRegistry
from modelyard.serving.loaded import load_version
from modelyard.models.runtimes import build_inputs
with ModelRegistry(load_settings(sys.argv[1], environ={})) as registry:
    loaded = load_version(registry, sys.argv[2], 1, runtime=sys.argv[3])
frame = pd.read_json(sys.argv[4], orient="records")
scores = loaded.scores(build_inputs(loaded.signature, frame))
print(json.dumps({
    "runtime": loaded.runtime.name,
    "native_loaded": [m for m in ("skops.io", "sklearn.ensemble") if m in sys.modules],
    "proba_1": scores[:, 1].tolist(),
}))
"""


@pytest.mark.parametrize("runtime", ["auto", "native"])
def test_a_graph_runtime_loads_without_the_native_model(
    optimized: Optimized, tmp_path: Path, runtime: str
) -> None:
    """A server worker serving the ONNX graph never deserializes the native model (nor
    imports scikit-learn and skops: seconds of every worker's start-up); the graph's scores
    are the package's own graph's, and ``native`` still loads and answers with the model."""
    rows = tmp_path / "rows.json"
    optimized.held.to_json(rows, orient="records")
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_IN_FRESH_PROCESS, str(optimized.root), NAME, runtime,
         str(rows)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    answer = msgspec.json.decode(done.stdout.strip().splitlines()[-1])
    if runtime == "auto":
        assert answer["runtime"] == optimized.serving_runtime
        assert answer["native_loaded"] == []
        np.testing.assert_array_equal(answer["proba_1"], optimized.graph(optimized.held))
    else:
        assert answer["runtime"] == "native" and "skops.io" in answer["native_loaded"]
        np.testing.assert_array_equal(answer["proba_1"], optimized.native(optimized.held))
