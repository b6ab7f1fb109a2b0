"""The code version of a step: its source and the project code it calls, as one digest.

:func:`source_hash` digests a function's source together with, transitively, every
project-local function and class it references by a global name (``helper(x)``,
``helpers.clean(x)`` through an imported project module, a base class). "Project-local"
means defined in the step's own module or in a file under the project folder; the standard
library, site-packages and modelyard itself are versioned by their packages instead.

Sources are compared as syntax trees without docstrings, so reformatting, comments and
docstrings change nothing, while any change to what the code does changes the digest.
When ``inspect`` cannot get an object's source the whole module file is digested instead.
Each object's digest is kept per (object, file modification time), so a rerun of an
unchanged project only stats its files. A module-level function whose file was edited
after it was imported (a notebook without a reload) is keyed by its code in memory, the
code that runs, never by the file's new text (with one warning line).

>>> import textwrap
>>> _normalise(textwrap.dedent('''
...     def f(x):
...         "Docs."
...         return x + 1  # a comment
... ''')) == _normalise("def f(x):\\n    return (x + 1)\\n")
True
"""

from __future__ import annotations
import __future__

import ast
import contextlib
import functools
import hashlib
import importlib.util
import inspect
import json
import logging
import marshal
import os
import sys
import sysconfig
import textwrap
import threading
import tokenize
import types
import typing
from pathlib import Path
from typing import Any

__all__ = ["source_hash", "source_parts"]

_log = logging.getLogger(__name__)

_DOC_HOLDERS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)


def _library_roots() -> tuple[str, ...]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(path)
    return tuple(sorted({os.path.realpath(r) for r in roots if r}))


_LIBRARY_ROOTS = _library_roots()


@functools.lru_cache(maxsize=4096)
def _is_project_file(filename: str, project_dir: str) -> bool:
    real = os.path.realpath(filename)
    parts = Path(real).parts
    if "site-packages" in parts or "dist-packages" in parts:
        return False
    if any(_under(real, root) for root in _LIBRARY_ROOTS):
        return False
    return _under(real, project_dir)


def _under(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives
        return False


#: ``ast.parse`` keeps the depth of the tree it builds in the interpreter, not the thread:
#: in CPython 3.11 two threads parsing at once have failed here with "SystemError: AST
#: constructor recursion depth mismatch" (see python/cpython#106905). Steps run in
#: threads compute their cache keys at the same time, so every parse here takes this
#: lock, and a parse that still fails so (another library parsing in another thread) is
#: tried again.
_PARSE_LOCK = threading.Lock()
_PARSE_TRIES = 3


def _parse(text: str) -> ast.Module:
    with _PARSE_LOCK:
        for attempt in range(_PARSE_TRIES):
            try:
                return ast.parse(text)
            except SystemError:
                if attempt == _PARSE_TRIES - 1:
                    raise
    raise AssertionError("unreachable")  # pragma: no cover


def _normalise(text: str) -> str:
    """Source text as a syntax tree dump without docstrings (raw text when it does not parse)."""
    try:
        tree = _parse(text)
    except SyntaxError:  # e.g. the line of a lambda inside a longer expression
        return "\n".join(line.rstrip() for line in text.strip().splitlines())
    for node in ast.walk(tree):
        if isinstance(node, _DOC_HOLDERS) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree)


def _code_names(code: types.CodeType) -> frozenset[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return frozenset(names)


@functools.cache
def _names_of_code(code: types.CodeType) -> frozenset[str]:
    return _code_names(code)


def _functions_of_class(cls: type) -> list[types.FunctionType]:
    found: list[types.FunctionType] = []
    for member in vars(cls).values():
        value = member.__func__ if isinstance(member, staticmethod | classmethod) else member
        if isinstance(value, property):
            found.extend(f for f in (value.fget, value.fset, value.fdel) if inspect.isfunction(f))
        elif inspect.isfunction(value):
            found.append(value)
    return found


def _unwrap(value: Any) -> Any:
    """A step's or a decorated function's own function; a class as it is; else None."""
    fn = getattr(value, "fn", None)  # a modelyard Step
    if inspect.isfunction(fn):
        value = fn
    if inspect.isfunction(value):
        try:
            return inspect.unwrap(value)
        except ValueError:
            return value
    if inspect.isclass(value):
        return value
    return None


def _file_of(obj: Any) -> str | None:
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    if inspect.isfunction(obj):
        return obj.__code__.co_filename
    return getattr(module, "__file__", None)


_DIGESTS: dict[tuple[Any, str | None, int, int], str] = {}


def _stat(filename: str | None) -> tuple[int, int]:
    if not filename:
        return (-1, -1)
    try:
        st = os.stat(filename)
    except OSError:
        return (-1, -1)
    return (st.st_mtime_ns, st.st_size)


def _own_digest(obj: Any, filename: str | None) -> str:
    key_obj = obj.__code__ if inspect.isfunction(obj) else obj
    mtime, size = _stat(filename)
    key = (key_obj, filename, mtime, size)
    found = _DIGESTS.get(key)
    if found is None:
        found = _compute_digest(obj, filename)
        _DIGESTS[key] = found
    return found


_FUTURE_FLAGS = 0
for _feature in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _feature).compiler_flag


