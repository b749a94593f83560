"""What routing.toml means for an nginx edge, decided before any nginx text is written.

Per capability: which upstream block takes reads and which takes writes (or the sticky split
that picks one per user), whether GETs are mirrored to the other side and at what rate. The
phase's routing comes from strangler.phases, as the proxy's does; the split's percentage is
read as nginx reads it (two decimals), so 0 % and 100 % need no split_clients. They still need
the sticky key: the proxy reads it, and makes one up and sets it as the cookie, for every
canary read whatever the percentage (proxy/decision.py splits_reads), so the edge does too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from strangler.nginx_routing import EdgeRouting
from strangler.phases import Side, routing_of
from strangler.routing_file import CapabilityConfig, UpstreamConfig
from strangler.split import hundredths_of, percent_text

__all__ = ["CapabilityPlan", "EdgePlan", "plan"]


@dataclass(frozen=True)
class CapabilityPlan:
    """One capability's routing in nginx terms.

    A target is an upstream block's name, or an nginx variable (`$...`) that holds one per
    request: the split (`$strangler_split_<ident>`) or the side a mirror copy goes to. Every
    canary's reads go to its split variable, at 0 % and 100 % too, where it is one upstream for
    everybody, since evaluating it computes the sticky key (and makes one up for the cookie).
    """

    name: str
    ident: str  # the name as it can appear in nginx variable names
    config: CapabilityConfig
    summary: str  # one line for a person reading the generated file
    read_target: str
    write_target: str
    mirror_target: str | None  # where GET copies go; None: not mirrored
    sampled: bool  # mirror only shadow_percent of the GETs (else every GET)
    keyed: bool  # canary: reads compute the sticky key, and set a made-up one as the cookie
    splits: bool  # keyed, and split between both sides (0 % < canary_percent < 100 %)
    everybody: Side | None  # keyed but not split: the side every user's reads go to

    @property
    def target(self) -> str:
        """The target of the capability's locations: reads' and writes' when they agree."""
        if self.read_target == self.write_target:
            return self.read_target
        return f"$strangler_target_{self.ident}"


@dataclass(frozen=True)
class EdgePlan:
    routing: EdgeRouting
    upstream_block: dict[str, str]  # routing.toml's upstream name -> nginx upstream block
    capabilities: list[CapabilityPlan]

    def upstream(self, block: str) -> UpstreamConfig:
        return self.routing.upstreams[self.name_of(block)]

    def name_of(self, block: str) -> str:
        return next(name for name, b in self.upstream_block.items() if b == block)

    def candidates(self, cap: CapabilityPlan, target: str) -> list[str]:
        """The upstream blocks a target may stand for."""
        if not target.startswith("$"):
            return [target]
        config = cap.config
        return sorted({self.upstream_block[config.monolith], self.upstream_block[config.service]})


def _idents(names: Iterable[str]) -> dict[str, str]:
    """nginx-safe identifiers for config names ('.' and '-' become '_'), unique."""
    taken: set[str] = set()
    found: dict[str, str] = {}
    for name in names:
        base = re.sub(r"[^A-Za-z0-9_]", "_", name)
        ident, n = base, 1
        while ident in taken:
            n += 1
            ident = f"{base}_{n}"
        taken.add(ident)
        found[name] = ident
    return found


def _capability(
    name: str, ident: str, cap: CapabilityConfig, blocks: dict[Side, str], cookie: str
) -> CapabilityPlan:
    routing = routing_of(cap.phase)
    canary = hundredths_of(cap.canary_percent)
    keyed = routing.reads is None
    splits = keyed and 0 < canary < 10_000
    everybody: Side | None = None
    if keyed and not splits:
        everybody = Side.SERVICE if canary >= 10_000 else Side.MONOLITH
    reads = routing.reads  # None: per user, by the split variable
    shadow = hundredths_of(cap.shadow_percent)
    mirrors = routing.shadow_reads or (routing.reads is None and cap.shadow_during_canary)
    mirror_target: str | None = None
    if mirrors and shadow > 0:
        if reads is None:
            mirror_target = f"$strangler_shadow_{ident}"
        else:
            mirror_target = blocks[Side.SERVICE if reads is Side.MONOLITH else Side.MONOLITH]
    names = {Side.MONOLITH: cap.monolith, Side.SERVICE: cap.service}
    if reads is None:
        subject = "token subject, else " if cap.sticky_key == "subject" else ""
        where = (
            f"reads of {percent_text(cap.canary_percent)} of users -> {cap.service} "
            f"(sticky: {subject}cookie {cookie}), the others -> {cap.monolith}"
        )
    else:
        where = f"reads -> {names[reads]}"
    summary = f"phase {cap.phase.value}: {where}; writes -> {names[routing.writes]}"
    if mirror_target is not None:
        summary += f"; {percent_text(cap.shadow_percent)} of GETs mirrored to the other side"
    return CapabilityPlan(
        name=name,
        ident=ident,
        config=cap,
        summary=summary,
        read_target=f"$strangler_split_{ident}" if reads is None else blocks[reads],
        write_target=blocks[routing.writes],
        mirror_target=mirror_target,
        sampled=mirror_target is not None and shadow < 10_000,
        keyed=keyed,
        splits=splits,
        everybody=everybody,
    )


def plan(routing: EdgeRouting) -> EdgePlan:
    upstream_block = {n: f"strangler_{i}" for n, i in _idents(routing.upstreams).items()}
    idents = _idents(routing.capabilities)
    capabilities = [
        _capability(
            name,
            idents[name],
            cap,
            {
                Side.MONOLITH: upstream_block[cap.monolith],
                Side.SERVICE: upstream_block[cap.service],
            },
            routing.proxy.sticky_cookie,
        )
        for name, cap in routing.capabilities.items()
    ]
    return EdgePlan(routing, upstream_block, capabilities)
