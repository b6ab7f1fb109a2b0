"""Steps: the functions a pipeline is made of.

``@step`` turns a function into a :class:`Step`. Outside a pipeline a step is the plain
function (so it can be unit-tested as it is); inside a ``@pipeline`` function being built,
calling it records a :class:`~modelyard.pipelines.graph.StepNode` and returns an
:class:`~modelyard.pipelines.graph.OutputRef` per output instead of running it.

>>> @step(outputs=("low", "high"))
... def split(values: list[int], at: int = 5) -> tuple[list[int], list[int]]:
...     return [v for v in values if v < at], [v for v in values if v >= at]
>>> split([1, 7, 3])
([1, 3], [7])
>>> [o.name for o in split.outputs], split.cache_version
(['low', 'high'], 0)

Its outputs come from the return annotation: ``-> None`` is no output, ``tuple[A, B]``
two (``output_0``, ``output_1`` unless ``outputs=`` names them), anything else one
(``output``), no annotation one of type ``Any`` (its materializer is chosen from the
value when it is saved).
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.metadata
import inspect
import os
import re
import reprlib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, overload

import msgspec

from modelyard.errors import PipelineDefinitionError, Problem, did_you_mean
from modelyard.pipelines import source
from modelyard.pipelines.graph import OutputRef, OutputSpec, StepNode
from modelyard.pipelines.materializers import type_name

__all__ = [
    "NAME_PATTERN",
    "BuildContext",
    "Step",
    "StepCall",
    "StepOptions",
    "StepResources",
    "convert_value",
    "definition_error",
    "is_jsonable",
    "is_plain_function",
    "package_version",
    "step",
]

#: what a step, node, output or pipeline name may be
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,127}")
_FINGERPRINT = Callable[[Mapping[str, Any]], Mapping[str, Any]]

#: the pipeline being built in this context (None: steps are plain functions)
_BUILDING: ContextVar[BuildContext | None] = ContextVar("modelyard_pipeline_build", default=None)


# -- small shared helpers --------------------------------------------------------------------


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {reprlib.repr(value)}"


def definition_error(
    pipeline: str | None,
    step: str | None,
    argument: str | None,
    message: str,
    *,
    expected: str = "",
    got: str = "",
    noun: str = "argument",
) -> PipelineDefinitionError:
    """A :class:`PipelineDefinitionError` whose message starts with where it is."""
    where = []
    if pipeline is not None:
        where.append(f"pipeline {pipeline!r}")
    if step is not None:
        where.append(f"step {step!r}")
    if argument is not None:
        where.append(f"{noun} {argument!r}")
    head = ", ".join(where)
    text = f"{head[:1].upper()}{head[1:]}: {message}" if head else message
    loc = ".".join(part for part in (pipeline, step, argument) if part)
    problems = [Problem(loc, expected, got)] if expected or got else []
    return PipelineDefinitionError(text, problems=problems)


def is_jsonable(value: Any, _depth: int = 0) -> bool:
    """True for what a step parameter may be: JSON values (str keys) and paths."""
    if _depth > 64:
        return False
    if value is None or isinstance(value, bool | int | float | str | PurePath):
        return True
    if isinstance(value, list | tuple):
        return all(is_jsonable(v, _depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_jsonable(v, _depth + 1) for k, v in value.items())
    return False


def _dec_hook(tp: Any, obj: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, PurePath) and isinstance(obj, str | PurePath):
        return tp(obj)
    raise TypeError(f"Expected `{type_name(tp)}`, got `{type(obj).__name__}`")


def convert_value(value: Any, hint: Any, *, strict: bool = True) -> Any:
    """``value`` checked against (and converted to) ``hint``; ``ValueError`` when it does not fit.

    >>> from pathlib import Path
    >>> convert_value(3, float), convert_value("3", int, strict=False), convert_value("a", Path)
    (3.0, 3, PosixPath('a'))
    """
    if _strip(hint) is object:
        return value
    try:
        return msgspec.convert(value, hint, strict=strict, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise ValueError(str(exc)) from exc
    except TypeError:  # a type msgspec does not know: a plain isinstance where it can
        check = _strip(hint)
        if isinstance(check, type) and not isinstance(value, check):
            raise ValueError(
                f"Expected `{type_name(check)}`, got `{type(value).__name__}`"
            ) from None
        return value


@functools.cache
def package_version(distribution: str) -> str:
    """The installed version of a distribution (``PackageNotFoundError`` when absent)."""
    return importlib.metadata.version(distribution)


def _installed_distributions() -> list[str]:
    names = {d.metadata["Name"] for d in importlib.metadata.distributions()}
    return sorted(n for n in names if n)


# -- types: outputs and input compatibility --------------------------------------------------


def _strip(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _concrete(tp: Any) -> tuple[type, ...] | None:
    """The classes a hint stands for, or None when it is not plainly classes."""
    tp = _strip(tp)
    if tp is Any or tp is object:
        return None
    if tp is None or tp is type(None):
        return (type(None),)
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        found: list[type] = []
        for arg in typing.get_args(tp):
            classes = _concrete(arg)
            if classes is None:
                return None
            found.extend(classes)
        return tuple(found)
    if origin is not None:
        return (origin,) if isinstance(origin, type) else None
    if isinstance(tp, type) and not getattr(tp, "_is_protocol", False):
        return (tp,)
    return None


def _compatible(out: type, into: type) -> bool:
    if (into is float and out is int) or (into is complex and out in (int, float)):
        return True
    try:
        return issubclass(out, into) or issubclass(into, out)
    except TypeError:  # classes issubclass cannot judge are given the benefit of the doubt
        return True


def clearly_mismatched(output_type: Any, input_type: Any) -> bool:
    """True only when both are plain classes and no pair of them is related."""
    outs, ins = _concrete(output_type), _concrete(input_type)
    if not outs or not ins:
        return False
    return not any(_compatible(o, i) for o in outs for i in ins)


def _outputs_of(
    step_name: str, return_type: Any, names: tuple[str, ...] | None
) -> tuple[OutputSpec, ...]:
    tp = _strip(return_type)
    if tp is None or tp is type(None):
        if names:
            raise definition_error(
                None, step_name, None, f"outputs={names!r} but the function returns None"
            )
        return ()
    args = typing.get_args(tp)
    is_tuple = typing.get_origin(tp) is tuple and args and Ellipsis not in args and args != ((),)
    if is_tuple:
        if names is not None and len(names) != len(args):
            raise definition_error(
                None,
                step_name,
                None,
                f"outputs= names {len(names)} outputs {list(names)} but the return "
                f"annotation {type_name(return_type)} has {len(args)}",
                expected=f"{len(args)} names",
                got=str(len(names)),
            )
        labels = names or tuple(f"output_{i}" for i in range(len(args)))
        return tuple(OutputSpec(n, t) for n, t in zip(labels, args, strict=True))
    if names is None:
        return (OutputSpec("output", return_type),)
    if return_type is Any and len(names) > 1:  # no annotation: the names say how many
        return tuple(OutputSpec(n, Any) for n in names)
    if len(names) != 1:
        raise definition_error(
            None,
            step_name,
            None,
            f"outputs= names {len(names)} outputs {list(names)} but the return annotation "
            f"{type_name(return_type)} is not a tuple[...] of {len(names)}",
        )
    return (OutputSpec(names[0], return_type),)


# -- the step --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepResources:
    """What one run of a step reserves on a Ray cluster (``@step(num_cpus=...)``).

    None: the project's ``ray.num_cpus`` / ``ray.memory``, and no GPU. GPUs are asked
    for only where the cluster has some. The local and inline executors ignore them.
    """

    num_cpus: float | None = None
    memory: int | None = None  # bytes
    num_gpus: float | None = None


def _resources(name: str, num_cpus: Any, memory: Any, num_gpus: Any) -> StepResources:
    for key, value, least in (("num_cpus", num_cpus, 0), ("num_gpus", num_gpus, 0)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not value >= least
        ):
            raise definition_error(
                None, name, None, f"{key} must be a number >= {least}, got {value!r}"
            )
    if memory is not None and (
        isinstance(memory, bool) or not isinstance(memory, int) or memory < 1
    ):
        raise definition_error(
            None, name, None, f"memory must be a number of bytes >= 1, got {memory!r}"
        )
    return StepResources(num_cpus=num_cpus, memory=memory, num_gpus=num_gpus)


@dataclass(frozen=True)
class StepCall:
    """What a step with no outputs returns inside a pipeline: usable in ``after=``."""

    node: str


class Step:
    """A function made a pipeline step by :func:`step`.

    Attributes the runner uses: ``name``, ``fn``, ``function_id`` ("module:qualname"),
    ``cache_version``, ``packages``, ``cache`` (False: always runs), ``outputs``,
    ``fingerprint``, ``resources`` (what a Ray task of it reserves; not in the cache key)
    and :meth:`source_hash`.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        cache_version: int | str = 0,
        packages: Sequence[str] = (),
        outputs: Sequence[str] | None = None,
        cache: bool = True,
        fingerprint: _FINGERPRINT | None = None,
        num_cpus: float | None = None,
        memory: int | None = None,
        num_gpus: float | None = None,
    ) -> None:
        if not inspect.isfunction(fn):
            raise definition_error(
                None, None, None, f"@step decorates a function, got {_describe(fn)}"
            )
        if not is_plain_function(fn):
            raise definition_error(
                None,
                fn.__name__,
                None,
                "a step is a plain function (not async, not a generator): the runner "
                "calls it and stores what it returns",
            )
        self.fn = fn
        self.name = fn.__name__ if name is None else name
        self.function_id = f"{fn.__module__}:{fn.__qualname__}"
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise definition_error(
                None,
                str(self.name),
                None,
                "a step name is letters, digits, '_', '.', '-' (at most 128, not starting "
                f"with a digit), got {self.name!r}; give one with @step(name=...)",
            )
        if isinstance(cache_version, bool) or not isinstance(cache_version, int | str):
            raise definition_error(
                None,
                self.name,
                None,
                f"cache_version must be an int or a str, got {_describe(cache_version)}",
            )
        self.cache_version = cache_version
        if isinstance(packages, str):
            packages = (packages,)
        self.packages = tuple(packages)
        for package in self.packages:
            if not isinstance(package, str):
                raise definition_error(
                    None,
                    self.name,
                    None,
                    f"packages= holds distribution names, got {_describe(package)}",
                )
            try:
                package_version(package)
            except importlib.metadata.PackageNotFoundError:
                raise definition_error(
                    None,
                    self.name,
                    None,
                    f"packages= names {package!r}, which is not installed."
                    + did_you_mean(package, _installed_distributions(), "distributions"),
                ) from None
        if isinstance(outputs, str):
            outputs = (outputs,)
        self._output_names = None if outputs is None else tuple(outputs)
        if self._output_names is not None:
            for label in self._output_names:
                if not isinstance(label, str) or not NAME_PATTERN.fullmatch(label):
                    raise definition_error(
                        None, self.name, None, f"an output name must be a name, got {label!r}"
                    )
            if len(set(self._output_names)) != len(self._output_names):
                raise definition_error(
                    None, self.name, None, f"outputs= repeats a name: {list(outputs or ())}"
                )
        if not isinstance(cache, bool):
            raise definition_error(None, self.name, None, f"cache must be a bool, got {cache!r}")
        self.cache = cache
        if fingerprint is not None and not callable(fingerprint):
            raise definition_error(
                None, self.name, None, f"fingerprint must be callable, got {_describe(fingerprint)}"
            )
        self.fingerprint = fingerprint
        self.resources = _resources(self.name, num_cpus, memory, num_gpus)
        self.signature = inspect.signature(fn)
        for parameter in self.signature.parameters.values():
            if parameter.kind in (
                inspect.Parameter.VAR_POSITIONAL,
                inspect.Parameter.VAR_KEYWORD,
                inspect.Parameter.POSITIONAL_ONLY,
            ):
                raise definition_error(
                    None,
                    self.name,
                    parameter.name,
                    "a step takes named arguments only (no *args, **kwargs or "
                    f"positional-only parameters), got {parameter}",
                )
        self._hints: dict[str, Any] | None = None
        self._outputs: tuple[OutputSpec, ...] | None = None
        functools.update_wrapper(self, fn)
        try:  # resolved now when it can be; a forward reference is resolved at build
            self._resolve()
        except PipelineDefinitionError as exc:
            if "cannot resolve" not in exc.message:
                raise

    def _resolve(self) -> None:
        try:
            hints = typing.get_type_hints(self.fn, include_extras=True)
        except Exception as exc:  # NameError for a name imported only under TYPE_CHECKING
            raise definition_error(
                None, self.name, None, f"cannot resolve its type annotations: {exc}"
            ) from exc
        self._outputs = _outputs_of(self.name, hints.get("return", Any), self._output_names)
        self._hints = {
            name: hints.get(name, Any) for name in self.signature.parameters if name != "return"
        }

    @property
    def outputs(self) -> tuple[OutputSpec, ...]:
        """The step's outputs, from its return annotation and ``outputs=``."""
        if self._outputs is None:
            self._resolve()
        assert self._outputs is not None
        return self._outputs

    @property
    def hints(self) -> dict[str, Any]:
        """Argument name -> its annotation (``Any`` when it has none)."""
        if self._hints is None:
            self._resolve()
        assert self._hints is not None
        return self._hints

    def source_hash(self, project_dir: str | os.PathLike[str]) -> str:
        """The digest of the function's code and the project code it calls."""
        return source.source_hash(self.fn, project_dir)

    def with_options(
        self, *, id: str | None = None, after: Iterable[Any] | Any = ()
    ) -> StepOptions:
        """This step called under a chosen node name and/or after other nodes.

        ``after`` takes node names, outputs, or what a no-output step returned.
        """
        return StepOptions(self, id, after)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        building = _BUILDING.get()
        if building is None:
            return self.fn(*args, **kwargs)
        return building.add(self, args, kwargs, node_id=None, after=())

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled by reference, like a function: a worker imports the step from its module
        return (_import_step, (self.fn.__module__, self.fn.__qualname__))

    def __copy__(self) -> Step:
        twin = Step.__new__(Step)
        twin.__dict__.update(self.__dict__)
        return twin

    def __repr__(self) -> str:
        return f"<Step {self.name} {self.function_id}>"


