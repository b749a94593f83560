"""Bulk transfer for backfill: one side exports a chunk of rows, the other imports it.

Why a second way in: backfill through change events costs about 100 us a row in Python on
both sides (page as JSON, validate, apply), so a million rows took minutes where a plain COPY
takes seconds. Here the database does the per-row work on both ends where it can, and Python
only moves bytes.

The rule is the apply path's, not a new one: a row lands only if its version is above both the
version the target holds and its tombstone's, and landing removes the tombstone. A chunk that
trips a constraint (a unique value held by another row) goes through `apply_events` instead,
which rejects only the rows that truly cannot apply. tests/sync/test_bulk_transfer.py holds the
two to the same result on both databases.

Two formats, negotiated like the row hashes (each side lists what it offers in its bounds
answer; backfill takes the first both list):
- `pg-csv` (PostgreSQL to PostgreSQL): a header line naming the fields, then PostgreSQL's CSV,
  written by COPY on one side and read by COPY on the other; the key is the last field, so the
  chunk's last key is the text after its last comma.
- `json-lines` (every database): a header line `["key", "version", <data columns>...]`, then
  one JSON array of values a line. PostgreSQL still writes and reads it with COPY.
A header may name the fields in any order; they must be the key, the version and the entity's
data columns.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from dataclasses import dataclass
from typing import Any

import psycopg
from pydantic import ValidationError
from sqlalchemy import Column, Dialect, String, text
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from strangler.sync.apply import EntitySpec, advance_key_sequence, apply_events
from strangler.sync.events import ChangeEvent
from strangler.sync.wire import CSV, JSON_LINES, ImportReport

__all__ = [
    "ExportChunk",
    "ImportRefused",
    "available_formats",
    "export_rows",
    "import_rows",
]

# JSON never holds a raw control character, so with these as CSV quote and delimiter a
# one-column CSV line is the JSON text verbatim: PostgreSQL's COPY writes and reads JSON lines.
_JSON_AS_CSV = "(FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"
_ROWS = "_strangler_import_rows"
_LINES = "_strangler_import_lines"
_EVENT_BATCH = 1000


class ImportRefused(ValueError):
    """The chunk is malformed or holds values this side cannot store; nothing of it applied."""


@dataclass(frozen=True)
class ExportChunk:
    body: bytes
    rows: int
    last_key: int | None


def available_formats(session: Session) -> list[str]:
    if session.get_bind().dialect.name == "postgresql":
        return [CSV, JSON_LINES]
    return [JSON_LINES]


def _fields(spec: EntitySpec) -> list[str]:
    return ["key", "version", *spec.data_columns]


def _column(spec: EntitySpec, field: str) -> str:
    return spec.key if field == "key" else spec.version if field == "version" else field


def _usable(session: Session, fmt: str) -> None:
    if fmt not in available_formats(session):
        raise ImportRefused(
            f"this side cannot read or write {fmt!r} (it offers "
            f"{', '.join(available_formats(session))})"
        )


def export_rows(
    session: Session, spec: EntitySpec, after: int, limit: int, fmt: str = JSON_LINES
) -> ExportChunk:
    """Up to `limit` rows with key > `after`, in key order, in format `fmt`."""
    _usable(session, fmt)
    dialect = session.get_bind().dialect
    if fmt == CSV:
        fields = [*_fields(spec)[1:], "key"]
        body = bytearray(",".join(fields).encode() + b"\n")
        rows = _copy_out(session, body, _export_sql(spec, dialect, fields, after, limit, CSV))
        last = bytes(body).rstrip(b"\n").rsplit(b",", 1)[-1] if rows else None
        return ExportChunk(bytes(body), rows, int(last) if last is not None else None)
    header = json.dumps(_fields(spec)).encode() + b"\n"
    if dialect.name == "postgresql":
        body = bytearray(header)
        sql = _export_sql(spec, dialect, _fields(spec), after, limit, JSON_LINES)
        _copy_out(session, body, sql)
        payload = bytes(body)
    else:
        table = spec.table
        columns = [table.c[_column(spec, f)] for f in _fields(spec)]
        result = session.execute(
            table.select()
            .with_only_columns(*columns)
            .where(table.c[spec.key] > after)
            .order_by(table.c[spec.key])
            .limit(limit)
        )
        lines = [header] + [json.dumps(list(r), default=str).encode() + b"\n" for r in result]
        payload = b"".join(lines)
    count = payload.count(b"\n") - 1  # JSON escapes newlines: one row a line
    if count == 0:
        return ExportChunk(payload, 0, None)
    last = payload.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return ExportChunk(payload, count, int(json.loads(last)[0]))


def _copy_out(session: Session, body: bytearray, sql: str) -> int:
    cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(sql) as copy:
        for data in copy:
            body += data
    return int(cursor.rowcount)


def _export_sql(
    spec: EntitySpec, dialect: Dialect, fields: list[str], after: int, limit: int, fmt: str
) -> str:
    quote = dialect.identifier_preparer.quote
    values = ", ".join(quote(_column(spec, f)) for f in fields)
    if fmt == JSON_LINES:
        values = f"json_build_array({values})"
    options = "(FORMAT csv)" if fmt == CSV else _JSON_AS_CSV
    key = quote(spec.key)
    table = dialect.identifier_preparer.format_table(spec.table)
    return (
        f"COPY (SELECT {values} FROM {table} WHERE {key} > {int(after)} "
        f"ORDER BY {key} LIMIT {int(limit)}) TO STDOUT WITH {options}"
    )


def _header(spec: EntitySpec, body: bytes, fmt: str) -> tuple[tuple[str, ...], bytes]:
    first, _, rest = body.partition(b"\n")
    expected = _fields(spec)
    fields: Any
    if fmt == CSV:
        fields = first.decode(errors="replace").strip().split(",")
    else:
        try:
            fields = json.loads(first)
        except ValueError as exc:
            raise ImportRefused(
                f"the first line is not a JSON array of field names: {exc}"
            ) from exc
    if (
        not isinstance(fields, list)
        or len(fields) != len(expected)
        or sorted(map(str, fields)) != sorted(expected)
    ):
        raise ImportRefused(f"the first line must name the fields {', '.join(expected)}")
    return tuple(fields), rest


def import_rows(
    session: Session, spec: EntitySpec, body: bytes, fmt: str = JSON_LINES
) -> ImportReport:
    """Apply a chunk by the apply path's rule, or refuse all of it; the caller commits."""
    _usable(session, fmt)
    fields, rest = _header(spec, body, fmt)
    if session.get_bind().dialect.name == "postgresql":
        return _import_in_sql(session, spec, fields, rest, fmt)
    return _apply_as_events(session, spec, _parse_lines(spec, fields, rest))


