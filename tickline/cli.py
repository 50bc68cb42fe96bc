"""The ``tickline`` command: the one place that composes server, bots and replays.

    tickline serve    run a server until SIGINT/SIGTERM
    tickline bots     load-test a server with bots of any game; one JSON report line
    tickline replay   list, verify (under any rules version), export, import, render and clip matches
    tickline demo     all of the above, end to end, on this machine
    tickline capacity how many players one server process holds on this machine
    tickline play     play arena in a window (pygame)
    tickline spectate watch a match (live: behind it by the server's spectator delay); one JSON line per view
    tickline new game write a package for a new game; tickline game list|doc: the installed ones
    tickline types    TypeScript types of a game's controls and views, for the web SDK

Bad arguments and bad configuration end with one line on stderr that says what
is wrong and what to do, and exit status 2; a failure at run time (database
unreachable, port taken) exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import orjson

from tickline import loops

DEFAULT_PORT = 4433
MATCH_HELP = "a replay file, or a match's id in the event log (a unique prefix will do)"


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line that points at --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class UsageError(Exception):
    """Bad arguments found after parsing; one line, exit 2."""


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aioquic logs every handshake, Alembic every plugin it loads, at INFO:
    # noise at ours. The log's own line says when the schema was upgraded.
    logging.getLogger("quic").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)


def _print_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


def _parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are JSON where they parse (ints, true/false), else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set takes KEY=VALUE, got {pair!r}")
        try:
            out[key] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            out[key] = raw
    return out


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--server takes HOST:PORT (e.g. 127.0.0.1:{DEFAULT_PORT}), got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _db_url(args: argparse.Namespace) -> str:
    from tickline.shared.logformat import check_log_url

    if args.db:
        check_log_url(args.db)
        return str(args.db)
    return f"sqlite+aiosqlite:///{Path(args.data_dir) / 'tickline.db'}"


# ---------------------------------------------------------------------- serve


def _rates(game: tuple[int, int], tick_rate: int | None, send_rate: int | None) -> tuple[int, int]:
    """The rates a server runs at: those given, else the game's; a send rate left to the
    game that does not divide a tick rate given is the tick rate."""
    tick = tick_rate or game[0]
    if send_rate:
        return tick, send_rate
    return tick, game[1] if game[1] <= tick and tick % game[1] == 0 else tick


def _server_config(args: argparse.Namespace) -> Any:
    from tickline.server.app import ServerConfig
    from tickline.server.eventlog import LogSettings
    from tickline.server.gate import GateSettings
    from tickline.server.match import MatchSettings
    from tickline.server.ratelimit import InputLimits
    from tickline.shared.games import load

    tick_rate, send_rate = _rates(load(args.game).default_rates, args.tick_rate, args.send_rate)
    return ServerConfig(
        host=args.host,
        port=args.port,
        data_dir=Path(args.data_dir),
        db_url=args.db,
        cert=Path(args.cert) if args.cert else None,
        key=Path(args.key) if args.key else None,
        match=MatchSettings(
            game=args.game,
            game_config=_parse_settings(args.set),
            tick_rate=tick_rate,
            send_rate=send_rate,
            seed=args.seed,
            keyframe_every=args.keyframe_every,
            grace_s=args.grace,
            full_snapshots=args.full_snapshots,
            spectator_delay_s=args.spectator_delay,
        ),
        log=LogSettings(durability=args.durability, flush_ms=args.flush_ms),
        server_id=args.server_id,
        matches=args.matches,
        max_matches=args.max_matches,
        matches_per_tick=args.matches_per_tick,
        placement=args.placement,
        metrics_port=args.metrics_port,
        http_host=args.http_host,
        lobby_rate=args.lobby_rate,
        gate=GateSettings(
            max_connections=args.max_connections,
            max_connections_per_address=args.max_connections_per_address,
            max_half_open=args.max_half_open,
            max_half_open_per_address=args.max_half_open_per_address,
            new_per_s=args.new_connections_per_s,
            new_per_s_per_address=args.new_connections_per_s_per_address,
            retry=args.retry,
            handshake_timeout_s=args.handshake_timeout,
        ),
        inputs=InputLimits(
            messages_per_s=args.input_messages_per_s, bytes_per_s=args.input_bytes_per_s, burst_s=args.input_burst
        ),
        ack_timeout=args.ack_timeout,
        idle_timeout=args.idle_timeout,
        hello_timeout=args.hello_timeout,
        receive_window=args.receive_window,
        lobby_matches=args.lobby_matches,
        lobby_games=tuple(g.strip() for g in args.lobby_games.split(",") if g.strip()) if args.lobby_games else None,
        fastpath=not args.no_fastpath,
        token_key=Path(args.token_key) if args.token_key else None,
        require_tokens=args.require_tokens,
        monitor_token=args.monitor_token,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from tickline.server.app import Server
    from tickline.shared import native

    server = Server(_server_config(args))

    def announce() -> None:
        _print_json(
            {
                "event": "ready",
                "host": args.host,
                "port": server.port,
                "cert": str(server.cert_path),
                # What a browser pins (WebTransport's serverCertificateHashes): current first.
                "cert_sha256": server.certificate_hashes(),
                "db": server.config.database_url(),
                "server_id": server.config.resolve_server_id(),
                "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
                "fastpath": server.fastpath is not None,
                "native": native.report(),  # which modules run native code (shared/native.py)
                "metrics_port": server.metrics_port if args.metrics_port is not None else None,
                "http_url": server.http_url if args.metrics_port is not None else None,
                "require_tokens": server.config.tokens_required(),
                "resumed": [{"match_id": m.match_id, "tick": (m.resumed_at or 0) + 1} for m in server.resumed],
                "start_s": round(server.recovery_s, 3),
            }
        )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.stop)
        await server.run(on_ready=announce)

    loops.run(main(), args.loop)
    return 0


# ---------------------------------------------------------------------- bots


def cmd_bots(args: argparse.Namespace) -> int:
    from tickline.bots.behaviours import behaviour_names, parse_mix
    from tickline.bots.client import ClientOptions
    from tickline.bots.loadtest import LoadConfig, print_table, report_json, run_load
    from tickline.shared.games import load
    from tickline.shared.protocol import MAX_INPUT_TICKS

    host, port = _host_port(args.server)
    if args.n < 1 or args.duration <= 0 or args.ramp <= 0 or args.workers < 0 or args.input_rate < 0:
        raise UsageError("--n must be at least 1, --duration and --ramp positive, --workers and --input-rate 0 or more")
    game = load(args.game) if args.game else None
    try:
        parse_mix(args.behaviour, behaviour_names(game))
    except ValueError as exc:
        raise UsageError(f"--behaviour: {exc}") from None
    if not 1 <= args.input_ticks <= MAX_INPUT_TICKS:
        raise UsageError(
            f"--input-ticks must be 1 to {MAX_INPUT_TICKS} (ticks each input holds), not {args.input_ticks}"
        )
    if args.lobby and not args.lobby.startswith(("http://", "https://")):
        raise UsageError(
            f"--lobby wants the server's HTTP side as a URL, such as http://127.0.0.1:8080, not {args.lobby}"
        )
    if args.plots and importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plots needs matplotlib: pip install 'tickline[plots]'")
    cfg = LoadConfig(
        host=host,
        port=port,
        n=args.n,
        duration=args.duration,
        workers=args.workers,
        ramp=args.ramp,
        behaviour=args.behaviour,
        game=args.game,
        cafile=args.cafile,
        seed=args.seed,
        reconnect_s=args.reconnect,
        metrics_url=args.metrics or (args.lobby.rstrip("/") + "/metrics" if args.lobby else None),
        tokens_url=args.lobby,
        report_path=Path(args.report) if args.report else None,
        plots_dir=Path(args.plots) if args.plots else None,
        progress=not args.quiet,
        client=ClientOptions(fast=not args.no_fastpath, input_rate=args.input_rate, input_ticks=args.input_ticks),
        loop_factory=loops.loop_factory(args.loop),
    )
    report = loops.run(run_load(cfg), args.loop)
    if not args.quiet:
        print_table(report)
    _print_json(report_json(report))
    ok = report["connected"] == args.n and not report["errors"] and not report["failures"]
    return 0 if ok else 1


# ---------------------------------------------------------------------- replay


def cmd_replay_list(args: argparse.Namespace) -> int:
    from tickline.replays.reader import LogReader

    async def main() -> list[Any]:
        async with await LogReader.open(_db_url(args)) as reader:
            return await reader.matches()

    rows = loops.run(main(), args.loop)
    if not rows:
        print("no matches in the log", file=sys.stderr)
    for m in rows:
        _print_json(
            {
                "match_id": m.match_id,
                "game": f"{m.game}/{m.game_version}",
                "status": m.status,
                "ticks": m.last_tick,
                "tick_rate": m.tick_rate,
                "final_state_hash": m.final_hash,
            }
        )
    return 0


def cmd_replay_verify(args: argparse.Namespace) -> int:
    from tickline.replays.file import header_claims, read_replay
    from tickline.replays.reader import LogReader
    from tickline.replays.verify import verify_match, verify_replay
    from tickline.shared.games import load

    if args.game:
        load(args.game)  # rules given as package.module:Class: found by name from here on
    if args.rules is not None and args.rules < 1:
        raise UsageError(f"--rules takes a rules version (1 or more), not {args.rules}")

    async def main() -> Any:
        if _is_file(args.match):
            replay = await read_replay(Path(args.match), rules_version=args.rules)
            report = await asyncio.to_thread(verify_replay, replay, os.cpu_count() or 1)
            if report.verified and args.rules is None:
                wrong = header_claims(replay)  # a forged header with a fresh checksum
                if wrong:
                    report.verified, report.first_bad_tick, report.reason = False, replay.ticks, "; ".join(wrong)
            return report
        async with await LogReader.open(_db_url(args)) as reader:
            return await verify_match(reader, args.match, rules_version=args.rules, workers=os.cpu_count() or 1)

    report = loops.run(main(), args.loop)
    if not report.verified:
        print(f"not verified: {report.reason}", file=sys.stderr)
    _print_json(report.to_json())
    return 0 if report.verified else 1


def _is_file(source: str) -> bool:
    """Whether a replay command's MATCH names a replay file (a path that exists) rather than a match id."""
    return os.path.isfile(source)


