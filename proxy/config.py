"""routing.toml as the proxy reads it: the toolkit's model of the file, and the transition rule.

The file's model and validation are strangler.routing_file's, shared with the nginx export so
that both refuse the same files; this module re-exports them for the proxy. A config that fails
validation is refused with a message naming the field, and whatever was serving keeps serving.
`validate_transition` adds the rule that depends on the running config (a phase may move
forward one step at a time).
"""

from __future__ import annotations

from strangler.phases import Phase
from strangler.routing_file import (
    BreakerOptions,
    CapabilityConfig,
    ConfigError,
    ProxyOptions,
    RoutingConfig,
    UpstreamConfig,
    load_config,
    parse_config,
)

__all__ = [
    "BreakerOptions",
    "CapabilityConfig",
    "ConfigError",
    "ProxyOptions",
    "RoutingConfig",
    "UpstreamConfig",
    "load_config",
    "parse_config",
    "validate_transition",
]


def validate_transition(old: RoutingConfig, new: RoutingConfig) -> None:
    """Refuse a change that skips a phase forward; rolling back any distance is allowed."""
    for name, capability in new.capabilities.items():
        before = old.capabilities.get(name)
        if before is None:
            continue
        if capability.phase.position > before.phase.position + 1:
            skipped = ", ".join(
                p.value for p in list(Phase)[before.phase.position + 1 : capability.phase.position]
            )
            raise ConfigError(
                f"capabilities.{name}.phase: {before.phase.value} -> {capability.phase.value} "
                f"skips {skipped}; advance one phase at a time"
            )
