"""The browser SDK (clients/web) stays in step with the Python side: its test vectors and the
games' TypeScript types are what the Python code generates today, the bundle shipped in the
package exports what docs/web-sdk.md documents, and, where Node.js and the SDK's
node_modules are there, its own tests pass and the bundle is a fresh build of its source."""

from __future__ import annotations

import base64
import gzip
import os
import re
import shutil
import subprocess
import tomllib
import zlib
from pathlib import Path
from typing import Any, NoReturn

import orjson
import pytest

from tests import vectors
from tests.browsers import chromium, page_server
from tests.support import tickline
from tickline.shared.games import load
from tickline.shared.schema import Bool, Choice, Inputs, Int, ListOf, Table, Text, View
from tickline.shared.typescript import typescript_types

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "clients" / "web"
BUNDLE = ROOT / "tickline" / "web" / "tickline-client.js"
DOC = ROOT / "docs" / "web-sdk.md"
NODE = shutil.which("node")
NPM = shutil.which("npm")
# CI sets it: there the SDK's own tests must run, not skip.
REQUIRE = os.environ.get("TICKLINE_REQUIRE_NODE") == "1"
# What a page imports from the bundle, at least (docs/web-sdk.md documents every export).
PUBLIC = {"connect", "GameClient", "World", "ClientError", "openTransport", "registerGame", "ArenaRules", "applyDelta"}


def _skip_or_fail(reason: str) -> NoReturn:
    if REQUIRE:
        pytest.fail(f"{reason} (TICKLINE_REQUIRE_NODE=1: the browser SDK's tests must run here)")
    pytest.skip(reason)


def _need_node_modules() -> None:
    if NODE is None or NPM is None:
        _skip_or_fail("Node.js and npm are not installed")
    if not (WEB / "node_modules").is_dir():
        _skip_or_fail("clients/web/node_modules is missing: run `npm ci` in clients/web (it needs the npm registry)")


# ---------------------------------------------------------------------- generated files


@pytest.mark.parametrize("name", sorted(vectors.generate()))
def test_the_web_sdks_vectors_are_what_the_python_client_makes_of_a_match_today(name: str) -> None:
    fresh = vectors.generate()[name]
    committed = (vectors.VECTORS / name).read_bytes()
    assert vectors.comparable(committed) == vectors.comparable(fresh), (
        f"clients/web/test/vectors/{name} is out of date: run `python -m tests.vectors` and commit the result"
    )
    assert len(committed) < 400_000, "vectors are committed: keep them small"


def _received(steps: list[dict[str, Any]]) -> list[bytes]:
    """What each step delivered, packed deltas' diffs inflated."""
    out = []
    for step in steps:
        raw = base64.b64decode(step.get("datagram") or step.get("stream") or "")
        out.append(raw[:13] + zlib.decompress(raw[13:], -15) if raw[:1] == b"z" else raw)
    return out


def test_the_vectors_cover_what_a_client_meets_on_a_real_network() -> None:
    steps = orjson.loads((vectors.VECTORS / "arena.json").read_bytes())["steps"]
    final = steps[-1]["expect"]
    assert final["stale"] > 0 and final["unusable"] == 1 and final["closed"] == "match over"
    datagrams = [base64.b64decode(s["datagram"]) for s in steps if "datagram" in s]
    assert any(d[:1] == b"z" for d in datagrams) and any(d[:1] == b"{" for d in datagrams), "packed and plain deltas"
    assert any("stream" in s and "view" in s["expect"] for s in steps), "deltas on the control stream too"
    assert any(b'"r":' in data for data in _received(steps)), "entities leaving the view radius"
    assert any(b'"n":' in data for data in _received(steps)), "integers sent as increments"
    view: dict[str, Any] = {}
    ahead = 0
    for step in steps:
        view = step["expect"].get("view", view)
        if "sent" in step and "self" in step["expect"]:
            ahead += step["expect"]["self"] != view["players"]["1"]
    assert ahead > 50, "the player's own entity predicted ahead of the server's view"


@pytest.mark.parametrize("game", vectors.BUILT_IN_GAMES)
def test_a_built_in_games_typescript_types_are_what_its_declarations_generate(game: str) -> None:
    path = vectors.GAME_TYPES / f"{game}.ts"
    assert path.read_text(encoding="utf-8") == vectors.game_types(game), (
        f"{path.relative_to(ROOT)} is out of date: run `python -m tests.vectors` (or `tickline types {game} -o {path.relative_to(ROOT)}`)"
    )


