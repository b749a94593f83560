"""Access tokens: what is issued verifies, and every forged or misdirected token is refused."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from strangler.tokens import (
    InvalidToken,
    KeyPair,
    TokenIssuer,
    TokenPolicy,
    TokenVerifier,
    load_or_create_keypair,
)

POLICY = TokenPolicy(issuer="shop", audience="shop-api", leeway_seconds=0)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return load_or_create_keypair(tmp_path_factory.mktemp("keys") / "key.pem")


@pytest.fixture(scope="module")
def verifier(keys: KeyPair) -> TokenVerifier:
    return TokenVerifier(keys.public_pem, POLICY)


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "42",
        "iss": "shop",
        "aud": "shop-api",
        "iat": now,
        "exp": now + 60,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(keys: KeyPair, **changes: Any) -> str:
    return jwt.encode(_claims(**changes), keys.private_pem, algorithm="RS256")


def test_an_issued_token_verifies_to_its_subject(keys: KeyPair, verifier: TokenVerifier) -> None:
    token = TokenIssuer(keys.private_pem, POLICY, ttl_seconds=60).issue("42")
    assert verifier.subject(token) == "42"


FORGERIES = {
    "expired": lambda k: _signed(k, exp=int(time.time()) - 1),
    "not yet valid": lambda k: _signed(k, nbf=int(time.time()) + 3600),
    "wrong audience": lambda k: _signed(k, aud="someone-else"),
    "wrong issuer": lambda k: _signed(k, iss="evil"),
    "no exp": lambda k: _signed(k, exp=None),
    "no iat": lambda k: _signed(k, iat=None),
    "no sub": lambda k: _signed(k, sub=None),
    "no aud": lambda k: _signed(k, aud=None),
    "empty sub": lambda k: _signed(k, sub=""),
    "alg none": lambda k: jwt.encode(_claims(), None, algorithm="none"),
    "HS256 keyed with the public key": lambda k: _hs256_with_public_key(k),
    "signed by another key": lambda k: jwt.encode(_claims(), _other_key(), algorithm="RS256"),
    "garbage": lambda k: "not.a.token",
}


def _hs256_with_public_key(keys: KeyPair) -> str:
    import hashlib
    import hmac
    import json

    from jwt.utils import base64url_encode

    header = base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = base64url_encode(json.dumps(_claims()).encode())
    signing_input = header + b"." + payload
    signature = hmac.new(keys.public_pem, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64url_encode(signature)).decode()


def _other_key() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize("forge", FORGERIES.values(), ids=list(FORGERIES))
def test_a_forged_or_misdirected_token_is_refused(
    keys: KeyPair, verifier: TokenVerifier, forge: Any
) -> None:
    with pytest.raises(InvalidToken):
        verifier.subject(forge(keys))


def test_a_created_key_is_kept_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "key.pem"
    first = load_or_create_keypair(path)
    assert load_or_create_keypair(path) == first
    assert path.stat().st_mode & 0o777 == 0o600


# Each process generates its own key, says so, and waits for the test's word before going on:
# both are then past the "does the file exist?" check and race to put their key in place.
RACER = """
import hashlib, sys
from pathlib import Path
import strangler.tokens as tokens

generate = tokens.rsa.generate_private_key

def generate_then_wait(*args, **kwargs):
    key = generate(*args, **kwargs)
    print("generated", flush=True)
    sys.stdin.readline()
    return key

tokens.rsa.generate_private_key = generate_then_wait
keys = tokens.load_or_create_keypair(Path(sys.argv[1]))
print(hashlib.sha256(keys.private_pem).hexdigest(), flush=True)
"""


def test_two_processes_creating_the_key_at_once_share_one(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "key.pem"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for racer in racers:  # the barrier: both hold a key of their own, neither has linked
            assert racer.stdout is not None
            said = racer.stdout.readline()
            assert said == "generated\n", said + (racer.stderr.read() if racer.stderr else "")
        assert not path.exists()
        for racer in racers:  # released together
            assert racer.stdin is not None
            racer.stdin.write("go\n")
            racer.stdin.flush()
        results = [racer.communicate(timeout=60) for racer in racers]
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
                racer.wait()
    assert [racer.returncode for racer in racers] == [0, 0], [err for _, err in results]
    on_disk = hashlib.sha256(path.read_bytes()).hexdigest()
    assert [out.strip() for out, _ in results] == [on_disk, on_disk]  # both use the one key
    assert [p.name for p in path.parent.iterdir()] == ["key.pem"]  # the loser's copy is gone
    assert path.stat().st_mode & 0o777 == 0o600