def _same_code(a: types.CodeType, b: types.CodeType) -> bool:
    """The same instructions, names and constants (line numbers aside), recursively."""
    if (a.co_code, a.co_names, a.co_varnames, a.co_freevars, a.co_cellvars) != (
        b.co_code,
        b.co_names,
        b.co_varnames,
        b.co_freevars,
        b.co_cellvars,
    ) or len(a.co_consts) != len(b.co_consts):
        return False
    for x, y in zip(a.co_consts, b.co_consts, strict=True):
        if isinstance(x, types.CodeType) and isinstance(y, types.CodeType):
            if not _same_code(x, y):
                return False
        elif type(x) is not type(y) or repr(x) != repr(y):
            return False
    return True


@functools.lru_cache(maxsize=64)
def _compiled_file(filename: str, mtime_ns: int, size: int, flags: int) -> types.CodeType | None:
    """The module code of a file as it is now (the key holds its modification time)."""
    try:
        with tokenize.open(filename) as handle:
            text = handle.read()
        code: types.CodeType = compile(text, filename, "exec", flags=flags, dont_inherit=True)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None
    return code


def _is_stale(fn: types.FunctionType) -> bool:
    """True when the file no longer compiles to the function in memory.

    A module edited after it was imported (a notebook without a reload): the code that
    runs is the old one, so the file's text must not name it in a cache key. Only
    module-level functions are checked (the file is compiled whole, as the import did).
    """
    if fn.__qualname__ != fn.__name__ or fn.__code__.co_name != fn.__name__:
        return False  # nested, a method, or a wrapper whose code is another function's
    filename = fn.__code__.co_filename
    mtime, size = _stat(filename)
    module = _compiled_file(filename, mtime, size, fn.__code__.co_flags & _FUTURE_FLAGS)
    if module is None:
        return False
    return not any(
        isinstance(const, types.CodeType)
        and const.co_name == fn.__name__
        and _same_code(const, fn.__code__)
        for const in module.co_consts
    )


def _method_codes(cls: type) -> list[types.CodeType]:
    return [f.__code__ for f in _functions_of_class(cls) if f.__code__.co_name == f.__name__]


def _is_stale_class(cls: type) -> bool:
    """True when a module-level class's methods in memory are not what its file compiles to."""
    if cls.__qualname__ != cls.__name__:
        return False
    filename = getattr(sys.modules.get(cls.__module__), "__file__", None)
    codes = _method_codes(cls)
    if not filename or not codes:
        return False
    mtime, size = _stat(filename)
    module = _compiled_file(filename, mtime, size, codes[0].co_flags & _FUTURE_FLAGS)
    if module is None:
        return False
    bodies = [
        c for c in module.co_consts if isinstance(c, types.CodeType) and c.co_name == cls.__name__
    ]
    for code in codes:
        if code.co_filename != filename:
            continue  # a method defined elsewhere and attached
        if not any(
            isinstance(c, types.CodeType) and c.co_name == code.co_name and _same_code(c, code)
            for body in bodies
            for c in body.co_consts
        ):
            return True
    return False


