"""A project's pipelines: imported from its ``pipelines.py`` (or ``pipelines.modules``).

``load_pipelines(settings)`` imports ``pipelines.py`` of the project folder, or the
modules that ``pipelines.modules`` of ``modelyard.yaml`` lists (module names such as
``flows`` or ``pkg.flows``, or ``.py`` paths relative to the project folder), with the
project folder first on ``sys.path`` so they can import their sibling modules. It
returns every :class:`Pipeline` defined at module level, by name.

Modules are imported under their own names (``pipelines``, ``pkg.flows``), so a step's
``module:qualname`` is the same in the process that runs the pipeline and in the worker
processes that import it again. A module already imported from this project is imported
afresh, so an edited file is read again (a notebook or a test that loads twice).

A module that fails to import is one line naming the file and line; two different
pipelines with one name are refused, naming both.

>>> import tempfile, pathlib
>>> from modelyard.config import init_project, load_settings
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = init_project(root)
>>> load_pipelines(load_settings(root, environ={}))  # no pipelines.py yet
{}
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path
from types import ModuleType

from modelyard.config import Settings
from modelyard.errors import (
    InvalidInputError,
    MissingExtraError,
    ModelyardError,
    NotFoundError,
    PipelineDefinitionError,
)
from modelyard.pipelines.definition import Pipeline

__all__ = ["DEFAULT_MODULE", "load_pipelines", "module_name", "pipeline_modules"]

#: the module a project's pipelines live in when ``pipelines.modules`` is not set
DEFAULT_MODULE = "pipelines"

# the project folder this module last put on sys.path (replaced by the next project's)
_added_path: list[str] = []


def module_name(module: str) -> str:
    """The import name of a ``pipelines.modules`` entry: ``flows/train.py`` -> ``flows.train``.

    >>> module_name("flows/train.py"), module_name("pkg.flows"), module_name("pipelines")
    ('flows.train', 'pkg.flows', 'pipelines')
    """
    if module.endswith(".py"):
        return ".".join(Path(module[: -len(".py")]).parts)
    return module


def _module_path(project_dir: Path, module: str) -> Path:
    if module.endswith(".py"):
        return project_dir / module
    base = project_dir.joinpath(*module.split("."))
    package = base / "__init__.py"
    return package if package.is_file() else base.with_suffix(".py")


def pipeline_modules(settings: Settings) -> list[tuple[str, Path]]:
    """``(import name, file)`` of each module to load; none when the default is absent."""
    project = settings.project_dir
    configured = settings.pipelines.modules
    if configured is None:
        path = _module_path(project, DEFAULT_MODULE)
        return [(DEFAULT_MODULE, path)] if path.is_file() else []
    found = []
    for module in configured:
        path = _module_path(project, module)
        if not path.is_file():
            raise NotFoundError(
                f"No pipelines module {module!r}: {path} does not exist. Create it, or fix "
                "pipelines.modules in modelyard.yaml."
            )
        found.append((module_name(module), path))
    return found


def _on_path(project_dir: Path) -> list[Path]:
    """Put the project folder first on ``sys.path`` in place of the previous project's;
    return the folders whose modules are to be imported afresh (this one and the previous).
    """
    folder = str(project_dir)
    folders = [project_dir]
    for old in _added_path:
        if old != folder:
            folders.append(Path(old))
            if old in sys.path:
                sys.path.remove(old)
    _added_path[:] = [folder]
    if folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)
    return folders


def _forget_project_modules(folders: list[Path], names: list[str]) -> None:
    """Drop modules imported from the project folders (and stale ones under our names).

    Only modules whose file is where a project folder on ``sys.path`` puts their name
    are dropped, so a package installed inside the project folder (a venv) stays.
    """
    doomed = set()
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file is None or not any(str(file).startswith(str(f)) for f in folders):
            continue
        try:
            resolved = Path(file).resolve()
            same = any(resolved == _module_path(f, name).resolve() for f in folders)
        except OSError:
            same = False
        if same:
            doomed.add(name)
    for name in names:  # another project's module of the same name
        for prefix in _prefixes(name):
            if prefix in sys.modules:
                doomed.add(prefix)
    for name in doomed:
        sys.modules.pop(name, None)
    importlib.invalidate_caches()


def _prefixes(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _where(exc: BaseException, project_dir: Path) -> str | None:
    """``file:line`` of the innermost frame of the traceback in the project folder."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    inside = None
    for frame in traceback.extract_tb(exc.__traceback__):
        try:
            Path(frame.filename).resolve().relative_to(project_dir)
        except (ValueError, OSError):
            continue
        inside = f"{frame.filename}:{frame.lineno}"
    return inside


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _import(name: str, path: Path, project_dir: Path) -> ModuleType:
    try:
        module = importlib.import_module(name)
    except ModelyardError as exc:
        where = _where(exc, project_dir) or str(path)
        message = f"In {where}: {exc.message}"
        if type(exc) in (InvalidInputError, NotFoundError, PipelineDefinitionError):
            raise type(exc)(message) from exc
        # any other kind (a gate, a missing extra) still means: this module does not load
        raise PipelineDefinitionError(message, loc="pipelines.modules") from exc
    except SyntaxError as exc:
        where = _where(exc, project_dir) or str(path)
        raise PipelineDefinitionError(
            f"Cannot import pipelines module {name!r}: {where}: "
            f"{type(exc).__name__}: {_one_line(str(exc.msg))}",
            loc="pipelines.modules",
        ) from exc
    except Exception as exc:  # deliberate: any error in user code, named by its file and line
        where = _where(exc, project_dir) or str(path)
        extra = MissingExtraError.from_import_error(exc) if isinstance(exc, ImportError) else None
        hint = f" ({extra})" if extra is not None else ""
        raise PipelineDefinitionError(
            f"Cannot import pipelines module {name!r}: {where}: "
            f"{type(exc).__name__}: {_one_line(str(exc))}{hint}",
            loc="pipelines.modules",
        ) from exc
    file = getattr(module, "__file__", None)
    if file is None or Path(file).resolve() != path.resolve():
        # a module of that name elsewhere on sys.path shadowed the project's file
        raise PipelineDefinitionError(
            f"Importing {name!r} found {file or 'a namespace package'}, not {path}; rename the "
            "module or list it as a .py path under pipelines.modules",
            loc="pipelines.modules",
        )
    return module


def load_pipelines(settings: Settings) -> dict[str, Pipeline]:
    """Every pipeline of the project, by name (see the module's docstring)."""
    project_dir = settings.project_dir.resolve()
    modules = pipeline_modules(settings)
    if not modules:
        return {}
    folders = _on_path(project_dir)
    _forget_project_modules(folders, [name for name, _ in modules])
    found: dict[str, Pipeline] = {}
    where: dict[str, str] = {}
    for name, path in modules:
        module = _import(name, path, project_dir)
        for attribute, value in vars(module).items():
            if not isinstance(value, Pipeline):
                continue
            known = found.get(value.name)
            if known is not None and known is not value:
                raise PipelineDefinitionError(
                    f"Two pipelines are named {value.name!r}: {where[value.name]} and "
                    f"{path}:{attribute}; give each a distinct name (@pipeline(name=...))",
                    loc=f"pipelines.{value.name}",
                )
            found[value.name] = value
            where.setdefault(value.name, f"{path}:{attribute}")
    return found
