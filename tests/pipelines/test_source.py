"""source_hash: a step's code and the project code it calls; nothing else changes it."""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.pipelines import source
from modelyard.pipelines.source import source_hash, source_parts


class Project:
    """Modules written into a folder and imported under unique names."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix = f"p{uuid.uuid4().hex[:8]}"
        self.names: list[str] = []

    def write(self, name: str, text: str) -> None:
        path = self.root / f"{self.prefix}_{name}.py"
        before = path.stat().st_mtime_ns if path.exists() else 0
        path.write_text(textwrap.dedent(text).replace("PFX_", f"{self.prefix}_"))
        if path.stat().st_mtime_ns == before:  # a coarse clock: make the edit visible
            os.utime(path, ns=(before + 1_000_000, before + 1_000_000))

    def load(self, *names: str) -> Any:
        """(Re)import the modules, in order; the last one is returned."""
        importlib.invalidate_caches()
        module: Any = None
        for name in names:
            full = f"{self.prefix}_{name}"
            sys.modules.pop(full, None)
            module = importlib.import_module(full)
            self.names.append(full)
        return module


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    sys.path.insert(0, str(tmp_path))
    proj = Project(tmp_path)
    try:
        yield proj
    finally:
        sys.path.remove(str(tmp_path))
        for name in proj.names:
            sys.modules.pop(name, None)


_HELPERS = """
import json

LIMIT = 3


def clean(x):
    return x + 1


class Scaler:
    def apply(self, x):
        return 2 * x
"""

_STEPS = """
import json
import math

import msgspec
import numpy as np

from modelyard import log_metric
from modelyard.pipelines import step

import PFX_helpers as helpers
from PFX_helpers import Scaler, clean


@step
def train(x: int) -> int:
    \"\"\"Train.\"\"\"
    log_metric("x", float(x))
    y = helpers.LIMIT + int(np.mean([x]))
    return Scaler().apply(clean(x)) + y + len(json.dumps(msgspec.to_builtins(x))) + int(math.pi)
