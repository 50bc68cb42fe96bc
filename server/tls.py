"""The server's TLS certificates: made when none is configured, and rotated before they expire.

ECDSA P-256, self-signed, valid for 13 days: browsers accept such a certificate
through WebTransport's ``serverCertificateHashes`` (the SHA-256 of its DER bytes)
only when it is valid for less than 14 days (as Chromium requires). A server
that runs longer must change certificates, and the pages that pin them must
learn the next hash before the switch:

- with ``ANNOUNCE_BEFORE`` (3 days) left, the successor is made and its hash
  is served beside the current one;
- ``OVERLAP`` (1 day) later, new connections get the successor; connections
  already open keep theirs.

So a page that fetched the hashes within the last day always holds one that
works. :class:`Rotation` decides what is due (sans-I/O: the time is an
argument); :class:`Certificates` keeps the files (``cert.pem``/``key.pem``, and
``next-cert.pem``/``next-key.pem`` while a successor is announced) and does
what the rotation says. This module knows nothing of QUIC: the server gives
the endpoint the new certificate when :meth:`Certificates.check` says so.
The same folder keeps ``token.key``, the key that signs connect tokens
(:func:`ensure_token_key`; shared/tokens.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import hashlib
import ipaddress
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tickline.shared.tokens import KEY_BYTES

log = logging.getLogger(__name__)

VALIDITY = dt.timedelta(days=13)
# What ensure_certificate (one certificate, no rotation: benchmarks) leaves in place, at least.
RENEW_BEFORE = dt.timedelta(days=1)
ANNOUNCE_BEFORE = dt.timedelta(days=3)
OVERLAP = dt.timedelta(days=1)
# A certificate is replaced at the latest this long before it expires, however late its
# successor was announced (a server started on an old certificate shortens the overlap).
SWITCH_MARGIN = dt.timedelta(hours=1)
# Valid from a little before it was made: clients whose clocks run behind accept it too.
BACKDATE = dt.timedelta(minutes=5)
# The rotation task wakes at least this often: the wall clock can jump (suspend, NTP).
MAX_NAP_S = 3600.0


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What a browser and the rotation need to know of one certificate."""

    sha256: str  # hex SHA-256 of the DER bytes: what serverCertificateHashes pins
    not_before: dt.datetime
    not_after: dt.datetime

    @classmethod
    def of(cls, cert: x509.Certificate) -> CertificateInfo:
        der = cert.public_bytes(serialization.Encoding.DER)
        return cls(hashlib.sha256(der).hexdigest(), cert.not_valid_before_utc, cert.not_valid_after_utc)

    @classmethod
    def load(cls, cert_path: Path) -> CertificateInfo:
        """Raises ValueError when the file is not a PEM certificate."""
        return cls.of(x509.load_pem_x509_certificate(cert_path.read_bytes()))


def certificate_sha256(cert_path: Path) -> str:
    """Hex SHA-256 of the certificate's DER bytes (what a browser pins)."""
    return CertificateInfo.load(cert_path).sha256


