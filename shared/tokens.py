"""Connect tokens (in the spirit of netcode.io's): what a lobby hands a player so that a
game server seats them, checked without the server asking anyone.

A token is ``base64url(payload) "." base64url(HMAC-SHA256(key, payload))``, unpadded,
where the payload is the compact JSON ``{"m": match, "n": name, "e": expiry, "a":
address, "r": nonce}``: the match to join ("" for any open one), the player's name,
the expiry in unix seconds, the server's address (``host:port`` of its QUIC endpoint,
as the lobby gave it) and 16 random bytes (base64url). The payload is signed, not
encrypted: it holds nothing secret.

This module is sans-I/O and pure: the clock is passed in. It owns the format,
:func:`issue`, :func:`verify` and :class:`UsedTokens`, the replay guard a server keeps
(a token is good once).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import os
from dataclasses import dataclass

import orjson

KEY_BYTES = 32
NONCE_BYTES = 16
# Long enough to go from the lobby page to the game server over a slow link; short
# enough that a leaked token is soon worthless (netcode.io's default is 30 s).
DEFAULT_TTL_S = 60
# A hello field longer than this is refused before any decoding (a real token is ~200).
MAX_TOKEN = 1024
_MAC_BYTES = hashlib.sha256().digest_size


class TokenRefused(Exception):
    """A connect token that does not admit its bearer; the message is a one-line reason."""


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says."""

    match: str  # a match id, or "" for any open match
    name: str
    expires: int  # unix seconds
    addr: str  # host:port of the server it is for
    nonce: bytes


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    # Strict: only the URL-safe alphabet (the default decoder silently drops other characters).
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


def issue(key: bytes, match: str, name: str, addr: str, now: float, ttl_s: float = DEFAULT_TTL_S) -> str:
    """A token for ``name`` to join ``match`` ("" for any open match) on the server at
    ``addr``, good from ``now`` for ``ttl_s`` seconds."""
    payload = orjson.dumps(
        {"m": match, "n": name, "e": int(now + ttl_s), "a": addr, "r": _b64(os.urandom(NONCE_BYTES))}
    )
    return f"{_b64(payload)}.{_b64(_mac(key, payload))}"


def verify(key: bytes, token: str, now: float, addr: str) -> Claims:
    """The claims of ``token`` if ``key`` signed it, it has not expired at ``now``, and it
    is for the server at ``addr``; else :class:`TokenRefused` saying which."""
    if len(token) > MAX_TOKEN or token.count(".") != 1:
        raise TokenRefused("connect token is malformed")
    body, _, tag = token.partition(".")
    try:
        payload, mac = _unb64(body), _unb64(tag)
    except (binascii.Error, ValueError):
        raise TokenRefused("connect token is malformed (not base64url)") from None
    # The MAC first: nothing an attacker wrote is parsed before it is known to be ours.
    if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, _mac(key, payload)):
        raise TokenRefused("connect token is forged (its signature does not match this server's key)")
    try:
        obj = orjson.loads(payload)
        match, name, expires, where, nonce = obj["m"], obj["n"], obj["e"], obj["a"], _unb64(obj["r"])
    except (orjson.JSONDecodeError, KeyError, TypeError, binascii.Error, ValueError):
        raise TokenRefused("connect token is malformed (bad payload)") from None
    if not (isinstance(match, str) and isinstance(name, str) and isinstance(where, str)) or (
        not isinstance(expires, int) or isinstance(expires, bool) or len(nonce) != NONCE_BYTES
    ):
        raise TokenRefused("connect token is malformed (bad payload)")
    if now >= expires:
        raise TokenRefused(f"connect token expired {now - expires:.0f} s ago; get a new one")
    if where != addr:
        raise TokenRefused(f"connect token is for server {where[:64]}, not this one ({addr})")
    return Claims(match=match, name=name, expires=expires, addr=where, nonce=nonce)


class UsedTokens:
    """The nonces of tokens already used, each kept until its token expires (after that
    :func:`verify` refuses the token anyway): so the set holds at most the tokens issued
    in one lifetime, however long the server runs."""

    def __init__(self) -> None:
        self._expiry: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []  # (expiry, nonce): the next to prune first

    def __len__(self) -> int:
        return len(self._expiry)

    def use(self, claims: Claims, now: float) -> None:
        """Record ``claims`` as used at ``now``; :class:`TokenRefused` if it was before."""
        self.prune(now)
        if claims.nonce in self._expiry:
            raise TokenRefused("connect token used twice; get a new one for each connection")
        self._expiry[claims.nonce] = claims.expires
        heapq.heappush(self._heap, (claims.expires, claims.nonce))

    def prune(self, now: float) -> None:
        """Forget the nonces of tokens expired at ``now``."""
        while self._heap and self._heap[0][0] <= now:
            _, nonce = heapq.heappop(self._heap)
            del self._expiry[nonce]