def _parse_lines(spec: EntitySpec, fields: tuple[str, ...], lines: bytes) -> list[ChangeEvent]:
    events: list[ChangeEvent] = []
    seen: set[int] = set()
    for number, line in enumerate(lines.splitlines(), start=2):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
        except ValueError as exc:
            raise ImportRefused(f"line {number} is not JSON: {exc}") from exc
        if not isinstance(values, list) or len(values) != len(fields):
            raise ImportRefused(f"line {number} is not a JSON array of {len(fields)} values")
        row = dict(zip(fields, values, strict=True))
        problem = spec.data_problem({c: row[c] for c in spec.data_columns})
        if problem:
            raise ImportRefused(f"line {number}: {problem}")
        try:
            event = _event(spec, row)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ImportRefused(f"line {number}: {where}: {first['msg']}") from exc
        if event.key in seen:
            raise ImportRefused(f"line {number}: key {event.key} appears more than once")
        seen.add(event.key)
        events.append(event)
    return events


def _event(spec: EntitySpec, row: dict[str, Any]) -> ChangeEvent:
    data = {c: row[c] for c in spec.data_columns}
    return ChangeEvent(
        entity=spec.name, key=row["key"], version=row["version"], op="upsert", data=data
    )


def _apply_as_events(session: Session, spec: EntitySpec, events: list[ChangeEvent]) -> ImportReport:
    counts = {"applied": 0, "duplicate": 0, "rejected": 0}
    for start in range(0, len(events), _EVENT_BATCH):
        for outcome in apply_events(session, spec, events[start : start + _EVENT_BATCH]):
            counts[outcome.outcome] += 1
    if counts["applied"]:
        advance_key_sequence(session, spec)
    return ImportReport(
        len(events), counts["applied"], counts["duplicate"], counts["rejected"], "events"
    )