def is_plain_function(fn: Callable[..., Any]) -> bool:
    """Not a coroutine, generator or async generator function: calling it does the work."""
    return not (
        inspect.iscoroutinefunction(fn)
        or inspect.isgeneratorfunction(fn)
        or inspect.isasyncgenfunction(fn)
    )


def _import_step(module: str, qualname: str) -> Any:
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


class StepOptions:
    """A step with call options; call it like the step (see :meth:`Step.with_options`)."""

    def __init__(self, step: Step, node_id: str | None, after: Iterable[Any] | Any) -> None:
        self.step = step
        self.node_id = node_id
        self.after = after

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        building = _BUILDING.get()
        if building is None:
            return self.step.fn(*args, **kwargs)
        return building.add(self.step, args, kwargs, node_id=self.node_id, after=self.after)


@overload
def step(fn: Callable[..., Any], /) -> Step: ...


@overload
def step(
    *,
    name: str | None = None,
    cache_version: int | str = 0,
    packages: Sequence[str] = (),
    outputs: Sequence[str] | None = None,
    cache: bool = True,
    fingerprint: _FINGERPRINT | None = None,
    num_cpus: float | None = None,
    memory: int | None = None,
    num_gpus: float | None = None,
) -> Callable[[Callable[..., Any]], Step]: ...


