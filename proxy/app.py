"""Composition root of the proxy: settings in, one ASGI app out.

`create_app` loads and validates routing.toml (refusing to start on a bad one, with the
reason), wires the routing state, shadow recorder, metrics and admin API, and in its lifespan
starts the shadow workers and the watcher that applies hand edits of routing.toml.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx

from proxy.admin import create_admin_app
from proxy.config import CapabilityConfig, ConfigError, RoutingConfig, parse_config
from proxy.configfile import AuditEntry, RoutingFile
from proxy.fence import WriteFences
from proxy.forward import Forwarder
from proxy.metrics import ProxyMetrics
from proxy.runtime import RoutingState
from proxy.ryw import ReadYourWrites
from proxy.settings import ProxySettings
from proxy.shadow import ShadowRecorder
from strangler.phases import gated_step, routing_of
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


def _gated(previous: dict[str, CapabilityConfig], config: RoutingConfig, name: str) -> bool:
    old, new = previous.get(name), config.capabilities.get(name)
    if old is None or new is None:
        return False
    return gated_step(old.phase, new.phase, old.canary_percent, new.canary_percent) is not None


class ProxyRuntime:
    """Everything the proxy holds while it runs, and the ASGI entry point."""

    def __init__(self, settings: ProxySettings) -> None:
        self.settings = settings
        self.admin_token = settings.admin_token.get_secret_value() if settings.admin_token else None
        self.routing_file = RoutingFile(settings.routing_file, settings.audit_log)
        self.metrics = ProxyMetrics()
        self.state = RoutingState(self.metrics, last_version=self.routing_file.last_version())
        self.metrics.watch_pools(self.state.pool_samples)
        self.signature = self.routing_file.signature()
        config = parse_config(self.routing_file.read(), str(settings.routing_file))
        self._record_version(self.state.apply(config).version)
        options = config.proxy
        self.shadow = ShadowRecorder(
            self.metrics,
            queue_size=options.shadow_queue_size,
            workers=options.shadow_workers,
            samples=options.mismatch_samples,
            recheck_seconds=options.shadow_recheck_seconds,
        )
        self.last_reload_error: str | None = None
        self.fences = WriteFences()
        self.ryw = ReadYourWrites(options.ryw_max_pins, options.ryw_max_pin_seconds)
        self.sync_token = settings.sync_token.get_secret_value() if settings.sync_token else None
        if self.sync_token is None:
            log.warning(
                "no PROXY_SYNC_TOKEN: read-your-writes pins last ryw_max_pin_seconds (%g s) "
                "instead of until the sync carried the write over",
                options.ryw_max_pin_seconds,
            )
        self.forwarder = Forwarder(
            self.state, self.shadow, self.metrics, self.admin_token, self.fences, self.ryw
        )
        self.admin = create_admin_app(self)
        self._watcher: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None

    # -- config changes ---------------------------------------------------------------
    def apply(
        self,
        config: RoutingConfig,
        *,
        who: str,
        audit_what: str,
        reason: str | None = None,
        gates: str | None = None,
    ) -> None:
        """Make `config` current and audit what changed in the capabilities.

        `gates` is how the caller met the gates of a gated step ("passed" or "forced"); a
        gated step that came without it (a hand edit of the file) is audited as "unchecked".
        """
        previous = self.state.current.config.capabilities
        before = _capability_view(self.state.current.config)
        version = self.state.apply(config).version
        self._record_version(version)
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
                        config_version=version,
                        gates=(gates or "unchecked") if _gated(previous, config, name) else None,
                    )
                )

    def _record_version(self, version: int) -> None:
        try:
            self.routing_file.record_version(version)
        except OSError as exc:  # the config applies all the same; only the count may restart
            log.warning("could not record config version %d: %s", version, exc)

    def reload_if_changed(self) -> bool:
        """Apply routing.toml if it changed on disk; keep the running config if it is bad."""
        signature = self.routing_file.signature()
        if signature == self.signature:
            return False
        self.signature = signature
        try:
            config = parse_config(self.routing_file.read(), str(self.settings.routing_file))
            self._warn_unguarded(config)
            self.apply(config, who="routing.toml", audit_what="file_edit")
        except (ConfigError, OSError) as exc:
            self.last_reload_error = str(exc)
            self.metrics.reload_failures.inc()
            log.warning("routing config refused, the running one stays: %s", exc)
            return False
        log.info("routing config applied (version %d)", self.state.current.version)
        return True

    def _warn_unguarded(self, config: RoutingConfig) -> None:
        """A hand edit may take a gated step without its gates, or move writes without the
        fence; it is the operator's escape hatch, so it is applied, but said loudly."""
        current = self.state.current.config.capabilities
        for name, capability in config.capabilities.items():
            before = current.get(name)
            if before is None:
                continue
            step = gated_step(
                before.phase, capability.phase, before.canary_percent, capability.canary_percent
            )
            if step is not None:
                log.warning(
                    "routing.toml took %s's step %s by hand: its gates were not checked "
                    "(audited as unchecked); `strangler advance %s` checks them",
                    name,
                    step,
                    name,
                )
            old, new = routing_of(before.phase).writes, routing_of(capability.phase).writes
            if old is not new:
                log.warning(
                    "routing.toml moved %s's writes from %s to %s by hand, without the write "
                    "fence: writes in flight or not yet relayed may conflict; run "
                    "`strangler reconcile %s`",
                    name,
                    old.value,
                    new.value,
                    name,
                )

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval_seconds)
            try:
                self.reload_if_changed()
            except Exception:  # the watcher must outlive any single bad reload
                log.exception("routing config reload crashed")

    async def _poll_sync_positions(self) -> None:
        """Release read-your-writes pins as the write side's outbox is delivered.

        Polls only while users are pinned, each pinned side of each capability once per
        interval; a failed poll keeps the pins (they expire after ryw_max_pin_seconds).
        """
        if self.sync_token is None:
            return
        headers = {"Authorization": f"Bearer {self.sync_token}"}
        warned = False
        async with httpx.AsyncClient(timeout=2.0, trust_env=False, headers=headers) as client:
            while True:
                compiled = self.state.current
                await asyncio.sleep(compiled.config.proxy.ryw_poll_interval_seconds)
                for name, sides in self.ryw.pinned().items():
                    route = compiled.capabilities.get(name)
                    if route is None:
                        continue
                    for side in sides:
                        origin = route.upstream(side).config.origin
                        started = time.monotonic()
                        try:
                            response = await client.get(f"{origin}/internal/sync/{name}/lag")
                            response.raise_for_status()
                            lag = response.json()
                            first, last = lag["first_pending_id"], lag["last_id"]
                        except httpx.HTTPStatusError as exc:
                            if exc.response.status_code in (401, 403) and not warned:
                                warned = True
                                log.warning(
                                    "the sync token was refused by %s: read-your-writes pins "
                                    "will last ryw_max_pin_seconds",
                                    origin,
                                )
                            continue
                        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                            # An older side without outbox positions counts as unknown, never
                            # as "nothing pending".
                            log.debug("sync position of %s on %s unknown: %r", name, side, exc)
                            continue
                        try:
                            self.ryw.settle(name, side, started, first, last)
                        except Exception:  # the poller must outlive one bad answer
                            log.exception("read-your-writes poll of %s failed", origin)

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
                "fence": self.fences.of(name).snapshot(),
            }
        return {
            "config_version": compiled.version,
            "last_reload_error": self.last_reload_error,
            "capabilities": capabilities,
            "read_your_writes": self.ryw.snapshot(),
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
                self._poller = asyncio.create_task(self._poll_sync_positions())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for task in (self._watcher, self._poller):
                    if task is not None:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                await self.shadow.stop()
                await self.state.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: ProxySettings | None = None) -> ProxyRuntime:
    """Build the proxy; raises ConfigError when routing.toml cannot be used."""
    return ProxyRuntime(settings or ProxySettings())
