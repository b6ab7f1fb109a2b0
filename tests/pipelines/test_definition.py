"""@step and @pipeline: outputs, options, the build and every rule it enforces before a run."""

from __future__ import annotations

import copy
import math
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import modelyard
from modelyard.errors import PipelineDefinitionError
from modelyard.pipelines import Pipeline, Step, pipeline, step
from modelyard.pipelines.definition import REQUIRED
from modelyard.pipelines.graph import Graph, OutputRef, OutputSpec, StepNode
from modelyard.pipelines.steps import StepCall
from tests.pipelines import defs_steps as d

# -- @step ---------------------------------------------------------------------------------


def test_a_step_outside_a_pipeline_is_the_plain_function() -> None:
    assert d.train({"x": 1}, max_depth=3) == 3.0
    assert d.split({"x": [1.0]}) == ({"x": [1.0]}, [6])
    assert d.untyped(1) == 3
    assert d.train.with_options(id="other")({}, max_depth=2) == 2.0
    assert isinstance(d.train, Step)
    assert d.train.__name__ == "train" and d.train.__wrapped__ is d.train.fn


def test_step_with_and_without_arguments_and_its_attributes() -> None:
    assert d.load.name == "load"
    assert d.load.function_id == "tests.pipelines.defs_steps:load"
    assert d.load.cache_version == 0 and d.load.packages == () and d.load.cache is True
    assert d.load.fingerprint is None
    assert (d.train.cache_version, d.train.packages) == (1, ("msgspec",))

    def fp(params: Any) -> dict[str, Any]:
        return {"n": 1}

    @step(name="renamed", cache_version="v2", cache=False, fingerprint=fp)
    def f(x: int) -> int:
        return x

    assert (f.name, f.cache_version, f.cache, f.fingerprint) == ("renamed", "v2", False, fp)


def test_outputs_come_from_the_return_annotation() -> None:
    assert d.load.outputs == (OutputSpec("output", dict[str, list[float]]),)
    assert d.split.outputs == (
        OutputSpec("train", dict[str, list[float]]),
        OutputSpec("test", list[int]),
    )
    assert d.pair.outputs == (OutputSpec("output_0", int), OutputSpec("output_1", str))
    assert d.evaluate.outputs == ()
    assert d.untyped.outputs == (OutputSpec("output", Any),)

    @step
    def whole(x: int) -> tuple[int, ...]:
        return (x,)

    assert whole.outputs == (OutputSpec("output", tuple[int, ...]),)

    @step(outputs=("model",))
    def one(x: int) -> int:
        return x

    assert one.outputs == (OutputSpec("model", int),)

    @step(outputs=("a", "b"))
    def no_annotation(x):  # type: ignore[no-untyped-def]
        return x, x

    assert no_annotation.outputs == (OutputSpec("a", Any), OutputSpec("b", Any))


def test_outputs_that_do_not_match_the_annotation_are_refused() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=r"Step 'f': outputs= names 3 outputs \['a', 'b', 'c'\] but the return "
        r"annotation tuple\[int, str\] has 2",
    ):

        @step(outputs=("a", "b", "c"))
        def f(x: int) -> tuple[int, str]:
            return x, ""

    with pytest.raises(PipelineDefinitionError, match=r"Step 'g': outputs=\('a',\) but the fun"):

        @step(outputs=("a",))
        def g(x: int) -> None:
            return None

    with pytest.raises(PipelineDefinitionError, match=r"Step 'h': outputs= names 2 .* not a tup"):

        @step(outputs=("a", "b"))
        def h(x: int) -> int:
            return x

    with pytest.raises(PipelineDefinitionError, match=r"outputs= repeats a name"):

        @step(outputs=("a", "a"))
        def k(x: int) -> tuple[int, int]:
            return x, x


