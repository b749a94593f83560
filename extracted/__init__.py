"""Services extracted from the monolith, one package each (products first, in step 3).

They never import `legacy_monolith` or `proxy` (boundaries.toml holds that): an extracted
service shares nothing with the monolith but the HTTP contract and the sync protocol.
"""
