"""``tickline play HOST:PORT``: a desktop client that plays arena with keyboard and mouse.

This module owns the window. It reads the keyboard and mouse into arena's
controls, sends one input per server tick through the client SDK
(``tickline.bots.client``), and draws the world as the SDK holds it
(``tickline.bots.world``): the arena's walls, pickups, shots placed at the render
tick, the other players interpolated, our own player predicted, names and
health, a scoreboard, and a line when the match is over.

pygame and asyncio share one thread: :func:`_run_frames` is a coroutine on the
event loop, and the one place that paces the client. It never blocks; it sleeps
with ``await asyncio.sleep`` until the next of two absolute deadlines (the next
frame, ``FPS`` a second; the next input, one per tick), and the SDK handles the
server's packets while it sleeps. docs/client.md points game developers here.

pygame is the optional ``play`` extra, imported only when :func:`play` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tickline.bots.client import ClientError, ClientOptions, GameClient
from tickline.bots.lobby import fetch_connect_token

if TYPE_CHECKING:
    import pygame

FPS = 60
LINGER_S = 3.0  # the final scoreboard stays up this long after the match ends
NO_PYGAME = "tickline play: error: pygame is not installed: pip install 'tickline[play]'"
BACKGROUND, WALLS, TEXT = (18, 20, 26), (100, 106, 120), (230, 230, 230)
ME, OTHER, DEAD = (80, 170, 255), (235, 90, 80), (90, 90, 90)
SHOT, PICKUP = (250, 220, 90), (90, 210, 120)


# ---------------------------------------------------------------------- arguments


def _server(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:4433), got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _size(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or int(w) < 100 or int(h) < 100:
        raise argparse.ArgumentTypeError(f"expected WxH of at least 100x100 pixels (e.g. 800x800), got {text!r}")
    return int(w), int(h)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds, 0 or more, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``tickline play``."""
    parser.add_argument("server", type=_server, metavar="HOST:PORT", help="the server to play on")
    parser.add_argument("--name", default="player", help="the name other players see (default: player)")
    parser.add_argument("--cafile", help="verify the server's certificate against this PEM (default: not verified)")
    parser.add_argument(
        "--lobby",
        metavar="URL",
        help="the server's HTTP side (http://HOST:HTTP_PORT), for the connect token a server with --http-port requires",
    )
    parser.add_argument("--size", type=_size, default=(800, 800), metavar="WxH", help="window size (default: 800x800)")
    parser.add_argument(
        "--seconds", type=_seconds, default=0.0, metavar="S", help="leave after S seconds; 0: when the window closes"
    )
    parser.add_argument(
        "--no-fastpath", action="store_true", help="QUIC datagrams only, even where the server offers the fast path"
    )


# ---------------------------------------------------------------------- input


@dataclass
class _Pad:
    """What the player holds, kept from pygame's events: keys down, the mouse (window
    pixels), the left button, and whether they asked to leave."""

    keys: set[int] = field(default_factory=set)
    mouse: tuple[int, int] = (0, 0)
    firing: bool = False
    leave: bool = False

    def read_events(self) -> None:
        import pygame

        for event in pygame.event.get():
            if event.type == pygame.QUIT or (event.type == pygame.KEYDOWN and event.key == pygame.K_ESCAPE):
                self.leave = True
            elif event.type == pygame.KEYDOWN:
                self.keys.add(event.key)
            elif event.type == pygame.KEYUP:
                self.keys.discard(event.key)
            elif event.type == pygame.MOUSEMOTION:
                self.mouse = event.pos
            elif event.type in (pygame.MOUSEBUTTONDOWN, pygame.MOUSEBUTTONUP) and event.button == 1:
                self.firing = event.type == pygame.MOUSEBUTTONDOWN
                self.mouse = getattr(event, "pos", self.mouse)
            elif event.type == pygame.WINDOWFOCUSLOST:
                self.keys.clear()  # the key-ups go to another window: let go of everything
                self.firing = False

    def direction(self) -> tuple[int, int]:
        """(mx, my) from W/A/S/D and the arrow keys; opposite keys cancel."""
        import pygame

        moves = {
            pygame.K_a: (-1, 0), pygame.K_LEFT: (-1, 0), pygame.K_d: (1, 0), pygame.K_RIGHT: (1, 0),
            pygame.K_w: (0, -1), pygame.K_UP: (0, -1), pygame.K_s: (0, 1), pygame.K_DOWN: (0, 1),
        }  # fmt: skip
        held = {moves[k] for k in self.keys if k in moves}  # a set: D and the right arrow are one move
        return sum(d[0] for d in held), sum(d[1] for d in held)


