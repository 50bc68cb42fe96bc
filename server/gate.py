"""Who may start a QUIC handshake here, decided before any connection state exists (sans-I/O:
the caller passes ``now``; server/transport.py's Endpoint does the I/O).

A handshake costs the server 2-3 ms of CPU on the event loop and a connection object of
about 180 KiB until it ends, and a spoofed or never-answered Initial costs the same as a
real one. So, for a datagram that would open a connection:

- an Initial shorter than 1200 bytes, or one whose payload does not decrypt under the
  Initial keys (which anyone can derive from its destination connection id) is dropped
  with nothing allocated (``initial_decrypts``);
- connections are capped, per source address and in total (``Connections``, which the
  WebSocket fallback shares), and so are those still in their handshake;
- new connections have a budget, per address and in total (token buckets in server
  time); over it, or with half the places taken, an address that has not shown it
  receives our packets gets a stateless Retry, and one that has (a valid Retry token)
  is dropped and retransmits later;
- Retry tokens (``RetryTokens``) carry the wall-clock time they were issued, expire, and are
  signed with a key derived from the server's key, so that every server of a fleet sharing
  the key validates them.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # (re-exported from aioquic._buffer)
from aioquic.quic.crypto import INITIAL_CIPHER_SUITE, INITIAL_SALT_VERSION_1, INITIAL_SALT_VERSION_2, CryptoContext
from aioquic.quic.packet import QuicHeader, QuicPacketType, QuicProtocolVersion, pull_quic_header
from aioquic.tls import cipher_suite_hash, hkdf_expand_label, hkdf_extract

from tickline.server.ratelimit import KeyedBuckets

SMALLEST_INITIAL = 1200  # RFC 9000 section 14.1: a server drops smaller Initial datagrams
RETRY_TOKEN_LIFETIME_S = 10.0  # a client returns a Retry token at once (RFC 9000 section 8.1.4)
_MAC_BYTES = 16
_TOTAL = ""  # the key of the one bucket for all addresses


@dataclass(frozen=True, slots=True)
class GateSettings:
    """The limits on new QUIC connections; every one is a ``tickline serve`` flag."""

    max_connections: int = 4096  # open connections (QUIC and WebSocket), in total
    max_connections_per_address: int = 64  # ...and from one source address (a household or LAN party)
    max_half_open: int = 256  # connections in their handshake, in total
    max_half_open_per_address: int = 8
    new_per_s: float = 200.0  # new connections a second, in total (bursts of two seconds' worth)
    new_per_s_per_address: float = 20.0  # ...and from one source address
    retry: str = "auto"  # auto: Retry an address when over budget; always; never
    handshake_timeout_s: float = 5.0  # a connection that has not finished its handshake by then is closed

    def validate(self) -> None:
        if self.retry not in RETRY_MODES:
            raise ValueError(f"--retry {self.retry} is unknown; use {', '.join(RETRY_MODES)}")
        if self.max_connections < 1 or self.max_connections_per_address < 1:
            raise ValueError("--max-connections and --max-connections-per-address must be at least 1")
        if self.max_half_open < 1 or self.max_half_open_per_address < 1:
            raise ValueError("--max-half-open and --max-half-open-per-address must be at least 1")
        if not (self.new_per_s > 0 and self.new_per_s_per_address > 0):
            raise ValueError("--new-connections-per-s and --new-connections-per-s-per-address must be positive")
        if not 0.1 <= self.handshake_timeout_s <= 60:
            raise ValueError(f"--handshake-timeout {self.handshake_timeout_s:g} is out of range; use 0.1 to 60 seconds")


RETRY_MODES = ("auto", "always", "never")


class Verdict(Enum):
    ADMIT = "admit"
    RETRY = "retry"
    DROP = "drop"


Address = tuple[str, int]


def initial_decrypts(data: bytes, header: QuicHeader, payload_offset: int) -> bool:
    """Whether the datagram's first packet, an Initial, decrypts under the Initial keys its
    destination connection id gives: a real client's does, random bytes do not. Only the
    client-to-server keys are derived (aioquic's ``CryptoPair.setup_initial`` makes both
    directions): 24 µs against 41 µs a packet, measured."""
    if header.version is None:
        return False
    salt = INITIAL_SALT_VERSION_2 if header.version == QuicProtocolVersion.VERSION_2 else INITIAL_SALT_VERSION_1
    algorithm = cipher_suite_hash(INITIAL_CIPHER_SUITE)
    secret = hkdf_extract(algorithm, salt, header.destination_cid)
    context = CryptoContext()
    try:
        context.setup(
            cipher_suite=INITIAL_CIPHER_SUITE,
            secret=hkdf_expand_label(algorithm, secret, b"client in", b"", algorithm.digest_size),
            version=header.version,
        )
        context.decrypt_packet(data[: header.packet_length], payload_offset, 0)
    except (ValueError, KeyError):  # (aioquic's CryptoError and BufferReadError are ValueErrors)
        return False
    return True


def _address_bytes(addr: Address) -> bytes:
    return ipaddress.ip_address(addr[0]).packed + struct.pack("!H", addr[1])


class RetryTokens:
    """Address-validation tokens for QUIC Retry, in aioquic's ``QuicRetryTokenHandler``'s
    interface: ``time (8) | odcid length (1) | odcid | HMAC-SHA256(key, address | rscid |
    time | odcid)[:16]``. ``clock`` is the wall clock (tokens cross processes); the ``now``
    aioquic passes, its loop's time, is ignored."""

    def __init__(
        self, server_key: bytes, clock: Callable[[], float], lifetime_s: float = RETRY_TOKEN_LIFETIME_S
    ) -> None:
        # A key of its own, so that a Retry token can never pass for a connect token or back.
        self._key = hmac.new(server_key, b"tickline quic retry v1", hashlib.sha256).digest()
        self._clock, self.lifetime_s = clock, lifetime_s

    def _mac(self, address: Address, rscid: bytes, issued_ms: int, odcid: bytes) -> bytes:
        message = _address_bytes(address) + bytes([len(rscid)]) + rscid + struct.pack("!Q", issued_ms) + odcid
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def create_token(
        self,
        *,
        address: Address,
        original_destination_connection_id: bytes,
        retry_source_connection_id: bytes,
        now: float,
    ) -> bytes:
        issued_ms = int(self._clock() * 1000)
        odcid = original_destination_connection_id
        mac = self._mac(address, retry_source_connection_id, issued_ms, odcid)
        return struct.pack("!QB", issued_ms, len(odcid)) + odcid + mac

    def validate_token(self, *, address: Address, destination_cid: bytes, token: bytes, now: float) -> bytes:
        """The original destination connection id the token was issued for; ValueError with why not."""
        if len(token) < 9 + _MAC_BYTES:
            raise ValueError("retry token too short")
        issued_ms, length = struct.unpack_from("!QB", token)
        odcid, mac = token[9 : 9 + length], token[9 + length :]
        if len(odcid) != length or len(mac) != _MAC_BYTES:
            raise ValueError("retry token malformed")
        # A client sends its next Initial to the Retry's source connection id (RFC 9000 17.2.5.2).
        if not hmac.compare_digest(mac, self._mac(address, destination_cid, issued_ms, odcid)):
            raise ValueError("retry token forged, or for another address or connection")
        age = self._clock() - issued_ms / 1000
        if not -1.0 <= age <= self.lifetime_s:  # (a second of clock skew across a fleet)
            raise ValueError(f"retry token expired {age:.1f} s after its issue")
        return odcid


