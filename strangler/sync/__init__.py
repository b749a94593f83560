"""Data sync between the two sides of a capability: one protocol, one apply path.

- `events`: the change event every side speaks.
- `tables`: the outbox, dead letters, tombstones and relay lease a side keeps for an entity.
- `outbox`: recording a change in the same transaction as the change itself.
- `apply`: the one idempotent, versioned apply path (relay, backfill and repair all use it).
- `relay`: moving outbox events to the other side, at least once, in order.
- `checksums`: row and range checksums both sides compute the same way, for reconcile.
- `client`: the HTTP client of a side's internal sync API.
- `backfill`, `reconcile`: the CLI's bulk operations over those APIs.
"""