async def _open(args: argparse.Namespace) -> Any:
    from tickline.replays.replay import open_replay

    return await open_replay(args.match, _db_url(args))


def cmd_replay_export(args: argparse.Namespace) -> int:
    from tickline.replays.file import write_replay

    out = Path(args.output)
    if not out.parent.is_dir():
        raise UsageError(f"-o {args.output}: the folder {out.parent} does not exist")

    async def main() -> dict[str, Any]:
        replay = await _open(args)
        size = await write_replay(replay, out)
        return {"match_id": replay.header.match_id, "file": str(out), "bytes": size, "ticks": replay.ticks}

    _print_json(loops.run(main(), args.loop))
    return 0


def cmd_replay_info(args: argparse.Namespace) -> int:
    from tickline.replays.file import read_header

    async def main() -> dict[str, Any]:
        if _is_file(args.match):
            return await read_header(Path(args.match))  # the header alone: the body stays unread
        replay = await _open(args)
        summary = await asyncio.to_thread(lambda: replay.summary)
        h = replay.header
        return {
            "match_id": h.match_id,
            "game": h.game,
            "rules_version": h.game_version,
            "status": replay.status,
            "ticks": replay.ticks,
            "duration_s": round(replay.duration_s, 3),
            "tick_rate": h.tick_rate,
            "players": {str(pid): name for pid, name in sorted(summary.players.items())},
            "result": summary.result,
            "marks": [[mark.tick, mark.event] for mark in summary.marks],
        }

    _print_json(loops.run(main(), args.loop))
    return 0


