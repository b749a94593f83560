"""The dashboard's live part as HTML, rendered on the server from the state snapshot.

The page polls this fragment and swaps it in, so all the layout decisions live here, in typed
and tested Python, and the page's JavaScript stays a poller and two dialogs. Every value goes
through `tag()`, which escapes it: diffs of response bodies and audit reasons are data, never
markup.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from proxy.dashboard.html import Child, Html, tag
from proxy.dashboard.tiles import (
    ago,
    health_tile,
    records_tile,
    relay_tile,
    requests_tile,
    shadow_tile,
)

__all__ = ["render_live"]


def render_live(state: Mapping[str, Any], *, now: float | None = None) -> Html:
    """Every capability's card, then the audit log."""
    now = time.time() if now is None else now
    notices: list[Child] = []
    if state.get("last_reload_error"):
        notices.append(
            tag(
                "p",
                tag("strong", "routing.toml edit refused: "),
                str(state["last_reload_error"]),
                class_="notice bad",
            )
        )
    if not state.get("relay_known"):
        notices.append(
            tag(
                "p",
                "The proxy has no sync token (PROXY_SYNC_TOKEN): relay lag is unknown and "
                "gates cannot be checked from here.",
                class_="notice warn",
            )
        )
    cards = [_capability(name, cap, now) for name, cap in state["capabilities"].items()]
    return Html.join_all(
        [
            *notices,
            *cards,
            _audit(state.get("audit", [])),
            tag(
                "p",
                f"config version {state['config_version']}",
                class_="muted footnote",
                data_testid="config-version",
            ),
        ]
    )


def _capability(name: str, cap: Mapping[str, Any], now: float) -> Html:
    return tag(
        "section",
        _heading(name, cap),
        _ladder(cap),
        _actions(name, cap),
        tag(
            "div",
            requests_tile(cap["requests"], cap.get("trend")),
            shadow_tile(cap["shadow"], cap["phase"], cap.get("trend")),
            relay_tile(cap["relay"], cap.get("trend")),
            records_tile(cap.get("reconcile"), cap.get("backfill"), now),
            health_tile(cap["breakers"], cap["fence"]),
            class_="tiles",
        ),
        _samples(cap["shadow"].get("samples", []), now),
        class_="capability",
        data_capability=name,
        data_phase=cap["phase"],
    )


def _heading(name: str, cap: Mapping[str, Any]) -> Html:
    canary = f" · canary {cap['canary_percent']:g} %" if cap["phase"] == "canary" else ""
    return tag(
        "header",
        tag("h2", name),
        tag("span", cap["phase"], class_="phase-badge", data_testid="phase"),
        tag("span", cap["title"], class_="muted"),
        tag(
            "span",
            f"reads → {cap['reads']} · writes → {cap['writes']}{canary}",
            class_="routing",
        ),
    )


def _ladder(cap: Mapping[str, Any]) -> Html:
    steps = []
    for number, step in enumerate(cap["ladder"]):
        sync = {"monolith_to_service": "sync → service", "service_to_monolith": "sync → monolith"}
        steps.append(
            tag(
                "li",
                tag("span", number, class_="step-number"),
                tag("span", step["phase"], class_="step-name"),
                tag("span", f"reads {step['reads']}", class_="small"),
                tag("span", f"writes {step['writes']}", class_="small"),
                tag("span", sync.get(step["sync"] or "", "no sync"), class_="small"),
                class_=f"step {step['state']}",
                title=step["title"],
                aria_current="step" if step["state"] == "current" else None,
            )
        )
    return tag("ol", steps, class_="ladder")


def _with_code(text: str) -> list[Child]:
    """The runbook's `backticked` commands as <code>, the rest as text."""
    return [tag("code", part) if odd else part for odd, part in _alternating(text.split("`"))]


def _alternating(parts: list[str]) -> list[tuple[bool, str]]:
    return [(index % 2 == 1, part) for index, part in enumerate(parts) if part]


def _actions(name: str, cap: Mapping[str, Any]) -> Html:
    following, previous = cap.get("next_phase"), cap.get("previous_phase")
    checks: list[str] = cap.get("next_checks") or []
    guidance: list[Child] = []
    if checks:
        guidance.append(tag("span", f"before {following}: ", class_="muted"))
        for index, check in enumerate(checks):
            guidance += [*_with_code(check), "; " if index < len(checks) - 1 else ". "]
    if cap.get("next_command"):  # prose with `commands`, as the CLI prints it after a step
        guidance += [tag("span", "next: ", class_="muted"), *_with_code(cap["next_command"])]
    return tag(
        "div",
        tag(
            "div",
            tag(
                "button",
                f"Advance to {following} …" if following else "Nothing left to advance",
                type="button",
                class_="primary",
                disabled=following is None,
                data_action="advance",
                data_capability=name,
                data_from=cap["phase"],
                data_to=following,
            ),
            tag(
                "button",
                f"Roll back to {previous} …" if previous else "Nothing to roll back",
                type="button",
                class_="danger",
                disabled=previous is None,
                data_action="rollback",
                data_capability=name,
                data_from=cap["phase"],
                data_to=previous,
                data_note=cap.get("rollback_note"),
            ),
            class_="buttons",
        ),
        tag("p", guidance, class_="next small"),
        class_="actions",
    )


def _samples(samples: list[Mapping[str, Any]], now: float) -> Html | None:
    if not samples:
        return None
    items = []
    for sample in samples:
        primary, shadow = sample.get("primary", {}), sample.get("shadow", {})
        at = sample.get("at")
        when = ago(now - float(at)) if isinstance(at, int | float) else ""
        summary = (
            f"{sample.get('request', '')} · {primary.get('side')} {primary.get('status')} "
            f"vs {shadow.get('side')} {shadow.get('status')} · {when}"
        )
        items.append(
            tag(
                "details",
                tag("summary", summary),
                tag("pre", sample.get("diff") or "(no diff: the statuses differ)", class_="diff"),
                class_="sample",
                data_key=f"{sample.get('request')}@{at}",
            )
        )
    return tag("div", tag("h3", "recent shadow mismatches"), items, class_="samples")


_AUDIT_COLUMNS = ("at (UTC)", "capability", "change", "who", "why")


def _audit(entries: list[Mapping[str, Any]]) -> Html:
    if not entries:
        body: Child = tag("p", "No changes recorded yet.", class_="muted")
    else:
        rows = []
        for entry in entries:
            old, new = entry.get("old", {}), entry.get("new", {})
            change = "; ".join(
                f"{key}: {old.get(key)} → {new.get(key)}" for key in sorted(new.keys() | old.keys())
            )
            rows.append(
                tag(
                    "tr",
                    tag("td", entry.get("at", ""), class_="nowrap"),
                    tag("td", entry.get("capability", "")),
                    tag("td", change),
                    tag("td", entry.get("who", "")),
                    tag("td", entry.get("reason", "")),
                )
            )
        body = tag(
            "table",
            tag(
                "thead",
                tag("tr", [tag("th", h) for h in _AUDIT_COLUMNS]),
            ),
            tag("tbody", rows),
            class_="audit",
        )
    return tag("section", tag("h2", "audit log"), body, class_="audit-log", data_testid="audit")
