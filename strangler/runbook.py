"""The migration runbook, generated from the phase definitions: one step per phase.

Each step says what entering the phase does, how to check it is safe (the gate), what to
watch while in it, and how to roll back. `runbooks/<capability>.md` is this module's output,
committed; a test fails when the two differ, so the runbook cannot drift from the code.
`strangler advance` checks each step's gates automatically (strangler/gates.py); the "check"
lines here say the same in words.
"""

from __future__ import annotations

from dataclasses import dataclass

from strangler.phases import PHASES, Phase, routing_of

__all__ = ["STEPS", "NextStep", "RunbookStep", "next_command", "next_step", "render"]


@dataclass(frozen=True)
class RunbookStep:
    """One phase in words: what entering it does, its gates, what to watch while in it,
    what rolling back out of it does (`rollback`) and how to see that it did
    (`after_rollback`)."""

    title: str
    does: str
    check: tuple[str, ...]
    watch: tuple[str, ...]
    rollback: str
    after_rollback: str


MIN_SHADOW_READS = 100
"""Shadow compares the canary gate needs (strangler.gates.Thresholds.min_shadow_sample)."""
MIN_CANARY_READS = 20
"""Reads the service must have answered in canary (Thresholds.min_canary_requests)."""


STEPS: dict[Phase, RunbookStep] = {
    Phase.MONOLITH: RunbookStep(
        "The capability lives in the monolith",
        "Nothing moves. The proxy routes every request to the monolith; the capability must "
        "already be a module with a public interface and tables of its own.",
        (
            "`lint-imports --config boundaries.toml` keeps every contract",
            "`strangler coupling` reports no foreign key, join or statement into its tables",
        ),
        ("the proxy's `strangler_proxy_requests_total` for the capability",),
        "Nothing to roll back: this is where every capability starts.",
        "Nothing to check.",
    ),
    Phase.DUAL_WRITE: RunbookStep(
        "Dual-write through the outbox",
        "Every write of the capability in the monolith also records a change event in its "
        "outbox, in the same transaction; the relay delivers the events to the service.",
        (
            "the service answers `/ready` and its migrations are at head "
            "(`python -m extracted.products_service migrate`)",
            "`strangler status` shows the sync direction monolith_to_service and pending near 0",
        ),
        ("relay lag (`strangler status`: oldest undelivered)", "dead letters stay at 0"),
        "Set the phase back to monolith: the outbox stops growing; the service's copy is "
        "simply no longer fed.",
        "`strangler status` shows sync none. Writes now reach only the monolith: before "
        "advancing again, run the backfill again (`strangler backfill <capability> --restart`).",
    ),
    Phase.BACKFILLED: RunbookStep(
        "Backfill the existing rows",
        "`strangler backfill <capability>` copies every existing row through the service's "
        "apply path; rows changed meanwhile are already newer there and are not overwritten.",
        (
            "the backfill finished with 0 rejected",
            "`strangler reconcile <capability>` reports 0 differences",
        ),
        ("backfill rows/s and ETA", "relay lag while it runs"),
        "Set the phase back to dual_write; the copied rows do no harm (nothing reads them).",
        "`strangler status` still shows sync monolith_to_service with pending near 0.",
    ),
    Phase.SHADOW: RunbookStep(
        "Shadow reads",
        "Reads are still answered by the monolith; a sample is replayed on the service after "
        "the client has its answer, and the two answers are compared.",
        ("`strangler reconcile <capability>` reports 0 differences",),
        (
            "shadow mismatch rate and sample diffs "
            "(`/_strangler/capabilities/<capability>/mismatches`)",
        ),
        "Set the phase back to backfilled: shadow traffic stops at once.",
        "`strangler proxy status`: the shadow compare count stops growing.",
    ),
    Phase.CANARY: RunbookStep(
        "Canary reads",
        "A percentage of users, sticky per user, read from the service; writes still go to "
        "the monolith. Raise the percentage in steps (10, 50, 100).",
        (
            f"the shadow mismatch rate is 0 over at least {MIN_SHADOW_READS} compared reads "
            "(`strangler status`)",
            "relay lag is near 0: answers about rows the service has not caught up on are "
            "counted as stale, not compared",
        ),
        (
            "5xx and latency of the service against the monolith (proxy metrics)",
            "fallbacks (`strangler_proxy_fallbacks_total`)",
            "the service's breaker",
        ),
        "Lower the percentage, or set the phase back to shadow: users return to the monolith "
        "on their next request.",
        "Reads answer `X-Strangler-Upstream: monolith` again, for every user.",
    ),
    Phase.READS_CUTOVER: RunbookStep(
        "All reads from the service",
        "Every read goes to the service; failed reads fall back to the monolith, which still "
        "holds the data. Writes still go to the monolith.",
        (
            "the canary's error rate was no worse than the monolith's, over at least "
            f"{MIN_CANARY_READS} reads the service answered",
        ),
        ("fallbacks and breaker state", "relay lag"),
        "Set the phase back to canary.",
        "`strangler proxy status`: reads are split by the canary percentage again.",
    ),
    Phase.WRITES_CUTOVER: RunbookStep(
        "Writes move to the service",
        "Writes go to the service, which records its changes in its own outbox; the relay "
        "runs the other way and keeps the monolith's copy current, which is the way back. "
        "Orders take stock through the service's reservations. The switch happens behind the "
        "proxy's write fence: writes are held, the relay drains the monolith's outbox, the "
        "phase flips, and the held writes go to the service; `advance` prints the pause.",
        (
            "`strangler reconcile <capability>` reports 0 differences",
            "relay lag is near 0 (`strangler status`) before flipping",
        ),
        (
            "reverse relay lag and dead letters",
            "order failures (503 from the catalogue)",
            "writes refused by the fence (`strangler_proxy_fence_refusals_total`)",
        ),
        "Behind the same fence: the reverse relay drains the service's outbox before writes "
        "return to the monolith, which then holds every write again.",
        "`strangler status` shows writes to the monolith and sync monolith_to_service; "
        "`strangler reconcile <capability>` reports 0 differences.",
    ),
    Phase.DECOMMISSIONED: RunbookStep(
        "Decommission the monolith's copy",
        "Nothing syncs any more and nothing falls back: the service is the capability.",
        (
            "nothing in the monolith calls the capability any more",
            "a migration drops its tables from the monolith",
        ),
        ("the service's error rate",),
        "Set the phase back to writes_cutover only while the monolith's tables still exist.",
        "`strangler status` shows the reverse relay running again (sync service_to_monolith).",
    ),
}


