"""The client side of the lobby: ask a server's HTTP side for a connect token
(``POST /lobby/token``; shared/tokens.py) to pass to ``GameClient.connect``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from tickline.bots.client import ClientError


async def fetch_connect_token(http_url: str, name: str, match: str = "", timeout: float = 10.0) -> dict[str, Any]:
    """The server's answer for ``name`` to join ``match`` ("" for any open match): a dict with
    ``token``, ``expires``, ``match``, ``quic_port``, ``http_port`` and ``cert_sha256``.
    ``http_url`` is the server's HTTP side (``http://host:metrics_port``); a refusal raises
    :class:`ClientError` with the server's reason. Told to wait (429, the lobby's rate per
    address), it waits as ``Retry-After`` says while ``timeout`` allows."""
    url = http_url.rstrip("/") + "/lobby/token"
    body = {"name": name, **({"match": match} if match else {})}
    deadline = time.monotonic() + timeout
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
            while True:
                async with http.post(url, json=body) as response:
                    if response.status == 200:
                        answer: dict[str, Any] = await response.json()
                        return answer
                    reason = (await response.text()).strip() or response.reason or str(response.status)
                    wait = _retry_after(response) if response.status == 429 else None
                if wait is None or time.monotonic() + wait > deadline:
                    raise ClientError(f"no connect token from {url}: {reason}")
                await asyncio.sleep(wait)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ClientError(f"cannot reach {url}: {str(exc) or 'timed out'}") from None


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return None