def test_bad_step_options_are_refused_at_decoration() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=r"Step 'f': packages= names 'scikit-lern', which is not installed\. "
        r"Did you mean 'scikit-learn'\?",
    ):

        @step(packages=("scikit-lern",))
        def f(x: int) -> int:
            return x

    with pytest.raises(PipelineDefinitionError, match=r"cache_version must be an int or a str"):
        step(cache_version=1.5)(d.number.fn)  # type: ignore[arg-type]
    with pytest.raises(PipelineDefinitionError, match=r"cache_version must be an int or a str"):

        @step(cache_version=True)
        def g() -> int:
            return 1

    with pytest.raises(PipelineDefinitionError, match=r"a step name is letters"):
        step(name="has space")(d.number.fn)
    with pytest.raises(PipelineDefinitionError, match=r"fingerprint must be callable"):
        step(fingerprint=3)(d.number.fn)  # type: ignore[arg-type]
    with pytest.raises(PipelineDefinitionError, match=r"@step decorates a function"):
        step(3)  # type: ignore[call-overload]
    with pytest.raises(
        PipelineDefinitionError, match=r"Step 'v', argument 'args': a step takes named arg"
    ):

        @step
        def v(*args: int) -> int:
            return 1


def test_async_and_generator_functions_are_refused() -> None:
    with pytest.raises(PipelineDefinitionError, match=r"^Step 'a': a step is a plain function"):

        @step
        async def a(x: int) -> int:
            return x

    with pytest.raises(PipelineDefinitionError, match=r"^Step 'g': a step is a plain function"):

        @step
        def g(x: int) -> Any:
            yield x

    with pytest.raises(
        PipelineDefinitionError, match=r"^Pipeline 'p': a pipeline is a plain function"
    ):

        @pipeline
        async def p() -> None:
            d.number(1)


def test_a_pipeline_that_calls_no_step_is_refused() -> None:
    with pytest.raises(PipelineDefinitionError, match=r"^Pipeline 'p': it calls no step"):
        _build(lambda: None)


def test_a_step_pickles_by_reference_and_copies_as_a_new_step() -> None:
    assert pickle.loads(pickle.dumps(d.train)) is d.train
    twin = copy.copy(d.train)
    twin.cache_version = 5
    assert twin is not d.train and d.train.cache_version == 1 and twin.fn is d.train.fn


