"""Pipelines: a function that calls steps, built into a :class:`Graph` before anything runs.

``@pipeline`` makes a :class:`Pipeline`. Its parameters are the function's (typed by its
annotations, checked with msgspec); :meth:`Pipeline.build` calls the function with them
while recording each step call, then checks the whole graph, so a pipeline that cannot
run (a cycle, a wrong argument, an output nothing can store) fails before any step runs.

>>> from modelyard.pipelines.steps import step
>>> @step
... def total(values: list[float]) -> float:
...     return sum(values)
>>> @step
... def scale(x: float, by: float = 2.0) -> float:
...     return x * by
>>> @pipeline
... def demo(values: list[float] = [1.0, 2.0], by: float = 3.0) -> None:
...     scale(total(values), by=by)
>>> graph = demo.build({"by": 10})
>>> graph.order(), graph.nodes["scale"].params, graph.nodes["scale"].inputs["x"].node
(['total', 'scale'], {'by': 10.0}, 'total')
>>> demo.parse_params({"by": "4"})
{'by': 4.0}
"""

from __future__ import annotations

import copy
import graphlib
import inspect
import json
import math
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, overload

from modelyard.errors import PipelineDefinitionError, did_you_mean
from modelyard.pipelines.graph import Graph, StepNode
from modelyard.pipelines.materializers import materializer_for, type_name
from modelyard.pipelines.steps import (
    NAME_PATTERN,
    BuildContext,
    convert_value,
    definition_error,
    is_jsonable,
    is_plain_function,
)

if TYPE_CHECKING:
    from modelyard.pipelines.runner import PipelineRun

__all__ = ["REQUIRED", "Pipeline", "pipeline"]

#: the default of a pipeline parameter that has none (``Pipeline.params[name][1]``)
REQUIRED: Any = inspect.Parameter.empty


