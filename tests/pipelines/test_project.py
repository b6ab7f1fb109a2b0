"""Loading a project's pipelines: pipelines.py or pipelines.modules, errors by file and line."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.cli.failures import describe_failure
from modelyard.config import CONFIG_FILE, Settings, init_project, load_settings
from modelyard.errors import NotFoundError, PipelineDefinitionError
from modelyard.pipelines.definition import Pipeline
from modelyard.pipelines.project import load_pipelines, module_name

_TWO = """
from modelyard.pipelines import pipeline, step

@step
def double(x: int) -> int:
    return 2 * x

@pipeline
def first(x: int = 1) -> None:
    double(x)

@pipeline(name="second-one")
def second(x: int = 2, label: str = "a") -> None:
    double(x)
"""


def cli_project(tmp_path: Path, files: dict[str, str], config: str = "") -> Settings:
    """A project in ``tmp_path/proj`` holding ``files`` (relative path -> source)."""
    root = tmp_path / "proj"
    init_project(root)
    if config:
        (root / CONFIG_FILE).write_text(config)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return load_settings(root, environ={})


def test_no_pipelines_py_means_no_pipelines(tmp_path: Path) -> None:
    assert load_pipelines(cli_project(tmp_path, {})) == {}


def test_pipelines_py_is_loaded_by_pipeline_name(tmp_path: Path) -> None:
    found = load_pipelines(cli_project(tmp_path, {"pipelines.py": _TWO}))
    assert sorted(found) == ["first", "second-one"]
    assert all(isinstance(p, Pipeline) for p in found.values())
    assert found["first"].function_id == "pipelines:first"
    assert found["second-one"].params["label"][1] == "a"


def test_configured_modules_by_name_and_by_path_can_import_their_siblings(
    tmp_path: Path,
) -> None:
    helper = "FACTOR = 3\n"
    flows = "from helpers import FACTOR\n" + _TWO.replace("2 * x", "FACTOR * x")
    other = _TWO.replace("def first", "def third").replace('name="second-one"', 'name="fourth"')
    settings = cli_project(
        tmp_path,
        {"helpers.py": helper, "flows.py": flows, "more/other.py": other},
        config="pipelines:\n  modules: [flows, more/other.py]\n",
    )
    found = load_pipelines(settings)
    assert sorted(found) == ["first", "fourth", "second-one", "third"]
    assert found["third"].function_id == "more.other:third"
    assert found["first"].fn.__globals__["FACTOR"] == 3


def test_a_configured_module_that_does_not_exist_names_its_path(tmp_path: Path) -> None:
    settings = cli_project(tmp_path, {}, config="pipelines:\n  modules: [flows]\n")
    with pytest.raises(NotFoundError, match=r"No pipelines module 'flows': .*flows\.py"):
        load_pipelines(settings)


def test_a_syntax_error_is_one_line_naming_the_file_and_line(tmp_path: Path) -> None:
    source = _TWO + "\n\ndef broken(:\n    pass\n"
    settings = cli_project(tmp_path, {"pipelines.py": source})
    with pytest.raises(PipelineDefinitionError) as info:
        load_pipelines(settings)
    line = source.splitlines().index("def broken(:") + 1
    message = str(info.value)
    assert "\n" not in message
    assert f"{settings.project_dir / 'pipelines.py'}:{line}" in message
    assert "SyntaxError" in message


def test_an_error_raised_while_importing_names_the_innermost_project_line(
    tmp_path: Path,
) -> None:
    helpers = "def load():\n    return {}['missing']\n"
    flows = "import helpers\n\nVALUE = helpers.load()\n"
    settings = cli_project(tmp_path, {"helpers.py": helpers, "pipelines.py": flows})
    with pytest.raises(PipelineDefinitionError) as info:
        load_pipelines(settings)
    assert f"{settings.project_dir / 'helpers.py'}:2: KeyError: 'missing'" in str(info.value)


def test_a_missing_import_names_the_module_and_line(tmp_path: Path) -> None:
    settings = cli_project(tmp_path, {"pipelines.py": "\nimport not_a_module_anywhere\n"})
    with pytest.raises(PipelineDefinitionError) as info:
        load_pipelines(settings)
    assert "pipelines.py:2: ModuleNotFoundError" in str(info.value)
    assert "not_a_module_anywhere" in str(info.value)


def test_two_pipelines_with_one_name_are_refused_naming_both(tmp_path: Path) -> None:
    other = _TWO.replace("def second", "def other").replace('"second-one"', '"first"')
    settings = cli_project(tmp_path, {"pipelines.py": other})
    with pytest.raises(PipelineDefinitionError, match=r"Two pipelines are named 'first'"):
        load_pipelines(settings)


def test_one_pipeline_imported_by_two_modules_is_not_a_duplicate(tmp_path: Path) -> None:
    settings = cli_project(
        tmp_path,
        {"pipelines.py": _TWO, "more.py": "from pipelines import first\n"},
        config="pipelines:\n  modules: [pipelines, more]\n",
    )
    assert sorted(load_pipelines(settings)) == ["first", "second-one"]


def test_an_edited_file_is_read_again_and_another_project_does_not_leak(
    tmp_path: Path,
) -> None:
    settings = cli_project(tmp_path, {"pipelines.py": _TWO})
    assert sorted(load_pipelines(settings)) == ["first", "second-one"]
    (settings.project_dir / "pipelines.py").write_text(_TWO.replace("def first", "def renamed"))
    assert sorted(load_pipelines(settings)) == ["renamed", "second-one"]
    other = cli_project(tmp_path / "b", {"pipelines.py": _TWO.replace("def first", "def b1")})
    assert sorted(load_pipelines(other)) == ["b1", "second-one"]
    assert sys.path.count(str(settings.project_dir.resolve())) == 0
    assert sys.path[0] == str(other.project_dir.resolve())


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    parts=st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), min_size=1, max_size=3)
)
def test_module_name_of_a_path_is_its_dotted_import_name(parts: list[str]) -> None:
    assert module_name("/".join(parts) + ".py") == ".".join(parts)
    assert module_name(".".join(parts)) == ".".join(parts)


@pytest.mark.parametrize(
    ("source", "error", "words"),
    [
        (
            "from modelyard.errors import MissingExtraError\n\n"
            "raise MissingExtraError(\"The module 'onnx'\", 'onnx')\n",
            PipelineDefinitionError,
            ["pipelines.py:3: The module 'onnx' needs the 'onnx' extra"],
        ),
        (
            "from modelyard.errors import GateFailedError\n\nraise GateFailedError('gate shut')\n",
            PipelineDefinitionError,
            ["pipelines.py:3: gate shut"],
        ),
        (
            "from modelyard.errors import NotFoundError\n\nraise NotFoundError('no such thing')\n",
            NotFoundError,
            ["pipelines.py:3: no such thing"],
        ),
        (
            "\nimport skl2onnx_not_here as skl2onnx\n",
            PipelineDefinitionError,
            ["pipelines.py:2: ModuleNotFoundError", "skl2onnx_not_here"],
        ),
    ],
)
def test_an_error_of_modelyard_raised_at_import_gains_the_line_and_means_exit_2(
    tmp_path: Path, source: str, error: type[Exception], words: list[str]
) -> None:
    settings = cli_project(tmp_path, {"pipelines.py": source})
    with pytest.raises(error) as info:
        load_pipelines(settings)
    for word in words:
        assert word in str(info.value)
    assert "\n" not in str(info.value)
    assert describe_failure(info.value)[0] == 2  # the CLI's exit code


def test_a_missing_optional_extra_names_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "skl2onnx", None)  # as if the onnx extra were missing
    settings = cli_project(tmp_path, {"pipelines.py": "\nimport skl2onnx\n"})
    with pytest.raises(PipelineDefinitionError) as info:
        load_pipelines(settings)
    assert "pipelines.py:2: ModuleNotFoundError" in str(info.value)
    assert "pip install 'modelyard[onnx]'" in str(info.value)