"""


def _train(project: Project) -> Any:
    project.write("helpers", _HELPERS)
    project.write("steps", _STEPS)
    return project.load("helpers", "steps").train


def test_the_parts_are_the_step_and_the_project_code_it_calls(project: Project) -> None:
    train = _train(project)
    parts = source_parts(train, project.root)
    p = project.prefix
    assert sorted(parts) == [
        f"{p}_helpers:LIMIT=",
        f"{p}_helpers:Scaler",
        f"{p}_helpers:clean",
        f"{p}_steps:train",
    ]  # nothing of json, math, msgspec, numpy or modelyard (site-packages, stdlib, library)
    assert source_hash(train, project.root) == train.source_hash(project.root)
    assert len(source_hash(train, project.root)) == 64


def _hash_after(project: Project, helpers: str, steps: str = _STEPS) -> str:
    project.write("helpers", helpers)
    project.write("steps", steps)
    return source_hash(project.load("helpers", "steps").train, project.root)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("return x + 1", "return x + 2"),  # a called helper
        ("return 2 * x", "return 3 * x"),  # a method of a class it uses
        ("LIMIT = 3", "LIMIT = 4"),  # a constant it reads through the module
    ],
)
def test_a_change_to_called_project_code_changes_the_hash(
    project: Project, old: str, new: str
) -> None:
    before = _hash_after(project, _HELPERS)
    assert old in _HELPERS
    after = _hash_after(project, _HELPERS.replace(old, new))
    assert after != before
    assert _hash_after(project, _HELPERS) == before  # and back


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t + "\n\ndef unrelated():\n    return 42\n",  # another function
        lambda t: t.replace("return x + 1", "return x + 1  # one more"),  # a comment
        lambda t: t.replace("def clean(x):", 'def clean(x):\n    """Docs."""'),  # a docstring
        lambda t: t.replace("return x + 1", "return (x +\n            1)"),  # formatting
        lambda t: "# a header\n\n\n" + t,  # everything moves down
    ],
)
def test_edits_that_change_no_code_it_runs_keep_the_hash(
    project: Project, edit: Callable[[str], str]
) -> None:
    before = _hash_after(project, _HELPERS)
    assert _hash_after(project, edit(_HELPERS)) == before


def test_an_edit_in_a_module_it_does_not_use_keeps_the_hash(project: Project) -> None:
    project.write("other", "def f():\n    return 1\n")
    project.load("other")
    before = _hash_after(project, _HELPERS)
    project.write("other", "def f():\n    return 2\n")
    project.load("other")
    assert _hash_after(project, _HELPERS) == before


def test_the_step_itself_changes_the_hash_but_its_docstring_does_not(project: Project) -> None:
    before = _hash_after(project, _HELPERS)
    assert _hash_after(project, _HELPERS, _STEPS.replace("Train.", "Train well.")) == before
    assert _hash_after(project, _HELPERS, _STEPS.replace("+ y +", "- y +")) != before


def test_transitive_helpers_and_base_classes_count(project: Project) -> None:
    project.write(
        "deep",
        """
        def inner(x):
            return x * 10


        def outer(x):
            return inner(x) + 1


        class Base:
            def f(self):
                return 1


        class Child(Base):
            pass
        """,
    )
    project.write(
        "steps",
        """
        from PFX_deep import Child, outer


        def a(x):
            return outer(x) + Child().f()
        """,
    )
    a = project.load("deep", "steps").a
    names = {k.split(":")[1] for k in source_parts(a, project.root)}
    assert names == {"a", "outer", "inner", "Child", "Base"}


def test_code_reached_through_packages_and_annotations_counts(project: Project) -> None:
    pkg = project.root / f"{project.prefix}_pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .impl import exported\n")
    (pkg / "impl.py").write_text("def exported(x):\n    return x\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "deep.py").write_text("def leaf(x):\n    return x\n\n\nDEPTH = 7\n")
    project.write(
        "model",
        """
        class MyModel:
            def predict(self, x):
                return x
        """,
    )
    project.write(
        "steps",
        """
        import PFX_pkg
        import PFX_pkg.sub.deep
        from PFX_model import MyModel


        def f(model: MyModel, rows: list[MyModel]) -> int:
            return PFX_pkg.exported(PFX_pkg.sub.deep.leaf(PFX_pkg.sub.deep.DEPTH))
        """,
    )
    f = project.load("steps").f
    project.names += [f"{project.prefix}_pkg", f"{project.prefix}_pkg.impl"]
    project.names += [f"{project.prefix}_pkg.sub", f"{project.prefix}_pkg.sub.deep"]
    p = project.prefix
    assert sorted(source_parts(f, project.root)) == [
        f"{p}_model:MyModel",  # by its annotation: its methods run on the input
        f"{p}_pkg.impl:exported",  # re-exported by the package
        f"{p}_pkg.sub.deep:DEPTH=",
        f"{p}_pkg.sub.deep:leaf",  # two modules down
        f"{p}_steps:f",
    ]


_CONFIGURED = """
import PFX_settings as settings
from PFX_conf import Config
from PFX_settings import THIRD as IMPORTED

CONFIG = Config(depth=3)


def f(x):
    return CONFIG.depth + settings.OTHER.depth + IMPORTED.depth + x