def _key_span(fields: tuple[str, ...], rest: bytes) -> tuple[int, int] | None:
    """First and last key of a CSV chunk that ends each row with its key (as exports do)."""
    if fields[-1] != "key" or not rest.strip():
        return None
    try:
        lines = io.TextIOWrapper(io.BytesIO(rest), encoding="utf-8", newline="")
        low = int(next(csv.reader(lines))[-1])
        high = int(rest.rstrip(b"\r\n").rsplit(b",", 1)[-1])
    except (ValueError, StopIteration, csv.Error):  # UnicodeDecodeError is a ValueError
        return None
    return (low, high) if low <= high else None


def _copy_into_free_range(
    session: Session, spec: EntitySpec, fields: tuple[str, ...], rest: bytes
) -> ImportReport | None:
    """A first backfill's chunk: when the target holds no row and no tombstone in the chunk's
    key range, every row is new, and COPY can write them straight into the table. None when
    that does not hold, or the COPY fails: the staged path then decides, and explains."""
    span = _key_span(fields, rest)
    if span is None:
        return None
    sql = _import_statements(spec, session.get_bind().dialect, fields)
    bounds = {"low": span[0], "high": span[1]}
    attempt = session.begin_nested()
    cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        session.execute(text(sql.lock))
        if session.execute(text(sql.occupied), bounds).scalar_one():
            attempt.rollback()
            return None
        with cursor.copy(sql.copy_table) as copy:
            copy.write(rest)
        copied = int(cursor.rowcount)
        landed, versionless = session.execute(text(sql.count_span), bounds).one()
        if landed != copied or versionless:  # a row outside the span, or without a version
            attempt.rollback()
            return None
    except (psycopg.IntegrityError, psycopg.DataError, IntegrityError, DataError):
        attempt.rollback()
        return None
    except Exception:
        attempt.rollback()
        raise
    attempt.commit()
    if copied:
        advance_key_sequence(session, spec)
    return ImportReport(copied, copied, 0, 0, "copy")