def test_typescript_types_give_choices_as_literal_unions_and_bounds_units_and_defaults_as_docs() -> None:
    inputs = Inputs(
        controls={
            "dir": Choice((-1, 0, 1), doc="which way"),
            "mode": Choice(("walk", "run"), doc="how fast */ really"),
            "power": Int(0, 9, default=3, doc="how hard"),
            "on": Bool(),
            "say": Text(8),
            "picks": ListOf(Choice(("a", "b")), 3),
            "odd-name": Int(0, 1),
        },
        optional=frozenset({"say"}),
        doc="Controls.",
    )
    view = View(
        tables={"hit_marks": Table({"x": Int(0, 99, unit="px", scale=0.5)}, interpolate=("x",), key="mark id")},
        values={"cards": ListOf(Int(1, 5), 5)},
        players="nobody",
    )
    out = typescript_types("demo", 3, inputs, view)
    assert out.startswith("// demo (rules version 3)")
    assert "  dir: -1 | 0 | 1;" in out
    assert '  mode: "walk" | "run";' in out
    assert "How fast *\\/ really." in out, "a doc cannot end the comment early"
    assert "Integer 0 to 9.\n   * Default: 3." in out
    assert "  say?: string;" in out and "Optional: absent unless sent." in out
    assert '  picks: ("a" | "b")[];' in out
    assert '  "odd-name": number;' in out
    assert "export interface HitMarksEntity {" in out and "Interpolated between snapshots: x." in out
    assert "unit: px (value x 0.5)" in out
    assert "  hit_marks: Record<string, HitMarksEntity>;" in out and "Keyed by mark id." in out
    assert "  cards: number[];" in out


# ---------------------------------------------------------------------- the bundle


def _exports(bundle: str) -> set[str]:
    """The names an esbuild ESM bundle exports, from its closing export clause."""
    match = re.search(r"export\s*\{([^}]*)\}\s*;?\s*$", bundle)
    assert match, "the bundle ends with one export clause (an ES module)"
    return {part.split(" as ")[-1].strip() for part in match.group(1).split(",")}


def test_the_bundle_ships_in_the_package_small_self_contained_and_exporting_the_documented_names() -> None:
    bundle = BUNDLE.read_text(encoding="utf-8")
    assert not re.search(r"\bimport\s*[\w{*]", bundle.split("export{")[0]), "no imports: no runtime dependencies"
    size = len(gzip.compress(bundle.encode(), 9))
    assert size < 30_000, f"the bundle is {size} bytes gzipped; the budget is 30 kB"
    names = _exports(bundle)
    assert names >= PUBLIC
    doc = DOC.read_text(encoding="utf-8")
    undocumented = sorted(n for n in names if not re.search(rf"`{re.escape(n)}\b", doc))
    assert not undocumented, f"exported by the bundle but not documented in docs/web-sdk.md: {undocumented}"
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools = data["tool"]["setuptools"]
    assert "tickline.web" in setuptools["packages"] and BUNDLE.name in setuptools["package-data"]["tickline.web"]


