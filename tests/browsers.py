"""Real browsers for tests: Debian's Chromium and Firefox ESR at their system paths.

Playwright drives the system's Chromium (it downloads no browser here); Firefox is driven
over the WebDriver BiDi it serves itself. :func:`open_page` gives either as one
:class:`Page`. Without a browser, its tests skip with a message saying what to install,
unless TICKLINE_REQUIRE_BROWSER is set (as `.ci/run` sets it): then they fail.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn, Protocol

import aiohttp
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


class Page(Protocol):
    """One tab of a browser, as the tests drive it."""

    errors: list[str]  # errors the page reported

    async def goto(self, url: str) -> None: ...

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression (a promise is awaited)."""

    async def wait_for(self, condition: str, timeout: float) -> None:
        """Until the JavaScript expression ``condition`` is truthy; TimeoutError after ``timeout`` s."""

    async def key(self, key: str, down: bool) -> None:
        """Press (``down``) or release a key, as a person's keyboard would: ``"d"``, ``" "``."""


class PlaywrightPage:
    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    async def goto(self, url: str) -> None:
        await self.page.goto(url)

    async def evaluate(self, expression: str) -> Any:
        return await self.page.evaluate(expression)

    async def wait_for(self, condition: str, timeout: float) -> None:
        await self.page.wait_for_function(condition, timeout=timeout * 1000)

    async def key(self, key: str, down: bool) -> None:
        await (self.page.keyboard.down if down else self.page.keyboard.up)(key)


class BidiPage:
    """Firefox's first tab over WebDriver BiDi, which Firefox serves itself
    (``--remote-debugging-port``): no geckodriver, no Selenium."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.errors: list[str] = []
        self.context = ""
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}

    async def read(self) -> None:
        """The reader task: answers to their callers, JavaScript errors to ``errors``."""
        async for message in self.ws:
            data = json.loads(message.data)
            waiter = self._waiting.pop(data.get("id", -1), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(data)
            elif data.get("method") == "log.entryAdded" and data["params"].get("level") == "error":
                self.errors.append(f"page error: {data['params'].get('text')}")

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        ident = next(self._ids)
        waiter = self._waiting[ident] = asyncio.get_running_loop().create_future()
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        answer = await asyncio.wait_for(waiter, 30)
        if answer.get("type") != "success":
            raise RuntimeError(f"{method}: {answer.get('error')}: {answer.get('message')}")
        return answer["result"]

    async def open(self) -> None:
        await self.call("session.new", {"capabilities": {}})
        await self.call("session.subscribe", {"events": ["log.entryAdded"]})
        self.context = (await self.call("browsingContext.getTree", {}))["contexts"][0]["context"]

    async def goto(self, url: str) -> None:
        await self.call("browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"})

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "script.evaluate",
            {
                "expression": f"Promise.resolve({expression}).then(value => JSON.stringify(value))",
                "target": {"context": self.context},
                "awaitPromise": True,
            },
        )
        if result["type"] == "exception":
            raise RuntimeError(result["exceptionDetails"]["text"])
        value = result["result"]  # a string, or undefined (which JSON.stringify makes of undefined)
        return json.loads(value["value"]) if value["type"] == "string" else None

    async def wait_for(self, condition: str, timeout: float) -> None:
        # Asked again and again from here, as Playwright's wait_for_function polls: a promise
        # left in the page would never answer once the page navigates away.
        async with asyncio.timeout(timeout):
            while True:
                try:
                    if await self.evaluate(f"!!({condition})"):
                        return
                except RuntimeError:
                    pass  # between pages, or the condition cannot be evaluated yet
                await asyncio.sleep(0.02)

    async def key(self, key: str, down: bool) -> None:
        action = {"type": "keyDown" if down else "keyUp", "value": key}
        await self.call(
            "input.performActions",
            {"context": self.context, "actions": [{"type": "key", "id": "keyboard", "actions": [action]}]},
        )


@asynccontextmanager
async def _chromium_page() -> AsyncIterator[Page]:
    """Headless Chromium, the system's own (Playwright downloads no browser here)."""
    async with chromium() as browser:
        yield PlaywrightPage(await browser.new_page())


@asynccontextmanager
async def _firefox_page(profile: Path) -> AsyncIterator[Page]:
    """Headless Firefox (Debian's ESR) in a new profile, driven over WebDriver BiDi."""
    if not Path(FIREFOX).exists():
        no_browser(f"no Firefox at {FIREFOX}: apt-get install firefox-esr, or set TICKLINE_FIREFOX")
    profile.mkdir()
    proc = await asyncio.create_subprocess_exec(
        FIREFOX,
        "--headless",
        "--no-remote",
        "--profile",
        str(profile),
        "--remote-debugging-port",
        "0",  # a free port, which it names on stderr
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            while not (line := (await proc.stderr.readline()).decode()).startswith("WebDriver BiDi listening on "):
                assert line, f"Firefox exited ({await proc.wait()}) before serving WebDriver BiDi"
        url = line.split()[-1]
        async with asyncio.TaskGroup() as tasks, aiohttp.ClientSession() as http:
            drain = tasks.create_task(proc.stderr.read())  # its chatter must not fill the pipe
            async with http.ws_connect(f"{url}/session") as ws:
                page = BidiPage(ws)
                reader = tasks.create_task(page.read())
                try:
                    await page.open()
                    yield page
                finally:
                    reader.cancel()
                    drain.cancel()
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


@asynccontextmanager
async def open_page(browser: str, tmp_path: Path) -> AsyncIterator[Page]:
    """A tab of headless ``"chromium"`` or ``"firefox"`` (its profile under ``tmp_path``)."""
    opening = _chromium_page() if browser == "chromium" else _firefox_page(tmp_path / f"{browser}-profile")
    async with opening as page:
        yield page