class Pipeline:
    """A function of steps made a pipeline by :func:`pipeline`."""

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None) -> None:
        if not inspect.isfunction(fn):
            raise definition_error(
                None, None, None, f"@pipeline decorates a function, got {type(fn).__name__}"
            )
        if not is_plain_function(fn):
            raise definition_error(
                fn.__name__,
                None,
                None,
                "a pipeline is a plain function (not async, not a generator) that calls steps",
            )
        self.fn = fn
        self.name = fn.__name__ if name is None else name
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise definition_error(
                None,
                None,
                None,
                "a pipeline name is letters, digits, '_', '.', '-' (at most 128, not starting "
                f"with a digit), got {self.name!r}",
            )
        self.function_id = f"{fn.__module__}:{fn.__qualname__}"
        self.description = (inspect.getdoc(fn) or "").strip().split("\n")[0]
        self.signature = inspect.signature(fn)
        for parameter in self.signature.parameters.values():
            if parameter.kind in (
                inspect.Parameter.VAR_POSITIONAL,
                inspect.Parameter.VAR_KEYWORD,
                inspect.Parameter.POSITIONAL_ONLY,
            ):
                raise self._error(
                    parameter.name,
                    "a pipeline takes named parameters only (no *args, **kwargs or "
                    f"positional-only parameters), got {parameter}",
                )
        self._params: dict[str, tuple[Any, Any]] | None = None
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        try:
            self._resolve()
        except PipelineDefinitionError as exc:
            if "cannot resolve" not in exc.message:
                raise

    def _error(self, argument: str | None, message: str, **kw: str) -> PipelineDefinitionError:
        return definition_error(self.name, None, argument, message, noun="parameter", **kw)

    def _resolve(self) -> dict[str, tuple[Any, Any]]:
        if self._params is not None:
            return self._params
        try:
            hints = typing.get_type_hints(self.fn, include_extras=True)
        except Exception as exc:  # NameError for a name imported only under TYPE_CHECKING
            raise self._error(None, f"cannot resolve its type annotations: {exc}") from exc
        params: dict[str, tuple[Any, Any]] = {}
        for parameter in self.signature.parameters.values():
            hint = hints.get(parameter.name, Any)
            default = parameter.default
            if default is not REQUIRED:
                default = self._convert(
                    parameter.name, default, hint, strict=True, what="its default: "
                )
            params[parameter.name] = (hint, default)
        self._params = params
        return params

    @property
    def params(self) -> dict[str, tuple[Any, Any]]:
        """Parameter name -> (type, default); the default is :data:`REQUIRED` when none."""
        return dict(self._resolve())

    def _convert(self, name: str, value: Any, hint: Any, *, strict: bool, what: str) -> Any:
        try:
            converted = convert_value(value, hint, strict=strict)
        except ValueError as exc:
            raise self._error(
                name,
                f"{what}expected {type_name(hint)}, got {type(value).__name__} {value!r} ({exc})",
                expected=type_name(hint),
                got=repr(value),
            ) from None
        if not is_jsonable(converted):
            raise self._error(
                name,
                f"{what}must be a JSON value or a Path, got {type_name(type(converted))}",
                expected="JSON value or Path",
                got=type_name(type(converted)),
            )
        return converted

    def _unknown(self, name: str) -> PipelineDefinitionError:
        known = list(self.signature.parameters)
        return self._error(name, "unknown parameter." + did_you_mean(name, known, "parameters"))

    def validate_params(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every parameter, given or default, checked against its type (strict)."""
        declared = self._resolve()
        given = dict(params or {})
        for key in given:
            if key not in declared:
                raise self._unknown(key)
        validated: dict[str, Any] = {}
        for name, (hint, default) in declared.items():
            if name in given:
                value = self._convert(name, given[name], hint, strict=True, what="")
                validated[name] = copy.deepcopy(value)  # a step never shares the caller's list
            elif default is REQUIRED:
                raise self._error(name, f"missing required parameter (type {type_name(hint)})")
            else:
                validated[name] = copy.deepcopy(default)  # a mutated default stays a default
        return validated

    def parse_params(self, strings: Mapping[str, str] | Iterable[str]) -> dict[str, Any]:
        """Parameters given as text (``-p key=value`` on the command line) as typed values.

        ``"3"`` becomes 3 for an int, ``"true"`` True for a bool, JSON text a list or dict;
        a str parameter keeps the text as it is.
        """
        if not isinstance(strings, Mapping):
            pairs: dict[str, str] = {}
            for item in strings:
                key, sep, value = item.partition("=")
                if not sep or not key:
                    raise self._error(
                        None, f"a parameter is key=value, got {item!r}", expected="key=value"
                    )
                pairs[key.strip()] = value
            strings = pairs
        declared = self._resolve()
        parsed: dict[str, Any] = {}
        for key, text in strings.items():
            if key not in declared:
                raise self._unknown(key)
            hint = declared[key][0]
            parsed[key] = self._parse_one(key, text, hint)
        return parsed

    def _parse_one(self, key: str, text: str, hint: Any) -> Any:
        value = self._parse_text(key, text, hint)
        lowered = text.lower()
        if _has_non_finite(value) and "inf" not in lowered and "nan" not in lowered:
            raise self._error(
                key,
                f"expected a number that fits a float, got {text!r} (it would be infinite)",
                expected="a finite float",
                got=repr(text),
            )
        return value

    def _parse_text(self, key: str, text: str, hint: Any) -> Any:
        if hint is Any:
            try:
                return json.loads(text)
            except ValueError:
                return text
        if text == "null" and type(None) in typing.get_args(hint):
            return None  # an Optional parameter: null is None, for a Path too
        try:
            return convert_value(text, hint, strict=False)
        except ValueError as first:
            try:
                decoded = json.loads(text)
            except ValueError:
                decoded = None
            else:
                try:
                    return convert_value(decoded, hint, strict=False)
                except ValueError:
                    pass
            raise self._error(
                key,
                f"expected {type_name(hint)}, got {text!r} ({first})",
                expected=type_name(hint),
                got=repr(text),
            ) from None

    def build(self, params: Mapping[str, Any] | None = None) -> Graph:
        """The graph of this pipeline for ``params``, checked; nothing runs."""
        validated = self.validate_params(params)
        with BuildContext(self.name) as building:
            self.fn(**validated)
        nodes = building.nodes
        if not nodes:
            raise definition_error(
                self.name,
                None,
                None,
                "it calls no step: a pipeline function calls @step functions, whose calls "
                "make its graph",
            )
        self._check_after(nodes)
        self._check_cycles(nodes)
        self._check_materializers(nodes)
        return Graph(self.name, validated, dict(nodes))

    def _check_after(self, nodes: Mapping[str, Any]) -> None:
        for name, node in nodes.items():
            for other in node.after:
                if other not in nodes:
                    raise definition_error(
                        self.name,
                        name,
                        "after",
                        f"unknown node {other!r}." + did_you_mean(other, list(nodes), "nodes"),
                    )

    def _check_cycles(self, nodes: Mapping[str, Any]) -> None:
        sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
        for name, node in nodes.items():
            sorter.add(name, *(ref.node for ref in node.inputs.values()), *node.after)
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            cycle = list(exc.args[1])  # each node feeds the next
            raise definition_error(
                self.name,
                cycle[0],
                "after",
                f"the steps form a cycle: {' -> '.join(cycle)}",
            ) from None

    def _check_materializers(self, nodes: Mapping[str, StepNode]) -> None:
        for name, node in nodes.items():
            for spec in node.outputs:
                try:
                    materializer_for(spec.type)
                except PipelineDefinitionError as exc:
                    raise definition_error(
                        self.name, name, spec.name, exc.message, noun="output"
                    ) from None

    def run(self, params: Mapping[str, Any] | None = None, **kwargs: Any) -> PipelineRun:
        """Run the pipeline (see ``modelyard.pipelines.runner.run_pipeline``)."""
        # the runner imports this module: importing it here, at call time, breaks the cycle
        from modelyard.pipelines.runner import run_pipeline

        return run_pipeline(self, params, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The plain function (its step calls run at once outside a build)."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Pipeline {self.name} {self.function_id}>"


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    return False


@overload
def pipeline(fn: Callable[..., Any], /) -> Pipeline: ...


@overload
def pipeline(*, name: str | None = None) -> Callable[[Callable[..., Any]], Pipeline]: ...


def pipeline(
    fn: Callable[..., Any] | None = None, /, *, name: str | None = None
) -> Pipeline | Callable[[Callable[..., Any]], Pipeline]:
    """Make a function of steps a pipeline: ``@pipeline`` or ``@pipeline(name="...")``."""
    if fn is not None:
        return Pipeline(fn, name=name)

    def decorate(function: Callable[..., Any]) -> Pipeline:
        return Pipeline(function, name=name)

    return decorate
