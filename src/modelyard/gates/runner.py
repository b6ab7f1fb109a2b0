"""Run a model version's gates against the holder of an alias and store the report.

>>> # run_gates(settings, "churn/4", against="production", eval="data/eval.parquet")

The candidate is resolved through the registry, and so is the version holding
``against`` (the champion; None when nobody holds it). Both packages are loaded
(verified), the evaluation rows read (CSV or Parquet, or a DataFrame handed in), the
label column checked and the rows digested over every cell. Every gate runs; a gate
that raises is recorded as a failed result naming the exception, so one broken gate
never hides the others' evidence. The report is stored in the metadata store.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import exc as sa_exc

from modelyard.config import Settings
from modelyard.errors import InvalidInputError, NotFoundError
from modelyard.gates.base import Gate, GateContext, GateResult
from modelyard.gates.config import gate_config, gates_digest
from modelyard.gates.records import GateReport, load_evaluation, save_report
from modelyard.registry.client import ModelRegistry
from modelyard.registry.entities import ModelVersion
from modelyard.registry.refs import ModelRef, check_alias
from modelyard.tracking.digest import digest_frame

__all__ = ["read_eval_frame", "run_gates"]


def _actor() -> str:
    configured = os.environ.get("MODELYARD_ACTOR")
    if configured:
        return configured
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def read_eval_frame(source: Any, *, base: Path | None = None) -> pd.DataFrame:
    """The evaluation rows: a DataFrame as given, or a CSV / Parquet file read."""
    if isinstance(source, pd.DataFrame):
        return source
    if not isinstance(source, str | os.PathLike):
        raise InvalidInputError(
            f"Expected a CSV or Parquet path or a DataFrame, got {type(source).__name__}",
            loc="eval",
        )
    path = Path(source)
    if not path.is_absolute() and base is not None:
        path = base / path
    if not path.is_file():
        raise NotFoundError(f"No evaluation file at {path} - at eval")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix == ".csv":
            return pd.read_csv(path)
    except (OSError, ValueError) as exc:  # pyarrow and pandas parse errors are ValueErrors
        raise InvalidInputError(f"Cannot read {path}: {exc}", loc="eval") from exc
    raise InvalidInputError(
        f"Expected a .csv or .parquet evaluation file, got {path.name!r}", loc="eval"
    )


def _evaluate(gate: Gate, ctx: GateContext) -> GateResult:
    name = str(getattr(gate, "name", type(gate).__name__))
    kind = str(getattr(gate, "kind", "unknown"))
    required = bool(getattr(gate, "required", True))
    try:
        result: object = gate.evaluate(ctx)
    except Exception as exc:  # a gate's bug must not lose the other gates' evidence
        return GateResult(
            name,
            kind,
            False,
            required,
            f"the gate raised {type(exc).__name__}: {exc}".splitlines()[0][:500],
            {"error": type(exc).__name__},
            None,
        )
    if not isinstance(result, GateResult):
        return GateResult(
            name,
            kind,
            False,
            required,
            f"the gate returned a {type(result).__name__}, not a GateResult",
            {},
            None,
        )
    # the set's name and ``required`` win over what the gate put in its result
    return dataclasses.replace(result, gate=name, required=required)


def _champion(registry: ModelRegistry, name: str, against: str) -> ModelVersion | None:
    try:
        return registry.get_version(ModelRef(name, alias=against))
    except NotFoundError:
        return None  # the model exists (the candidate resolved): nobody holds the alias


_EVALUATION_ID = re.compile(r"[0-9A-Za-z_-]{1,32}")


def _check_evaluation_id(evaluation_id: object) -> str:
    if not isinstance(evaluation_id, str) or not _EVALUATION_ID.fullmatch(evaluation_id):
        raise InvalidInputError(
            "Expected an evaluation id of 1 to 32 letters, digits, '_' or '-', got "
            f"{evaluation_id!r}"[:200],
            loc="evaluation_id",
        )
    return evaluation_id


def _stored_as_asked(report: GateReport, candidate: ModelVersion, against: str) -> GateReport:
    """The stored evaluation, when it is one of ``candidate`` against ``against``."""
    if (report.model, report.version, report.against) != (
        candidate.name,
        candidate.version,
        against,
    ):
        raise InvalidInputError(
            f"Expected evaluation {report.id} to be of {candidate.ref} against {against!r}, "
            f"got one of {report.ref} against {report.against!r}",
            loc="evaluation_id",
        )
    return report


def run_gates(
    settings: Settings,
    ref: str | ModelRef,
    *,
    against: str = "production",
    eval: Any = None,
    gates: Sequence[Gate] | None = None,
    label: str | None = None,
    registry: ModelRegistry | None = None,
    store: bool = True,
    trust: bool = False,
    evaluation_id: str | None = None,
) -> GateReport:
    """Run ``ref``'s gates against the holder of ``against``; store and return the report.

    ``gates`` defaults to the model's ``gates:`` entry in ``modelyard.yaml`` (whose
    ``label`` and ``eval`` are the defaults of ``label`` and ``eval``).
    ``evaluation_id`` is the id the report is stored under (a caller that must not run
    the gates twice allocates it first, with ``new_evaluation_id``): when an evaluation
    with that id is stored already, it is returned as it is and nothing runs.
    """
    check_alias(against)
    if evaluation_id is not None:
        _check_evaluation_id(evaluation_id)
    own = registry is None
    reg = registry or ModelRegistry(settings)
    try:
        candidate = reg.get_version(ref)
        if evaluation_id is not None:
            stored = load_evaluation(reg.db, evaluation_id)
            if stored is not None:
                return _stored_as_asked(stored, candidate, against)
        base: Path | None = None
        if gates is None:
            declared = gate_config(settings, candidate.name)
            chosen: Sequence[Gate] = declared.gates
            label = label or declared.label
            if eval is None and declared.eval is not None:
                eval, base = declared.eval, settings.project_dir
            digest = declared.digest
            where = f"gates.{candidate.name}.label"
        else:
            chosen = list(gates)
            where = "label"
        if not label:
            raise InvalidInputError(
                "Expected the label column of the evaluation rows, got none", loc=where
            )
        if gates is not None:
            digest = gates_digest(label, chosen)
        names = [str(getattr(g, "name", "")) for g in chosen]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidInputError(
                f"Expected unique gate names, got {', '.join(duplicates)} more than once",
                loc="gates",
            )
        if eval is None:
            raise InvalidInputError(
                "Expected evaluation rows (--eval FILE, --window N, or eval: in the "
                f"gates.{candidate.name} section of modelyard.yaml), got none",
                loc="eval",
            )
        frame = read_eval_frame(eval, base=base)
        if label not in frame.columns:
            raise InvalidInputError(
                f"Expected the label column {label!r} in the evaluation rows, got columns "
                f"{', '.join(map(str, list(frame.columns)[:20]))}",
                loc="label",
            )
        if frame.empty:
            raise InvalidInputError("Expected evaluation rows, got none", loc="eval")
        champion = _champion(reg, candidate.name, against)
        ctx = GateContext(
            settings=settings,
            candidate=candidate,
            candidate_model=reg.load(
                ModelRef(candidate.name, version=candidate.version), trust=trust
            ),
            champion=champion,
            champion_model=None
            if champion is None
            else reg.load(ModelRef(champion.name, version=champion.version), trust=trust),
            frame=frame,
            label=label,
            eval_digest=digest_frame(frame).digest,
            artifacts=reg.artifacts,
        )
        try:
            ctx.scores("candidate")  # rows that do not fit the model are bad input, not a gate
        except InvalidInputError as exc:
            raise InvalidInputError(
                f"The evaluation rows do not fit {candidate.ref}'s signature: {exc}", loc="eval"
            ) from exc
        except Exception:  # the model's own failure: each gate that scores records it
            pass
        report = GateReport(
            model=candidate.name,
            version=candidate.version,
            against=against,
            champion_version=None if champion is None else champion.version,
            eval_digest=ctx.eval_digest,
            config_digest=digest,
            results=tuple(_evaluate(gate, ctx) for gate in chosen),
            created_by=_actor(),
        )
        if evaluation_id is not None:
            report = dataclasses.replace(report, id=evaluation_id)
        if store:
            try:
                save_report(reg.db, report)
            except sa_exc.IntegrityError:
                # another process stored this id meanwhile: its report is the one
                stored = None if evaluation_id is None else load_evaluation(reg.db, evaluation_id)
                if stored is None:
                    raise
                return _stored_as_asked(stored, candidate, against)
        return report
    finally:
        if own:
            reg.close()
