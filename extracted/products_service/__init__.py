"""The products capability, extracted into its own service with its own database.

Its code began as a copy of `legacy_monolith/products`, which is how a strangler-fig
extraction moves a capability: the copies diverge on purpose (this one takes reservations and
writes the reverse outbox), and the monolith's is deleted when the phase reaches
`decommissioned`.

It serves the same products API as the monolith (the contract suite in tests/contract proves
it), verifies the tokens the monolith's users capability issues with the public key alone,
applies change events from the monolith through the toolkit's sync API, and after writes cut
over records its own changes in its outbox for the reverse relay. It never imports
`legacy_monolith`.
"""
