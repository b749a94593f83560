"""`strangler relay | backfill | reconcile`: the sync operations, as CLI commands.

Which side is the source follows the phase in routing.toml (monolith -> service until writes
cut over, service -> monolith after), unless --direction says otherwise. Every command reaches
the other side only through its sync API; only the relay reads a database, its own side's
outbox.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from strangler.console import console, fail
from strangler.phases import Phase, PhaseFile, SyncDirection, routing_of
from strangler.settings import CliSettings
from strangler.sync.backfill import Backfill
from strangler.sync.client import SyncApiError, SyncClient
from strangler.sync.reconcile import (
    ReconcileReport,
    compared_direction,
    remember_verdict,
    repair,
    repair_refusal,
    source_side,
)
from strangler.sync.reconcile import reconcile as run_reconcile

log = logging.getLogger("strangler.relay")

__all__ = ["register"]

if TYPE_CHECKING:
    from strangler.sync.relay import Relay


class Direction(StrEnum):
    AUTO = "auto"
    FORWARD = "forward"
    REVERSE = "reverse"


def _direction(settings: CliSettings, entity: str, wanted: Direction) -> SyncDirection:
    if wanted is Direction.FORWARD:
        return SyncDirection.FORWARD
    if wanted is Direction.REVERSE:
        return SyncDirection.REVERSE
    following = PhaseFile(settings.routing_file, entity).sync()
    return following or SyncDirection.FORWARD


def _sides(
    settings: CliSettings, entity: str, direction: SyncDirection
) -> tuple[SyncClient, SyncClient]:
    token = settings.sync_token_value()
    if token is None:
        raise fail(
            "no sync token",
            f"set STRANGLER_SYNC_TOKEN (the same value the apps get), or run where "
            f"`strangler up` wrote {settings.sync_token_file}",
        )
    monolith = SyncClient(settings.monolith_url, token, entity)
    service = SyncClient(settings.service_url, token, entity)
    return (monolith, service) if direction is SyncDirection.FORWARD else (service, monolith)


Entity = Annotated[str, typer.Argument(help="The synced entity, e.g. products")]
DirectionOption = Annotated[Direction, typer.Option(help="auto follows the phase in routing.toml")]


def relay(
    entity: Entity,
    direction: DirectionOption = Direction.AUTO,
    batch_size: Annotated[int, typer.Option(min=1, max=5000)] = 500,
    until_drained: Annotated[bool, typer.Option(help="Stop once nothing is pending")] = False,
    idle_seconds: Annotated[
        float,
        typer.Option(
            min=0.001,
            max=10,
            help="Wait between polls of an empty outbox: the floor of the relay's lag",
        ),
    ] = 0.02,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Serve the relay's Prometheus metrics on this loopback port",
        ),
    ] = None,
) -> None:
    """Deliver the outbox of the source side to the other side until Ctrl-C."""
    # Only the relay reads a database: the other commands speak HTTP and start without
    # SQLAlchemy and the database driver (reconcile's time is mostly start-up otherwise).
    from sqlalchemy import MetaData

    from strangler.db import create_db_engine
    from strangler.observability.process import observe_process
    from strangler.sync.relay import Relay
    from strangler.sync.relay_metrics import serve_relay_metrics
    from strangler.sync.tables import sync_tables

    observe_process("relay")
    settings = CliSettings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    current: SyncDirection | None = None
    worker: Relay | None = None
    if metrics_port is not None:
        try:
            serve_relay_metrics(metrics_port, entity, lambda: worker)
        except OSError as exc:
            raise fail(
                f"cannot serve the relay's metrics on 127.0.0.1:{metrics_port}: {exc.strerror}",
                "choose a free port with --metrics-port, or leave it out",
            ) from exc
    last_report = 0.0
    reported = -1  # delivered count at the last report: a quiet relay does not repeat itself
    try:
        while not stop.is_set():
            wanted = _direction(settings, entity, direction)
            if wanted is not current:
                if worker is not None:
                    # Finish what the old direction owes before running the other way: an
                    # event left behind would be overtaken by the new source's versions.
                    console.print(f"[cyan]relay[/] {entity}: draining {current} before switching")
                    worker.run(stop, until_drained=True)
                    worker.release_lease()  # the next relay this way must not wait it out
                current = wanted
                source_db = (
                    settings.monolith_database_url
                    if wanted is SyncDirection.FORWARD
                    else settings.service_database_url
                )
                _, target = _sides(settings, entity, wanted)
                worker = Relay(
                    create_db_engine(source_db),
                    sync_tables(MetaData(), entity),
                    entity,
                    target,
                    batch_size=batch_size,
                )
                console.print(f"[cyan]relay[/] {entity}: {wanted.value} -> {target.base_url}")
            assert worker is not None
            round_stop = threading.Event()
            timer = threading.Timer(1.0, round_stop.set)
            timer.start()
            try:
                worker.run(round_stop, until_drained=until_drained, idle_seconds=idle_seconds)
            finally:
                timer.cancel()
            quiet = worker.stats.delivered == reported
            if (time.monotonic() - last_report > 5 and not quiet) or until_drained:
                reported = worker.stats.delivered
                lag = worker.lag()
                age = f"{lag.oldest_age_seconds:.2f} s" if lag.oldest_age_seconds else "none"
                console.print(
                    f"delivered {worker.stats.delivered}, pending {lag.pending}, "
                    f"oldest undelivered {age}, dead letters {lag.dead_letters}"
                )
                last_report = time.monotonic()
            if until_drained and worker.lag().pending == 0:
                return
    except KeyboardInterrupt:
        pass  # Ctrl-C stops it as SIGTERM (how `strangler up` stops it) does
    if worker is not None:
        try:  # a relay started next need not wait out our lease (up to 15 s of lag)
            worker.release_lease()
        except Exception as exc:  # the database is gone: the lease simply runs out
            log.debug("lease not released: %r", exc)
    console.print("[cyan]relay stopped[/]")


def backfill(
    entity: Entity,
    chunk_size: Annotated[
        int, typer.Option(min=1, max=100_000, help="Rows per chunk (two are held at once)")
    ] = 50_000,
    dry_run: Annotated[bool, typer.Option(help="Read and count, apply nothing")] = False,
    restart: Annotated[bool, typer.Option(help="Forget the checkpoint, start over")] = False,
    direction: DirectionOption = Direction.AUTO,
) -> None:
    """Copy every row of the source side to the other side, newer versions only."""
    settings = CliSettings()
    source, target = _sides(settings, entity, _direction(settings, entity, direction))
    checkpoint = settings.state_dir / f"backfill-{entity}.json"
    if restart:
        checkpoint.unlink(missing_ok=True)
    job = Backfill(source, target, checkpoint, chunk_size=chunk_size, dry_run=dry_run)
    try:
        total = job.total_rows()
        columns = [
            TextColumn(f"backfill {entity}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} rows/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ]
        started = time.monotonic()
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("rows", total=total, rate="-")

            def advance(rows: int) -> None:
                done = progress.tasks[0].completed + rows
                rate = done / max(time.monotonic() - started, 1e-6)
                progress.update(task, advance=rows, rate=f"{rate:,.0f}")

            report = job.run(advance)
    except (SyncApiError, ValueError) as exc:
        raise fail(
            str(exc), "fix the cause and run again: the backfill resumes where it stopped"
        ) from exc
    rate = report.rows / report.seconds if report.seconds else 0.0
    resumed = (
        f" (resumed after key {report.resumed_from})" if report.resumed_from is not None else ""
    )
    mode = "dry run: " if dry_run else ""
    console.print(
        f"{mode}{report.rows} rows{resumed}: {report.applied} applied, {report.duplicates} already "
        f"current, {report.rejected} rejected, {report.deletes} deletes carried; "
        f"{rate:,.0f} rows/s"
    )
    if report.rejected:
        raise typer.Exit(code=1)


def reconcile(
    entity: Entity,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
    do_repair: Annotated[bool, typer.Option("--repair", help="Re-emit differing rows")] = False,
    direction: DirectionOption = Direction.AUTO,
    confirm_seconds: Annotated[
        float,
        typer.Option(
            min=0, max=60, help="Look again this long: rows still in flight are not reported"
        ),
    ] = 2.0,
) -> None:
    """Compare both sides by range checksums; exit 0 when they agree, 1 when they do not.

    --repair re-emits the differing rows from the source, which must be the side that takes
    the writes in a phase that did not change while the sides were compared: the phase is
    read when the command starts and again just before repairing, and the repair stops
    (exit 2, nothing repaired) otherwise. The side itself refuses a re-emit in a phase that
    gives it no writes, which covers a switch during the repair.
    """
    settings = CliSettings()
    started = PhaseFile(settings.routing_file, entity).current()
    chosen = _chosen_direction(direction) or compared_direction(started)
    if do_repair:
        _refuse_repair(entity, started, started, chosen)  # before spending a reconcile on it
    source, target = _sides(settings, entity, chosen)
    began = time.time()
    try:
        report = run_reconcile(source, target, confirm_seconds=confirm_seconds)
        repaired = None
        if do_repair and report.differences:
            _refuse_repair(
                entity, started, PhaseFile(settings.routing_file, entity).current(), chosen
            )
            repaired = _repair(entity, source, target, report)
            after = run_reconcile(source, target)
    except SyncApiError as exc:
        raise fail(str(exc), "check that both sides run and share the sync token") from exc
    final = after if repaired is not None else report
    remember_verdict(settings.state_dir / f"reconcile-{entity}.json", final)
    resolved = _resolve_dead_letters(source, target, began) if final.agree else 0
    if as_json:
        body = report.as_json()
        if repaired is not None:
            body["repaired"] = repaired
            body["agree_after_repair"] = after.agree
        body["dead_letters_resolved"] = resolved
        print(json.dumps(body, indent=2))
    else:
        console.print(
            f"source {report.source}: {report.rows_source} rows; target {report.target}: "
            f"{report.rows_target} rows; {report.ranges_checked} ranges checked"
        )
        if report.differences:
            table = Table("key", "difference", "source version", "target version")
            for d in report.differences[:200]:
                table.add_row(str(d.key), d.kind, str(d.source_version), str(d.target_version))
            console.print(table)
            more = len(report.differences) - 200
            if more > 0:
                console.print(f"... and {more} more (use --json for all)")
        console.print(f"{len(report.differences)} difference(s)")
        if repaired is not None:
            console.print(f"repaired {repaired}; now {len(after.differences)} difference(s)")
        if resolved:
            console.print(f"both sides agree: {resolved} dead letter(s) marked resolved")
    if after.differences if repaired is not None else report.differences:
        raise typer.Exit(code=1)


def _resolve_dead_letters(source: SyncClient, target: SyncClient, began: float) -> int:
    """Both sides agree, as compared after `began`: the writes that the dead letters from
    before it carried are missing nowhere now (repaired, or overtaken by newer writes).
    Mark them resolved on both sides, which lets writes change sides again."""
    resolved = 0
    for side in (source, target):
        try:
            resolved += side.resolve_dead_letters(before=began)
        except SyncApiError as exc:  # the verdict stands; the next reconcile tries again
            log.warning("dead letters on %s not marked resolved: %s", side.base_url, exc)
    return resolved


def _chosen_direction(wanted: Direction) -> SyncDirection | None:
    if wanted is Direction.FORWARD:
        return SyncDirection.FORWARD
    if wanted is Direction.REVERSE:
        return SyncDirection.REVERSE
    return None


def _refuse_repair(entity: str, started: Phase, now: Phase, direction: SyncDirection) -> None:
    """Stop (exit 2) unless a repair from `direction`'s source may run now."""
    refusal = repair_refusal(started, now, source_side(direction))
    if refusal is None:
        return
    writer = routing_of(now).writes
    if now is not started:
        hint = (
            f"run `strangler reconcile {entity} --repair` again once the phase has settled: it "
            "compares the sides afresh and repairs from the side that takes the writes then"
        )
    else:
        hint = (
            f"leave out --direction: it then repairs from the {writer.value}, which takes the "
            f"writes in phase {now.value}; a reconcile without --repair may compare either way"
        )
    raise fail(f"repair refused: {refusal}", hint)


def _repair(entity: str, source: SyncClient, target: SyncClient, report: ReconcileReport) -> int:
    """Repair, turning the source's refusal (the phase moved the writes away from it while
    repairing) into the CLI's error with what to do."""
    try:
        return repair(source, target, report.differences)
    except SyncApiError as exc:
        if exc.retryable:
            raise
        raise fail(
            f"repair refused: {exc}",
            f"see that the phase has settled, then run `strangler reconcile {entity} --repair` "
            "again: rows repaired before the refusal stay repaired",
        ) from exc


def register(app: typer.Typer) -> None:
    app.command()(relay)
    app.command()(backfill)
    app.command()(reconcile)
