"""The client side of the lobby: ask a server's HTTP side for a connect token
(``POST /lobby/token``; shared/tokens.py) to pass to ``GameClient.connect``."""

from __future__ import annotations

from typing import Any

import aiohttp

from tickline.bots.client import ClientError


async def fetch_connect_token(http_url: str, name: str, match: str = "", timeout: float = 10.0) -> dict[str, Any]:
    """The server's answer for ``name`` to join ``match`` ("" for any open match): a dict with
    ``token``, ``expires``, ``match``, ``quic_port``, ``http_port`` and ``cert_sha256``.
    ``http_url`` is the server's HTTP side (``http://host:metrics_port``); a refusal raises
    :class:`ClientError` with the server's reason."""
    url = http_url.rstrip("/") + "/lobby/token"
    body = {"name": name, **({"match": match} if match else {})}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.post(url, json=body) as response,
        ):
            if response.status != 200:
                reason = (await response.text()).strip() or response.reason or str(response.status)
                raise ClientError(f"no connect token from {url}: {reason}")
            answer: dict[str, Any] = await response.json()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ClientError(f"cannot reach {url}: {str(exc) or 'timed out'}") from None
    return answer