def cmd_replay_import(args: argparse.Namespace) -> int:
    from tickline.replays.file import header_claims, read_replay
    from tickline.server.eventlog import EventLog, KeyframeRecord, MatchEnd, PlayerRecord, TickRecord

    if not _is_file(args.file):
        raise UsageError(f"{args.file} is not a file; give a replay file written by `tickline replay export`")

    async def main() -> dict[str, Any]:
        replay = await read_replay(Path(args.file))
        h = replay.header
        records: list[Any] = []

        def collect(frame: Any) -> None:  # every tick re-simulated and checked before anything is written
            records.append(TickRecord(h.match_id, frame.tick, frame.inputs.to_record(), frame.events, frame.hash))
            if frame.tick % h.tick_rate == 0:
                records.append(KeyframeRecord(h.match_id, frame.tick, replay.rules.dump_state(frame.state), frame.hash))

        summary = await asyncio.to_thread(replay.scan, collect)
        wrong = header_claims(replay)
        if wrong:
            raise UsageError(f"{args.file} is not imported: {'; '.join(wrong)}")
        eventlog = await EventLog.open(_db_url(args), server_id="import")
        try:
            if await eventlog.has_match(h.match_id):
                raise UsageError(f"match {h.match_id} is already in the log at {_db_url(args)}")
            await eventlog.create_match(h)
            records += [PlayerRecord(h.match_id, pid, name, "") for pid, name in sorted(summary.players.items())]
            # A match exported while it ran is not running here: nothing will resume it.
            status = "stopped" if replay.status == "running" else replay.status
            end = MatchEnd(
                h.match_id, status, replay.ticks, summary.final_hash, {"imported_from": Path(args.file).name}
            )
            await eventlog.commit_group([*records, end])
        finally:
            await eventlog.dispose()
        return {"match_id": h.match_id, "db": _db_url(args), "ticks": replay.ticks, "status": status}

    if not args.db:
        Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    _print_json(loops.run(main(), args.loop))
    return 0


