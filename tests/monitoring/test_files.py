"""Reading the files of ``monitor drift --reference --current``: every row or an error
naming a line, and one type per column for both sides, so bad cells hide no drift."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.errors import InvalidInputError
from modelyard.monitoring import Reference
from modelyard.monitoring.files import NULLS, read_csv, read_data_file, read_pair

ROWS = 2_000
#: cells that are neither numbers nor missing
BAD = st.sampled_from(["oops", "#VALUE!", "?", "n/a ", "1,5", "12abc", "--", "ten"])


def _frames(shift: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(5)
    reference = pd.DataFrame({"x": rng.normal(size=ROWS), "c": rng.choice(["a", "b", "c"], ROWS)})
    current = pd.DataFrame(
        {"x": rng.normal(shift, 1.0, size=ROWS), "c": rng.choice(["a", "b", "c"], ROWS)}
    )
    return reference, current


def _verdict(reference: Path, current: Path) -> tuple[list[str], list[str]]:
    ref, cur, findings = read_pair(reference, current)
    report = Reference.from_data(ref).compare(cur)
    assert set(report.columns) == {"x", "c"} and report.columns["x"].kind == "numeric"
    return report.drifted_columns, findings


def test_one_bad_reference_cell_no_longer_hides_a_half_sd_shift(tmp_path: Path) -> None:
    """Issue 11: 'oops' in the reference made x a category; every current value was
    unseen, so the 0.5 sd shift went unreported (0 of 2 columns drifted)."""
    reference, current = _frames(0.5)
    reference["x"] = reference["x"].astype(object)
    reference.loc[10, "x"] = "oops"
    reference.to_csv(tmp_path / "ref.csv", index=False)
    current.to_csv(tmp_path / "cur.csv", index=False)
    drifted, findings = _verdict(tmp_path / "ref.csv", tmp_path / "cur.csv")
    assert drifted == ["x"]
    assert findings == [
        "reference column 'x': 1 of 2,000 cells are not numbers (e.g. 'oops') and count as missing"
    ]
    swapped, findings = _verdict(tmp_path / "cur.csv", tmp_path / "ref.csv")
    assert swapped == ["x"] and findings[0].startswith("current column 'x': 1 of 2,000")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    shift=st.sampled_from([0.0, 0.5]),
    side=st.sampled_from(["reference", "current", "both"]),
    cells=st.lists(st.tuples(st.integers(0, ROWS - 1), BAD), min_size=1, max_size=20),
)
def test_bad_cells_on_either_side_change_no_verdict(
    tmp_path: Path, shift: float, side: str, cells: list[tuple[int, str]]
) -> None:
    """k bad cells at random rows of either side: the verdict on a true shift and on no
    shift is the clean files' verdict, either way round, and the findings count them."""
    reference, current = _frames(shift)
    clean = ["x"] if shift else []
    for frame, name in ((reference, "reference"), (current, "current")):
        if side in (name, "both"):
            frame["x"] = frame["x"].astype(object)
            for row, token in cells:
                frame.loc[row, "x"] = token
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    ref, cur = tmp_path / "reference.csv", tmp_path / "current.csv"
    drifted, findings = _verdict(ref, cur)
    assert drifted == clean
    swapped, _ = _verdict(cur, ref)
    assert swapped == clean
    bad = len({row for row, _ in cells})
    expected = {name for name in ("reference", "current") if side in (name, "both")}
    assert {f.split(" ")[0] for f in findings} == expected
    assert all(f"{bad:,} of {ROWS:,} cells are not numbers" in f for f in findings)


@settings(max_examples=25, deadline=None)
@given(
    shift=st.sampled_from([0.0, 0.5]),
    cells=st.lists(st.tuples(st.integers(0, ROWS - 1), BAD), min_size=1, max_size=20),
)
def test_bad_cells_in_a_frame_change_no_verdict(shift: float, cells: list[tuple[int, str]]) -> None:
    """The engine itself: an object column of numbers with a few other cells is numbers."""
    reference, current = _frames(shift)
    dirty = reference["x"].astype(object)
    for row, token in cells:
        dirty[row] = token
    for ref, cur in ((reference.assign(x=dirty), current), (current, reference.assign(x=dirty))):
        report = Reference.from_data(ref).compare(cur)
        assert report.columns["x"].kind == "numeric"
        assert report.drifted_columns == (["x"] if shift else [])
        bad = len({row for row, _ in cells})
        assert any(
            f"{bad:,} of {ROWS:,} cells are not numbers" in f for f in report.columns["x"].findings
        )


def test_a_column_is_typed_once_for_both_sides(tmp_path: Path) -> None:
    """Mostly words is a category on both sides; a Parquet side's type decides."""
    (tmp_path / "a.csv").write_text(
        "x,t\n" + "".join(f"{i},2024-01-0{1 + i % 9}\n" for i in range(30))
    )
    (tmp_path / "b.csv").write_text("x,t\nred,2024-02-01T10:00:00Z\nblue,oops\n")
    pair = read_pair(tmp_path / "a.csv", tmp_path / "b.csv")
    # 30 numbers of 32 cells is below 95%: both sides are categories, the same way
    assert str(pair.reference.schema.field("x").type) == "string"
    assert str(pair.current.schema.field("x").type) == "string"
    assert str(pair.reference.schema.field("t").type) == "timestamp[ns, tz=UTC]"
    assert pair.current.column("t").null_count == 1
    assert pair.findings == [
        "current column 't': 1 of 2 cells are not ISO 8601 times (e.g. 'oops') and count as missing"
    ]
    pd.DataFrame({"x": ["3", "4"], "t": [1.0, 2.0]}).to_parquet(tmp_path / "p.parquet")
    typed = read_pair(tmp_path / "p.parquet", tmp_path / "b.csv")
    assert typed.current.column("x").to_pylist() == ["red", "blue"]  # the Parquet's strings
    assert typed.current.column("t").null_count == 2  # numbers, as the Parquet says
    assert read_pair(tmp_path / "b.csv", tmp_path / "p.parquet").reference.equals(typed.current)