def _import_in_sql(
    session: Session, spec: EntitySpec, fields: tuple[str, ...], rest: bytes, fmt: str
) -> ImportReport:
    """COPY the chunk into a temporary table of the target's column types, then apply it with
    three set statements under a table lock; a constraint tripped sends the staged rows
    through the event path instead."""
    if fmt == CSV:
        copied = _copy_into_free_range(session, spec, fields, rest)
        if copied is not None:
            return copied
    sql = _import_statements(spec, session.get_bind().dialect, fields)
    staged = session.begin_nested()
    # Asked for after begin_nested: that is when the session emits the SAVEPOINT.
    cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        session.execute(text(sql.drop_staging))
        session.execute(text(sql.create_staging))
        if fmt == CSV:
            with cursor.copy(sql.copy_rows) as copy:
                copy.write(rest)
        else:
            session.execute(text(f"CREATE TEMPORARY TABLE {_LINES} (line jsonb) ON COMMIT DROP"))
            with cursor.copy(sql.copy_lines) as copy:
                copy.write(rest)
            malformed = session.execute(text(sql.check_lines)).scalar_one()
            if malformed:
                raise ImportRefused(
                    f"{malformed} lines are not JSON arrays of {len(fields)} values"
                )
            session.execute(text(sql.cast_lines))
        rows, keyless, distinct, low, high = session.execute(text(sql.check_rows)).one()
        if keyless:
            raise ImportRefused(f"{keyless} rows lack a key or a version")
        if distinct != rows:
            raise ImportRefused("a key appears more than once in the chunk")
    except (psycopg.DataError, DataError) as exc:
        staged.rollback()
        if fmt == JSON_LINES:
            _parse_lines(spec, fields, rest)  # names the line and the field, where it can
        raise ImportRefused(f"a value this side cannot read or store: {_described(exc)}") from exc
    except Exception:
        staged.rollback()
        raise
    applying = session.begin_nested()
    try:
        # Writers of this entity (a relay applying events, the side's own API) wait for
        # these statements; readers do not. It keeps the three statements' view of the
        # versions held true until they are done, which is what lets plain INSERT do.
        session.execute(text(sql.lock))
        # The staged rows are a chunk, the table may be millions: find each one by its key.
        # Left to itself the planner (no statistics on a fresh temporary table) may hash
        # the whole table for every chunk, which makes a backfill quadratic.
        session.execute(text("SET LOCAL enable_hashjoin = off"))
        session.execute(text("SET LOCAL enable_mergejoin = off"))
        bounds = {"low": low, "high": high}
        if rows and not session.execute(text(sql.occupied), bounds).scalar_one():
            # Nothing held in the chunk's key range (a first backfill): every row is new.
            updated = 0
            inserted = session.execute(text(sql.insert_all)).rowcount  # type: ignore[attr-defined]
        else:
            session.execute(text(sql.unbury))
            updated = session.execute(text(sql.update)).rowcount  # type: ignore[attr-defined]
            inserted = session.execute(text(sql.insert)).rowcount  # type: ignore[attr-defined]
    except IntegrityError:
        applying.rollback()
        report = _apply_as_events(session, spec, _staged_events(session, spec, sql))
        staged.commit()
        return report
    except Exception:
        applying.rollback()
        staged.rollback()
        raise
    applying.commit()
    staged.commit()
    applied = int(updated) + int(inserted)
    if applied:
        advance_key_sequence(session, spec)
    return ImportReport(rows, applied, rows - applied, 0, "sql")


def _described(exc: Exception) -> str:
    """The database's words for a bad value, with where COPY met it (line, column)."""
    cause = exc.orig if isinstance(exc, DataError) else exc
    if not isinstance(cause, psycopg.Error):
        return str(exc).splitlines()[0]
    where = (cause.diag.context or "").splitlines()
    return "; ".join([cause.diag.message_primary or str(cause), *where[:1]])


def _staged_events(session: Session, spec: EntitySpec, sql: _ImportStatements) -> list[ChangeEvent]:
    result = session.execute(text(sql.read_staged))
    return [_event(spec, dict(zip(_fields(spec), row, strict=True))) for row in result]


@dataclass(frozen=True)
class _ImportStatements:
    drop_staging: str
    create_staging: str
    copy_rows: str
    copy_lines: str
    check_lines: str
    cast_lines: str
    check_rows: str
    occupied: str
    copy_table: str
    count_span: str
    insert_all: str
    lock: str
    unbury: str
    update: str
    insert: str
    read_staged: str


def _cast_type(column: Column[Any], dialect: Dialect) -> str:
    """What a JSON field's text is cast to: the column's type, but TEXT for strings, since an
    explicit cast to VARCHAR(n) cuts a long value short where storing it is refused."""
    if isinstance(column.type, String):
        return "TEXT"
    return str(column.type.compile(dialect=dialect))