def _seconds(text: str) -> float:
    """A duration such as ``5s``, ``5`` or ``1.5s``, for argparse."""
    try:
        value = float(text.removesuffix("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration in seconds, such as 5s") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration cannot be negative")
    return value


def _check_output(path: str | None, flag: str) -> None:
    if path is not None and not Path(path).resolve().parent.is_dir():
        raise UsageError(f"{flag} {path}: the folder {Path(path).parent} does not exist")


async def _render_in_thread(render: Any, replay: Any) -> dict[str, Any]:
    """``render(replay)`` in a worker thread; a ValueError of what was asked (a tick range, a player
    or an event the match lacks, a game with no map) is a usage error, a broken replay is not."""
    from tickline.replays.file import ReplayFileError
    from tickline.shared.logformat import Divergence

    try:
        out: dict[str, Any] = await asyncio.to_thread(render, replay)
    except (Divergence, ReplayFileError):
        raise
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return out


def cmd_replay_render(args: argparse.Namespace) -> int:
    from tickline.replays.pictures import render_gif, render_pngs
    from tickline.replays.player import render_html

    if not (args.output or args.png or args.gif):
        raise UsageError("say what to render: -o FILE.html, --png DIR and/or --gif FILE.gif")
    _check_output(args.output, "-o")
    _check_output(args.gif, "--gif")
    if args.png:
        Path(args.png).mkdir(parents=True, exist_ok=True)
    if not 1 <= args.fps <= 50 or args.size < 64 or args.speed <= 0:
        raise UsageError("--fps takes 1 to 50, --size at least 64 (pixels), --speed more than 0")

    def render(replay: Any) -> dict[str, Any]:  # plain computation: run in a worker thread
        out: dict[str, Any] = {"match_id": replay.header.match_id}
        stop = args.to if args.to is not None else replay.ticks
        if args.output:
            page = render_html(replay, start=args.start, stop=stop, follow=args.follow)
            Path(args.output).write_text(page, encoding="utf-8")
            out["html"] = args.output
        if args.png:
            out["png"] = [str(p) for p in render_pngs(replay, Path(args.png))]
        if args.gif:
            render_gif(
                replay,
                Path(args.gif),
                start=args.start,
                stop=stop,
                size=args.size,
                speed=args.speed,
                fps=args.fps,
                follow=args.follow,
            )
            out["gif"] = args.gif
        return out

    async def main() -> dict[str, Any]:
        return await _render_in_thread(render, await _open(args))

    _print_json(loops.run(main(), args.loop))
    return 0


def cmd_replay_clip(args: argparse.Namespace) -> int:
    from tickline.replays.clip import clip_follow, clip_range, find_event, render_clip
    from tickline.replays.player import render_html

    if bool(args.output) == bool(args.gif):
        raise UsageError("give one of -o FILE.html or --gif FILE.gif")
    _check_output(args.output or args.gif, "-o" if args.output else "--gif")

    def render(replay: Any) -> dict[str, Any]:
        mark = find_event(replay, args.event)
        start, stop = clip_range(replay, mark, args.before, args.after)
        out = {"match_id": replay.header.match_id, "event": mark.event, "tick": mark.tick, "from": start, "to": stop}
        if args.gif:
            render_clip(replay, args.event, Path(args.gif), before_s=args.before, after_s=args.after, pov=args.pov)
            return {**out, "gif": args.gif}
        follow = clip_follow(mark, args.pov)
        page = render_html(replay, start=start, stop=stop, follow=follow, title=f"{args.event} ({args.pov})")
        Path(args.output).write_text(page, encoding="utf-8")
        return {**out, "html": args.output}

    async def main() -> dict[str, Any]:
        return await _render_in_thread(render, await _open(args))

    _print_json(loops.run(main(), args.loop))
    return 0


# ---------------------------------------------------------------------- db


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from tickline.server import migrate
    from tickline.server.eventlog import EventLog

    async def main() -> str | None:
        eventlog = await EventLog.open(_db_url(args))  # opening upgrades
        try:
            return await migrate.current(eventlog.engine)
        finally:
            await eventlog.dispose()

    if not args.db:
        Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    revision = loops.run(main(), args.loop)
    _print_json({"db": _db_url(args), "revision": revision})
    return 0


# ---------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    from tickline.demo import run_demo

    if args.bots < 1 or args.seconds < 1:
        raise UsageError("--bots and --seconds must be at least 1")
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    from tickline.shared.games import load

    load(args.game)  # an unknown game is a usage error before anything starts
    return loops.run(run_demo(Path(args.data_dir), bots=args.bots, seconds=args.seconds, game=args.game), args.loop)


# ---------------------------------------------------------------------- games


def cmd_new_game(args: argparse.Namespace) -> int:
    from tickline.scaffold import ScaffoldError, new_game

    folder = Path(args.dir) if args.dir else Path(args.name)
    try:
        written = new_game(args.name, folder)
    except ScaffoldError as exc:
        raise UsageError(str(exc)) from None
    for path in written:
        print(path)
    print(f"next: pip install -e '{folder}[dev]' && tickline serve --game {args.name}", file=sys.stderr)
    return 0


def cmd_game_list(args: argparse.Namespace) -> int:
    from tickline.shared.games import load, names, versions

    for name in names():
        cls = load(name)
        _print_json(
            {
                "game": name,
                "version": cls.version,
                "versions": sorted(versions(cls)),
                "rules": f"{cls.__module__}:{cls.__qualname__}",
                "behaviours": sorted(cls.behaviours),
                "rates": list(cls.default_rates),
            }
        )
    return 0


def cmd_game_doc(args: argparse.Namespace) -> int:
    from tickline.shared.games import load
    from tickline.shared.schema import describe

    rules = load(args.game)(_parse_settings(args.set))
    sys.stdout.write(describe(rules.name, rules.version, rules.input_schema(), rules.view_schema()))
    return 0


def cmd_types(args: argparse.Namespace) -> int:
    from tickline.shared.games import load
    from tickline.shared.typescript import typescript_types

    rules = load(args.game)(_parse_settings(args.set))
    text = typescript_types(rules.name, rules.version, rules.input_schema(), rules.view_schema())
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        _check_output(args.output, "-o")
        Path(args.output).write_text(text, encoding="utf-8")
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    from tickline.play import play

    return loops.run(play(args), args.loop)


def cmd_spectate(args: argparse.Namespace) -> int:
    from tickline.spectate import spectate

    return loops.run(spectate(args), args.loop)


# ---------------------------------------------------------------------- capacity


def cmd_capacity(args: argparse.Namespace) -> int:
    from tickline.bots.capacity.run import config_from_args, run_capacity, say, write_json_line
    from tickline.server import fastpath  # noqa: F401 - imported for its choice of twin, which native.report() names
    from tickline.shared import native

    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    result = loops.run(run_capacity(cfg), args.loop)
    result["native"] = native.report()  # (the servers this process starts choose the same)
    write_json_line(orjson.dumps(result).decode(), args.json_out)
    if result["players"] is not None:
        say(f"capacity: {result['players']} players (below {result['below']}); {result['elapsed_s']:.0f} s")
        return 0
    say(f"capacity: no figure, at least {result['at_least']} players: {result['why']}")
    return 1


# ---------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from tickline.server.ticker import MATCHES_PER_TICK

    parser = _Parser(prog="tickline", description="An authoritative multiplayer game server with an event-sourced log.")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--loop",
        default="auto",
        choices=loops.LOOPS,
        help="event loop: uvloop where installed (auto), or insist on one (default: auto)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def data_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-dir", default="data", help="folder for the SQLite log and the TLS certificate (default: data)"
        )
        p.add_argument(
            "--db",
            metavar="URL",
            help="SQLAlchemy URL of the event log (default: SQLite in --data-dir), "
            "e.g. postgresql+asyncpg://user@host/db",
        )

    serve = sub.add_parser(
        "serve",
        help="run a game server until SIGINT or SIGTERM",
        description="Run a game server: QUIC on --host:--port, the event log in --db. "
        'Prints one JSON line {"event": "ready", ...} on stdout once it accepts players.',
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"UDP port; 0 picks a free one (default: {DEFAULT_PORT})"
    )
    data_options(serve)
    serve.add_argument("--cert", help="TLS certificate (PEM); default: a self-signed one made under --data-dir/tls")
    serve.add_argument("--key", help="TLS private key (PEM), with --cert")
    serve.add_argument(
        "--game",
        default="arena",
        help="the game to run: an installed game's name, or package.module:Class (default: arena)",
    )
    serve.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a game config value, e.g. --set time_limit_s=120 (repeatable)",
    )
    serve.add_argument("--tick-rate", type=int, help="simulation ticks per second (default: the game's, 60 for arena)")
    serve.add_argument(
        "--send-rate",
        type=int,
        help="state updates per second to each client; divides the tick rate (default: the game's, 30 for arena)",
    )
    serve.add_argument("--matches", type=int, default=1, help="matches open at once (default: 1)")
    serve.add_argument(
        "--placement",
        default="fill",
        choices=["fill", "spread"],
        help="which open match a new player joins: the first with room, or the emptiest (default: fill)",
    )
    serve.add_argument(
        "--matches-per-tick",
        type=int,
        default=MATCHES_PER_TICK,
        help="matches that tick at the same instant, in one wake-up of the server; a match waits for the ones "
        f"before it in its slot (default: {MATCHES_PER_TICK}; 1: every match ticks apart)",
    )
    serve.add_argument(
        "--max-matches", type=int, default=0, help="stop after this many matches have ended (default: 0, never)"
    )
    serve.add_argument("--seed", type=int, help="seed for every match (default: a random seed per match)")
    serve.add_argument(
        "--durability",
        default="batch",
        choices=["batch", "tick"],
        help="batch: commit every --flush-ms, a crash loses at most that much play; "
        "tick: a tick's deltas are sent only once it is committed (default: batch)",
    )
    serve.add_argument(
        "--flush-ms", type=int, default=50, help="longest wait before a commit in batch mode (default: 50)"
    )
    serve.add_argument(
        "--keyframe-every", type=int, default=0, help="ticks between full-state keyframes (default: one per second)"
    )
    serve.add_argument(
        "--grace", type=float, default=20.0, help="seconds a dropped player's place is kept (default: 20)"
    )
    serve.add_argument(
        "--spectator-delay",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how far behind the match spectators watch it; 0 for practice (default: 2)",
    )
    serve.add_argument(
        "--full-snapshots",
        action="store_true",
        help="send every client full snapshots instead of deltas (a baseline for benchmarks)",
    )
    serve.add_argument(
        "--http-port",
        "--metrics-port",
        dest="metrics_port",
        type=int,
        metavar="PORT",
        help="serve HTTP on --http-host:PORT: the lobby /, /play, /monitor, /healthz, Prometheus /metrics, "
        "/matches, the log's /replays and the WebSocket fallback /ws; 0 picks a free port; new players then "
        "need connect tokens from the lobby unless --no-require-tokens (default: off; --metrics-port is the same flag)",
    )
    serve.add_argument(
        "--http-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address the HTTP side listens on, apart from --host (default: 127.0.0.1)",
    )
    serve.add_argument(
        "--no-fastpath", action="store_true", help="keep every datagram on QUIC; do not offer clients the fast path"
    )
    serve.add_argument(
        "--server-id", help="this server's identity as match owner (default: kept in DATA_DIR/server-id)"
    )
    serve.add_argument(
        "--require-tokens",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="every new player's hello must carry a connect token from POST /lobby/token on the HTTP side "
        "(docs/browsers.md) (default: required when --http-port is on)",
    )
    serve.add_argument(
        "--lobby-rate",
        type=float,
        default=10.0,
        metavar="PER_S",
        help="connect tokens the lobby issues a second to one address, in bursts of four seconds' worth; "
        "more are refused with 429 and Retry-After (default: 10)",
    )
    serve.add_argument(
        "--lobby-matches",
        type=int,
        default=4,
        metavar="N",
        help="matches people may create in the lobby, open at once; 0: none (default: 4)",
    )
    serve.add_argument(
        "--lobby-games",
        metavar="NAMES",
        help="comma-separated games the lobby may create matches of, beside --game (default: every installed game)",
    )
    quic = serve.add_argument_group(
        "connections", "who may connect, how many at once, and who may start a QUIC handshake (SECURITY.md)"
    )
    quic.add_argument(
        "--max-connections",
        type=int,
        default=4096,
        metavar="N",
        help="open connections, QUIC and WebSocket, in total (default: 4096)",
    )
    quic.add_argument(
        "--max-connections-per-address",
        type=int,
        default=64,
        metavar="N",
        help="open connections from one address (default: 64)",
    )
    quic.add_argument(
        "--retry",
        choices=["auto", "always", "never"],
        default="auto",
        help="stateless Retry (address validation) for new connections: when over budget or crowded, "
        "for every one, or never (default: auto)",
    )
    quic.add_argument(
        "--new-connections-per-s",
        type=float,
        default=200.0,
        metavar="N",
        help="handshakes started a second, in total (default: 200)",
    )
    quic.add_argument(
        "--new-connections-per-s-per-address",
        type=float,
        default=20.0,
        metavar="N",
        help="handshakes started a second from one address (default: 20)",
    )
    quic.add_argument(
        "--max-half-open", type=int, default=256, metavar="N", help="connections in their handshake (default: 256)"
    )
    quic.add_argument(
        "--max-half-open-per-address",
        type=int,
        default=8,
        metavar="N",
        help="connections in their handshake from one address (default: 8)",
    )
    quic.add_argument(
        "--handshake-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="a connection whose handshake has not finished by then is closed (default: 5)",
    )
    quic.add_argument(
        "--hello-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="a connection that has not said a valid hello by then is closed (default: 5)",
    )
    sends = serve.add_argument_group("what a client may send", "slowed past these, then closed (SECURITY.md)")
    sends.add_argument(
        "--input-messages-per-s",
        type=float,
        default=240.0,
        metavar="N",
        help="datagrams (inputs and acks) one client may send a second (default: 240)",
    )
    sends.add_argument(
        "--input-bytes-per-s",
        type=float,
        default=65536.0,
        metavar="N",
        help="bytes of datagrams one client may send a second (default: 65536)",
    )
    sends.add_argument(
        "--input-burst",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="a backlog this many seconds long may arrive at once (default: 2)",
    )
    sends.add_argument(
        "--ack-timeout",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="a client that sends but acknowledges none of its views for this long is closed (default: 15)",
    )
    sends.add_argument(
        "--idle-timeout",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="a connection whose client sends nothing for this long (not a QUIC packet, not a fast-path "
        "one) is closed as lost; its player's place is kept for --grace (default: 15)",
    )
    sends.add_argument(
        "--receive-window",
        type=int,
        default=128 * 1024,
        metavar="BYTES",
        help="bytes a client may have in flight to the server on its QUIC streams (default: 131072)",
    )
    serve.add_argument(
        "--token-key",
        metavar="FILE",
        help="connect-token signing key, at least 32 bytes; share one file across a fleet "
        "(default: DATA_DIR/tls/token.key, made on first start)",
    )
    serve.add_argument(
        "--admin-token",
        "--monitor-token",
        dest="monitor_token",
        default="",
        metavar="TOKEN",
        help="/metrics, /monitor and /monitor.json then want ?token=TOKEN, an X-Monitor-Token header or "
        "Authorization: Bearer TOKEN; the lobby, play pages and /healthz stay open (default: open; "
        "--monitor-token is the same flag)",
    )
    serve.set_defaults(func=cmd_serve)

    bots = sub.add_parser(
        "bots",
        help="load-test a server with bots",
        description="Run N bots over worker processes against a server, with live progress on "
        "stderr; ends with a table (stderr) and one JSON report line (stdout).",
    )
    bots.add_argument("--server", required=True, metavar="HOST:PORT", help="the server to play on")
    bots.add_argument("--n", type=int, default=8, help="number of bots (default: 8)")
    bots.add_argument("--duration", type=float, default=30.0, help="seconds each bot plays at most (default: 30)")
    bots.add_argument(
        "--workers", type=int, default=0, help="worker processes; 0: as the machine's cores allow (default: 0)"
    )
    bots.add_argument("--ramp", type=float, default=50.0, help="bots started per second (default: 50)")
    bots.add_argument(
        "--behaviour",
        default="default",
        metavar="MIX",
        help="a behaviour, or a weighted mix such as arena=3,idle=1: idle and random (random valid inputs) for "
        "any game, and the game's own (arena: arena, wander); default: the game's first own behaviour",
    )
    bots.add_argument(
        "--game", metavar="GAME", help="the server's game, when it is not installed here: package.module:Class"
    )
    bots.add_argument(
        "--lobby",
        metavar="URL",
        help="the server's HTTP side (http://HOST:HTTP_PORT): each bot takes a connect token from its lobby, "
        "as a server with --http-port requires, and --metrics defaults to URL/metrics",
    )
    bots.add_argument(
        "--metrics", metavar="URL", help="the server's /metrics URL, read for its own figures over the same window"
    )
    bots.add_argument(
        "--report", metavar="FILE.json", help="also write the full report, with its per-second timeline, here"
    )
    bots.add_argument(
        "--plots", metavar="DIR", help="write PNG charts (tick lateness, input latency, bytes per client) here"
    )
    bots.add_argument("--quiet", action="store_true", help="no live progress and no table: only the JSON line")
    bots.add_argument("--cafile", help="verify the server's certificate against this PEM (default: not verified)")
    bots.add_argument("--no-fastpath", action="store_true", help="bots keep every datagram on QUIC")
    bots.add_argument(
        "--input-rate",
        type=int,
        default=0,
        metavar="HZ",
        help="input datagrams per second per bot (default: 0, one per state update the server sends)",
    )
    bots.add_argument(
        "--input-ticks",
        type=int,
        default=1,
        metavar="N",
        help="ticks each bot input holds: the bots read their controls every N ticks "
        "(default: 1; 2 at 60 Hz ticks is 30 inputs a second)",
    )
    bots.add_argument("--seed", type=int, default=1, help="seed for the bots' own choices (default: 1)")
    bots.add_argument(
        "--reconnect",
        type=float,
        default=20.0,
        metavar="S",
        help="a bot whose connection drops comes back as the same player for up to S seconds; 0: never (default: 20)",
    )
    bots.set_defaults(func=cmd_bots)

    replay = sub.add_parser("replay", help="replay matches: list, verify, export, import, render, clip")
    rsub = replay.add_subparsers(dest="replay_command", required=True, parser_class=_Parser)
    rlist = rsub.add_parser("list", help="list the matches in the log, newest first, one JSON line each")
    data_options(rlist)
    rlist.set_defaults(func=cmd_replay_list)
    verify = rsub.add_parser(
        "verify",
        help="re-simulate a match and check every stored state hash",
        description="Re-simulate a match from its header and inputs and compare every stored "
        "state hash. Last line: JSON with verified and, on failure, first_bad_tick and reason.",
    )
    verify.add_argument("match", metavar="MATCH", help=MATCH_HELP)
    verify.add_argument(
        "--rules",
        type=int,
        metavar="VERSION",
        help="re-simulate under this version of the game's rules instead of the recorded one, and report the "
        "first tick whose state differs (a regression test for a rules change)",
    )
    verify.add_argument(
        "--game", metavar="GAME", help="the match's game, when it is not installed here: package.module:Class"
    )
    data_options(verify)
    verify.set_defaults(func=cmd_replay_verify)
    export = rsub.add_parser(
        "export",
        help="write a match to one portable replay file",
        description="Write a match (re-simulated and checked on the way) to a self-contained replay file: "
        "a header readable on its own, the compressed inputs, hashes and keyframes, and checksums "
        "(docs/replays.md). Prints one JSON line: file, bytes, ticks.",
    )
    export.add_argument("match", metavar="MATCH", help=MATCH_HELP)
    export.add_argument("-o", "--output", required=True, metavar="FILE", help="the replay file to write")
    data_options(export)
    export.set_defaults(func=cmd_replay_export)
    info = rsub.add_parser(
        "info",
        help="one JSON line about a match: game, players, duration, result, marks",
        description="A replay file's header (its body is not read), or the same facts of a match in the log.",
    )
    info.add_argument("match", metavar="MATCH", help=MATCH_HELP)
    data_options(info)
    info.set_defaults(func=cmd_replay_info)
    imp = rsub.add_parser(
        "import",
        help="add a replay file's match to the event log (verified first)",
        description="Re-simulate a replay file, checking every tick and its header, then write the match "
        "to the event log (--db) as if it had been played there.",
    )
    imp.add_argument("file", metavar="FILE", help="a replay file")
    data_options(imp)
    imp.set_defaults(func=cmd_replay_import)
    render = rsub.add_parser(
        "render",
        help="draw a match: a self-contained HTML player, PNG pictures, an animated GIF",
        description="-o writes one HTML file that plays the match in any browser, with no network: play, "
        "pause, scrub, speeds, step a tick, follow a player. --png DIR writes a heat map, kill locations "
        "and score over time; --gif FILE an animation of --from..--to. Prints one JSON line of what it wrote.",
    )
    render.add_argument("match", metavar="MATCH", help=MATCH_HELP)
    render.add_argument("-o", "--output", metavar="FILE.html", help="the HTML replay player to write")
    render.add_argument("--png", metavar="DIR", help="write heatmap.png, kills.png and scores.png here")
    render.add_argument("--gif", metavar="FILE.gif", help="write an animated GIF of the tick range")
    render.add_argument("--from", dest="start", type=int, default=1, metavar="TICK", help="first tick (default: 1)")
    render.add_argument("--to", type=int, metavar="TICK", help="last tick (default: the match's last)")
    render.add_argument("--follow", type=int, default=0, metavar="PLAYER", help="open on this player's own view")
    render.add_argument("--size", type=int, default=480, metavar="PX", help="the GIF's width (default: 480)")
    render.add_argument("--speed", type=float, default=1.0, help="the GIF's speed, 1: real time (default: 1)")
    render.add_argument("--fps", type=int, default=15, help="the GIF's frames per second (default: 15)")
    data_options(render)
    render.set_defaults(func=cmd_replay_render)
    clip = rsub.add_parser(
        "clip",
        help="a kill-cam: a few seconds around one event, from the killer's or the victim's view",
        description="Re-simulate around one event (kill:3, the third kill) from the nearest keyframe, and "
        "write it as an HTML player (-o) or an animated GIF (--gif). With arena's hitscan weapon, the "
        "killer's GIF holds on what the killer saw when it fired (lag compensation).",
    )
    clip.add_argument("match", metavar="MATCH", help=MATCH_HELP)
    clip.add_argument("--event", required=True, metavar="KIND:N", help="the N-th event of a kind, e.g. kill:1")
    clip.add_argument("--before", type=_seconds, default=5.0, metavar="S", help="seconds before it (default: 5s)")
    clip.add_argument("--after", type=_seconds, default=2.0, metavar="S", help="seconds after it (default: 2s)")
    clip.add_argument(
        "--pov", choices=("killer", "victim", "map"), default="killer", help="whose view (default: killer)"
    )
    clip.add_argument("-o", "--output", metavar="FILE.html", help="write the clip as an HTML player")
    clip.add_argument("--gif", metavar="FILE.gif", help="write the clip as an animated GIF")
    data_options(clip)
    clip.set_defaults(func=cmd_replay_clip)

    db = sub.add_parser("db", help="manage the event log's schema")
    dsub = db.add_subparsers(dest="db_command", required=True, parser_class=_Parser)
    upgrade = dsub.add_parser("upgrade", help="create or upgrade the event log's schema to this version's (Alembic)")
    data_options(upgrade)
    upgrade.set_defaults(func=cmd_db_upgrade)

    demo = sub.add_parser(
        "demo",
        help="server, bots and replay verification end to end",
        description="Start a server on 127.0.0.1 with the SQLite log, play one match with bots over "
        "QUIC, stop the server with SIGTERM, then verify the match from the log.",
    )
    demo.add_argument("--bots", type=int, default=8, help="number of bots (default: 8)")
    demo.add_argument(
        "--seconds", type=int, default=15, help="match length in seconds, for games with a time limit (default: 15)"
    )
    demo.add_argument("--game", default="arena", help="the game: a name, or package.module:Class (default: arena)")
    demo.add_argument("--data-dir", default="data", help="where the log and certificate go (default: data)")
    demo.set_defaults(func=cmd_demo)

    new = sub.add_parser("new", help="start something new: `tickline new game NAME [DIR]`")
    nsub = new.add_subparsers(dest="new_command", required=True, parser_class=_Parser)
    new_game = nsub.add_parser(
        "game",
        help="write a small installable package with a working game in it",
        description="Write a package for a new game: its rules with declared inputs and views, a bot, tests "
        "that replay it and verify a real match, and a README. Install it with pip and tickline finds it by name.",
    )
    new_game.add_argument("name", help="the game's name, a Python package name (e.g. coinrush)")
    new_game.add_argument("dir", nargs="?", help="the folder to write (default: ./NAME); new or empty")
    new_game.set_defaults(func=cmd_new_game)

    game = sub.add_parser("game", help="the games this installation can run")
    gsub = game.add_subparsers(dest="game_command", required=True, parser_class=_Parser)
    glist = gsub.add_parser("list", help="every installed game, one JSON line each")
    glist.set_defaults(func=cmd_game_list)
    gdoc = gsub.add_parser(
        "doc", help="a game's wire reference (inputs, views, units) in Markdown, from its declarations"
    )
    gdoc.add_argument("game", help="an installed game's name, or package.module:Class")
    gdoc.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a game config value")
    gdoc.set_defaults(func=cmd_game_doc)
    types = sub.add_parser(
        "types",
        help="TypeScript types of a game's controls and views, from its declarations (for the web SDK)",
        description="Write a TypeScript module with an interface for the game's controls and one for its "
        "views (docs/web-sdk.md), generated from the game's declared schemas.",
    )
    types.add_argument("game", help="an installed game's name, or package.module:Class")
    types.add_argument("-o", "--output", metavar="FILE.ts", help="the file to write (default: stdout)")
    types.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a game config value")
    types.set_defaults(func=cmd_types)

    from tickline.play import add_arguments as play_arguments

    play = sub.add_parser(
        "play",
        help="play arena in a window, with keyboard and mouse (needs the 'play' extra: pygame)",
        description="A desktop client: W A S D or the arrow keys move, the mouse aims, the left button fires, "
        "Esc leaves. Built on the Python client SDK (docs/client.md).",
    )
    play_arguments(play)
    play.set_defaults(func=cmd_play)

    from tickline.spectate import add_arguments as spectate_arguments

    spectate = sub.add_parser(
        "spectate",
        help="watch a live match as a spectator, behind it by the server's spectator delay",
        description="Watch a match the server runs, as the server delays it for spectators (serve "
        "--spectator-delay): one JSON line per view received, with its tick, the server's tick, how far "
        "behind that is, and the scoreboard. Stops after --ticks views, after --seconds, or when the match ends.",
    )
    spectate_arguments(spectate)
    spectate.set_defaults(func=cmd_spectate)

    from tickline.bots.capacity.run import add_arguments as capacity_arguments

    capacity = sub.add_parser(
        "capacity",
        help="how many players one server process holds on this machine",
        description="Find the largest number of players one `tickline serve` process holds at --tick-rate and "
        "--send-rate with its tick lateness p99 under --bound-ms, no tick or send skipped and every bot kept: "
        "real servers, real bots, a doubling then bisecting search whose edges are probed twice. Progress on "
        "stderr; one JSON line on stdout: players (null when the run cannot stand behind a figure, with why), "
        "at_least and below. Exit status 1 when there is no figure.",
    )
    capacity_arguments(capacity)
    capacity.set_defaults(func=cmd_capacity)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    from tickline.replays.file import ReplayFileError
    from tickline.replays.reader import LogUnavailable, MatchNotFound
    from tickline.server.app import ConfigurationError, ServerUnavailable
    from tickline.server.eventlog import EventLogUnavailable
    from tickline.shared.game import ConfigError
    from tickline.shared.games import GameNotInstalled, UnknownGame
    from tickline.shared.logformat import Divergence, UnsupportedLogUrl

    # A stored match that needs a game (or version) this installation lacks fails at run time;
    # a command that names an unknown game is a usage error.
    runtime_errors = (
        EventLogUnavailable,
        LogUnavailable,
        MatchNotFound,
        ServerUnavailable,
        GameNotInstalled,
        ReplayFileError,
        Divergence,
    )
    usage_errors = (UsageError, ConfigurationError, ConfigError, UnknownGame, UnsupportedLogUrl, loops.LoopUnavailable)

    prog = f"tickline {args.command}"
    try:
        status: int = args.func(args)
        return status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`tickline replay list | head`).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except BaseException as caught:
        exc = _leaf(caught)
        if isinstance(exc, runtime_errors):
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 1
        if isinstance(exc, usage_errors):
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 2
        raise


def _leaf(exc: BaseException) -> BaseException:
    """The one real error inside (possibly nested) exception groups, else ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        if len(inner) != 1:
            return exc
        exc = inner[0]
    return exc


if __name__ == "__main__":
    sys.exit(main())
