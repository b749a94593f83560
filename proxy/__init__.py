"""The routing proxy in front of the monolith and the extracted services (built in step 2).

It is its own deployable: it never imports `legacy_monolith` or `extracted`, and neither of
them imports it (boundaries.toml holds that).
"""
