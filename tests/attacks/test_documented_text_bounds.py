"""Every text field is held to the bounds its OpenAPI document states, white space included.

Each app (the monolith, the products service) is built in process by its own `create_app`,
over SQLite databases in `tmp_path`. Its document is walked for every string with a
`minLength`, `maxLength` or `pattern`: each property of each JSON request body (nested ones,
and the string option of a nullable one, included) and each path and query parameter (not
headers: HTTP trims a field value's spaces and tabs before any app sees it). Every
such field gets the same deterministic values (`boundary_values`): exactly `maxLength` and
`minLength` characters and one past each; `maxLength` and `maxLength - 1` characters with
U+00A0, U+3000, a tab or a space before or after them, and one character of every Unicode
White_Space kind before or after `maxLength` characters; the baseline value with white space
at both ends; values that are only white space; and one holding NUL.

The document's verdict on each value is computed here, as JSON Schema defines it: length in
code points, the pattern an ECMAScript regular expression searched for, not matched (see
`python_pattern`). The app must agree: a value the document accepts gets past validation (the
operation's ordinary answer, never 422), one it refuses is a 422 problem+json naming that field
and no other. Passing validation is what is compared, so each baseline is chosen to make the
answer to a valid value cheap and known: registering an email that is taken is a 409, which
hashes no password.

The defect this holds: the apps stripped white space before counting (pydantic's
`strip_whitespace`), the document counts the string as sent, so a 201-character name starting
with U+00A0 was registered (201) against a documented `maxLength` of 200.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import tomlkit
from fastapi import FastAPI
from pydantic import SecretStr

from extracted.products_service.app import create_app as create_service
from extracted.products_service.migrate import upgrade_to_head as migrate_service
from extracted.products_service.settings import ProductsServiceSettings
from legacy_monolith.app import create_app as create_monolith
from legacy_monolith.migrate import upgrade_to_head as migrate_monolith
from legacy_monolith.platform.settings import MonolithSettings
from tests.support.factories import product_body, unique
from tests.support.problems import assert_problem, problem_fields

SYNC_TOKEN = "text-bounds-sync-token"

WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)
"""Unicode's White_Space property (PropList.txt), spelled out here rather than taken from the
code under test."""

NAMED_SPACES = {"U+00A0": "\xa0", "U+3000": "\u3000", "tab": "\t", "space": " "}


# -- what the document says, as JSON Schema means it -----------------------------------------
def python_pattern(pattern: str) -> str:
    """An ECMAScript pattern (JSON Schema's dialect) as a Python `re` pattern that matches the
    same strings: `$` is the end of the text (Python's `$` also matches before a final
    newline), `.` excludes every line terminator, `\\d` is ASCII digits only. Escapes this
    does not translate fail loudly rather than mean something else."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            escape = pattern[i + 1]
            if escape == "d":
                out.append("0-9" if in_class else "[0-9]")
            elif escape in "xu":
                width = 4 if escape == "x" else 6
                assert re.fullmatch(r"[0-9a-fA-F]+", pattern[i + 2 : i + width]), pattern
                out.append(pattern[i : i + width])
                i += width
                continue
            elif escape.isalnum() and escape not in "tnrfv":
                raise AssertionError(f"teach python_pattern \\{escape} first: {pattern}")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
            out.append(c)
        elif c == "[":
            # ECMAScript's [] and [^] are "nothing" and "anything"; Python reads a literal ]
            assert not pattern.startswith(("]", "^]"), i + 1), pattern
            in_class = True
            out.append(c)
        elif c == "$":
            out.append(r"\Z")
        elif c == ".":
            out.append("[^\n\r\u2028\u2029]")
        elif c == "(" and pattern[i + 1] == "?":
            assert pattern[i + 2] in ":=!", f"teach python_pattern (?{pattern[i + 2]}: {pattern}"
            out.append(c)
        else:
            out.append(c)
        i += 1
    return "".join(out)


def documented(schema: dict[str, Any], value: str) -> bool:
    """Whether the document's string schema admits `value`."""
    if len(value) < schema.get("minLength", 0):
        return False
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        return False
    return (
        "pattern" not in schema or re.search(python_pattern(schema["pattern"]), value) is not None
    )


def test_the_translated_patterns_mean_what_ecmascript_means() -> None:
    assert documented({"pattern": "^a$"}, "a") and not documented({"pattern": "^a$"}, "a\n")
    assert not documented({"pattern": r"^\d$"}, "\u0661")  # ARABIC-INDIC DIGIT ONE
    assert not documented({"pattern": "^.$"}, "\u2028") and documented({"pattern": "b"}, "abc")
    assert documented({"maxLength": 1}, "\U0001f6d2") and not documented({"minLength": 2}, "é")
    assert {c for c in map(chr, range(0x10000)) if c.isspace()} - set(WHITE_SPACE) == set(
        "\x1c\x1d\x1e\x1f"  # Python's isspace, not Unicode's White_Space
    )


# -- the apps, in process --------------------------------------------------------------------
@dataclass
class Apps:
    monolith: httpx.AsyncClient
    service: httpx.AsyncClient
    token: str
    email: str
    password: str

    def headers(self, path: str) -> dict[str, str]:
        token = SYNC_TOKEN if path.startswith("/internal/") else self.token
        return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def _serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            yield client


@asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[Apps]:
    """The monolith (phase `monolith`: it serves its product writes) and the products service
    (phase `writes_cutover`: so does it), each over its own migrated SQLite database, and an
    account whose token both accept."""
    keys = {"jwt_public_key_file": tmp_path / "jwt-public.pem"}
    token = SecretStr(SYNC_TOKEN)
    monolith_db = f"sqlite:///{tmp_path}/monolith.db"
    service_db = f"sqlite:///{tmp_path}/service.db"
    migrate_monolith(monolith_db)
    migrate_service(service_db)
    routing = tmp_path / "routing.toml"
    routing.write_text(tomlkit.dumps({"capabilities": {"products": {"phase": "writes_cutover"}}}))
    monolith = create_monolith(
        MonolithSettings(
            database_url=monolith_db,
            jwt_private_key_file=tmp_path / "jwt-private.pem",
            routing_file=None,
            sync_token=token,
            **keys,
        )
    )
    service = create_service(
        ProductsServiceSettings(
            database_url=service_db, routing_file=routing, sync_token=token, **keys
        )
    )
    async with _serving(monolith) as m, _serving(service) as s:
        email, password = f"{unique('bounds')}@example.com", "s3cret-pass"
        body = {"email": email, "password": password, "name": "Ada"}
        assert (await m.post("/users/register", json=body)).status_code == 201
        login = await m.post("/users/login", json={"email": email, "password": password})
        yield Apps(m, s, login.json()["access_token"], email, password)


# -- baselines: one valid request per operation whose text fields are tested ------------------
@dataclass
class Request:
    method: str
    path: str
    path_params: dict[str, str] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    body: Any = None


@dataclass(frozen=True)
class Baseline:
    make: Callable[[Apps, httpx.AsyncClient], Awaitable[Request]]
    passes: frozenset[int]
    """What a request that got past validation is answered."""
    unique_keys: tuple[str, ...] = ()
    """Body keys whose value must be new in each request (a sku, a reservation id)."""

    def renewed(self, request: Request) -> Request:
        if not self.unique_keys:
            return request
        return replace(request, body={**request.body, **{k: unique(k) for k in self.unique_keys}})


async def _product(apps: Apps, client: httpx.AsyncClient, **overrides: Any) -> int:
    body = product_body(**overrides)
    created = await client.post("/products", json=body, headers=apps.headers("/"))
    assert created.status_code == 201, created.text
    product_id: int = created.json()["id"]
    return product_id


async def _register(apps: Apps, client: httpx.AsyncClient) -> Request:
    # The email is taken: a name or password that passes validation is a 409, unhashed.
    body = {"email": apps.email, "password": "p" * 8, "name": "N"}
    return Request("POST", "/users/register", body=body)


async def _login(apps: Apps, client: httpx.AsyncClient) -> Request:
    body = {"email": apps.email, "password": apps.password}
    return Request("POST", "/users/login", body=body)


async def _list_products(apps: Apps, client: httpx.AsyncClient) -> Request:
    for _ in range(2):
        await _product(apps, client)
    page = await client.get("/products", params={"limit": 1})
    return Request("GET", "/products", query={"limit": 1, "cursor": page.json()["next_cursor"]})


async def _create_product(apps: Apps, client: httpx.AsyncClient) -> Request:
    return Request("POST", "/products", body=product_body())


async def _patch_product(apps: Apps, client: httpx.AsyncClient) -> Request:
    product_id = str(await _product(apps, client))
    path = "/products/{product_id}"
    return Request("PATCH", path, {"product_id": product_id}, body=product_body())


async def _apply_events(apps: Apps, client: httpx.AsyncClient) -> Request:
    event = {"entity": "products", "key": 2_000_000_000, "version": 1, "op": "delete"}
    event["trace_context"] = f"00-{'1' * 32}-{'2' * 16}-01"
    path = "/internal/sync/{entity}/events"
    return Request("POST", path, {"entity": "products"}, body={"events": [event]})


async def _reserve(apps: Apps, client: httpx.AsyncClient) -> Request:
    item = {"product_id": await _product(apps, client, stock=1_000_000), "quantity": 1}
    body = {"reservation_id": unique("r"), "items": [item]}
    return Request("POST", "/internal/products/reservations", body=body)


async def _release(apps: Apps, client: httpx.AsyncClient) -> Request:
    path = "/internal/products/reservations/{reservation_id}"
    return Request("DELETE", path, {"reservation_id": unique("r")})


BASELINES: dict[str, Baseline] = {
    "POST /users/register": Baseline(_register, frozenset({409})),
    "POST /users/login": Baseline(_login, frozenset({200, 401})),
    # a cursor this API did not issue is a documented 400
    "GET /products": Baseline(_list_products, frozenset({200, 400})),
    "POST /products": Baseline(_create_product, frozenset({201}), ("sku",)),
    # 409: an earlier case's product holds that sku
    "PATCH /products/{product_id}": Baseline(_patch_product, frozenset({200, 409}), ("sku",)),
    "POST /internal/sync/{entity}/events": Baseline(_apply_events, frozenset({200})),
    "POST /internal/products/reservations": Baseline(
        _reserve, frozenset({201}), ("reservation_id",)
    ),
    "DELETE /internal/products/reservations/{reservation_id}": Baseline(_release, frozenset({200})),
}


# -- the fields the document bounds ----------------------------------------------------------
Where = tuple[str | int, ...]


@dataclass(frozen=True)
class TextField:
    operation: str
    location: str  # "body", "path" or "query"
    where: Where
    schema: dict[str, Any]

    @property
    def error_field(self) -> str:
        """How a problem's `errors` name this field."""
        dotted = ".".join(map(str, self.where))
        return dotted if self.location == "body" else f"{self.location}.{dotted}"


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _bounded(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any] | None:
    schema = _resolve(document, schema)
    for option in schema.get("anyOf", []):
        found = _bounded(document, option)
        if found:
            return found
    keys = {"minLength", "maxLength", "pattern"}
    return schema if schema.get("type") == "string" and keys & schema.keys() else None


def _body_fields(
    document: dict[str, Any], schema: dict[str, Any], at: Where
) -> Iterator[tuple[Where, dict[str, Any]]]:
    schema = _resolve(document, schema)
    for option in schema.get("anyOf", []) + schema.get("allOf", []):
        yield from _body_fields(document, option, at)
    if schema.get("type") == "array" and "items" in schema:
        yield from _body_fields(document, schema["items"], (*at, 0))
    for name, prop in schema.get("properties", {}).items():
        bounded = _bounded(document, prop)
        if bounded:
            yield (*at, name), bounded
        yield from _body_fields(document, prop, (*at, name))


def text_fields(document: dict[str, Any]) -> Iterator[TextField]:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            label = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                bounded = _bounded(document, parameter["schema"])
                if parameter["in"] in ("path", "query") and bounded:
                    yield TextField(label, parameter["in"], (parameter["name"],), bounded)
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                for where, bounded in _body_fields(
                    document, content["application/json"]["schema"], ()
                ):
                    yield TextField(label, "body", where, bounded)


# -- the values ------------------------------------------------------------------------------
def boundary_values(schema: dict[str, Any], baseline: str) -> dict[str, str]:
    """Named values at and around the schema's bounds, padded with white space.

    At a length bound, white space goes at the start and at the end separately (it decides
    the verdict there); around the baseline value, at both ends at once, with "every white
    space" before and after it on its own: a field without length bounds (the login's, each
    value an Argon2 verification) gets a dozen values, not forty."""
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    values = {"baseline": baseline, "baseline with NUL": baseline + "\x00"}
    at_bounds = {}
    if high is not None:
        at_bounds = {f"{high} x": "x" * high, f"{high - 1} x": "x" * (high - 1)}
        values |= {f"{high} x": "x" * high, f"{high + 1} x": "x" * (high + 1)}
    if low:
        values |= {f"{low} x": "x" * low, f"{low - 1} x": "x" * (low - 1)}
    counts = ([low] if low > 1 else []) + ([high, high + 1] if high is not None else [])
    for kind, space in NAMED_SPACES.items():
        values[f"{kind} + baseline + {kind}"] = space + baseline + space
        for name, core in at_bounds.items():
            values |= {f"{kind} + {name}": space + core, f"{name} + {kind}": core + space}
        values[f"{kind} alone"] = space
        values |= {f"{count} {kind}": space * count for count in counts}
    values |= {
        "every white space": WHITE_SPACE,
        "every white space + baseline": WHITE_SPACE + baseline,
        "baseline + every white space": baseline + WHITE_SPACE,
    }
    for space in WHITE_SPACE if high is not None else "":
        kind = f"U+{ord(space):04X}"
        values |= {
            f"{kind} + {high} x": space + "x" * high,
            f"{high} x + {kind}": "x" * high + space,
        }
    return values


def _set(body: Any, where: Where, value: str) -> Any:
    body = copy.deepcopy(body)
    node = body
    for step in where[:-1]:
        node = node[step]
    node[where[-1]] = value
    return body


def _baseline_value(request: Request, text: TextField) -> str:
    if text.location == "path":
        return request.path_params[str(text.where[0])]
    if text.location == "query":
        return str(request.query[str(text.where[0])])
    node = request.body
    for step in text.where:
        node = node[step]
    return str(node)


async def send(
    apps: Apps, client: httpx.AsyncClient, request: Request, text: TextField, value: str
) -> httpx.Response:
    path_params, query, body = dict(request.path_params), dict(request.query), request.body
    if text.location == "path":
        path_params[str(text.where[0])] = value
    elif text.location == "query":
        query[str(text.where[0])] = value
    else:
        body = _set(body, text.where, value)
    url = request.path
    for name, param in path_params.items():
        url = url.replace("{" + name + "}", quote(param, safe=""))
    headers = apps.headers(request.path)
    return await client.request(request.method, url, params=query, json=body, headers=headers)


@dataclass
class Tally:
    fields: set[str] = field(default_factory=set)
    accepted: int = 0
    refused: int = 0


def disagreement(
    text: TextField, passes: frozenset[int], value: str, answer: httpx.Response
) -> str:
    """What is wrong with `answer` to `value` in `text`, by the document; "" when nothing."""
    if documented(text.schema, value):
        if answer.status_code in passes:
            return ""
        return f"documented valid, answered {answer.status_code} {answer.text[:300]}"
    if answer.status_code != 422:
        return f"documented invalid, answered {answer.status_code}"
    named = problem_fields(assert_problem(answer, 422))
    return "" if named == {text.error_field} else f"the 422 names {sorted(named)}"


async def hold_to_the_document(apps: Apps, client: httpx.AsyncClient) -> Tally:
    """Send every text field of `client`'s app its boundary values; every disagreement with
    the document is collected, then reported together."""
    tally, failures = Tally(), []
    document = (await client.get("/openapi.json")).json()
    for text in text_fields(document):
        assert text.operation in BASELINES, f"{text.operation}: give it a baseline in BASELINES"
        baseline = BASELINES[text.operation]
        tally.fields.add(f"{text.operation} {text.error_field}")
        template = await baseline.make(apps, client)
        verdicts = set()
        for name, value in boundary_values(text.schema, _baseline_value(template, text)).items():
            if text.location == "path" and not value:
                continue  # an empty path segment is another URL, not this parameter
            answer = await send(apps, client, baseline.renewed(template), text, value)
            valid = documented(text.schema, value)
            verdicts.add(valid)
            tally.accepted += valid
            tally.refused += not valid
            wrong = disagreement(text, baseline.passes, value, answer)
            if wrong:
                where = f"{text.operation} {text.error_field} <- {name} ({len(value)} chars)"
                failures.append(f"{where}: {wrong}")
        assert verdicts == {True, False}, f"{text.operation} {text.error_field}: one-sided values"
    assert not failures, f"{len(failures)} disagreement(s):\n" + "\n".join(failures)
    return tally


KNOWN = {
    "monolith": {
        "POST /users/register name",
        "POST /users/register password",
        "POST /users/login email",
        "POST /products sku",
        "POST /products price",
        "PATCH /products/{product_id} name",
        "GET /products query.cursor",
        "POST /internal/sync/{entity}/events events.0.trace_context",
    },
    "service": {
        "POST /products name",
        "PATCH /products/{product_id} description",
        "POST /internal/products/reservations reservation_id",
        "DELETE /internal/products/reservations/{reservation_id} path.reservation_id",
    },
}
"""Fields the walk must find (not all it finds): a walk that stops finding fields fails."""


@pytest.mark.parametrize("app", ["monolith", "service"])
def test_every_documented_text_bound_is_the_bound_the_app_holds(tmp_path: Path, app: str) -> None:
    async def run() -> Tally:
        async with running(tmp_path) as apps:
            client = apps.monolith if app == "monolith" else apps.service
            return await hold_to_the_document(apps, client)

    tally = asyncio.run(run())
    assert KNOWN[app] <= tally.fields, KNOWN[app] - tally.fields
    print(
        f"\n{app}: {len(tally.fields)} text fields, {tally.accepted + tally.refused} values: "
        f"{tally.accepted} documented valid and passed, {tally.refused} documented invalid, 422"
    )


def test_a_201_character_name_starting_with_a_no_break_space_is_refused(tmp_path: Path) -> None:
    """The fuzz's find: stripped before it was counted, it was 200 characters and registered."""

    async def run() -> httpx.Response:
        async with running(tmp_path) as apps:
            name = "\xa0" + "x" * 200
            body = {"email": f"{unique('nbsp')}@example.com", "password": "pass" * 2, "name": name}
            return await apps.monolith.post("/users/register", json=body)

    assert problem_fields(assert_problem(asyncio.run(run()), 422)) == {"name"}


def test_white_space_within_the_bounds_is_trimmed_after_the_check(tmp_path: Path) -> None:
    """200 characters as sent, white space around a 198-character name: valid as documented,
    and kept without the white space, as before."""

    async def run() -> list[httpx.Response]:
        async with running(tmp_path) as apps:
            name = "\xa0" + "x" * 198 + "\u3000"
            body = {"email": f"{unique('trim')}@example.com", "password": "pass" * 2, "name": name}
            answers = [await apps.monolith.post("/users/register", json=body)]
            for client in (apps.monolith, apps.service):
                body = product_body(name=f" {'y' * 198}\t")
                answers.append(await client.post("/products", json=body, headers=apps.headers("/")))
            return answers

    user, *products = asyncio.run(run())
    assert user.status_code == 201, user.text
    assert user.json()["name"] == "x" * 198
    for product in products:
        assert product.status_code == 201, product.text
        assert product.json()["name"] == "y" * 198


def test_an_email_with_white_space_around_it_is_refused_as_its_format_says(tmp_path: Path) -> None:
    """`format: email` has no bounds or pattern for the walk above, and no room for white
    space either; pydantic's EmailStr stripped it before checking the address."""

    async def run() -> list[httpx.Response]:
        async with running(tmp_path) as apps:
            answers = []
            for space in NAMED_SPACES.values():
                for email in (
                    f"{space}{unique('pad')}@example.com",
                    f"{unique('pad')}@x.org{space}",
                ):
                    body = {"email": email, "password": "pass" * 2, "name": "N"}
                    answers.append(await apps.monolith.post("/users/register", json=body))
            return answers

    for answer in asyncio.run(run()):
        assert problem_fields(assert_problem(answer, 422, "white space")) == {"email"}