def step(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    cache_version: int | str = 0,
    packages: Sequence[str] = (),
    outputs: Sequence[str] | None = None,
    cache: bool = True,
    fingerprint: _FINGERPRINT | None = None,
    num_cpus: float | None = None,
    memory: int | None = None,
    num_gpus: float | None = None,
) -> Step | Callable[[Callable[..., Any]], Step]:
    """Make a function a pipeline step: ``@step`` or ``@step(cache_version=1, ...)``.

    ``name`` (default: the function's), ``cache_version`` (bump it to invalidate cached
    results), ``packages`` (distributions whose installed versions enter the cache key),
    ``outputs`` (names for a tuple's items), ``cache=False`` (always run),
    ``fingerprint`` (params -> extra JSON-able things that enter the cache key),
    ``num_cpus`` / ``memory`` (bytes) / ``num_gpus``: what each run reserves on a Ray
    cluster (``executor="ray"``; GPUs only where the cluster has some; not in the key).

    >>> @step(cache_version=2, packages=("msgspec",))
    ... def double(x: int) -> int:
    ...     return 2 * x
    >>> double(4), double.name, double.packages
    (8, 'double', ('msgspec',))
    """
    options = {
        "name": name,
        "cache_version": cache_version,
        "packages": packages,
        "outputs": outputs,
        "cache": cache,
        "fingerprint": fingerprint,
        "num_cpus": num_cpus,
        "memory": memory,
        "num_gpus": num_gpus,
    }
    if fn is not None:
        return Step(fn, **options)  # type: ignore[arg-type]

    def decorate(function: Callable[..., Any]) -> Step:
        return Step(function, **options)  # type: ignore[arg-type]

    return decorate


