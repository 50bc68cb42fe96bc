"""``tickline spectate HOST:PORT --match ID``: watch a live match, as late as the server holds it.

One JSON line on stdout per view received: its tick, the server's tick when
the view was sent, how many ticks behind that is, whether that kept the
server's spectator delay, and the scoreboard from the view's players table.
It stops after ``--ticks`` views, after ``--seconds``, or when the match ends.
A server that refuses (no such match, no such player to follow) is one line on
stderr and exit status 1. Built on the client SDK's ``GameClient.spectate``
(docs/client.md); the delay is the server's to keep, this only reports it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from tickline.bots.client import ClientError, ClientOptions, GameClient
from tickline.bots.lobby import fetch_connect_token
from tickline.play import _seconds, _server


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number, 1 or more, got {text!r}")
    return int(text)


def _player(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a player id (0: the whole match), got {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``tickline spectate``."""
    parser.add_argument("server", type=_server, metavar="HOST:PORT", help="the server that runs the match")
    parser.add_argument(
        "--match", required=True, metavar="ID", help="the match's id, or a unique prefix of it (see /matches)"
    )
    parser.add_argument(
        "--follow",
        type=_player,
        default=0,
        metavar="PID",
        help="watch what this player was shown; 0: the whole match, hidden information included (default: 0)",
    )
    bound = parser.add_mutually_exclusive_group()
    bound.add_argument("--ticks", type=_count, metavar="N", help="stop after N views")
    bound.add_argument(
        "--seconds", type=_seconds, default=0.0, metavar="S", help="stop after S seconds; 0: when the match ends"
    )
    parser.add_argument("--name", default="spectator", help="the name the server logs (default: spectator)")
    parser.add_argument("--cafile", help="verify the server's certificate against this PEM (default: not verified)")
    parser.add_argument("--no-fastpath", action="store_true", help="QUIC datagrams only")
    parser.add_argument(
        "--lobby",
        metavar="URL",
        help="the server's HTTP side (http://HOST:HTTP_PORT), for the connect token a server with --http-port requires",
    )


def scoreboard(view: dict[str, Any], table: str) -> dict[str, dict[str, Any]]:
    """Each entity of the view's players table: its name and score, where it has them."""
    return {
        pid: {k: entity[k] for k in ("name", "score") if k in entity} for pid, entity in view.get(table, {}).items()
    }


async def spectate(args: argparse.Namespace) -> int:
    """Watch until the bound or the match's end: 0; 1 when the server refused or could not be reached."""
    host, port = args.server
    options = ClientOptions(fast=not args.no_fastpath)
    enough = asyncio.Event()
    shown = 0
    try:
        token = (await fetch_connect_token(args.lobby, args.name))["token"] if args.lobby else ""
        async with GameClient.spectate(
            host,
            port,
            args.match,
            args.follow,
            name=args.name,
            cafile=args.cafile,
            options=options,
            connect_token=token,
        ) as client:
            assert client.welcome is not None
            welcome, rules = client.welcome, client.world.rules
            table = rules.view_schema().players if rules is not None else "players"
            delay = welcome.spectator_delay
            print(
                f"tickline spectate: watching match {welcome.match_id} ({welcome.game}) "
                f"{delay} ticks ({delay / welcome.tick_rate:g} s) behind",
                file=sys.stderr,
            )

            def show(tick: int, view: dict[str, Any]) -> None:
                nonlocal shown
                if enough.is_set():
                    return
                behind = client.server_tick - tick
                line = {
                    "tick": tick,
                    "server_tick": client.server_tick,
                    "behind": behind,
                    "delay_held": behind >= delay,
                    "scores": scoreboard(view, table),
                }
                sys.stdout.write(orjson.dumps(line).decode() + "\n")
                sys.stdout.flush()
                shown += 1
                if args.ticks and shown >= args.ticks:
                    enough.set()

            client.on_view = show
            ended = asyncio.ensure_future(client.closed.wait())
            counted = asyncio.ensure_future(enough.wait())
            try:
                await asyncio.wait((ended, counted), timeout=args.seconds or None, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ended.cancel()
                counted.cancel()
            if client.closed.is_set():
                print(f"tickline spectate: the server ended it: {client.close_reason}", file=sys.stderr)
    except ClientError as exc:
        print(f"tickline spectate: error: {exc}", file=sys.stderr)
        return 1
    return 0