def test_importing_modelyard_stays_light() -> None:
    code = (
        "import sys, modelyard\n"
        "heavy = ['pandas', 'pyarrow', 'optuna', 'sklearn', 'polars', 'modelyard.pipelines']\n"
        "print([m for m in heavy if m in sys.modules])\n"
        "from modelyard import step, pipeline\n"
        "print([m for m in heavy[:-1] if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # the pipelines package (its runner reads Arrow) loads on first use of step/pipeline
    assert out.stdout.split("\n")[:2] == ["[]", "['pyarrow']"]
    assert modelyard.step is step and modelyard.pipeline is pipeline


# -- building ------------------------------------------------------------------------------


def test_the_flights_pipeline_builds_into_its_graph() -> None:
    graph = d.flights.build({"max_depth": 4})
    assert isinstance(graph, Graph)
    assert graph.pipeline == "flights"
    assert graph.params == {"data": Path("flights.csv"), "max_depth": 4, "test_month": 6}
    assert list(graph.nodes) == ["load", "split", "train", "evaluate"]
    assert graph.order() == ["load", "split", "train", "evaluate"]
    split = graph.nodes["split"]
    assert isinstance(split, StepNode)
    assert split.step is d.split
    assert split.params == {"test_month": 6}
    assert split.inputs == {"frame": OutputRef("load", "output", dict[str, list[float]])}
    assert graph.nodes["load"].params == {"path": Path("flights.csv")}
    assert graph.nodes["train"].params == {"max_depth": 4}
    assert graph.nodes["train"].inputs == {
        "train": OutputRef("split", "train", dict[str, list[float]])
    }
    assert graph.nodes["evaluate"].inputs["test"] == OutputRef("split", "test", list[int])
    assert graph.nodes["evaluate"].outputs == ()
    assert graph.upstream("evaluate") == {"train", "split"}
    assert graph.downstream("split") == {"train", "evaluate"}
    assert graph.downstream("evaluate") == frozenset()
    assert d.flights.description == "Train and evaluate on the flights."


def test_pipeline_params_and_required_ones() -> None:
    assert d.needs.params == {
        "count": (int, REQUIRED),
        "ratio": (float, 0.5),
        "tags": (list[str], ["a"]),
        "name": (str, "x"),
    }
    assert d.flights.params["data"] == (Path, Path("flights.csv"))


def test_defaults_of_step_arguments_are_params_and_converted() -> None:
    @pipeline
    def p() -> None:
        d.scale(d.number(), path="a.csv")

    node = p.build().nodes["scale"]
    assert node.params == {"by": 2.0, "label": "s", "path": Path("a.csv")}
    assert isinstance(node.params["path"], Path)


def test_a_built_graph_never_shares_a_default_or_a_given_value() -> None:
    given = ["mine"]
    graph = d.needs.build({"count": 1, "tags": given})
    graph.params["tags"].append("changed")
    assert given == ["mine"]
    first = d.needs.build({"count": 1})
    first.params["tags"].append("changed")  # as an inline step mutating its argument would
    assert d.needs.params["tags"][1] == ["a"]
    assert d.needs.build({"count": 1}).params["tags"] == ["a"]

    @step
    def listy(items: list[int] = [1]) -> int:  # noqa: B006
        return len(items)

    @pipeline
    def p() -> None:
        listy()

    p.build().nodes["listy"].params["items"].append(2)
    assert p.build().nodes["listy"].params["items"] == [1]


def test_repeated_calls_get_numbered_names_and_with_options_sets_one() -> None:
    @pipeline
    def p() -> None:
        d.number(1)
        d.number.with_options(id="number_2")(2)
        d.number(3)
        d.number.with_options(id="chosen")(4)
        d.number(5)

    graph = p.build()
    assert list(graph.nodes) == ["number", "number_2", "number_3", "chosen", "number_4"]
    assert [graph.nodes[n].params["n"] for n in graph.nodes] == [1, 2, 3, 4, 5]


def test_a_duplicate_id_is_refused() -> None:
    @pipeline
    def p() -> None:
        d.number(1)
        d.number.with_options(id="number")(2)

    with pytest.raises(
        PipelineDefinitionError,
        match=r"Pipeline 'p', step 'number': with_options\(id='number'\) is already the name "
        r"of another call \(of step 'number'\); ids must be unique",
    ):
        p.build()

    @pipeline
    def q() -> None:
        d.number.with_options(id="bad id")(2)

    with pytest.raises(PipelineDefinitionError, match=r"with_options\(id=\) takes a name"):
        q.build()


def test_after_orders_steps_by_name_output_or_handle() -> None:
    @pipeline
    def p() -> None:
        done = d.evaluate(1.0, [1])
        first = d.number.with_options(after=[done])(1)
        d.number.with_options(id="late", after="evaluate")(2)
        d.number.with_options(after=(first, "late"))(3)

    graph = p.build()
    assert graph.nodes["number"].after == ("evaluate",)
    assert graph.nodes["late"].after == ("evaluate",)
    assert graph.nodes["number_2"].after == ("number", "late")
    assert graph.order() == ["evaluate", "number", "late", "number_2"]
    assert graph.downstream("evaluate") == {"number", "late", "number_2"}


def test_a_no_output_step_returns_a_handle() -> None:
    seen: list[Any] = []

    @pipeline
    def p() -> None:
        seen.append(d.evaluate(1.0, [1]))

    p.build()
    assert seen == [StepCall("evaluate")]


def test_after_an_unknown_node_is_refused_naming_the_close_one() -> None:
    @pipeline
    def p() -> None:
        d.number.with_options(id="first")(1)
        d.number.with_options(after=["frist"])(2)

    with pytest.raises(
        PipelineDefinitionError,
        match=r"Pipeline 'p', step 'number', argument 'after': unknown node 'frist'\. "
        r"Did you mean 'first'\? Known nodes: first, number\.",
    ):
        p.build()

    @pipeline
    def q() -> None:
        d.number.with_options(after=[3])(2)

    with pytest.raises(PipelineDefinitionError, match=r"after= takes node names, step outp"):
        q.build()

    for bad in (3, {"a": 1}, d.number):

        @pipeline
        def r() -> None:
            d.number.with_options(after=bad)(2)  # noqa: B023

        with pytest.raises(PipelineDefinitionError, match=r"after= takes node names, step ou"):
            r.build()


def test_a_cycle_is_refused_naming_it() -> None:
    @pipeline
    def p() -> None:
        a = d.number.with_options(id="a", after=["c"])(1)
        b = d.scale.with_options(id="b")(a)
        d.scale.with_options(id="c")(b)

    with pytest.raises(
        PipelineDefinitionError,
        match=r"Pipeline 'p', step '\w', argument 'after': the steps "
        r"form a cycle: (a -> b -> c -> a|b -> c -> a -> b|c -> a -> b -> c)",
    ):
        p.build()

    @pipeline
    def selfish() -> None:
        d.number.with_options(id="me", after=["me"])(1)

    with pytest.raises(PipelineDefinitionError, match=r"form a cycle: me -> me"):
        selfish.build()


# -- pipeline parameters -------------------------------------------------------------------


def test_an_unknown_parameter_is_refused_listing_the_known_ones() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Pipeline 'flights', parameter 'max_dept': unknown parameter\. Did you mean "
        r"'max_depth'\? Known parameters: data, max_depth, test_month\.$",
    ):
        d.flights.build({"max_dept": 3})


