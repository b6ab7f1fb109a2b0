"""``modelyard build``'s context, tested by doing what its Dockerfile does.

No container daemon answers on this machine (``docker info`` fails), so the image is
not built here; ``test_docker_builds_and_serves`` does, and skips only when no daemon is
reachable. The rest runs the context's own ``install.sh`` as the Dockerfile runs it:
a fresh venv (no system site-packages) with ``pip install --no-deps -r
requirements.lock``, then modelyard's wheel from ``wheels/`` and ``pip check``; then the
image's entrypoint from that venv (package verified, version recorded, workers from a
cgroup ``cpu.max``), then Open Inference Protocol requests against it.

Two differences from a builder, both environment only: pip reads the pinned wheels from
a local wheel folder (``MODELYARD_TEST_WHEELS``, default ``~/.cache/modelyard-tests/
wheels``, filled once by ``pip download`` of the lock, offline afterwards), and does not
byte-compile them (``PIP_NO_COMPILE=1``; the image does). Measured on the shared 2-core
machine: the install took 51 s of CPU (pip unpacking ~800 MB of wheels) and 303 s of wall
time at a load average of 18; the test prints both (`-s`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelyard.deploy.context import BuildContext, build_context
from modelyard.registry import ModelRegistry

from .conftest import NAME, DeployProject, make_frame

pytestmark = pytest.mark.slow

WHEELS = Path(
    os.environ.get("MODELYARD_TEST_WHEELS", Path.home() / ".cache" / "modelyard-tests" / "wheels")
)
_READY_TIMEOUT_S = 90.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MODELYARD_", "VIRTUAL_ENV", "PYTHON", "PROMETHEUS_"))}  # fmt: skip
    # python3 on PATH is this interpreter's base, as python:3.11-slim's is its own
    env["PATH"] = os.pathsep.join([str(Path(sys._base_executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def context(
    deploy_project: DeployProject, tmp_path_factory: pytest.TempPathFactory
) -> BuildContext:
    with ModelRegistry(deploy_project.settings) as registry:
        return build_context(registry, deploy_project.ref, tmp_path_factory.mktemp("b") / "ctx")


def _fill_wheels(lock: Path) -> None:
    """The lock's wheels in ``WHEELS``: offline when every one is there already."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(WHEELS),
            "-r", str(lock)]  # fmt: skip
    offline = subprocess.run([*base, "--no-index", "--find-links", str(WHEELS)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    if offline.returncode != 0:
        subprocess.run(base, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def image_venv(context: BuildContext, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's venv, made by the context's install.sh exactly as the Dockerfile runs it."""
    _fill_wheels(context.path / "requirements.lock")
    venv = tmp_path_factory.mktemp("image") / "venv"
    env = _env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(WHEELS), PIP_NO_COMPILE="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")  # fmt: skip
    start, cpu = time.monotonic(), os.times()
    for step in ("requirements", "modelyard"):
        done = subprocess.run(["sh", "install.sh", step, str(venv)], cwd=context.path, env=env,
                              capture_output=True, text=True, check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    used = os.times()
    seconds = used.children_user + used.children_system - cpu.children_user - cpu.children_system
    print(f"\nimage venv: {time.monotonic() - start:.1f} s wall, {seconds:.1f} s CPU")
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    return venv


@pytest.fixture
def image_project(context: BuildContext, tmp_path: Path) -> Path:
    """The image's /srv/modelyard: the baked files read-only, .modelyard/ writable."""
    project = tmp_path / "srv"
    shutil.copytree(context.path / "project", project)
    for path in project.rglob("*"):
        if path.is_file():
            path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    (project / ".modelyard").mkdir()
    return project


@pytest.fixture
def cgroup(tmp_path: Path) -> Path:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: one worker
    return root


@pytest.fixture
def server(image_venv: Path, image_project: Path, cgroup: Path) -> Iterator[tuple[str, Path]]:
    port = _free_port()
    log = image_project.parent / "server.log"
    env = _env(MODELYARD_PROJECT=str(image_project), PORT=str(port), HOST="127.0.0.1",
               MODELYARD_CGROUP_ROOT=str(cgroup))  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(image_venv / "bin" / "python"), "-m", "modelyard.deploy.entrypoint",
             "--log-level", "warning"],
            cwd=image_project, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        yield base, log
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_the_context_holds_what_the_dockerfile_copies(context: BuildContext) -> None:
    root = context.path
    dockerfile = (root / "Dockerfile").read_text()
    assert "FROM ${BASE_IMAGE}" in dockerfile and "ARG BASE_IMAGE=python:3.11-slim" in dockerfile
    assert "USER 10001:10001" in dockerfile
    assert 'CMD ["python", "-m", "modelyard.deploy.healthcheck"]' in dockerfile
    assert "HEALTHCHECK" in dockerfile
    # every COPY source exists and passes .dockerignore
    ignore = (root / ".dockerignore").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY"):
            sources = [w for w in line.split()[1:-1] if not w.startswith("--")]
            for source in sources:
                assert (root / source).exists(), source
                assert f"!{source}" in ignore, source
    lock = (root / "requirements.lock").read_text().splitlines()
    pins = [line.split("  #")[0] for line in lock if line and not line.startswith("#")]
    assert all(p.count("==") == 1 for p in pins), pins
    assert any(p.startswith("scikit-learn==") for p in pins)
    assert [w.name.split("-")[0] for w in (root / "wheels").iterdir()] == ["modelyard"]
    for word in ("docker build", "podman build", "buildah"):
        assert word in (root / "README.md").read_text()


def test_the_image_venv_serves_v2_equal_to_the_native_model(
    deploy_project: DeployProject, server: tuple[str, Path]
) -> None:
    base, log = server
    assert "--workers 1" in log.read_text()  # 1.5 CPUs in cpu.max
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.get("/v2/health/live").status_code == 200
        meta = http.get(f"/v2/models/{NAME}").json()
        assert meta["versions"] == ["3"]  # the version it was built from, not a new "1"
        assert [i["name"] for i in meta["inputs"]] == ["amount", "visits"]
        rows = make_frame(rows=25, seed=99)
        body = {
            "id": "image-1",
            "inputs": [
                {"name": "amount", "shape": [25], "datatype": "FP64",
                 "data": rows["amount"].tolist()},
                {"name": "visits", "shape": [25], "datatype": "INT64",
                 "data": rows["visits"].tolist()},
            ],
        }  # fmt: skip
        answer = http.post(f"/v2/models/{NAME}/infer", json=body)
        assert answer.status_code == 200, answer.text
        outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
        assert answer.json()["model_version"] == "3" and answer.json()["id"] == "image-1"
        expected = deploy_project.model.predict_proba(rows)
        np.testing.assert_array_equal(np.array(outputs["proba_1"]), expected[:, 1])
        np.testing.assert_array_equal(
            np.array(outputs["label"]), deploy_project.model.predict(rows).astype(str)
        )
        bad = http.post(f"/v2/models/{NAME}/infer", json={"inputs": [{"name": "amount",
                        "shape": [1], "datatype": "FP64", "data": ["x"]}]})  # fmt: skip
        assert bad.status_code == 422
    port = base.rsplit(":", 1)[1]
    healthy = subprocess.run([str(Path(sys.executable)), "-m", "modelyard.deploy.healthcheck"],
                             env=_env(PORT=port), check=False)  # fmt: skip
    assert healthy.returncode == 0


def test_a_changed_byte_in_the_baked_package_stops_the_container(
    image_venv: Path, image_project: Path, cgroup: Path
) -> None:
    model = next(p for p in (image_project / "artifacts" / "objects").rglob("*")
                 if p.is_file() and p.stat().st_size > 100_000)  # fmt: skip
    model.chmod(0o644)
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    done = subprocess.run(
        [str(image_venv / "bin" / "python"), "-m", "modelyard.deploy.entrypoint"],
        env=_env(MODELYARD_PROJECT=str(image_project), PORT=str(_free_port()),
                 MODELYARD_CGROUP_ROOT=str(cgroup)),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "model.skops" in lines[0], done.stderr


def _docker_daemon() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not _docker_daemon(), reason="no container daemon reachable (docker info)")
def test_docker_builds_and_serves(context: BuildContext) -> None:
    tag = f"modelyard-test-{os.getpid()}:3"
    subprocess.run(["docker", "build", "-t", tag, str(context.path)], check=True, timeout=900)
    port = _free_port()
    name = f"modelyard-test-{os.getpid()}"
    subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "--cpus", "1",
                    "-p", f"127.0.0.1:{port}:8080", tag], check=True)  # fmt: skip
    try:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(1)
        meta = httpx.get(f"http://127.0.0.1:{port}/v2/models/{NAME}").json()
        assert meta["versions"] == ["3"]
        user = subprocess.run(["docker", "exec", name, "id", "-u"], capture_output=True,
                              text=True, check=True)  # fmt: skip
        assert user.stdout.strip() == "10001"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)