"""


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        ("steps", "Config(depth=3)", "Config(depth=4)"),
        ("settings", "Config(depth=5)", "Config(depth=6)"),
        ("settings", "Config(depth=8)", "Config(depth=9)"),  # imported by name
    ],
)
def test_an_object_built_at_import_counts_by_the_code_that_built_it(
    project: Project, module: str, old: str, new: str
) -> None:
    texts = {
        "conf": "import dataclasses\n\n\n@dataclasses.dataclass\nclass Config:\n    depth: int\n",
        "settings": "from PFX_conf import Config\n\nOTHER = Config(depth=5)\n"
        "THIRD = Config(depth=8)\n",
        "steps": _CONFIGURED,
    }

    def digest() -> str:
        for name, text in texts.items():
            project.write(name, text)
        return source_hash(project.load("conf", "settings", "steps").f, project.root)

    before = digest()
    assert f"{project.prefix}_steps:CONFIG=" in source_parts(project.load("steps").f, project.root)
    texts[module] = texts[module].replace(old, new)
    assert digest() != before


def test_recursion_and_mutual_recursion_terminate(project: Project) -> None:
    project.write(
        "steps",
        """
        def even(n):
            return True if n == 0 else odd(n - 1)


        def odd(n):
            return False if n == 0 else even(n - 1)
        """,
    )
    even = project.load("steps").even
    assert {k.split(":")[1] for k in source_parts(even, project.root)} == {"even", "odd"}


def test_same_module_code_counts_even_outside_the_project_folder(
    project: Project, tmp_path: Path
) -> None:
    project.write("steps", "def helper(x):\n    return x\n\n\ndef f(x):\n    return helper(x)\n")
    f = project.load("steps").f
    elsewhere = tmp_path / "not-the-project"
    elsewhere.mkdir()
    assert {k.split(":")[1] for k in source_parts(f, elsewhere)} == {"f", "helper"}


def test_a_decorated_helper_is_read_through_its_wrapper(project: Project) -> None:
    project.write(
        "steps",
        """
        import functools


        def logged(fn):
            @functools.wraps(fn)
            def wrapper(*a):
                return fn(*a)
            return wrapper


        @logged
        def helper(x):
            return x + 1


        def f(x):
            return helper(x)
        """,
    )
    f = project.load("steps").f
    parts = source_parts(f, project.root)
    assert f"{project.prefix}_steps:helper" in parts


def test_without_a_source_file_the_code_itself_is_hashed() -> None:
    def compiled(body: str) -> Any:
        namespace: dict[str, Any] = {"__name__": "generated"}
        exec(compile(f"def f(x):\n    return {body}\n", "<generated>", "exec"), namespace)
        return namespace["f"]

    one, same, other = compiled("x + 1"), compiled("x + 1"), compiled("x + 2")
    assert source_hash(one, ".") == source_hash(same, ".")
    assert source_hash(one, ".") != source_hash(other, ".")


def test_a_class_without_a_source_file_is_hashed_by_its_code() -> None:
    def compiled(body: str) -> Any:
        namespace: dict[str, Any] = {"__name__": "generated_cls"}
        code = f"class C:\n    LIMIT = 3\n\n    def f(self, x):\n        return {body}\n"
        exec(compile(code + "\n\ndef g(x):\n    return C().f(x)\n", "<gen>", "exec"), namespace)
        return namespace["g"]

    one, same, other = compiled("x + 1"), compiled("x + 1"), compiled("x * 1")
    assert source_hash(one, ".") == source_hash(same, ".")
    assert source_hash(one, ".") != source_hash(other, ".")
    assert "generated_cls:C" in source_parts(one, ".")


def test_a_function_of_a_module_without_its_source_falls_back_to_the_module_file(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    project.write("steps", "def f(x):\n    return x\n")
    f = project.load("steps").f

    def no_source(obj: Any) -> str:
        raise OSError("could not get source code")

    before = source_hash(f, project.root)
    monkeypatch.setattr(inspect, "getsource", no_source)
    source._DIGESTS.clear()
    fallback = source_hash(f, project.root)
    assert fallback != before
    project.write("steps", "def f(x):\n    return x\n\n\nOTHER = 1\n")  # any byte of the file
    assert source_hash(f, project.root) != fallback


def test_a_rerun_reads_no_source_until_a_file_changes(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = _train(project)
    source_hash(train, project.root)
    calls: list[Any] = []
    real = inspect.getsource

    def counting(obj: Any) -> str:
        calls.append(obj)
        return real(obj)

    monkeypatch.setattr(inspect, "getsource", counting)
    first = source_hash(train, project.root)
    assert calls == []
    path = project.root / f"{project.prefix}_helpers.py"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert source_hash(train, project.root) == first  # same text: same hash, read again
    assert len(calls) == 2  # clean and Scaler, whose file it was


def test_code_edited_after_import_is_keyed_by_the_code_that_runs(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    project.write(
        "steps", "def helper(x):\n    return x + 1\n\n\ndef f(x):\n    return helper(x)\n"
    )
    f = project.load("steps").f
    loaded = source_hash(f, project.root)
    # the file changes, the module is not reloaded: f still runs the old helper
    project.write(
        "steps", "def helper(x):\n    return x - 1\n\n\ndef f(x):\n    return helper(x)\n"
    )
    with caplog.at_level("WARNING", logger="modelyard.pipelines.source"):
        in_memory = source_hash(f, project.root)
    assert f(1) == 2  # the old code
    assert "helper changed in" in caplog.text and "after it was imported" in caplog.text
    fresh = source_hash(project.load("steps").f, project.root)  # what a new process computes
    assert len({loaded, in_memory, fresh}) == 3  # old results are never filed under the new code


def test_a_class_edited_after_import_is_keyed_by_its_methods_in_memory(
    project: Project,
) -> None:
    text = (
        "class Scaler:\n    def apply(self, x):\n        return x * 2\n\n\n"
        "def f(x):\n    return Scaler().apply(x)\n"
    )
    project.write("steps", text)
    f = project.load("steps").f
    loaded = source_hash(f, project.root)
    project.write("steps", text.replace("x * 2", "x / 2"))
    in_memory = source_hash(f, project.root)
    fresh = source_hash(project.load("steps").f, project.root)
    assert len({loaded, in_memory, fresh}) == 3
    project.write("steps", text)  # the file as it was imported
    assert source_hash(f, project.root) == loaded


def test_an_edit_of_no_code_after_import_is_not_taken_for_a_change(project: Project) -> None:
    project.write("steps", "def f(x):\n    return x + 1\n")
    f = project.load("steps").f
    loaded = source_hash(f, project.root)
    project.write("steps", "# a comment\n\n\ndef f(x):\n    return x + 1  # why\n")
    assert source_hash(f, project.root) == loaded


_SCAN = """
import importlib, inspect, pkgutil, sys
from modelyard.pipelines import source