def test_a_missing_required_parameter_is_refused() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Pipeline 'needs', parameter 'count': missing required parameter \(type int\)$",
    ):
        d.needs.build()
    assert d.needs.build({"count": 2}).nodes["number"].params == {"n": 2}


@pytest.mark.parametrize(
    ("params", "expected", "got"),
    [
        ({"max_depth": "3"}, "int", "'3'"),
        ({"max_depth": True}, "int", "True"),
        ({"max_depth": 2.5}, "int", "2.5"),
        ({"test_month": None}, "int", "None"),
        ({"data": 3}, "pathlib.Path", "3"),
    ],
)
def test_a_parameter_of_the_wrong_type_is_refused(
    params: dict[str, Any], expected: str, got: str
) -> None:
    (name,) = params
    with pytest.raises(PipelineDefinitionError) as info:
        d.flights.build(params)
    assert str(info.value).startswith(
        f"Pipeline 'flights', parameter '{name}': expected {expected}, got"
    )
    assert info.value.problems[0].got == got
    assert info.value.problems[0].loc == f"flights.{name}"


def test_strict_python_values_convert_only_losslessly() -> None:
    graph = d.needs.build({"count": 1, "ratio": 2})
    assert graph.params["ratio"] == 2.0 and isinstance(graph.params["ratio"], float)
    graph = d.flights.build({"data": "other.csv"})
    assert graph.params["data"] == Path("other.csv")
    with pytest.raises(PipelineDefinitionError, match=r"parameter 'tags': expected list\[str\]"):
        d.needs.build({"count": 1, "tags": ["a", 2]})


def test_a_default_of_the_wrong_type_is_refused_at_decoration() -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=r"Pipeline 'p', parameter 'n': its default: expected int, got str 'x'",
    ):

        @pipeline
        def p(n: int = "x") -> None:  # type: ignore[assignment]
            pass

    with pytest.raises(PipelineDefinitionError, match=r"must be a JSON value or a Path"):

        @pipeline
        def q(n: object = object()) -> None:
            pass

    with pytest.raises(PipelineDefinitionError, match=r"a pipeline name is letters, digits"):
        pipeline(name="two words")(d.flights.fn)
    with pytest.raises(PipelineDefinitionError, match=r"takes named parameters only"):

        @pipeline
        def r(**kw: int) -> None:
            pass


