"""Credentials: argon2id password hashes, signed expiring access tokens, API keys.

Why these choices: argon2id is the OWASP-recommended password KDF; access tokens are short-lived
HS256 JWTs carrying only the user id (roles and organisation are read from the database on every
request, so a demotion or deactivation is effective at once); API keys are 256-bit random secrets,
so a fast SHA-256 of the key is as safe to store as a slow KDF and costs nothing per request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id, library defaults (RFC 9106 low-memory profile)
# Verified when the e-mail is unknown, so a login takes as long for a wrong e-mail as for a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

API_KEY_PREFIX = "vsk_"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def issue_token(secret: str, user_id: int, ttl_s: int) -> tuple[str, int]:
    now = int(time.time())
    token = jwt.encode({"sub": str(user_id), "iat": now, "exp": now + ttl_s, "typ": "access"}, secret,
                       algorithm="HS256")
    return token, ttl_s


# Tokens whose signature has been verified: token -> (secret, user id, expiry). A client sends the
# same token with every request for its lifetime; verifying the HMAC and parsing the claims again
# each time was a noticeable share of a request's CPU. Expiry is still checked on every use; the
# secret is part of the entry, so a rotated secret invalidates it.
_VERIFIED: dict[str, tuple[str, int, int]] = {}
_VERIFIED_MAX = 50_000


def read_token(secret: str, token: str) -> int | None:
    """The user id of a valid, unexpired token; None otherwise."""
    hit = _VERIFIED.get(token)
    if hit is not None and hit[0] == secret:
        return hit[1] if time.time() < hit[2] else None
    verified = _verify_token(secret, token)
    if verified is None:
        return None
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()  # crude but bounded; re-verifying a burst of tokens is cheap
    _VERIFIED[token] = (secret, *verified)
    return verified[0]


def _verify_token(secret: str, token: str) -> tuple[int, int] | None:
    """(user id, expiry) of a token with a valid signature, unexpired, of type access."""
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp", "sub"]})
    except jwt.PyJWTError:
        return None
    if claims.get("typ") != "access":
        return None
    try:
        return int(claims["sub"]), int(claims["exp"])
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class NewApiKey:
    prefix: str
    secret: str  # shown once

    @property
    def token(self) -> str:
        return f"{self.prefix}.{self.secret}"


def new_api_key() -> NewApiKey:
    return NewApiKey(API_KEY_PREFIX + secrets.token_hex(6), secrets.token_urlsafe(32))


def api_key_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def split_api_key(token: str) -> tuple[str, str] | None:
    prefix, dot, secret = token.partition(".")
    if not dot or not prefix.startswith(API_KEY_PREFIX) or not secret:
        return None
    return prefix, secret


def api_key_matches(stored_hash: bytes, secret: str) -> bool:
    return hmac.compare_digest(bytes(stored_hash), api_key_hash(secret))
