"""Real browsers for tests: Debian's Chromium (and Firefox ESR) at their system paths.

Playwright drives the system's Chromium (it downloads no browser here). Without one,
a browser test skips with a message saying what to install, unless
TICKLINE_REQUIRE_BROWSER is set (as `.ci/run` sets it): then it fails.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest

CHROMIUM = os.environ.get("TICKLINE_CHROMIUM", "/usr/bin/chromium")
FIREFOX = os.environ.get("TICKLINE_FIREFOX", "/usr/bin/firefox-esr")
REQUIRE_BROWSER = "TICKLINE_REQUIRE_BROWSER"


def no_browser(reason: str) -> NoReturn:
    """Skip the test for ``reason``, or fail it where browsers are required."""
    if os.environ.get(REQUIRE_BROWSER):
        pytest.fail(f"{reason}; {REQUIRE_BROWSER} is set, so the browser tests must run")
    pytest.skip(reason)


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """Headless Chromium (a Playwright ``Browser``), closed on the way out."""
    if not Path(CHROMIUM).exists():
        no_browser(f"no Chromium at {CHROMIUM}: apt-get install chromium, or set TICKLINE_CHROMIUM")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        no_browser("playwright is not installed: pip install -e '.[dev]'")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def page_server(title: str, files: dict[str, tuple[bytes, str]] | None = None) -> AsyncIterator[str]:
    """An empty page titled ``title`` at http://127.0.0.1:PORT/ (a secure context, as WebTransport
    needs), and ``files`` (path -> (body, content type)) beside it; yields the page's URL."""
    from aiohttp import web

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=f"<!doctype html><title>{title}</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    for path, (body, content_type) in (files or {}).items():

        async def serve(_request: web.Request, body: bytes = body, content_type: str = content_type) -> web.Response:
            return web.Response(body=body, content_type=content_type)

        app.router.add_get(path, serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()
