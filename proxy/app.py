"""Composition root of the proxy: settings in, one ASGI app out.

`create_app` loads and validates routing.toml (refusing to start on a bad one, with the
reason), wires the routing state, shadow recorder, metrics and admin API, and in its lifespan
starts the shadow workers and the watcher that applies hand edits of routing.toml.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from proxy.admin import create_admin_app
from proxy.config import ConfigError, RoutingConfig, parse_config
from proxy.configfile import AuditEntry, RoutingFile
from proxy.forward import Forwarder
from proxy.metrics import ProxyMetrics
from proxy.runtime import RoutingState
from proxy.settings import ProxySettings
from proxy.shadow import ShadowRecorder
from strangler.phases import routing_of
from strangler.problems import Problem

__all__ = ["ProxyRuntime", "create_app"]

log = logging.getLogger("strangler.proxy")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_ADMIN_PREFIX = "/_strangler/"


def _capability_view(config: RoutingConfig) -> dict[str, dict[str, Any]]:
    return {
        name: c.model_dump(
            mode="json",
            include={"phase", "canary_percent", "shadow_percent", "shadow_during_canary"},
        )
        for name, c in config.capabilities.items()
    }


class ProxyRuntime:
    """Everything the proxy holds while it runs, and the ASGI entry point."""

    def __init__(self, settings: ProxySettings) -> None:
        self.settings = settings
        self.admin_token = settings.admin_token.get_secret_value() if settings.admin_token else None
        self.routing_file = RoutingFile(settings.routing_file, settings.audit_log)
        self.metrics = ProxyMetrics()
        self.state = RoutingState(self.metrics)
        self.signature = self.routing_file.signature()
        config = parse_config(self.routing_file.read(), str(settings.routing_file))
        self.state.apply(config)
        options = config.proxy
        self.shadow = ShadowRecorder(
            self.metrics,
            queue_size=options.shadow_queue_size,
            workers=options.shadow_workers,
            samples=options.mismatch_samples,
        )
        self.last_reload_error: str | None = None
        self.forwarder = Forwarder(self.state, self.shadow, self.metrics, self.admin_token)
        self.admin = create_admin_app(self)
        self._watcher: asyncio.Task[None] | None = None

    # -- config changes ---------------------------------------------------------------
    def apply(
        self, config: RoutingConfig, *, who: str, audit_what: str, reason: str | None = None
    ) -> None:
        """Make `config` current and audit what changed in the capabilities."""
        before = _capability_view(self.state.current.config)
        self.state.apply(config)
        self.signature = self.routing_file.signature()
        self.last_reload_error = None
        after = _capability_view(config)
        for name in sorted(before.keys() | after.keys()):
            old, new = before.get(name, {}), after.get(name, {})
            if old != new:
                changed = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
                self.routing_file.audit(
                    AuditEntry(
                        who=who,
                        what=audit_what,
                        capability=name,
                        reason=reason,
                        old={k: old.get(k) for k in sorted(changed)},
                        new={k: new.get(k) for k in sorted(changed)},
                    )
                )

    def reload_if_changed(self) -> bool:
        """Apply routing.toml if it changed on disk; keep the running config if it is bad."""
        signature = self.routing_file.signature()
        if signature == self.signature:
            return False
        self.signature = signature
        try:
            config = parse_config(self.routing_file.read(), str(self.settings.routing_file))
            self.apply(config, who="routing.toml", audit_what="file_edit")
        except (ConfigError, OSError) as exc:
            self.last_reload_error = str(exc)
            self.metrics.reload_failures.inc()
            log.warning("routing config refused, the running one stays: %s", exc)
            return False
        log.info("routing config applied (version %d)", self.state.current.version)
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval_seconds)
            try:
                self.reload_if_changed()
            except Exception:  # the watcher must outlive any single bad reload
                log.exception("routing config reload crashed")

    # -- views ------------------------------------------------------------------------
    def require_capability(self, name: str) -> None:
        if name not in self.state.current.capabilities:
            known = ", ".join(sorted(self.state.current.capabilities)) or "none"
            raise Problem(404, f"No capability named {name!r} (known: {known}).")

    def status(self) -> dict[str, object]:
        compiled = self.state.current
        capabilities = {}
        for name, route in compiled.capabilities.items():
            routing = routing_of(route.policy.phase)
            stats = self.shadow.stats.get(name)
            capabilities[name] = {
                "phase": route.policy.phase.value,
                "reads": routing.reads.value if routing.reads else "split",
                "writes": routing.writes.value,
                "canary_percent": route.config.canary_percent,
                "shadow_percent": route.config.shadow_percent,
                "shadow_during_canary": route.config.shadow_during_canary,
                "prefixes": route.config.prefixes,
                "monolith": route.monolith.name,
                "service": route.service.name,
                "shadow": stats.snapshot() if stats else None,
            }
        return {
            "config_version": compiled.version,
            "last_reload_error": self.last_reload_error,
            "capabilities": capabilities,
            "upstreams": {
                name: {"url": u.config.origin, "breaker": u.breaker.snapshot()}
                for name, u in compiled.upstreams.items()
            },
        }

    # -- ASGI -------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if scope["path"].startswith(_ADMIN_PREFIX):
                await self.admin(scope, receive, send)
            else:
                await self.forwarder(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        # websockets are not proxied: returning closes the connection

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.shadow.start()
                self._watcher = asyncio.create_task(self._watch())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._watcher is not None:
                    self._watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._watcher
                await self.shadow.stop()
                await self.state.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: ProxySettings | None = None) -> ProxyRuntime:
    """Build the proxy; raises ConfigError when routing.toml cannot be used."""
    return ProxyRuntime(settings or ProxySettings())