class Connections:
    """Connections by source host, capped per host and in total; ``full`` names the cap
    reached as ``{kind}_total`` or ``{kind}_per_address``."""

    def __init__(self, total: int, per_host: int, kind: str = "connections") -> None:
        self.total, self.per_host, self.kind = total, per_host, kind
        self.open: Counter[str] = Counter()
        self.open_total = 0

    def __len__(self) -> int:
        """Hosts with a connection counted here."""
        return len(self.open)

    def full(self, host: str) -> str:
        """Why ``host`` may not open another connection now ("" when it may)."""
        if self.open_total >= self.total:
            return f"{self.kind}_total"
        if self.open[host] >= self.per_host:
            return f"{self.kind}_per_address"
        return ""

    def opened(self, host: str) -> None:
        self.open[host] += 1
        self.open_total += 1

    def closed(self, host: str) -> None:
        self.open[host] -= 1
        if self.open[host] <= 0:
            del self.open[host]
        self.open_total -= 1


class Gate:
    """The budget and the caps; ``refused`` counts every datagram turned away, by reason.

    A connection admitted here is counted in ``connections`` from ``opened`` until
    ``disconnected``, and in ``half_open`` until ``closed`` (its handshake ended either way)."""

    def __init__(self, settings: GateSettings) -> None:
        self.settings = settings
        self.connections = Connections(settings.max_connections, settings.max_connections_per_address)
        self.half_open = Connections(settings.max_half_open, settings.max_half_open_per_address, "half_open")
        self._total = KeyedBuckets(settings.new_per_s, settings.new_per_s * 2, max_keys=1)
        self._per_address = KeyedBuckets(settings.new_per_s_per_address, settings.new_per_s_per_address * 2)
        self.refused: Counter[str] = Counter()
        self.retries = 0

    @property
    def half_open_total(self) -> int:
        """Connections in their handshake."""
        return self.half_open.open_total

    def refuse(self, reason: str) -> Verdict:
        self.refused[reason] += 1
        return Verdict.DROP

    def admit(self, host: str, validated: bool, now: float) -> Verdict:
        """What to do with a new connection's Initial from ``host``; ``validated``: it carried a
        valid Retry token. On ADMIT the caller must call :meth:`opened` and later :meth:`closed`.

        An address not yet validated may use only half of the half-open places and half of
        the total budget: a flood from spoofed addresses then leaves the other half to
        clients that answered a Retry, which it cannot do."""
        s = self.settings
        crowd = self.connections.full(host)
        if crowd:
            return self.refuse(crowd)  # no Retry: a validated address would find no room either
        full = self.half_open.full(host)
        if not validated and s.retry != "never":
            crowded = (
                full
                or self.half_open.open_total >= s.max_half_open // 2
                or self._total.level(_TOTAL, now) < self._total.burst / 2 + 1
                or self._per_address.level(host, now) < 1
            )
            if s.retry == "always" or crowded:
                self.retries += 1  # stateless, and smaller than what prompted it
                return Verdict.RETRY
        if full:
            return self.refuse(full)
        if self._per_address.take(host, now) > 0:
            return self.refuse("budget_per_address")
        if self._total.take(_TOTAL, now) > 0:
            return self.refuse("budget_total")
        return Verdict.ADMIT

    def opened(self, host: str) -> None:
        self.connections.opened(host)
        self.half_open.opened(host)

    def disconnected(self, host: str) -> None:
        """A connection admitted from ``host`` is gone."""
        self.connections.closed(host)

    def closed(self, host: str) -> None:
        """A connection admitted from ``host`` finished its handshake, failed, or timed out."""
        self.half_open.closed(host)


def payload_offset(data: bytes, host_cid_length: int) -> tuple[QuicHeader, int] | None:
    """The first packet's header and where its protected payload starts; None when it does not parse."""
    buf = Buffer(data=data)
    try:
        header = pull_quic_header(buf, host_cid_length=host_cid_length)
    except ValueError:
        return None
    return header, buf.tell()


def is_initial(header: QuicHeader) -> bool:
    return header.packet_type == QuicPacketType.INITIAL