def test_parse_params_converts_text_from_the_command_line() -> None:
    assert d.needs.parse_params(
        {"count": "3", "ratio": "1e-3", "tags": '["x", "y"]', "name": "007"}
    ) == {"count": 3, "ratio": 0.001, "tags": ["x", "y"], "name": "007"}
    assert d.flights.parse_params(["data=a=b.csv", "test_month=7"]) == {
        "data": Path("a=b.csv"),
        "test_month": 7,
    }

    @pipeline
    def flags(on: bool = False, extra: dict[str, int] = {}, anything: Any = None) -> None:  # noqa: B006
        pass

    assert flags.parse_params({"on": "true", "extra": '{"a": 1}', "anything": "[1]"}) == {
        "on": True,
        "extra": {"a": 1},
        "anything": [1],
    }
    assert flags.parse_params({"anything": "plain text"}) == {"anything": "plain text"}
    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Pipeline 'needs', parameter 'count': expected int, got 'three'",
    ):
        d.needs.parse_params({"count": "three"})
    with pytest.raises(PipelineDefinitionError, match=r"parameter 'cuont': unknown parameter"):
        d.needs.parse_params({"cuont": "3"})
    with pytest.raises(PipelineDefinitionError, match=r"a parameter is key=value, got 'count'"):
        d.needs.parse_params(["count"])


def test_parse_params_refuses_an_overflow_and_reads_null_as_none() -> None:
    @pipeline
    def p(
        f: float = 0.0, o: int | None = None, path: Path | None = None, anything: Any = None
    ) -> None:
        d.number(1)

    for text in ("1e400", "-1e999"):
        with pytest.raises(
            PipelineDefinitionError,
            match=r"^Pipeline 'p', parameter 'f': expected a number that fits a float, got",
        ):
            p.parse_params({"f": text})
    with pytest.raises(PipelineDefinitionError, match=r"parameter 'anything': expected a number"):
        p.parse_params({"anything": "[1, 1e400]"})
    assert p.parse_params({"f": "inf", "o": "null", "path": "null"}) == {
        "f": math.inf,
        "o": None,
        "path": None,
    }
    assert math.isnan(p.parse_params({"f": "nan"})["f"])
    assert p.parse_params({"path": "data/x.csv"}) == {"path": Path("data/x.csv")}


@given(st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.booleans())
@settings(max_examples=60, deadline=None)
def test_parse_params_round_trips_what_python_would_pass(n: int, x: float, flag: bool) -> None:
    @pipeline
    def p(n: int = 0, x: float = 0.0, flag: bool = False) -> None:
        pass

    parsed = p.parse_params({"n": str(n), "x": repr(x), "flag": str(flag).lower()})
    assert parsed == {"n": n, "x": x, "flag": flag}
    assert p.validate_params(parsed) == parsed


# -- step arguments ------------------------------------------------------------------------


def _build(body: Any, name: str = "p") -> Graph:
    return pipeline(name=name)(body).build()


def test_a_missing_step_argument_is_refused() -> None:
    def body() -> None:
        d.split(test_month=3)

    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Pipeline 'p', step 'split', argument 'frame': missing required argument "
        r"\(needs frame\)$",
    ):
        _build(body)


def test_an_unknown_step_argument_is_refused_with_the_close_one() -> None:
    def body() -> None:
        d.split(d.load(Path("a")), test_mont=3)

    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Pipeline 'p', step 'split', argument 'test_mont': unknown argument\. Did you "
        r"mean 'test_month'\? Known arguments: frame, test_month\.$",
    ):
        _build(body)


def test_too_many_or_doubled_arguments_are_refused() -> None:
    def body() -> None:
        d.number(1, 2)

    with pytest.raises(PipelineDefinitionError, match=r"step 'number': takes 1 arguments \(n\)"):
        _build(body)

    def twice() -> None:
        d.number(1, n=2)

    with pytest.raises(PipelineDefinitionError, match=r"argument 'n': given twice"):
        _build(twice)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("4", r"argument 'max_depth': expected int, got str '4'"),
        (4.5, r"argument 'max_depth': expected int, got float 4\.5"),
        (None, r"argument 'max_depth': expected int, got NoneType None"),
    ],
)
def test_a_constant_of_the_wrong_type_is_refused(value: Any, message: str) -> None:
    def body() -> None:
        d.train(d.split(d.load(Path("a")))[0], max_depth=value)

    with pytest.raises(PipelineDefinitionError, match=r"^Pipeline 'p', step 'train', " + message):
        _build(body)