@functools.lru_cache(maxsize=64)
def _import_statements(
    spec: EntitySpec, dialect: Dialect, fields: tuple[str, ...]
) -> _ImportStatements:
    """The SQL of an import, built once per entity and header order."""
    preparer = dialect.identifier_preparer
    quote = preparer.quote
    table = preparer.format_table(spec.table)
    stones = preparer.format_table(spec.tombstones)
    key, version = quote(spec.key), quote(spec.version)
    ordered = [quote(_column(spec, f)) for f in fields]  # as the chunk lists them
    names = ", ".join(ordered)
    data = [quote(c) for c in spec.data_columns]
    canonical = ", ".join([key, version, *data])  # as _fields lists them
    typed = ", ".join(
        f"CAST(line->>{position} AS {_cast_type(spec.table.c[_column(spec, f)], dialect)})"
        for position, f in enumerate(fields)
    )
    settings = ", ".join(f"{c} = s.{c}" for c in [version, *data])
    arity = len(fields)
    return _ImportStatements(
        drop_staging=f"DROP TABLE IF EXISTS {_ROWS}, {_LINES}",
        create_staging=(
            f"CREATE TEMPORARY TABLE {_ROWS} ON COMMIT DROP AS "
            f"SELECT {canonical} FROM {table} WITH NO DATA"
        ),
        copy_rows=f"COPY {_ROWS} ({names}) FROM STDIN WITH (FORMAT csv)",
        copy_lines=f"COPY {_LINES} (line) FROM STDIN WITH {_JSON_AS_CSV}",
        check_lines=(
            f"SELECT count(*) FROM {_LINES} WHERE jsonb_typeof(line) IS DISTINCT FROM 'array' "
            f"OR jsonb_array_length(CASE jsonb_typeof(line) WHEN 'array' THEN line "
            f"ELSE '[]'::jsonb END) <> {arity}"
        ),
        cast_lines=f"INSERT INTO {_ROWS} ({names}) SELECT {typed} FROM {_LINES}",
        check_rows=(
            f"SELECT count(*), count(*) FILTER (WHERE {key} IS NULL OR {version} IS NULL), "
            f"count(DISTINCT {key}), min({key}), max({key}) FROM {_ROWS}"
        ),
        occupied=(
            f"SELECT EXISTS (SELECT 1 FROM {table} WHERE {key} BETWEEN :low AND :high) "
            f"OR EXISTS (SELECT 1 FROM {stones} WHERE entity_key BETWEEN :low AND :high)"
        ),
        copy_table=f"COPY {table} ({names}) FROM STDIN WITH (FORMAT csv)",
        count_span=(
            f"SELECT count(*), count(*) FILTER (WHERE {version} IS NULL) FROM {table} "
            f"WHERE {key} BETWEEN :low AND :high"
        ),
        insert_all=(
            f"INSERT INTO {table} ({canonical}) SELECT {canonical} FROM {_ROWS} ORDER BY {key}"
        ),
        lock=f"LOCK TABLE {table}, {stones} IN EXCLUSIVE MODE",
        # A tombstone goes when a newer version of its key lands (the update or the insert
        # below); the versions compared are those before either runs.
        unbury=(
            f"DELETE FROM {stones} AS stone USING {_ROWS} AS s "
            f"WHERE stone.entity_key = s.{key} AND stone.version < s.{version} "
            f"AND NOT EXISTS (SELECT 1 FROM {table} AS t "
            f"WHERE t.{key} = s.{key} AND t.{version} >= s.{version})"
        ),
        update=(
            f"UPDATE {table} AS t SET {settings} FROM {_ROWS} AS s "
            f"WHERE t.{key} = s.{key} AND t.{version} < s.{version} "
            f"AND NOT EXISTS (SELECT 1 FROM {stones} AS stone "
            f"WHERE stone.entity_key = s.{key} AND stone.version >= s.{version})"
        ),
        insert=(
            f"INSERT INTO {table} ({canonical}) SELECT {canonical} FROM {_ROWS} AS s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {table} AS t WHERE t.{key} = s.{key}) "
            f"AND NOT EXISTS (SELECT 1 FROM {stones} AS stone "
            f"WHERE stone.entity_key = s.{key} AND stone.version >= s.{version}) "
            f"ORDER BY s.{key}"
        ),
        read_staged=f"SELECT {canonical} FROM {_ROWS} ORDER BY {key}",
    )
