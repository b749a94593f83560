"""The migration dashboard on the proxy's admin side: per capability the phase ladder, live
requests per second by side, shadow results with sample diffs, relay lag (each of those three
with a chart of its last five minutes), the last reconcile, breakers and the audit log; with
the admin token, advance (gates shown with their evidence) and rollback. Server-rendered HTML
and SVG with one small script; no front-end build step."""

from proxy.dashboard.routes import create_dashboard_router

__all__ = ["create_dashboard_router"]
