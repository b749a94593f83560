"""The migration toolkit both sides of a strangler-fig migration use, and the `strangler` CLI.

It never imports an application package (`legacy_monolith`, `extracted`, `proxy`): the apps
import it. boundaries.toml holds that rule.
"""
