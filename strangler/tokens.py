"""Access tokens: issued by the users capability, verified by every app that serves users.

Tokens are RS256 JWTs. The issuer holds the private key; verifiers need only the public key, so
an extracted service can check tokens without sharing a secret with the monolith. Verification
pins the algorithm and requires exp, iat, iss, aud and sub: PyJWT accepts a token without `exp`
unless told otherwise, and an unpinned algorithm invites the "HS256 signed with the RSA public
key" confusion.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = [
    "ALGORITHM",
    "InvalidToken",
    "KeyPair",
    "TokenIssuer",
    "TokenPolicy",
    "TokenVerifier",
    "load_or_create_keypair",
    "publish_public_key",
]

ALGORITHM = "RS256"
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]


class InvalidToken(Exception):
    """The token is missing, malformed, forged, expired or meant for someone else."""


@dataclass(frozen=True, kw_only=True)
class TokenPolicy:
    """What every token must say about where it comes from and whom it is for."""

    issuer: str
    audience: str
    leeway_seconds: int = 5


@dataclass(frozen=True)
class KeyPair:
    private_pem: bytes
    public_pem: bytes


class TokenIssuer:
    """Signs access tokens for a user id."""

    def __init__(self, private_pem: bytes, policy: TokenPolicy, *, ttl_seconds: int) -> None:
        self._key = serialization.load_pem_private_key(private_pem, password=None)
        self._policy = policy
        self._ttl = ttl_seconds

    def issue(self, subject: str, *, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        claims = {
            "sub": subject,
            "iss": self._policy.issuer,
            "aud": self._policy.audience,
            "iat": issued,
            "exp": issued + self._ttl,
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)  # type: ignore[arg-type]


class TokenVerifier:
    """Checks a bearer token and returns its subject."""

    def __init__(self, public_pem: bytes, policy: TokenPolicy) -> None:
        self._key = serialization.load_pem_public_key(public_pem)
        self._policy = policy

    def subject(self, token: str) -> str:
        """Return the token's `sub`, or raise InvalidToken saying what is wrong with it."""
        try:
            claims = jwt.decode(
                token,
                self._key,  # type: ignore[arg-type]
                algorithms=[ALGORITHM],
                audience=self._policy.audience,
                issuer=self._policy.issuer,
                leeway=self._policy.leeway_seconds,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from exc
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("Token subject must be a non-empty string")
        return subject


def load_or_create_keypair(private_key_file: Path) -> KeyPair:
    """Read the PEM private key at `private_key_file`, generating it first if it does not exist.

    Generation is for development and tests; production points the setting at a managed key.
    Two processes racing to create the file end up with the same key: the loser of the
    hard-link race reads the winner's file.
    """
    if not private_key_file.exists():
        private_key_file.parent.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        scratch = private_key_file.with_name(f".{private_key_file.name}.{os.getpid()}")
        scratch.write_bytes(pem)
        os.chmod(scratch, 0o600)
        try:
            os.link(scratch, private_key_file)
        except FileExistsError:
            pass
        finally:
            scratch.unlink()
    private_pem = private_key_file.read_bytes()
    private_key = serialization.load_pem_private_key(private_pem, password=None)
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(private_pem=private_pem, public_pem=public_pem)


def publish_public_key(keys: KeyPair, path: Path) -> None:
    """Write the public key where verifying services read it (atomically, only if changed)."""
    if path.exists() and path.read_bytes() == keys.public_pem:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    scratch.write_bytes(keys.public_pem)
    os.replace(scratch, path)