@pytest.mark.parametrize("value", [object(), {1: "a"}, b"bytes", {"a": {3}}])
def test_a_constant_that_is_not_json_or_a_path_is_refused(value: Any) -> None:
    def body() -> None:
        d.untyped(value)

    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Pipeline 'p', step 'untyped', argument 'x': a constant must be a JSON value "
        r"or a Path, got .*; pass data through a step output or a Path$",
    ):
        _build(body)


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, width=32),
    st.text(max_size=3),
    st.lists(st.integers(0, 3), max_size=2),
    st.builds(Path, st.text("ab/", min_size=1, max_size=3)),
    st.just(object()),
)


def _accepts(arg: str, value: Any) -> Any:
    """The oracle: what scale() keeps for an argument, or None when it must be refused."""
    if arg == "by" and type(value) in (int, float):
        return (float(value),)
    if arg == "label" and type(value) is str:
        return (value,)
    if arg == "path" and (value is None or isinstance(value, str | Path)):
        return (None if value is None else Path(value),)
    return None


@given(st.dictionaries(st.sampled_from(["by", "label", "path", "bye"]), _VALUES, max_size=3))
@settings(max_examples=200, deadline=None)
def test_generated_constant_arguments_are_kept_converted_or_refused_by_name(
    kwargs: dict[str, Any],
) -> None:
    def body() -> None:
        d.scale(d.number(), **kwargs)

    expected: dict[str, Any] = {"by": 2.0, "label": "s", "path": None}
    refused: list[str] = []
    for arg, value in kwargs.items():
        kept = None if arg == "bye" else _accepts(arg, value)
        if kept is None:
            refused.append(arg)
        else:
            expected[arg] = kept[0]
    if refused:
        with pytest.raises(PipelineDefinitionError) as info:
            _build(body)
        assert any(f"argument {arg!r}" in str(info.value) for arg in refused)
        assert str(info.value).startswith("Pipeline 'p', step 'scale', argument ")
    else:
        node = _build(body).nodes["scale"]
        assert node.params == expected
        assert all(type(node.params[k]) is type(v) for k, v in expected.items())


def test_json_and_path_constants_are_accepted() -> None:
    def body() -> None:
        d.untyped({"a": [1, 2.5, None, True, "s"]}, y=Path("p"))

    node = _build(body).nodes["untyped"]
    assert node.params == {"x": {"a": [1, 2.5, None, True, "s"]}, "y": Path("p")}


def test_an_output_of_a_clearly_different_type_is_refused() -> None:
    def body() -> None:
        d.pet(d.make_rock())

    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Pipeline 'p', step 'pet', argument 'animal': expects tests\.pipelines\."
        r"defs_steps\.Animal but gets output 'output' of step 'make_rock', declared "
        r"tests\.pipelines\.defs_steps\.Rock",
    ):
        _build(body)

    def strings() -> None:
        d.number(d.pair(1)[1])

    with pytest.raises(PipelineDefinitionError, match=r"argument 'n': expects int but gets"):
        _build(strings)


def test_related_or_loose_types_pass_the_input_check() -> None:
    def body() -> None:
        d.pet(d.make_dog())  # a subclass
        d.scale(d.number())  # int into float
        d.untyped(d.make_rock())  # Any
        d.pet(d.untyped(1))  # from Any
        d.scale(d.number(), path=None)

    assert len(_build(body).nodes) == 10


def test_outputs_passed_whole_or_inside_containers_are_refused() -> None:
    def whole() -> None:
        d.untyped(d.pair(1))

    with pytest.raises(
        PipelineDefinitionError,
        match=r"argument 'x': got all 2 outputs of step 'pair' \(output_0, output_1\) as one "
        r"value; unpack them",
    ):
        _build(whole)

    def listed() -> None:
        d.untyped([d.number()])

    with pytest.raises(PipelineDefinitionError, match=r"a step output inside a list or dict"):
        _build(listed)

    def handle() -> None:
        d.untyped(d.evaluate(1.0, [1]))

    with pytest.raises(
        PipelineDefinitionError,
        match=r"step 'evaluate' has no output to pass; to run after it use "
        r"\.with_options\(after=\['evaluate'\]\)",
    ):
        _build(handle)


