"""The fast path's packet protection in pure Python (``cryptography``'s AES-GCM): the twin of
the native ``_seal_c.pyx`` (OpenSSL's EVP called directly). ``shared/fastpath.py`` describes
the packet and picks one at import; the two seal byte-identical packets and refuse the same
packets for the same reasons, and the tests run both.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tickline.shared.fastpath import HEADER, HEADER_SIZE, KINDS, LABEL, NONCE_PAD, OVERHEAD, Dropped, ReplayWindow


class Sealer:
    """One direction's sending side: seals payloads under its key with rising sequences."""

    __slots__ = ("_aead", "_session_id", "seq")

    def __init__(self, key: bytes, session_id: bytes) -> None:
        self._aead = AESGCM(key)
        self._session_id = session_id
        self.seq = 0

    def seal(self, kind: int, payload: bytes) -> bytes:
        self.seq += 1
        header = HEADER.pack(kind, self._session_id, self.seq)
        return header + self._aead.encrypt(NONCE_PAD + header[9:], payload, header + LABEL)


class Opener:
    """One direction's receiving side: authenticates packets and keeps the replay window."""

    __slots__ = ("_aead", "_session_id", "window")

    def __init__(self, key: bytes, session_id: bytes) -> None:
        self._aead = AESGCM(key)
        self._session_id = session_id
        self.window = ReplayWindow()

    @property
    def newest(self) -> int:
        """The newest sequence authenticated so far (0 before the first)."""
        return self.window.newest

    def open(self, packet: bytes) -> tuple[int, bytes]:
        """(kind, payload) of an authentic, new packet; raises Dropped otherwise."""
        if len(packet) < OVERHEAD:
            raise Dropped("short")
        kind, session_id, seq = HEADER.unpack_from(packet)
        if kind not in KINDS:
            raise Dropped("kind")
        if session_id != self._session_id:
            raise Dropped("session")
        self.window.check(seq)
        header = packet[:HEADER_SIZE]
        try:
            payload = self._aead.decrypt(NONCE_PAD + header[9:], packet[HEADER_SIZE:], header + LABEL)
        except InvalidTag:
            raise Dropped("auth") from None
        self.window.accept(seq)
        return kind, payload
