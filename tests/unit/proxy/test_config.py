"""routing.toml validation: every refusal names its field."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomlkit

from proxy.config import ConfigError, load_config, parse_config, validate_transition

ROOT = Path(__file__).resolve().parents[3]

BASE = {
    "proxy": {},
    "upstreams": {
        "monolith": {"url": "http://127.0.0.1:8001"},
        "svc": {"url": "http://127.0.0.1:8002"},
    },
    "capabilities": {"products": {"prefixes": ["/products"], "service": "svc"}},
}


def _with(path: str, value: object) -> str:
    document = tomlkit.parse(tomlkit.dumps(BASE))
    *parents, leaf = path.split(".")
    node = document
    for part in parents:
        node = node[part]  # type: ignore[assignment]
    node[leaf] = value
    return tomlkit.dumps(document)


def test_the_committed_routing_file_is_valid() -> None:
    config = load_config(ROOT / "routing.toml")
    assert config.capabilities["products"].phase.value == "monolith"


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (
            "capabilities.products.service",
            "ghost",
            "capabilities.products.service: unknown upstream 'ghost'",
        ),
        ("capabilities.products.canary_percent", 100.5, "capabilities.products.canary_percent"),
        ("capabilities.products.shadow_percent", -1, "capabilities.products.shadow_percent"),
        ("capabilities.products.phase", "half_done", "capabilities.products.phase"),
        ("capabilities.products.prefixes", ["/products/../x"], "capabilities.products.prefixes"),
        ("capabilities.products.sticky_key", "ip", "capabilities.products.sticky_key"),
        ("capabilities.products.colour", "red", "capabilities.products.colour"),
        ("upstreams.svc.url", "ftp://x", "upstreams.svc.url"),
        ("upstreams.svc.url", "http://127.0.0.1:8002/base", "upstreams.svc.url"),
        ("upstreams.svc.read_timeout", 0, "upstreams.svc.read_timeout"),
        ("proxy.default_upstream", "ghost", "proxy.default_upstream"),
        ("proxy.trusted_proxies", ["not-an-ip"], "proxy.trusted_proxies"),
    ],
)
def test_a_bad_value_is_refused_naming_the_field(path: str, value: object, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")):
        parse_config(_with(path, value))


def test_the_same_prefix_in_two_capabilities_is_refused() -> None:
    text = (
        tomlkit.dumps(BASE) + '\n[capabilities.other]\nprefixes = ["/products/"]\nservice = "svc"\n'
    )
    with pytest.raises(ConfigError, match="overlaps the same prefix of capabilities.products"):
        parse_config(text)


def test_a_phase_may_advance_one_step_and_roll_back_any_distance() -> None:
    at = {
        phase: parse_config(_with("capabilities.products.phase", phase))
        for phase in ("monolith", "dual_write", "backfilled", "reads_cutover")
    }
    validate_transition(at["monolith"], at["dual_write"])
    validate_transition(at["reads_cutover"], at["monolith"])
    with pytest.raises(
        ConfigError, match="capabilities.products.phase: monolith -> backfilled skips dual_write"
    ):
        validate_transition(at["monolith"], at["backfilled"])


def test_invalid_toml_is_refused_with_the_parser_message() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[upstreams\n")