def _compute_digest(obj: Any, filename: str | None) -> str:
    try:
        source = textwrap.dedent(inspect.getsource(obj))
        stale = _is_stale(obj) if inspect.isfunction(obj) else _is_stale_class(obj)
        if stale:
            _log.warning(
                "%s.%s changed in %s after it was imported: its cache key uses the code in "
                "memory, which is what runs here (reload the module or restart to use the file)",
                obj.__module__,
                obj.__qualname__,
                filename,
            )
            codes = [obj.__code__] if inspect.isfunction(obj) else _method_codes(obj)
            code = hashlib.sha256(b"".join(marshal.dumps(c) for c in codes)).hexdigest()
            return hashlib.sha256(f"code-in-memory:{code}".encode()).hexdigest()
        text = "source:" + _normalise(source)
    except (OSError, TypeError):  # no source file (a REPL, a zip without sources, C code)
        text = ""
        if filename:
            try:
                text = "module-file:" + hashlib.sha256(Path(filename).read_bytes()).hexdigest()
            except OSError:
                text = ""
        if not text and inspect.isfunction(obj):
            text = "code:" + hashlib.sha256(marshal.dumps(obj.__code__)).hexdigest()
        if not text and inspect.isclass(obj):  # a class of a notebook or of exec'd code
            h = hashlib.sha256(repr([b.__qualname__ for b in obj.__bases__]).encode())
            for attr, value in sorted(vars(obj).items()):
                member = value.__func__ if isinstance(value, staticmethod | classmethod) else value
                if inspect.isfunction(member):
                    h.update(attr.encode() + marshal.dumps(member.__code__))
                elif (constant := _constant_text(member)) is not None:
                    h.update(f"{attr}={constant}".encode())
            text = "class-code:" + h.hexdigest()
        if not text:
            text = "unknown:" + repr(obj)
    return hashlib.sha256(text.encode()).hexdigest()


_PLAIN = (bool, int, float, complex, str, bytes, type(None))


def _constant_text(value: Any, depth: int = 0) -> str | None:
    """``repr`` of a plain constant (numbers, text, their tuples/lists/dicts), else None."""
    if isinstance(value, _PLAIN):
        return repr(value)
    if depth < 4 and isinstance(value, tuple | list | frozenset | set | dict):
        items = list(value.items()) if isinstance(value, dict) else list(value)
        if len(items) > 1000:
            return None
        texts: list[str] = []
        for item in items:
            text = _constant_text(item, depth + 1)
            if text is None:
                return None
            texts.append(text)
        if isinstance(value, set | frozenset):
            texts.sort()
        return f"{type(value).__name__}({', '.join(texts)})"
    return None


def _references(obj: Any, constants: dict[str, str], project: str) -> list[Any]:
    """Functions and classes ``obj`` names through its globals (not yet filtered).

    Plain constants it names (``THRESHOLD = 0.5`` in its module, ``helpers.LIMIT``) are
    put into ``constants`` as "module:name" -> their ``repr``.
    """
    if inspect.isfunction(obj):
        codes = [obj.__code__]
        namespace: dict[str, Any] = obj.__globals__
        extra: list[Any] = list(_annotation_classes(obj))
        for cell in obj.__closure__ or ():
            with contextlib.suppress(ValueError):  # an empty cell has no contents
                extra.append(cell.cell_contents)
    else:
        functions = _functions_of_class(obj)
        codes = [f.__code__ for f in functions]
        module = sys.modules.get(obj.__module__)
        namespace = vars(module) if module is not None else {}
        extra = list(obj.__bases__)
    names: set[str] = set()
    for code in codes:
        names |= _names_of_code(code)
    found: list[Any] = []
    for name in sorted(names):
        value = namespace.get(name)
        if value is None:
            continue
        if isinstance(value, types.ModuleType):
            _module_members(value, names, project, found, constants, set())
            continue
        text = _constant_text(value)
        if text is None and _unwrap(value) is None:  # an object built at import time
            text = _assignment_text(
                namespace.get("__file__"), name, project, namespace.get("__package__")
            )
            found.append(type(value))  # its class's methods run too
        if text is not None:
            constants[f"{namespace.get('__name__', '?')}:{name}"] = text
            continue
        found.append(value)
    found.extend(extra)
    return found


@functools.lru_cache(maxsize=256)
def _assignments(filename: str, mtime_ns: int, size: int) -> dict[str, str]:
    """Name -> the module-level statements of a file that assign or import it (as syntax).

    An import is kept as ``"from MODULE import NAME"`` (a relative one resolved against the
    file's package by the caller), so an object made elsewhere is followed to its maker.
    """
    try:
        with tokenize.open(filename) as handle:
            tree = _parse(handle.read())
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return {}
    found: dict[str, list[str]] = {}
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        stmt = todo.pop(0)
        if isinstance(stmt, ast.If | ast.Try):  # `if TYPE_CHECKING:`, `try: import ...`
            todo.extend(stmt.body + stmt.orelse)
            continue
        if isinstance(stmt, ast.ImportFrom):
            for alias in stmt.names:
                origin = f"from {'.' * stmt.level}{stmt.module or ''} import {alias.name}"
                found.setdefault(alias.asname or alias.name, []).append(origin)
            continue
        targets: list[ast.expr] = []
        if isinstance(stmt, ast.Assign):
            targets = list(stmt.targets)
        elif isinstance(stmt, ast.AnnAssign | ast.AugAssign):
            targets = [stmt.target]
        for target in targets:
            for node in ast.walk(target):
                if isinstance(node, ast.Name):
                    found.setdefault(node.id, []).append(ast.dump(stmt))
    return {name: "\n".join(dumps) for name, dumps in found.items()}