@dataclass(frozen=True)
class NextStep:
    """What to do next in a phase: `first`, in words, if anything must happen before the
    command (traffic to send, a step the demo cannot take for you), then `command`."""

    command: str | None
    first: str | None = None

    def __str__(self) -> str:
        if self.first and self.command:
            return f"{self.first}; then `{self.command}`"
        return self.first or f"`{self.command}`"


def next_step(
    capability: str, current: Phase, canary_percent: float = 0.0, prefix: str = "/"
) -> NextStep | None:
    """The real next action from `current` (None at the end), as the gates will judge it.

    `prefix` is one of the capability's paths, named in the traffic a gate needs.
    """
    advance = f"strangler advance {capability}"
    if current is Phase.DUAL_WRITE:
        return NextStep(advance, f"copy the existing rows: `strangler backfill {capability}`")
    if current is Phase.SHADOW:
        return NextStep(
            f"{advance} --percent 10",
            f"send at least {MIN_SHADOW_READS} reads to {prefix} through the proxy "
            "(each is answered by the monolith and compared with the service's answer)",
        )
    if current is Phase.CANARY:
        traffic = (
            f"send reads to {prefix} through the proxy (at {canary_percent:g} % about "
            f"{canary_percent:g} in 100 users read from the service; the gate needs at least "
            f"{MIN_CANARY_READS} reads it answered)"
        )
        if canary_percent < 100:
            raised = 50 if canary_percent < 50 else 100
            return NextStep(f"{advance} --percent {raised}", traffic)
        return NextStep(advance)  # every user reads from the service: the reads flow already
    if current is Phase.WRITES_CUTOVER:
        return NextStep(
            None,
            "the service takes the writes now. To finish, remove the monolith's "
            f"{capability} code and drop its tables with a migration, then `{advance}` "
            "(decommissioned); the reference shop stops here. "
            f"`strangler rollback {capability}` takes writes back to the monolith",
        )
    if current is PHASES[-1]:
        return None
    return NextStep(advance)


def next_command(
    capability: str, current: Phase, canary_percent: float = 0.0, prefix: str = "/"
) -> str | None:
    """The next step as one line of text (see next_step); None at the end."""
    step = next_step(capability, current, canary_percent, prefix)
    return str(step) if step else None


def render(capability: str, current: Phase | None = None) -> str:
    """The runbook as Markdown; `current` marks where the capability is now."""
    lines = [
        f"# Runbook: moving `{capability}` out of the monolith",
        "",
        "Generated by `strangler runbook "
        f"{capability} --write` from `strangler/runbook.py` and `strangler/phases.py`; "
        "do not edit by hand.",
        "",
        "| step | phase | reads | writes | sync |",
        "|---|---|---|---|---|",
    ]
    for number, phase in enumerate(PHASES):
        routing = routing_of(phase)
        marker = " ← you are here" if phase is current else ""
        reads = routing.reads.value if routing.reads else "split by canary %"
        sync = routing.sync.value if routing.sync else "none"
        lines.append(
            f"| {number} | `{phase.value}`{marker} | {reads} | {routing.writes.value} | {sync} |"
        )
    for number, phase in enumerate(PHASES):
        step = STEPS[phase]
        here = " (current)" if phase is current else ""
        lines += ["", f"## {number}. {step.title}: `{phase.value}`{here}", "", step.does, ""]
        if number:
            enter = f"`strangler advance {capability}`"
            if phase is Phase.CANARY:
                enter = (
                    f"`strangler advance {capability} --percent 10`, then "
                    "`--percent 50` and `--percent 100`"
                )
            lines += [f"Enter (from `{PHASES[number - 1].value}`): {enter}", ""]
        lines += ["Check before entering:"]
        lines += [f"- {c.replace('<capability>', capability)}" for c in step.check]
        lines += ["", "Watch:"]
        lines += [f"- {w.replace('<capability>', capability)}" for w in step.watch]
        if number:
            lines += ["", f"Roll back (`strangler rollback {capability}`): {step.rollback}"]
            after = step.after_rollback.replace("<capability>", capability)
            lines += ["", f"After rolling back: {after}"]
        else:
            lines += ["", f"Roll back: {step.rollback}"]
    return "\n".join(lines) + "\n"
