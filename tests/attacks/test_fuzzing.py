"""Schemathesis fuzzes each app's own OpenAPI document against the app as a real process.

Three targets, each on SQLite and PostgreSQL: the monolith, the products service, and the
routing proxy in front of both (its schema fetched through the proxy, so it is the monolith's
document as clients see it; products reads answered by the service, writes by the monolith).
Every case carries valid credentials (the user's bearer token, the sync token for the
internal APIs) so generated data gets past authentication to the code behind it.

Every check schemathesis has runs, on positive and negative data: no 5xx; every status
code, content type, header and body as documented (problem+json errors included); invalid
data refused; valid data accepted. The few operations where a check cannot hold, and why,
are in `EXCLUDED`; the proxy's own refusal of some paths is explained in `_fuzz_operation`.

Default run: 3 examples per operation and mode, the same ones every run (about 100 requests
per app, 20-30 s of calls for the six targets); the `chaos` run draws 60 fresh ones each
(about 2,000 requests per app).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from proxy.paths import BadPath, normalise_path
from tests.attacks.conftest import Shop, proxy_in_front

DEFAULT_EXAMPLES = 3  # per operation and generation mode
CHAOS_EXAMPLES = 60

# positive_data_acceptance: a schema-valid request must not be refused. Where the refusal
# depends on data no schema can describe, the check is left out for that operation alone;
# every other check (no 5xx, documented status, content type, headers, body) still runs.
STATE_NOT_SCHEMA = [positive_data_acceptance]
EXCLUDED: dict[str, list[schemathesis.CheckFunction]] = {
    # An order naming a product that does not exist is 422 in the stable API (README, "The
    # API"), as is an Idempotency-Key reused for another order: which ids exist and which
    # keys were used is state, not schema.
    "POST /orders": STATE_NOT_SCHEMA,
    # The same for the service's stock reservations (unknown product ids: 422).
    "POST /internal/products/reservations": STATE_NOT_SCHEMA,
    # A cursor is opaque: only a next_cursor this API issued is valid; any other string
    # is a documented 400.
    "GET /products": STATE_NOT_SCHEMA,
    # JSON Schema's "email" format is the address syntax; the API also refuses addresses
    # no mail can reach (special-use domains such as .test or .invalid), a 422 naming email.
    "POST /users/register": STATE_NOT_SCHEMA,
    # At most 100,000 keys a call: a relation between lo and hi, which JSON Schema cannot
    # state about two query parameters.
    "GET /internal/sync/{entity}/rows": STATE_NOT_SCHEMA,
    # at_least maps keys to versions; JSON object keys are strings, and the 32-bit range a
    # key must be in cannot be put on a property name (its pattern only says "an integer").
    "POST /internal/sync/{entity}/reemit": STATE_NOT_SCHEMA,
}


@dataclass
class Tally:
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)


def _proxy_routes(formatted_path: str) -> bool:
    try:
        normalise_path(quote(formatted_path, safe="/%:@!$&'()*+,;=-._~").encode("ascii"))
    except BadPath:
        return False
    return True


def _routable(case: schemathesis.Case) -> bool:
    values = (str(v) for v in (case.path_parameters or {}).values())
    return not any(c in value for value in values for c in "/\\\x00")


def _fuzz_operation(
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    base_url: str,
    headers: dict[str, str],
    examples: int,
    repeatable: bool,
    tally: Tally,
    proxied: bool,
) -> None:
    excluded = EXCLUDED.get(operation.label, [])
    # The internal APIs take their token as a declared `authorization` header parameter: it
    # is fixed in the generated cases. Elsewhere the bearer token is the documented security
    # scheme, sent with each call, so schemathesis knows it is real and checks (ignored_auth)
    # that the same request without it, or with a made-up one, is refused.
    internal = operation.path.startswith("/internal/")
    strategy = operation.as_strategy(mode, headers=headers if internal else None)
    if proxied:
        # The proxy refuses a path holding an encoded slash, a backslash or NUL with a 400 of
        # its own before routing it anywhere (README, "What the proxy guarantees"; tested in
        # tests/proxy): such path parameters are the proxy's business, not the apps' schema.
        strategy = strategy.filter(_routable)

    @given(case=strategy)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=repeatable,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target],  # no shrinking
    )
    def run(case: schemathesis.Case) -> None:
        # The filter above sees the generated values; a negative case may still reach the wire
        # with a path the proxy refuses (a backslash after serialisation): ask the proxy's own
        # rule about the path as it will be sent, and leave those out too.
        assume(not proxied or _proxy_routes(case.formatted_path))
        tally.cases += 1
        response = case.call_and_validate(
            base_url=base_url,
            headers=None if internal else headers,
            excluded_checks=excluded,
            timeout=60,
        )
        tally.statuses[response.status_code] += 1

    run()


def fuzz(
    base_url: str, shop: Shop, examples: int, *, proxied: bool = False, repeatable: bool = True
) -> Tally:
    """Fuzz every operation of the document at `base_url`, positive then negative data;
    every failure of every operation is collected, then reported together. Through the proxy
    (`proxied`), the service-to-service APIs (/internal/...) are left out: they are for the
    apps among themselves, and fuzzed on each app directly. `repeatable` fuzzes with the same
    examples every run (the everyday suite must not pass or fail by luck); the chaos run draws
    new ones each time."""
    api = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    # The bearer token is sent with every call (see _fuzz_operation), not generated: a
    # negative case that "removes" a generated Authorization header would get the real one
    # back and be accepted, which proves nothing about the API.
    api.config.generation.update(with_security_parameters=False)
    tally = Tally()
    failures: list[str] = []
    for result in api.get_all_operations():
        operation = result.ok()
        if proxied and operation.path.startswith("/internal/"):
            continue
        headers = shop.headers_for(operation.path)
        for mode in GenerationMode:
            try:
                _fuzz_operation(
                    operation, mode, base_url, headers, examples, repeatable, tally, proxied
                )
            except Unsatisfiable:
                # Nothing about this operation can be made invalid (no parameters and no
                # body, or only a path segment, which is any string): no negative cases.
                assert mode is GenerationMode.NEGATIVE, operation.label
            # One operation's failures must not hide the others': collect, report together.
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"--- {operation.label} ({mode.value}):\n{exc}")
    assert not failures, "\n\n".join(failures)
    assert tally.cases, "nothing was fuzzed"
    return tally


@dataclass(frozen=True)
class Target:
    name: str
    base_url: str
    proxied: bool


@pytest.fixture(params=["monolith", "service", "proxy"])
def target(
    request: pytest.FixtureRequest, shop: Shop, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    """The app under fuzzing. Through the proxy, only the public API: /internal/... is for
    the services among themselves (fuzzed on each app directly), and the proxy refuses, by
    design, path segments the internal APIs' string parameters may hold (encoded slashes,
    backslashes, NUL) with a 400 of its own."""
    if request.param == "monolith":
        yield Target("monolith", shop.monolith.base_url, proxied=False)
    elif request.param == "service":
        yield Target("service", shop.service.base_url, proxied=False)
    else:
        workdir: Path = tmp_path_factory.mktemp(f"fuzz-proxy-{shop.backend}")
        with proxy_in_front(shop, workdir) as url:
            yield Target("proxy", url, proxied=True)


def _report(target: Target, shop: Shop, tally: Tally) -> None:
    statuses = dict(sorted(tally.statuses.items()))
    print(f"\n{target.name} on {shop.backend}: {tally.cases} requests, statuses {statuses}")


def test_every_operation_answers_as_documented(target: Target, shop: Shop) -> None:
    tally = fuzz(target.base_url, shop, DEFAULT_EXAMPLES, proxied=target.proxied)
    _report(target, shop, tally)


@pytest.mark.chaos
def test_every_operation_answers_as_documented_at_length(target: Target, shop: Shop) -> None:
    tally = fuzz(target.base_url, shop, CHAOS_EXAMPLES, proxied=target.proxied, repeatable=False)
    _report(target, shop, tally)
