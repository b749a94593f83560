"""The legacy e-commerce monolith: one FastAPI app, one database, three capabilities.

Each capability (`users`, `products`, `orders`) is a package whose `__init__` is its public
interface; everything else inside it is private (boundaries.toml holds that). `platform` is the
shared kernel they all stand on; `app` is the composition root that puts them together.
"""