# ---------------------------------------------------------------------- drawing


class _Screen:
    """World units to window pixels: the whole arena, as large as fits, centred."""

    def __init__(self, size: tuple[int, int], config: dict[str, Any]) -> None:
        self.config = config
        w, h = float(config["width"]), float(config["height"])
        self.scale = min(size[0] / w, size[1] / h)
        self.left, self.top = (size[0] - w * self.scale) / 2, (size[1] - h * self.scale) / 2
        self.bounds = (round(self.left), round(self.top), round(w * self.scale), round(h * self.scale))

    def px(self, x: float, y: float) -> tuple[int, int]:
        return round(self.left + x * self.scale), round(self.top + y * self.scale)

    def world(self, px: tuple[int, int]) -> tuple[float, float]:
        return (px[0] - self.left) / self.scale, (px[1] - self.top) / self.scale

    def length(self, key: str) -> int:
        return max(2, round(float(self.config[key]) * self.scale))


def _text(
    surface: pygame.Surface, font: pygame.font.Font, text: str, at: tuple[int, int], centre: bool = False
) -> None:
    image = font.render(text, True, TEXT)
    surface.blit(image, image.get_rect(midbottom=at) if centre else at)


def _draw(surface: pygame.Surface, font: pygame.font.Font, screen: _Screen, client: GameClient, now: float) -> None:
    import pygame

    world, me_id = client.world, str(client.player_id)
    surface.fill(BACKGROUND)
    pygame.draw.rect(surface, WALLS, screen.bounds, width=2)
    for pickup in world.view.get("pickups", {}).values():
        k = client.world.in_units("pickups", pickup)
        pygame.draw.circle(surface, PICKUP, screen.px(k["x"], k["y"]), screen.length("pickup_radius"))
    at = world.render_tick(now)
    for shot in world.view.get("shots", {}).values():
        s = client.world.in_units("shots", shot)
        if at >= s["born"]:  # a shot flies straight: where it is at the tick we draw
            age = at - s["born"]
            xy = screen.px(s["x0"] + s["vx"] * age, s["y0"] + s["vy"] * age)
            pygame.draw.circle(surface, SHOT, xy, screen.length("projectile_radius"))
    players = {pid: p for pid, p in world.interpolated("players", now).items() if pid != me_id}
    me = world.predicted_self()
    if me is not None:
        players[me_id] = me
    radius = screen.length("player_radius")
    for pid, player in players.items():
        p = client.world.in_units("players", player)
        xy = screen.px(p["x"], p["y"])
        pygame.draw.circle(surface, (ME if pid == me_id else OTHER) if p["alive"] else DEAD, xy, radius)
        _text(surface, font, f"{p['name']} {p['hp']}", (xy[0], xy[1] - radius - 2), centre=True)
    scores = sorted(world.view.get("players", {}).items(), key=lambda kv: (-kv[1]["score"], int(kv[0])))
    for row, (pid, p) in enumerate(scores[:10]):
        _text(surface, font, f"{'>' if pid == me_id else ' '} {p['score']:3d}  {p['name']}", (8, 6 + 18 * row))
    path = "fast path" if client.on_fastpath else "QUIC datagrams"
    _text(surface, font, f"player {me_id}  tick {world.tick}  {path}", (8, surface.get_height() - 22))
    if _match_over(client):
        winner = str(world.view.get("winner", 0))
        name = world.view.get("players", {}).get(winner, {}).get("name", f"player {winner}")
        _text(surface, font, f"match over: {name} wins", (surface.get_width() // 2, surface.get_height() // 2), True)


# ---------------------------------------------------------------------- the loop


def _match_over(client: GameClient) -> bool:
    return bool(client.world.view.get("over")) or any(e.kind == "over" for e in client.events)


def _controls(pad: _Pad, screen: _Screen, client: GameClient, now: float) -> dict[str, Any]:
    """This tick's input: keys to a direction, the mouse to an aim from our (predicted) player."""
    mx, my = pad.direction()
    me = client.world.predicted_self()
    ax = ay = 0
    if me is not None:
        p = client.world.in_units("players", me)
        wx, wy = screen.world(pad.mouse)
        ax, ay = round(wx - p["x"]), round(wy - p["y"])
    # vt: the tick we draw the others at, so that a hitscan server judges shots where we saw them.
    return {"mx": mx, "my": my, "ax": ax, "ay": ay, "fire": pad.firing, "vt": int(client.world.render_tick(now))}


async def _run_frames(client: GameClient, surface: pygame.Surface, seconds: float) -> int:
    """Play until the window closes, the match ends or ``seconds`` pass (0: no limit).

    One coroutine, two absolute schedules: a frame every 1/FPS s (read events, draw)
    and an input every tick (``send_input``). Between them it awaits, so the SDK's
    packets are handled; a schedule that fell behind restarts rather than bursts."""
    import pygame

    assert client.welcome is not None
    loop = asyncio.get_running_loop()
    font = pygame.font.Font(None, 20)
    screen = _Screen(surface.get_size(), client.welcome.config)
    tick_s, frame_s = client.options.input_ticks / client.welcome.tick_rate, 1 / FPS
    start = next_frame = next_input = loop.time()
    pad, ended_at = _Pad(mouse=pygame.mouse.get_pos()), None
    while True:
        pad.read_events()  # at every wake-up, so each input carries the newest keys
        now = loop.time()
        if pad.leave or (seconds and now - start >= seconds):
            return 0
        if _match_over(client):
            ended_at = ended_at or now
            if now - ended_at >= LINGER_S:
                return 0
        elif client.closed.is_set():
            print(f"tickline play: the server closed the connection: {client.close_reason}", file=sys.stderr)
            return 1
        elif now >= next_input:
            client.send_input(_controls(pad, screen, client, now))
            next_input += tick_s
            if next_input <= now:
                next_input = now + tick_s
        if now >= next_frame:
            _draw(surface, font, screen, client, now)
            pygame.display.flip()
            next_frame += frame_s
            if next_frame <= now:
                next_frame = now + frame_s
        wake = next_frame if ended_at is not None else min(next_frame, next_input)
        await asyncio.sleep(max(0.0, wake - loop.time()))


async def play(args: argparse.Namespace) -> int:
    """Connect, open the window and play; 0 when the window closed, the match ended or
    --seconds passed; 1 when the client could not connect or lost its server."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        import pygame
    except ImportError:
        print(NO_PYGAME, file=sys.stderr)
        return 2
    # add_arguments parses these; a Namespace made by hand may carry the strings.
    host, port = _server(args.server) if isinstance(args.server, str) else args.server
    size = _size(args.size) if isinstance(args.size, str) else args.size
    options = ClientOptions(fast=not args.no_fastpath)
    try:
        token = (await fetch_connect_token(args.lobby, args.name))["token"] if args.lobby else ""
        async with GameClient.connect(
            host, port, args.name, cafile=args.cafile, options=options, connect_token=token
        ) as client:
            assert client.welcome is not None
            if client.welcome.game != "arena":
                print(f"tickline play: error: the server plays {client.welcome.game}, not arena", file=sys.stderr)
                return 1
            pygame.display.init()
            pygame.font.init()
            try:
                surface = pygame.display.set_mode(size)
                pygame.display.set_caption(f"tickline: {args.name} on {host}:{port}")
                return await _run_frames(client, surface, args.seconds)
            except pygame.error as exc:
                print(f"tickline play: error: {exc}", file=sys.stderr)
                return 1
            finally:
                pygame.quit()
    except ClientError as exc:
        print(f"tickline play: {exc}", file=sys.stderr)
        return 1