def make_certificate(cert_path: Path, key_path: Path, now: dt.datetime) -> CertificateInfo:
    """A new key and a self-signed certificate valid from ``now`` (less BACKDATE) for VALIDITY,
    for 127.0.0.1, ::1 and localhost; each file is written whole before it replaces the old one."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tickline localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now - BACKDATE + VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(key_path, key_pem, 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return CertificateInfo.of(cert)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(part, path)


def _load_pair(cert_path: Path, key_path: Path) -> CertificateInfo | None:
    """The pair's certificate, or None when either file is missing or the key is not the
    certificate's (a crash between the two renames of a switch). A certificate file that
    is not PEM raises ValueError: a person put it there, and should hear of it."""
    if not (cert_path.exists() and key_path.exists()):
        return None
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError):
        return None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, spki) != cert.public_key().public_bytes(
        serialization.Encoding.PEM, spki
    ):
        return None
    return CertificateInfo.of(cert)


def ensure_certificate(directory: Path) -> tuple[Path, Path, bool]:
    """``(cert_path, key_path, created)`` under ``directory``, making a new pair when none is
    there or it has less than RENEW_BEFORE left. One certificate, never rotated: for tools
    that run for less than a day (the server itself uses :class:`Certificates`)."""
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    now = utc_now()
    info = _load_pair(cert_path, key_path)
    if info is not None and info.not_after - now > RENEW_BEFORE:
        return cert_path, key_path, False
    make_certificate(cert_path, key_path, now)
    return cert_path, key_path, True


def ensure_token_key(path: Path) -> tuple[bytes, bool]:
    """``(key, created)``: the connect-token key (shared/tokens.py) in ``path``, 32 random
    bytes made (owner-only, 0600) when the file is missing. Raises ValueError for a file
    too short to be a key."""
    if not path.exists():
        _write(path, os.urandom(KEY_BYTES), 0o600)
        created = True
    else:
        created = False
    key = path.read_bytes()
    if len(key) < KEY_BYTES:
        raise ValueError(f"{path} holds {len(key)} bytes; a connect-token key is at least {KEY_BYTES}")
    return key, created


# ---------------------------------------------------------------------- rotation, sans-I/O


class Action(enum.Enum):
    NOTHING = "nothing"
    ANNOUNCE = "announce"  # make the successor and serve its hash beside the current one
    SWITCH = "switch"  # new connections get the successor, which becomes the current certificate


class Rotation:
    """When to announce a successor and when to switch to it; no files, no clock of its own."""

    def __init__(
        self,
        current: CertificateInfo,
        successor: CertificateInfo | None = None,
        announced_at: dt.datetime | None = None,
    ) -> None:
        self.current = current
        self.successor = successor
        # A successor found on disk (a restart during the overlap) was announced when it was made.
        self.announced_at = announced_at or (successor.not_before + BACKDATE if successor else None)

    def announce_at(self) -> dt.datetime:
        return self.current.not_after - ANNOUNCE_BEFORE

    def switch_at(self) -> dt.datetime:
        """When new connections get the successor (only meaningful once one is announced)."""
        announced = self.announced_at or self.announce_at()
        return min(announced + OVERLAP, self.current.not_after - SWITCH_MARGIN)

    def due(self, now: dt.datetime) -> Action:
        if self.successor is None:
            return Action.ANNOUNCE if now >= self.announce_at() else Action.NOTHING
        return Action.SWITCH if now >= self.switch_at() else Action.NOTHING

    def wake_at(self) -> dt.datetime:
        """The next time :meth:`due` can say something other than NOTHING."""
        return self.switch_at() if self.successor is not None else self.announce_at()

    def announced(self, successor: CertificateInfo, now: dt.datetime) -> None:
        self.successor, self.announced_at = successor, now

    def switched(self) -> None:
        assert self.successor is not None, "switched without a successor"
        self.current, self.successor, self.announced_at = self.successor, None, None

    def hashes(self) -> list[str]:
        """The hashes a page should pin: the current certificate's, then the successor's."""
        return [self.current.sha256] + ([self.successor.sha256] if self.successor is not None else [])


# ---------------------------------------------------------------------- the server's files


class Certificates:
    """The server's own certificates under ``directory``, kept by a :class:`Rotation`.

    Made or loaded at construction, where anything already due (a certificate
    that expired while the server was down) is done at once; then
    :meth:`check` at any time, or :meth:`run` as a task."""

    def __init__(self, directory: Path, now: dt.datetime | None = None) -> None:
        now = now or utc_now()
        self.directory = directory
        self.cert_path, self.key_path = directory / "cert.pem", directory / "key.pem"
        self._next_cert, self._next_key = directory / "next-cert.pem", directory / "next-key.pem"
        current = _load_pair(self.cert_path, self.key_path)
        self.created = current is None
        if current is None:
            current = make_certificate(self.cert_path, self.key_path, now)
        try:
            successor = _load_pair(self._next_cert, self._next_key)
        except ValueError:
            successor = None  # not a certificate: a new successor is made when one is due
        if successor is not None and (successor.not_after <= current.not_after or successor.not_after <= now):
            successor = None  # stale: older than the current certificate, or expired
        self.rotation = Rotation(current, successor)
        self.check(now)

    def check(self, now: dt.datetime) -> bool:
        """Do what is due at ``now``; True when new connections must get the new ``cert_path``."""
        switched = False
        # Bounded: each action makes the next one due later, unless a successor itself
        # expired while the server was down; four steps cover that too.
        for _ in range(4):
            action = self.rotation.due(now)
            if action is Action.ANNOUNCE:
                successor = make_certificate(self._next_cert, self._next_key, now)
                self.rotation.announced(successor, now)
                log.info(
                    "announced the next TLS certificate (sha-256 %s); new connections get it from %s",
                    successor.sha256,
                    self.rotation.switch_at().isoformat(timespec="seconds"),
                )
            elif action is Action.SWITCH:
                # Key first: a crash between the renames leaves a pair that does not match,
                # which the next start replaces rather than serves.
                os.replace(self._next_key, self.key_path)
                os.replace(self._next_cert, self.cert_path)
                self.rotation.switched()
                switched = True
                log.info("new connections get the TLS certificate with sha-256 %s", self.rotation.current.sha256)
            else:
                break
        return switched

    def hashes(self) -> list[str]:
        return self.rotation.hashes()

    def describe(self) -> list[dict[str, Any]]:
        """Each certificate a page may pin, for the HTTP side: current first."""
        r = self.rotation
        described = [_describe(r.current, "current", None)]
        if r.successor is not None:
            described.append(_describe(r.successor, "next", r.switch_at()))
        return described

    async def run(self, on_switch: Callable[[], None], clock: Callable[[], dt.datetime] = utc_now) -> None:
        """Check whenever something falls due (and at least hourly), until cancelled;
        ``on_switch`` after each switch."""
        while True:
            now = clock()
            if self.check(now):
                on_switch()
            wait = (self.rotation.wake_at() - clock()).total_seconds()
            await asyncio.sleep(min(max(wait, 1.0), MAX_NAP_S))


def _describe(info: CertificateInfo, status: str, served_from: dt.datetime | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "algorithm": "sha-256",
        "value": info.sha256,
        "status": status,
        "not_after": info.not_after.isoformat(timespec="seconds"),
    }
    if served_from is not None:
        out["served_from"] = served_from.isoformat(timespec="seconds")
    return out