# -- recording a build -----------------------------------------------------------------------


class BuildContext:
    """Records the step calls of one pipeline build (see ``Pipeline.build``)."""

    def __init__(self, pipeline: str) -> None:
        self.pipeline = pipeline
        self.nodes: dict[str, StepNode] = {}
        self._next: dict[str, int] = {}

    def __enter__(self) -> BuildContext:
        self._token = _BUILDING.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _BUILDING.reset(self._token)

    def error(
        self, step: str | None, argument: str | None, message: str, **kw: str
    ) -> PipelineDefinitionError:
        return definition_error(self.pipeline, step, argument, message, **kw)

    def _node_name(self, step: Step, node_id: str | None) -> str:
        if node_id is not None:
            if not isinstance(node_id, str) or not NAME_PATTERN.fullmatch(node_id):
                raise self.error(
                    step.name,
                    None,
                    "with_options(id=) takes a name of letters, digits, '_', '.', '-', "
                    f"got {node_id!r}",
                )
            if node_id in self.nodes:
                raise self.error(
                    step.name,
                    None,
                    f"with_options(id={node_id!r}) is already the name of another call "
                    f"(of step {self.nodes[node_id].step.name!r}); ids must be unique",
                )
            return node_id
        if step.name not in self.nodes:
            return step.name
        i = self._next.get(step.name, 2)  # where the last search for this name stopped
        while f"{step.name}_{i}" in self.nodes:
            i += 1
        self._next[step.name] = i + 1
        return f"{step.name}_{i}"

    def _after_names(self, step: Step, after: Any) -> tuple[str, ...]:
        one = isinstance(after, str | OutputRef | StepCall | Mapping)
        # a lone item (or anything not a list of them) is checked, and refused, below
        items = list(after) if isinstance(after, Iterable) and not one else [after]
        names: list[str] = []
        for item in items:
            if isinstance(item, str):
                names.append(item)
            elif isinstance(item, OutputRef | StepCall):
                names.append(item.node)
            elif isinstance(item, tuple) and item and all(isinstance(i, OutputRef) for i in item):
                names.extend(i.node for i in item)
            else:
                raise self.error(
                    step.name,
                    None,
                    "after= takes node names, step outputs or what a step without outputs "
                    f"returned, got {_describe(item)}",
                )
        return tuple(dict.fromkeys(names))

    def add(
        self,
        step: Step,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        node_id: str | None,
        after: Any,
    ) -> Any:
        """Record one call of ``step``; return its outputs' refs."""
        name = self._node_name(step, node_id)
        parameters = list(step.signature.parameters.values())
        known = [p.name for p in parameters]
        if len(args) > len(parameters):
            raise self.error(
                name,
                None,
                f"takes {len(parameters)} arguments ({', '.join(known) or 'none'}), "
                f"got {len(args)} positional",
            )
        given = {p.name: value for p, value in zip(parameters, args, strict=False)}
        for key, value in kwargs.items():
            if key not in step.signature.parameters:
                raise self.error(
                    name,
                    key,
                    "unknown argument." + did_you_mean(key, known, "arguments"),
                )
            if key in given:
                raise self.error(name, key, "given twice (by position and by name)")
            given[key] = value
        missing = [p.name for p in parameters if p.name not in given and p.default is p.empty]
        if missing:
            raise self.error(
                name,
                missing[0],
                f"missing required argument (needs {', '.join(missing)})",
            )
        hints = step.hints
        params: dict[str, Any] = {}
        inputs: dict[str, OutputRef] = {}
        for parameter in parameters:
            arg = parameter.name
            default = arg not in given
            value = parameter.default if default else given[arg]
            hint = hints.get(arg, Any)
            if isinstance(value, OutputRef):
                inputs[arg] = self._check_input(name, arg, value, hint)
            elif isinstance(value, StepCall):
                raise self.error(
                    name,
                    arg,
                    f"step {value.node!r} has no output to pass; to run after it use "
                    f".with_options(after=[{value.node!r}])",
                )
            elif _holds_ref(value):
                if isinstance(value, tuple) and all(isinstance(v, OutputRef) for v in value):
                    labels = ", ".join(v.output for v in value)
                    raise self.error(
                        name,
                        arg,
                        f"got all {len(value)} outputs of step {value[0].node!r} ({labels}) "
                        "as one value; unpack them (a, b = step(...)) and pass one",
                    )
                raise self.error(
                    name,
                    arg,
                    "a step output inside a list or dict cannot be passed; pass each output "
                    "as its own argument",
                )
            elif default:
                if is_jsonable(value):  # else the function supplies its own default
                    try:
                        params[arg] = copy.deepcopy(convert_value(value, hint))
                    except ValueError:
                        params[arg] = copy.deepcopy(value)
            else:
                params[arg] = self._check_constant(name, arg, value, hint)
        node = StepNode(
            name=name,
            step=step,
            params=params,
            inputs=inputs,
            after=self._after_names(step, after),
            outputs=step.outputs,
        )
        self.nodes[name] = node
        refs = tuple(OutputRef(name, spec.name, spec.type) for spec in node.outputs)
        if not refs:
            return StepCall(name)
        return refs[0] if len(refs) == 1 else refs

    def _check_input(self, node: str, arg: str, ref: OutputRef, hint: Any) -> OutputRef:
        producer = self.nodes.get(ref.node)
        if producer is None or ref.output not in {o.name for o in producer.outputs}:
            raise self.error(
                node,
                arg,
                f"the output {ref.node}.{ref.output} is not from this pipeline's build "
                "(a step's output is only valid inside the build that made it)",
            )
        if clearly_mismatched(ref.type, hint):
            raise self.error(
                node,
                arg,
                f"expects {type_name(hint)} but gets output {ref.output!r} of step "
                f"{ref.node!r}, declared {type_name(ref.type)}",
                expected=type_name(hint),
                got=type_name(ref.type),
            )
        return ref

    def _check_constant(self, node: str, arg: str, value: Any, hint: Any) -> Any:
        if not is_jsonable(value):
            raise self.error(
                node,
                arg,
                f"a constant must be a JSON value or a Path, got {type_name(type(value))}; "
                "pass data through a step output or a Path",
                expected="JSON value or Path",
                got=type_name(type(value)),
            )
        try:
            return convert_value(value, hint, strict=True)
        except ValueError as exc:
            raise self.error(
                node,
                arg,
                f"expected {type_name(hint)}, got {_describe(value)} ({exc})",
                expected=type_name(hint),
                got=_describe(value),
            ) from None


def _holds_ref(value: Any, _depth: int = 0) -> bool:
    if isinstance(value, OutputRef | StepCall):
        return True
    if _depth > 16:
        return False
    if isinstance(value, list | tuple | set | frozenset):
        return any(_holds_ref(v, _depth + 1) for v in value)
    if isinstance(value, dict):
        return any(_holds_ref(v, _depth + 1) for v in value.values())
    return False