def test_the_bundle_imports_as_an_es_module_in_node() -> None:
    if NODE is None:
        _skip_or_fail("Node.js is not installed")
    assert NODE is not None
    probe = f"import * as m from {orjson.dumps(BUNDLE.as_uri()).decode()}; console.log(JSON.stringify(Object.keys(m).sort()))"
    ran = subprocess.run([NODE, "--input-type=module", "-e", probe], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert set(orjson.loads(ran.stdout)) == _exports(BUNDLE.read_text(encoding="utf-8"))


def test_the_committed_bundle_is_a_fresh_build_of_the_sdks_source(tmp_path: Path) -> None:
    _need_node_modules()
    assert NPM is not None
    out = tmp_path / "tickline-client.js"
    built = subprocess.run(
        [NPM, "run", "--silent", "build:to"],
        cwd=WEB,
        env={**os.environ, "OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert out.read_bytes() == BUNDLE.read_bytes(), (
        "tickline/web/tickline-client.js is not a build of clients/web/src: run `npm run build` in clients/web"
    )


@pytest.mark.slow
def test_the_web_sdks_own_tests_pass() -> None:
    """`npm test`: tsc over the source and tests, then node's test runner on the vectors and the rest."""
    _need_node_modules()
    assert NPM is not None
    ran = subprocess.run([NPM, "test"], cwd=WEB, capture_output=True, text=True, timeout=300)
    tail = (ran.stdout + ran.stderr)[-4000:]
    assert ran.returncode == 0, tail
    passed = re.search(r"^# pass (\d+)$", ran.stdout, re.MULTILINE)
    failed = re.search(r"^# fail (\d+)$", ran.stdout, re.MULTILINE)
    assert passed and failed and int(passed.group(1)) >= 20 and failed.group(1) == "0", tail


# ---------------------------------------------------------------------- against a real server

# Node's WebSocket (no WebTransport in Node): the bundle falls back to the server's /ws.
_PLAY = """
import { connect, discover } from %(bundle)s;
const storage = new Map();
const memory = { getItem: (k) => storage.get(k) ?? null, setItem: (k, v) => storage.set(k, v), removeItem: (k) => storage.delete(k) };
const where = await discover(%(http)s);
const options = { ...where, storage: memory, storageKey: "tickline:test" };
const client = await connect(options);
const welcome = await client.join("nodejs");
let views = 0;
client.onView = () => { views += 1; };
const start = performance.now();
const firstSeen = () => client.world.view.players?.[String(client.playerId)];
while ((views < 30 || !firstSeen()) && performance.now() - start < 15000) {
  client.sendControls({ mx: 1, my: 0, ax: 1, ay: 0, fire: false });
  await client.waitUpdate(100);
}
const seen = { ...firstSeen() };
const predicted = client.world.predictedSelf();
client.abandon();  // the page goes away: no goodbye, the player keeps its place
const again = await connect(options);
const back = await again.join("nodejs");
again.close("done");
console.log(JSON.stringify({
  kind: client.transportKind, fallbacks: client.fallbacks, where, welcome, views, seen, predicted,
  seq: client.world.serverSeq, back: back.player_id, reason: await again.closed,
}));
process.exit(0);
"""


@pytest.mark.slow
async def test_the_bundle_plays_a_real_server_over_the_websocket_fallback_and_a_reload_gets_the_player_back(
    start_server,
) -> None:
    if NODE is None:
        _skip_or_fail("Node.js is not installed")
    assert NODE is not None
    from tests.support import run

    srv = await start_server(game_config={"time_limit_s": 60, "view_radius": 0}, metrics_port=0)
    http = f"http://127.0.0.1:{srv.server.metrics_port}"
    script = _PLAY % {"bundle": orjson.dumps(BUNDLE.as_uri()).decode(), "http": orjson.dumps(http).decode()}
    code, out, err = await run(NODE, "--experimental-websocket", "--input-type=module", "-e", script, timeout=60)
    assert code == 0, err
    result = orjson.loads(out.splitlines()[-1])
    assert result["kind"] == "websocket"
    assert result["fallbacks"] == ["webtransport: this browser has no WebTransport"]
    assert result["where"]["webTransport"]["url"].endswith(f":{srv.port}/tickline")
    assert result["where"]["webTransport"]["certificateHashes"], "the server's certificate hash to pin"
    assert result["welcome"]["game"] == "arena" and result["welcome"]["player_id"] >= 1
    assert result["views"] >= 30 and result["seq"] > 0, "views came, and they say our inputs were applied"
    assert result["predicted"]["x"] >= result["seen"]["x"], "moving right: the prediction is ahead of the view"
    assert result["back"] == result["welcome"]["player_id"], "the stored token brought the same player back"
    assert result["reason"] == "done"


# In the page: the bundle over WebTransport (the server's certificate pinned by its hash), and
# then the same page with WebTransport refused by the order of transports: the WebSocket.
_PAGE = """async ({ http }) => {
  const sdk = await import("/tickline-client.js");
  const where = await sdk.discover(http);
  const play = async (transports) => {
    const client = await sdk.connect({ ...where, transports, storage: null });
    const welcome = await client.join("chromium");
    const start = performance.now();
    while (client.stats.deltasApplied < 30 && performance.now() - start < 15000) {
      client.sendControls({ mx: 1, my: 0, ax: 1, ay: 0, fire: false });
      await client.waitUpdate(100);
    }
    const out = { kind: client.transportKind, player: welcome.player_id, deltas: client.stats.deltasApplied,
                  seq: client.world.serverSeq, me: client.world.predictedSelf() };
    client.close("page done");
    return out;
  };
  return [await play(["webtransport", "websocket"]), await play(["websocket"])];
}"""


@pytest.mark.slow
async def test_the_bundle_plays_over_webtransport_in_chromium_and_over_the_websocket_when_told(start_server) -> None:
    srv = await start_server(game_config={"time_limit_s": 60, "view_radius": 0}, metrics_port=0)
    http = f"http://127.0.0.1:{srv.server.metrics_port}"
    files = {"/tickline-client.js": (BUNDLE.read_bytes(), "text/javascript")}
    async with page_server("tickline web sdk", files) as url, chromium() as browser:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(url)
        over_webtransport, over_websocket = await page.evaluate(_PAGE, {"http": http})
    assert not errors, errors
    assert over_webtransport["kind"] == "webtransport" and over_websocket["kind"] == "websocket"
    for played in (over_webtransport, over_websocket):
        assert played["deltas"] >= 30 and played["seq"] > 0, played
        assert played["me"]["name"] == "chromium"


async def test_tickline_types_writes_what_the_generator_makes_for_an_installed_game(tmp_path: Path) -> None:
    out = tmp_path / "goofspiel.ts"
    code, stdout, stderr = await tickline("types", "goofspiel", "--set", "cards=5", "-o", str(out))
    assert code == 0 and not stdout, stderr
    rules = load("goofspiel")({"cards": 5})
    assert out.read_text() == typescript_types(rules.name, rules.version, rules.input_schema(), rules.view_schema())
    assert "bid: number;" in out.read_text()
    code, _, stderr = await tickline("types", "nosuchgame")
    assert code == 2 and "unknown game 'nosuchgame'" in stderr