# -- CSV rows: all of them, or an error naming the line ------------------------------------


def test_an_unterminated_quote_is_an_error_naming_its_line(tmp_path: Path) -> None:
    """Issue 11: pyarrow's reader took 2,284 of 5,000 rows of this file without a word."""
    rng = np.random.default_rng(3)
    lines = pd.DataFrame({"x": rng.normal(size=5_000), "c": rng.choice(["a", "b"], 5_000)})
    text = lines.to_csv(index=False).splitlines()
    text[2285] = text[2285].replace(",", ',"', 1)
    path = tmp_path / "quote.csv"
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(InvalidInputError, match=r"never closed in the row starting at line 2286"):
        read_csv(path, "--reference")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("x,y\n1,2\n3\n", "line 3"),  # a field short
        ("x,y\n1,2\n3,4,5\n", "line 3"),
        ('x,y\n1,"2\n3,4\n', "line 2"),  # the quote swallows the rest
        ('x,y\n1,"a"b\n', "line 2"),  # text after a closing quote
    ],
)
def test_malformed_rows_name_their_line(tmp_path: Path, text: str, line: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InvalidInputError, match=line):
        read_csv(path, "--current")


def test_files_that_are_not_data_are_errors(tmp_path: Path) -> None:
    (tmp_path / "fake.parquet").write_text("not parquet")
    (tmp_path / "latin.csv").write_bytes(b"x\n1\ncaf\xe9\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "twice.csv").write_text("x,x\n1,2\n")
    (tmp_path / "data.txt").write_text("x\n1\n")
    for name, pattern in [
        ("fake.parquet", "Expected a Parquet file"),
        ("latin.csv", "UTF-8.*0xe9 at line 3"),
        ("empty.csv", "header"),
        ("twice.csv", "unique column names"),
        ("data.txt", ".parquet or .csv"),
        ("none.csv", "no such file"),
    ]:
        with pytest.raises(InvalidInputError, match=pattern):
            read_data_file(tmp_path / name, "--current")


def _valid_csv(rng: np.random.Generator, rows: int) -> str:
    words = ["plain", "with, comma", 'a "quoted" word', "two\nlines", "", "NA", "x"]
    frame = pd.DataFrame(
        {
            "n": rng.normal(size=rows).round(3),
            "s": rng.choice(words, rows),
            "k": rng.integers(0, 9, rows),
        }
    )
    return frame.to_csv(index=False)


def _oracle(text: str) -> list[list[str]] | None:
    """The records (header first) Python's csv module reads in strict mode, or None when
    it refuses the text or a record's width differs from the header's."""
    try:
        records = [r for r in csv.reader(io.StringIO(text, newline=""), strict=True) if r]
    except csv.Error:
        return None
    if not records or any(len(r) != len(records[0]) for r in records):
        return None
    return records


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.integers(0, 2**16),
    edits=st.lists(
        st.tuples(st.sampled_from(["cut", "quote", "unquote"]), st.floats(0.0, 1.0)),
        min_size=1,
        max_size=3,
    ),
)
def test_a_damaged_csv_reads_every_row_or_names_a_line(
    tmp_path: Path, seed: int, edits: list[tuple[str, float]]
) -> None:
    """Truncations and quote corruptions of a valid CSV: either the rows Python's csv
    module reads, every one with the same cells, or an error naming a line; never fewer
    rows without a word."""
    text = _valid_csv(np.random.default_rng(seed), 60)
    for edit, where in edits:
        at = int(where * len(text))
        if edit == "cut":
            text = text[:at]
        elif edit == "quote":
            text = text[:at] + '"' + text[at:]
        else:
            quotes = [i for i, ch in enumerate(text) if ch == '"']
            if quotes:
                i = quotes[min(int(where * len(quotes)), len(quotes) - 1)]
                text = text[:i] + text[i + 1 :]
    path = tmp_path / "damaged.csv"
    path.write_text(text, newline="")
    expected = _oracle(text)
    if expected is None:
        with pytest.raises(InvalidInputError, match=r"(line \d+|empty file|unique column)"):
            read_csv(path, "--current")
        return
    table = read_csv(path, "--current")
    header, rows = expected[0], expected[1:]
    assert table.column_names == header
    assert table.num_rows == len(rows)
    for i, name in enumerate(header):
        cells = [None if r[i] in NULLS else r[i] for r in rows]
        assert table.column(name).to_pylist() == cells


def test_a_whole_valid_csv_is_read_exactly(tmp_path: Path) -> None:
    text = _valid_csv(np.random.default_rng(0), 500)
    path = tmp_path / "ok.csv"
    path.write_text(text, newline="")
    table = read_csv(path, "--current")
    frame = pd.read_csv(io.StringIO(text), keep_default_na=False, dtype=str)
    assert table.num_rows == len(frame) == 500
    assert table.column("s").to_pylist() == [None if v in NULLS else v for v in frame["s"]]
