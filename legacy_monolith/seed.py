"""Demo data: a few users and a catalogue of products, loaded idempotently.

Re-running it adds only what is missing, so `strangler up` can seed on every start.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from legacy_monolith import products, users
from strangler.db import Sessions

DEMO_PASSWORD = "demo-password"
DEMO_USERS = [
    ("alice@example.com", "Alice Example"),
    ("bob@example.com", "Bob Example"),
    ("carol@example.com", "Carol Example"),
]
_ADJECTIVES = ["Classic", "Compact", "Deluxe", "Rugged", "Smart", "Silent", "Solar", "Travel"]
_NOUNS = ["Kettle", "Lamp", "Backpack", "Headphones", "Mug", "Notebook", "Umbrella", "Watch"]


@dataclass(frozen=True)
class SeedReport:
    users_added: int
    products_added: int


def demo_products(count: int) -> list[products.ProductCreate]:
    """The same `count` products every time (fixed random seed, SKUs DEMO-00001...)."""
    rng = random.Random(1234)
    items = []
    for n in range(1, count + 1):
        name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {n}"
        items.append(
            products.ProductCreate(
                sku=f"DEMO-{n:05d}",
                name=name,
                description=f"Demo product number {n}.",
                price=f"{rng.randint(1, 500)}.{rng.randint(0, 99):02d}",
                stock=rng.randint(0, 200),
            )
        )
    return items


def seed(sessions: Sessions, *, product_count: int = 1000) -> SeedReport:
    added_users = 0
    for email, name in DEMO_USERS:
        with sessions.write() as session:
            try:
                users.register(
                    session, users.Registration(email=email, password=DEMO_PASSWORD, name=name)
                )
                added_users += 1
            except users.EmailTaken:
                pass
    with sessions.write() as session:
        added_products = products.add_missing_products(session, demo_products(product_count))
    return SeedReport(users_added=added_users, products_added=added_products)