def _assignment_text(
    filename: Any, name: str, project: str, package: str | None = None, depth: int = 0
) -> str | None:
    """The code that made a module-level object (``CONFIG = Config(depth=3)``), if found.

    An object imported from another project module is followed there (``from config
    import CONFIG``); one from a library is left to its package's version.
    """
    if not isinstance(filename, str) or depth > 8:
        return None
    mtime, size = _stat(filename)
    text = _assignments(filename, mtime, size).get(name)
    if text is None or not text.startswith("from "):
        return None if text is None else f"assigned:{text}"
    module_name, _, original = text[len("from ") :].rpartition(" import ")
    try:
        resolved = importlib.util.resolve_name(module_name, package)
    except (ImportError, ValueError):
        return None
    module = sys.modules.get(resolved)
    module_file = getattr(module, "__file__", None)
    if module is None or not module_file or not _is_project_file(module_file, project):
        return None
    return _assignment_text(module_file, original, project, module.__package__, depth + 1)


def _module_members(
    module: types.ModuleType,
    names: set[str],
    project: str,
    found: list[Any],
    constants: dict[str, str],
    seen: set[int],
) -> None:
    """What ``module.name`` (or ``module.sub.name``) reaches in a project module."""
    module_file = getattr(module, "__file__", None)
    if id(module) in seen or not module_file or not _is_project_file(module_file, project):
        return  # a library module: its package version stands for it
    seen.add(id(module))
    members = vars(module)  # not getattr: a module's __getattr__ may import things
    for attr in sorted(names):
        member = members.get(attr)
        if member is None:
            continue
        if isinstance(member, types.ModuleType):
            _module_members(member, names, project, found, constants, seen)
        elif (text := _constant_text(member)) is not None:
            constants[f"{module.__name__}:{attr}"] = text
        elif _unwrap(member) is None:  # an object built at import time
            text = _assignment_text(module_file, attr, project, module.__package__)
            if text is not None:
                constants[f"{module.__name__}:{attr}"] = text
            found.append(type(member))
        else:
            found.append(member)  # a function or class re-exported here counts too


def _annotation_classes(fn: types.FunctionType) -> list[type]:
    """The classes a function's annotations name (``model: MyModel``, ``list[Row]``)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve: the build reports it
        return []
    classes: list[type] = []
    todo = list(hints.values())
    while todo:
        hint = todo.pop()
        if isinstance(hint, type) and typing.get_origin(hint) is None:
            classes.append(hint)
        todo.extend(typing.get_args(hint))
    return classes


def source_parts(fn: Any, project_dir: str | os.PathLike[str]) -> dict[str, str]:
    """ "module:qualname" -> digest of each piece of code :func:`source_hash` covers."""
    root = _unwrap(fn)
    if root is None:
        raise TypeError(f"source_hash takes a function or a step, got {type(fn).__name__}")
    project = os.path.realpath(os.fspath(project_dir))
    root_module = root.__module__
    parts: dict[str, str] = {}
    constants: dict[str, str] = {}
    seen: set[int] = set()
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        filename = _file_of(obj)
        parts[f"{obj.__module__}:{obj.__qualname__}"] = _own_digest(obj, filename)
        for named in _references(obj, constants, project):
            ref = _unwrap(named)
            if ref is None or id(ref) in seen:
                continue
            module = getattr(ref, "__module__", None) or ""
            if module == root_module:
                todo.append(ref)
                continue
            if module == "modelyard" or module.startswith("modelyard."):
                continue  # the library itself: versioned as a package
            ref_file = _file_of(ref)
            if ref_file and _is_project_file(ref_file, project):
                todo.append(ref)
    for name, text in constants.items():
        parts.setdefault(f"{name}=", hashlib.sha256(text.encode()).hexdigest())
    return parts


def source_hash(fn: Any, project_dir: str | os.PathLike[str]) -> str:
    """The sha256 of a function's source and of the project code it references.

    >>> source_hash(source_hash, ".") == source_hash(source_hash, ".")
    True
    """
    parts = source_parts(fn, project_dir)
    return hashlib.sha256(json.dumps(sorted(parts.items())).encode()).hexdigest()
