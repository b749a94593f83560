"""Bulk export and import (backfill's path) against the one apply path, on both databases.

The bulk import is a second implementation of the apply rule (in SQL on PostgreSQL), so it is
held to the first: from any target state, a chunk leaves exactly the rows and tombstones that
the same rows sent as upsert events leave.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    Engine,
)
from sqlalchemy.orm import Session

from strangler.sync.apply import EntitySpec, apply_events
from strangler.sync.bulk import ImportRefused, available_formats, export_rows, import_rows
from strangler.sync.events import ChangeEvent
from strangler.sync.wire import CSV, JSON_LINES
from tests.support.things import Row, seed, state, things_database


@pytest.fixture(scope="module")
def things(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Engine, EntitySpec]]:
    with things_database(request.param, tmp_path_factory.mktemp(request.param)) as made:
        yield made


@pytest.fixture(scope="module")
def engine(things: tuple[Engine, EntitySpec]) -> Engine:
    return things[0]


@pytest.fixture(scope="module")
def spec(things: tuple[Engine, EntitySpec]) -> EntitySpec:
    return things[1]


SIDES = [("sqlite", JSON_LINES), ("postgresql", JSON_LINES), ("postgresql", CSV)]
"""Each database with each format it offers (test_sqlite_refuses_csv_by_name: the one it
does not)."""
on_each_side = pytest.mark.parametrize(
    ("things", "fmt"), SIDES, indirect=["things"], ids=[f"{b}-{f}" for b, f in SIDES]
)


def _chunk(rows: list[Row], fmt: str = JSON_LINES) -> bytes:
    if fmt == CSV:  # fields in another order than json-lines', as a header may give them
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["price", "name", "version", "key"])
        writer.writerows([(p, n, v, k) for k, v, n, p in rows])
        return out.getvalue().encode()
    lines = [json.dumps(["key", "version", "name", "price"])]
    lines += [json.dumps([k, v, n, p]) for k, v, n, p in rows]
    return ("\n".join(lines) + "\n").encode()


def _events(rows: list[Row]) -> list[ChangeEvent]:
    return [
        ChangeEvent(entity="things", key=k, version=v, op="upsert", data={"name": n, "price": p})
        for k, v, n, p in rows
    ]


keys = st.integers(1, 8)
versions = st.integers(1, 5)
held_rows = st.dictionaries(keys, versions, max_size=8)
held_stones = st.dictionaries(keys, versions, max_size=5)
incoming = st.dictionaries(keys, st.tuples(versions, st.booleans()), min_size=1, max_size=10)


@on_each_side
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(held=held_rows, stones=held_stones, chunk=incoming)
def test_a_chunk_leaves_what_the_same_rows_as_events_leave(
    engine: Engine,
    spec: EntitySpec,
    fmt: str,
    held: dict[int, int],
    stones: dict[int, int],
    chunk: dict[int, tuple[int, bool]],
) -> None:
    """Rows held and tombstones may overlap (the apply path takes the higher); an incoming row
    may take the name another key holds (`True`), which only the per-event path can sort out."""
    start = [(k, v, f"held{k}", 100 * k) for k, v in sorted(held.items())]
    rows = [
        (k, v, f"held{(k % 8) + 1}" if clash else f"new{k}v{v}", k + v)
        for k, (v, clash) in sorted(chunk.items())
    ]
    results = []
    for way in ("bulk", "events"):
        with Session(engine) as session:
            seed(session, spec, start, stones)
            if way == "bulk":
                import_rows(session, spec, _chunk(rows, fmt), fmt)
            else:
                apply_events(session, spec, _events(rows))
            results.append(state(session, spec))
            session.rollback()
    assert results[0] == results[1]


@on_each_side
def test_counts_and_the_rule_on_a_known_chunk(engine: Engine, spec: EntitySpec, fmt: str) -> None:
    with Session(engine) as session:
        seed(session, spec, [(1, 3, "a", 1), (2, 1, "b", 2)], {3: 4, 4: 1})
        report = import_rows(
            session,
            spec,
            _chunk(
                [(1, 2, "a-old", 1), (2, 5, "b-new", 20), (3, 4, "c-dead", 3), (4, 2, "d", 4)], fmt
            ),
            fmt,
        )
        assert (report.rows, report.applied, report.duplicates, report.rejected) == (4, 2, 2, 0)
        assert state(session, spec) == (
            {1: (3, "a", 1), 2: (5, "b-new", 20), 4: (2, "d", 4)},
            {3: 4},
        )
        session.rollback()


@on_each_side
def test_a_chunk_with_a_clash_still_applies_every_row_that_can(
    engine: Engine, spec: EntitySpec, fmt: str
) -> None:
    with Session(engine) as session:
        seed(session, spec, [(1, 1, "taken", 1)], {})
        chunk = _chunk([(2, 1, "taken", 2), (3, 1, "free", 3)], fmt)
        report = import_rows(session, spec, chunk, fmt)
        assert (report.applied, report.rejected, report.method) == (1, 1, "events")
        assert state(session, spec)[0] == {1: (1, "taken", 1), 3: (1, "free", 3)}
        session.rollback()


_HEAD = b'["key", "version", "name", "price"]\n[1, 1, "a", 1]\n'
_CSV_HEAD = b"key,version,name,price\n1,1,a,1\n"
MALFORMED = {
    JSON_LINES: [
        ("missing-field", b'["key", "version", "name"]\n[1, 1, "a"]\n', "must name the fields"),
        ("header-not-json", b'not json\n[1, 1, "a", 1]\n', "first line"),
        ("line-not-json", _HEAD + b"{oops\n", "JSON"),
        ("short-line", _HEAD + b'[2, 1, "b"]\n', "JSON array"),
        ("null-key", _HEAD + b'[null, 1, "b", 2]\n', "key"),
        ("text-for-a-number", _HEAD + b'[2, 1, "b", "two"]\n', "price"),
        ("too-long", _HEAD + b'[2, 1, "' + b"x" * 51 + b'", 2]\n', "name"),
        ("key-twice", _HEAD + b'[1, 2, "b", 2]\n', "more than once"),
    ],
    CSV: [
        ("missing-field", b"key,version,name\n1,1,a\n", "must name the fields"),
        ("short-line", _CSV_HEAD + b"2,1,b\n", "missing data"),
        ("null-key", _CSV_HEAD + b",1,b,2\n", "key"),
        ("text-for-a-number", _CSV_HEAD + b"2,1,b,two\n", "column price"),
        ("too-long", _CSV_HEAD + b"2,1," + b"x" * 51 + b",2\n", "too long"),
        ("key-twice", _CSV_HEAD + b"1,2,b,2\n", "more than once"),
    ],
}


@pytest.mark.parametrize(
    ("things", "fmt", "body", "says"),
    [(b, f, body, says) for b, f in SIDES for _, body, says in MALFORMED[f]],
    indirect=["things"],
    ids=[f"{b}-{f}-{name}" for b, f in SIDES for name, _, _ in MALFORMED[f]],
)
def test_a_malformed_chunk_is_refused_whole(
    engine: Engine, spec: EntitySpec, fmt: str, body: bytes, says: str
) -> None:
    """Each chunk starts with a good row: it must not land when a later one is bad."""
    with Session(engine) as session:
        seed(session, spec, [], {})
        with pytest.raises(ImportRefused) as refused:
            import_rows(session, spec, body, fmt)
        assert says in str(refused.value)
        assert state(session, spec) == ({}, {})
        session.rollback()


def test_sqlite_refuses_csv_by_name(tmp_path: Path) -> None:
    with things_database("sqlite", tmp_path) as (engine, spec), Session(engine) as session:
        assert available_formats(session) == [JSON_LINES]
        for attempt in (
            lambda: export_rows(session, spec, 0, 10, CSV),
            lambda: import_rows(session, spec, b"key,version,name,price\n", CSV),
        ):
            with pytest.raises(ImportRefused, match="cannot read or write 'pg-csv'"):
                attempt()


AWKWARD = 'q"uote \\ back\nnew\ttab \x01\x02 ünï 😀,;'


@on_each_side
def test_export_reads_the_rows_after_a_key_in_key_order_and_they_import_back(
    engine: Engine, spec: EntitySpec, fmt: str
) -> None:
    """Also the formats' corner: every character JSON escapes or CSV quotes."""
    rows = [(9, 1, "nine", 9), (1, 4, "one", 1), (5, 2, AWKWARD, 5), (3, 1, "three", 3)]
    with Session(engine) as session:
        seed(session, spec, rows, {})
        chunk = export_rows(session, spec, after=1, limit=2, fmt=fmt)
        assert (chunk.rows, chunk.last_key) == (2, 5)
        if fmt == CSV:
            read = list(csv.reader(io.StringIO(chunk.body.decode())))
            assert read == [
                ["version", "name", "price", "key"],
                ["1", "three", "3", "3"],
                ["2", AWKWARD, "5", "5"],
            ]
        else:
            lines = chunk.body.decode().splitlines()
            assert json.loads(lines[0]) == ["key", "version", "name", "price"]
            assert [json.loads(line) for line in lines[1:]] == [
                [3, 1, "three", 3],
                [5, 2, AWKWARD, 5],
            ]
        assert (export_rows(session, spec, after=9, limit=5, fmt=fmt).rows) == 0
        everything = export_rows(session, spec, after=0, limit=10, fmt=fmt)
        seed(session, spec, [], {})
        report = import_rows(session, spec, everything.body, fmt)
        assert (report.rows, report.applied) == (4, 4)
        assert state(session, spec) == ({k: (v, n, p) for k, v, n, p in rows}, {})
        session.rollback()


@pytest.mark.parametrize("things", ["postgresql"], indirect=True)
def test_an_unsorted_csv_chunk_cannot_slip_a_row_past_a_tombstone(
    engine: Engine, spec: EntitySpec
) -> None:
    """A chunk whose key range (first and last row) is free goes straight into the table by
    COPY; a row outside that range must still meet the tombstone that outranks it."""
    with Session(engine) as session:
        seed(session, spec, [], {50: 5})
        body = _chunk(
            [(1, 1, "one", 1), (50, 2, "back from the dead", 50), (10, 1, "ten", 10)], CSV
        )
        report = import_rows(session, spec, body, CSV)
        assert (report.applied, report.duplicates, report.method) == (2, 1, "sql")
        assert state(session, spec) == ({1: (1, "one", 1), 10: (1, "ten", 10)}, {50: 5})
        session.rollback()
        seed(session, spec, [], {})
        sorted_body = _chunk([(1, 1, "one", 1), (10, 1, "ten", 10)], CSV)
        assert import_rows(session, spec, sorted_body, CSV).method == "copy"
        session.rollback()
