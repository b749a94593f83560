"""Bucketed range checksums: one read of a range answers every bucket of it, and each bucket's
count and checksum are exactly what asking for that bucket alone gives, with either hash."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from strangler.sync.apply import EntitySpec
from strangler.sync.checksums import available_hashes, range_sums
from strangler.sync.wire import PYTHON_HASH, SQL_HASH, bucket_of, split_range
from tests.support.databases import BACKENDS
from tests.support.things import seed, things_database


@pytest.fixture(scope="module", params=BACKENDS)
def things(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Engine, EntitySpec]]:
    directory: Path = tmp_path_factory.mktemp(f"sums-{request.param}")
    with things_database(request.param, directory) as made:
        yield made


@given(
    lo=st.integers(-1000, 1000),
    size=st.integers(1, 5000),
    buckets=st.integers(1, 6000),
    key=st.integers(0, 4999),
)
def test_bucket_of_finds_the_split_range_piece_holding_a_key(
    lo: int, size: int, buckets: int, key: int
) -> None:
    key = lo + key % size
    piece = split_range(lo, lo + size, buckets)[bucket_of(key, lo, lo + size, buckets)]
    assert piece[0] <= key < piece[1]


def test_each_bucket_sums_what_its_range_alone_sums(things: tuple[Engine, EntitySpec]) -> None:
    engine, spec = things
    keys = sorted(random.Random(5).sample(range(1, 3000), 700))
    rows = [(k, k % 7 + 1, f"thing {k}", k * 3) for k in keys]
    with Session(engine) as session:
        seed(session, spec, rows, {})
        for hash_name in available_hashes(session):
            for lo, hi, buckets in [(1, 3000, 37), (0, 5000, 1), (500, 510, 64), (2990, 4000, 5)]:
                together = range_sums(session, spec, [(lo, hi)], hash_name, buckets)
                alone = [
                    range_sums(session, spec, [piece], hash_name)[0]
                    for piece in split_range(lo, hi, buckets)
                ]
                assert together == alone, (hash_name, lo, hi, buckets)
                assert sum(s["count"] for s in together) == sum(lo <= k < hi for k in keys)
        assert (SQL_HASH in available_hashes(session)) == (engine.dialect.name == "postgresql")
        assert PYTHON_HASH in available_hashes(session)
        session.rollback()