checked, stale = 0, []
for package in sys.argv[1:]:
    names = [package]
    root = importlib.import_module(package)
    if hasattr(root, "__path__"):
        found = pkgutil.walk_packages(root.__path__, package + ".")
        names += [i.name for i in found if ".migrations" not in i.name]  # alembic's scripts
    for name in names:
        module = importlib.import_module(name)
        for value in vars(module).values():
            fn = inspect.unwrap(value) if inspect.isfunction(value) else value
            if inspect.isfunction(fn) and fn.__module__ == module.__name__:
                checked += 1
                if source._is_stale(fn):
                    stale.append(f"{name}.{fn.__qualname__}")
            elif inspect.isclass(value) and value.__module__ == module.__name__:
                checked += 1
                if source._is_stale_class(value):
                    stale.append(f"{name}.{value.__qualname__}")
print(checked, stale)
"""


def test_no_function_or_class_of_unedited_real_modules_is_taken_for_stale() -> None:
    # in a fresh process: the modules are imported and checked at once, unedited since
    packages = ["modelyard.pipelines", "modelyard.tracking", "modelyard.store", "json", "email"]
    out = subprocess.run(
        [sys.executable, "-c", _SCAN, *packages], capture_output=True, text=True, check=True
    )
    checked, stale = out.stdout.strip().split(" ", 1)
    assert stale == "[]"
    assert int(checked) > 500


@given(st.integers(-1000, 1000), st.integers(-1000, 1000))
@settings(max_examples=25, deadline=None)
def test_a_constant_a_helper_returns_is_in_the_hash_exactly_when_it_differs(a: int, b: int) -> None:
    def build(n: int) -> str:
        namespace: dict[str, Any] = {}
        exec(compile(f"def helper():\n    return {n}\n", "<g>", "exec"), namespace)
        return source_hash(namespace["helper"], ".")

    assert (build(a) == build(b)) == (a == b)


def test_a_non_function_is_refused() -> None:
    with pytest.raises(TypeError, match="takes a function or a step"):
        source_hash(3, ".")


def test_threads_normalising_sources_at_once_get_what_one_thread_gets() -> None:
    """Steps compute their cache keys in threads at once: every parse gives the one-thread
    answer (CPython 3.11's parser raised "AST constructor recursion depth mismatch" when
    two threads parsed together, failing a pipeline step in CI)."""
    import threading

    nested = (
        "def f(x):\n"
        + "".join("    " * (i + 1) + f"if x > {i}:\n" for i in range(40))
        + "    " * 41
        + "return [(a, {b: (c, [d])}) for a, b, c, d in x]\n"
    )
    texts = [nested.replace("x", name) for name in ("x", "y", "z", "w")]
    expected = [source._normalise(text) for text in texts]
    failures: list[BaseException] = []
    start = threading.Barrier(8)

    def work(k: int) -> None:
        start.wait()
        try:
            for i in range(150):
                j = (i + k) % len(texts)
                assert source._normalise(texts[j]) == expected[j]
        except BaseException as exc:  # collected: a thread's failure fails the test
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