def test_an_output_from_another_build_is_refused() -> None:
    kept: list[Any] = []

    def first() -> None:
        kept.append(d.number.with_options(id="elsewhere")(1))

    _build(first)

    def second() -> None:
        d.scale(kept[0])

    with pytest.raises(PipelineDefinitionError, match=r"the output elsewhere\.output is not fr"):
        _build(second)


def test_an_output_type_no_materializer_stores_is_refused_naming_how_to_register() -> None:
    def body() -> None:
        d.make_unstorable()

    with pytest.raises(
        PipelineDefinitionError,
        match=r"^Pipeline 'p', step 'make_unstorable', output 'output': No materializer stores "
        r"a tests\.pipelines\.defs_steps\.Unstorable.* never falls back to pickle.*"
        r"modelyard\.pipelines\.register_materializer\(",
    ):
        _build(body)


def test_errors_in_the_pipeline_function_itself_propagate() -> None:
    def body() -> None:
        raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        _build(body)
    assert d.number(4) == 4  # the build context is gone after a failed build


def test_a_forward_reference_is_resolved_at_build_or_named() -> None:
    @step
    def later(x: int) -> NotYetDefined:  # type: ignore[name-defined]  # noqa: F821
        return x

    def body() -> None:
        later(1)

    with pytest.raises(
        PipelineDefinitionError, match=r"Step 'later': cannot resolve its type annotations"
    ):
        _build(body)


# -- the graph -----------------------------------------------------------------------------


@st.composite
def _dags(draw: st.DrawFn) -> list[list[int]]:
    n = draw(st.integers(1, 12))
    return [sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else [] for i in range(n)]


@given(_dags(), st.randoms(use_true_random=False))
@settings(max_examples=60, deadline=None)
def test_order_is_topological_and_call_ordered_and_downstream_is_the_closure(
    deps: list[list[int]], rnd: Any
) -> None:
    # node i depends on deps[i] (earlier nodes): some by after=, the others as inputs
    # (untyped takes two: any further ones go by after= too)
    ids = [f"n{i}" for i in range(len(deps))]
    by_input: dict[int, list[int]] = {}
    by_after: dict[int, list[int]] = {}
    for i, ups in enumerate(deps):
        chosen = [j for j in ups if rnd.random() < 0.5][:2]
        by_input[i] = chosen
        by_after[i] = [j for j in ups if j not in chosen]

    def body() -> None:
        refs: dict[int, Any] = {}
        for i in range(len(deps)):
            args = [refs[j] for j in by_input[i]] + [0, 0]
            after = [ids[j] for j in by_after[i]]
            refs[i] = d.untyped.with_options(id=ids[i], after=after)(args[0], y=args[1])

    graph = _build(body)
    order = graph.order()
    assert sorted(order) == sorted(ids)
    position = {name: k for k, name in enumerate(order)}
    for i, ups in enumerate(deps):
        assert graph.upstream(ids[i]) == {ids[j] for j in ups}
        assert all(position[ids[j]] < position[ids[i]] for j in ups)
    # stable: every node comes as early as call order allows (Kahn with smallest index)
    placed: set[str] = set()
    for name in order:
        ready = [n for n in ids if n not in placed and graph.upstream(n) <= placed]
        assert name == ready[0]
        placed.add(name)
    for i in range(len(deps)):
        closure: set[str] = set()
        frontier = {ids[i]}
        while frontier:
            frontier = {n for n in ids if graph.upstream(n) & frontier} - closure
            closure |= frontier
        assert graph.downstream(ids[i]) == closure


def test_a_hand_made_graph_with_a_cycle_has_no_order() -> None:
    node_a = StepNode("a", d.number, {}, {}, ("b",), ())
    node_b = StepNode("b", d.number, {}, {}, ("a",), ())
    with pytest.raises(ValueError, match="has a cycle"):
        Graph("g", {}, {"a": node_a, "b": node_b}).order()
    assert isinstance(d.flights, Pipeline)
