"""Benchmark of tickline's event log, one JSON line per figure (docs/benchmarks.md).

From the repository root, with the project's virtualenv:

    .venv/bin/python -m bench.eventlog [--quick] [--json-out FILE] [--pg-url URL] [--only PARTS]

Figures (bench/README.md says what each one means):

1. ``eventlog_append_rows_per_s``  TickRecords through EventLog.append and its writer, vs raw sqlite3
2. ``tick_late_p99_added_ms``      10 matches x 16 players at 60 Hz, with the writer vs commits doing nothing
3. ``commit_p99_ms_sqlite`` / ``commit_p99_ms_postgres``  EventLog commit p99 during (2), vs the raw driver
4. ``recovery_s``                  Server start to the first new tick of a 30-minute match left running
5. ``replay_read_ticks_per_s``     LogReader.ticks over that log, vs a raw sqlite3 SELECT

Every figure runs its baseline in the same process, in turns (A B A B ...). Only
stdout carries the JSON lines; progress goes to stderr. The matches' sessions sit
on a null channel; the only socket is the recovery figure's server's own QUIC
endpoint, bound to 127.0.0.1 on a free port as a restarted server binds it.
PostgreSQL, when a URL is given, is reached as a client only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from bench.report import Report, rnd, sig
from tickline.bots.procstat import CORES, affinity, cpu_plan, own_cpu_s
from tickline.replays.reader import LogReader
from tickline.server.app import SWITCH_INTERVAL_S, Server, ServerConfig
from tickline.server.eventlog import (
    EventLog,
    KeyframeRecord,
    PlayerRecord,
    Prepared,
    Record,
    TickRecord,
    token_hash,
)
from tickline.server.gcpacing import GcPacer
from tickline.server.match import Match, MatchSettings
from tickline.server.session import Session
from tickline.server.stats import Samples
from tickline.server.tls import ensure_certificate
from tickline.shared.game import Rules, State, TickInputs, state_hash
from tickline.shared.games import make_rules
from tickline.shared.logformat import (
    MatchHeader,
    decode_payload,
    decode_state,
    encode_payload,
    replay_stored_tick,
)
from tickline.shared.protocol import Input, encode

PLAYERS = 16
TICK_RATE = 60
SEND_RATE = 30
MATCHES = 10
KEYFRAME_EVERY = 60
SERVER_ID = "tlbench-server"
# Long enough that no match of this bench ends on its own.
GAME_CONFIG = {"time_limit_s": 7200, "score_limit": 1_000_000}
PG_URL_ENV = "TICKLINE_TEST_PG_URL"
PARTS = ("append", "matches", "postgres", "recovery", "replay")

PYTHON = platform.python_version()


# --------------------------------------------------------------------------- reporting


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def cpu_seconds() -> float:
    """CPU time of this process (all its threads, aiosqlite's included)."""
    return own_cpu_s()


def percentile(values: list[float], p: float) -> float:
    """Nearest rank, as server.stats.Samples computes it."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def figure(
    name: str,
    unit: str,
    values: list[float],
    baselines: list[float],
    baseline_of: str,
    target: str,
    holds: Callable[[float], bool] | None,
    digits: int,
    ratios: list[float] | None = None,
    holds_on: str = "value",
    **extra: Any,
) -> dict[str, Any]:
    """One figure: medians of the runs; ratio is the median of the per-turn ratios;
    ``holds`` is applied to the median value, or to the ratio when the target is one."""
    if ratios is None:
        ratios = [v / b for v, b in zip(values, baselines, strict=True)]
    value = statistics.median(values)
    ratio = statistics.median(ratios)
    return {
        "figure": name,
        "value": rnd(value, digits),
        "unit": unit,
        "baseline": rnd(statistics.median(baselines), digits),
        "baseline_of": baseline_of,
        "ratio": sig(ratio),
        "target": target,
        "holds": None if holds is None else bool(holds(ratio if holds_on == "ratio" else value)),
        "runs": len(values),
        "spread": [sig(min(ratios)), sig(max(ratios))],
        "cores": CORES,
        "python": PYTHON,
        **extra,
    }


# --------------------------------------------------------------------------- a scripted arena match


# As bots/world.py: each datagram repeats up to this many unconfirmed inputs.
REDUNDANT_INPUTS = 8
# How far behind the newest snapshot a client renders (its "vt", the tick it sees).
VIEW_BEHIND_TICKS = 6


def random_controls(rng: random.Random, vt: int | None = None) -> dict[str, Any]:
    controls = {
        "mx": rng.randint(-1, 1),
        "my": rng.randint(-1, 1),
        "ax": rng.randint(-100_000, 100_000),
        "ay": rng.randint(-100_000, 100_000),
        "fire": rng.random() < 0.5,
    }
    if vt is not None:
        controls["vt"] = vt
    return controls


def new_header(rules: Rules, seed: int) -> MatchHeader:
    return MatchHeader(
        match_id=uuid.uuid4().hex,
        game=rules.name,
        game_version=rules.version,
        seed=seed,
        config=rules.config,
        tick_rate=TICK_RATE,
        send_rate=SEND_RATE,
        created_at=time.time(),
    )


def simulate(
    rules: Rules, seed: int, ticks: int, rng: random.Random
) -> Iterator[tuple[int, dict[str, Any], list[dict[str, Any]], str, State]]:
    """(tick, inputs record, events, state hash, state) of a 16-player arena match.

    All players join at tick 1; from tick 2 every player has one new input per
    tick (random valid controls, with the tick it sees and its sequence number),
    as the server's netcode applies them and as the clients of figure 2 send them.
    """
    state = rules.initial_state(seed)
    joins = [(pid, f"bot{pid}") for pid in range(1, PLAYERS + 1)]
    for tick in range(1, ticks + 1):
        inputs = TickInputs(joins=joins if tick == 1 else [])
        if tick > 1:
            vt = max(0, tick - 2 - VIEW_BEHIND_TICKS)
            for pid in range(1, PLAYERS + 1):
                inputs.inputs[pid] = rules.validate_input(random_controls(rng, vt))
                inputs.seqs[pid] = tick - 1
        events = rules.step(state, inputs)
        yield tick, inputs.to_record(), events, state_hash(state), state


def remove_sqlite(path: Path) -> None:
    """A SQLite file of this bench and its WAL files, if there."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def raw_sqlite(path: Path) -> sqlite3.Connection:
    """A raw sqlite3 connection with the event log writer's pragmas (WAL, synchronous=NORMAL, foreign keys)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


async def migrated_sqlite(path: Path, headers: tuple[MatchHeader, ...] = ()) -> None:
    """A SQLite file with the event log's schema (Alembic, as the server makes it) and these matches."""
    log = await EventLog.open(sqlite_url(path), SERVER_ID)
    try:
        for header in headers:
            await log.create_match(header)
    finally:
        await log.dispose()


INSERT_TICKS_QMARK = "INSERT INTO ticks (match_id, tick, payload, hash) VALUES (?, ?, ?, ?)"
INSERT_KEYFRAMES_QMARK = "INSERT INTO keyframes (match_id, tick, state, hash) VALUES (?, ?, ?, ?)"
INSERT_TICKS_PG = "INSERT INTO ticks (match_id, tick, payload, hash) VALUES ($1, $2, $3, $4)"
INSERT_KEYFRAMES_PG = "INSERT INTO keyframes (match_id, tick, state, hash) VALUES ($1, $2, $3, $4)"


@contextmanager
def server_switch_interval() -> Iterator[None]:
    """The GIL's switch interval that ``Server.run`` sets, restored after."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


# --------------------------------------------------------------------------- 1. append throughput


# The driver appends as ten matches of a server do: ten records, then back to the
# event loop, as tick loops yield every tick, so the writer commits while records
# keep coming. (Appending all 20,000 without yielding, the writer could start only
# once the queue was full, and encoding and committing never overlapped: 0.46.)
RECORDS_PER_YIELD = 10


async def append_through_eventlog(path: Path, header: MatchHeader, records: list[TickRecord]) -> dict[str, float]:
    log = await EventLog.open(sqlite_url(path), SERVER_ID)  # default LogSettings
    try:
        await log.create_match(header)
        last = records[-1].tick
        with server_switch_interval():
            writer = asyncio.create_task(log.run(), name="eventlog-writer")
            await asyncio.sleep(0)
            cpu0, t0 = cpu_seconds(), time.perf_counter()
            for i, record in enumerate(records):
                if not log.has_room():  # as a match pauses while the writer is behind
                    await log.wait_for_room()
                log.append(record)
                if i % RECORDS_PER_YIELD == RECORDS_PER_YIELD - 1:
                    await asyncio.sleep(0)
            # The last group is committed at once, as at shutdown, not flush_ms after
            # its first record: that wait is latency the batch setting allows, not
            # work, and it was a quarter of the elapsed time.
            log.stop()
            await writer
            elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        assert log.committed[header.match_id] == last and log.rows == len(records), "not all rows committed"
        return {"rate": len(records) / elapsed, "elapsed": elapsed, "cpu": cpu, "commits": log.commits}
    finally:
        await log.dispose()


def append_raw(path: Path, rows: list[tuple[str, int, bytes, str]]) -> dict[str, float]:
    conn = raw_sqlite(path)
    try:
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(INSERT_TICKS_QMARK, rows)
        conn.execute("COMMIT")
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    finally:
        conn.close()
    return {"rate": len(rows) / elapsed, "elapsed": elapsed, "cpu": cpu}


async def fig_append(report: Report, tmp: Path, n_ticks: int, runs: int) -> None:
    say(f"append: simulating {n_ticks} ticks of a {PLAYERS}-player arena match")
    rules = make_rules("arena", GAME_CONFIG)
    header = new_header(rules, seed=1)
    rng = random.Random(1)
    records = [
        TickRecord(header.match_id, tick, record, events, digest)
        for tick, record, events, digest, _state in simulate(rules, header.seed, n_ticks, rng)
    ]
    raw_rows = [(r.match_id, r.tick, encode_payload(r.inputs, r.events), r.hash) for r in records]
    payload_bytes = sum(len(row[2]) for row in raw_rows) / len(raw_rows)
    gc.collect()
    gc.freeze()  # the precomputed records are not garbage the writer should pay to scan
    a_runs, b_runs = [], []
    try:
        for i in range(runs):
            a_path, b_path = tmp / f"append-a{i}.db", tmp / f"append-b{i}.db"
            await migrated_sqlite(b_path, (header,))
            a = await append_through_eventlog(a_path, header, records)
            b = append_raw(b_path, raw_rows)
            a_runs.append(a)
            b_runs.append(b)
            say(
                f"append run {i + 1}/{runs}: EventLog {a['rate']:,.0f} rows/s ({a['commits']} commits), "
                f"raw {b['rate']:,.0f} rows/s"
            )
            remove_sqlite(a_path)
            remove_sqlite(b_path)
    finally:
        gc.unfreeze()
    del records, raw_rows
    report.emit(
        figure(
            "eventlog_append_rows_per_s",
            "rows/s",
            [a["rate"] for a in a_runs],
            [b["rate"] for b in b_runs],
            "raw sqlite3 executemany, same rows (payloads already encoded), same ticks table, "
            "WAL, synchronous=NORMAL, one transaction",
            ">= 0.5",
            lambda r: r >= 0.5,
            0,
            holds_on="ratio",
            rows=n_ticks,
            payload_bytes_mean=round(payload_bytes, 1),
            commits_median=statistics.median(a["commits"] for a in a_runs),
            cpu_s_per_100k_rows=round(statistics.median(a["cpu"] for a in a_runs) / n_ticks * 1e5, 3),
            baseline_cpu_s_per_100k_rows=round(statistics.median(b["cpu"] for b in b_runs) / n_ticks * 1e5, 3),
        )
    )


# --------------------------------------------------------------------------- 2/3. ten live matches


class NullChannel:
    """Stands in for the network, which this figure does not measure: sending only counts bytes.

    It plays the little a client's side must for the server to behave as with a
    real one: it remembers the newest delta's tick and applied input sequence
    (so the scripted client acks snapshots and drops confirmed inputs), and it
    closes the connection when told goodbye.
    """

    __slots__ = ("bytes", "confirmed_seq", "frames", "last_tick", "peer", "session")

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.bytes = 0
        self.frames = 0
        self.last_tick = 0
        self.confirmed_seq = 0
        self.session: Session | None = None

    def note(self, body: bytes) -> None:
        self.bytes += len(body)
        self.frames += 1
        # A delta is b'{"tick":T,"base":B,"seq":S,"diff":...,"t":"d"}' (shared.protocol.encode_delta).
        if body.startswith(b'{"tick":') and body.endswith(b'"t":"d"}'):
            tick, _base, seq, _rest = body.split(b",", 3)
            self.last_tick = int(tick[8:])
            self.confirmed_seq = int(seq[6:])
        elif body.endswith(b'"t":"bye"}') and self.session is not None:
            # A client told goodbye closes its connection (a match that says goodbye waits for it).
            asyncio.get_running_loop().call_soon(self.session.on_closed, "client closed after bye")

    def send_reliable(self, body: bytes) -> None:
        self.note(body)

    def send_datagram(self, body: bytes) -> None:
        self.note(body)

    def close(self, reason: str, error: bool = False) -> None:
        pass

    def offer_fastpath(self) -> None:
        """A null channel has no fast path."""
        return None

    def fast_sender(self) -> None:
        return None


Batch = tuple[tuple[bool, str, int], ...]  # (is keyframe, match id, tick) of each row a commit wrote


class SwitchableLog(EventLog):
    """The event log whose commits can be switched off (``null``): the same queue and
    writer task, but a commit does nothing beyond marking its records committed (and
    telling the matches, as a commit does): the baseline's side. While recording, it
    notes which ticks and keyframes each real commit wrote together (keys only, no
    payloads), so the raw-driver baseline can commit the same rows in the same groups."""

    null = False
    batches: list[Batch] | None = None  # None: not recording

    async def commit(self, prepared: Prepared) -> None:
        if self.null:
            self.mark_committed(prepared)
            return
        await super().commit(prepared)
        if self.batches is not None:
            self.batches.append(
                tuple((False, row[0], row[1]) for row in prepared.ticks)
                + tuple((True, row["match_id"], row["tick"]) for row in prepared.keyframes)
            )


@dataclass
class MatchesRun:
    late: Samples  # with the writer committing
    late_without: Samples | None  # interleaved slices with commits doing nothing (None: not interleaved)
    slice_late: list[tuple[bool, list[float]]]  # (real commits, lateness) of each slice, in order
    work: Samples
    commit_s: list[float]
    batches: list[tuple[tuple[bool, str, int], ...]]
    ticks: int
    catch_ups: int
    pauses: int
    cpu_pct: float
    cpu_pct_without: float | None
    commits: int
    bytes_down: int
    inputs_applied: int
    match_ids: list[str] = field(default_factory=list)


async def drive_inputs(sessions: list[Session], rng: random.Random) -> None:
    """The scripted clients, as bots/client.py plays: one new input per tick (random
    valid controls and the tick the client sees), sent as one Input datagram per
    send interval (every other tick) that repeats the newest unconfirmed inputs and
    acks the newest snapshot; half the clients send on even ticks, half on odd ones."""
    loop = asyncio.get_running_loop()
    dt = 1.0 / TICK_RATE
    every = TICK_RATE // SEND_RATE
    pool = [random_controls(rng) for _ in range(1024)]  # drawn once: the driver's own cost stays small
    pending: list[deque[list[Any]]] = [deque() for _ in sessions]
    seqs = [0] * len(sessions)
    start = loop.time()
    n = 0
    while True:
        n += 1
        delay = start + n * dt - loop.time()
        await asyncio.sleep(delay if delay > 0 else 0)
        for idx, session in enumerate(sessions):
            if session.closed.is_set():
                continue
            channel = cast(NullChannel, session.channel)  # every session here was made on one
            seqs[idx] = seq = seqs[idx] + 1
            controls = dict(pool[(seq * 7 + idx) % len(pool)])
            controls["vt"] = max(0, channel.last_tick - VIEW_BEHIND_TICKS)
            queue = pending[idx]
            queue.append([seq, controls])
            while queue and queue[0][0] <= channel.confirmed_seq:
                queue.popleft()
            if (n + idx) % every == 0:
                batch = list(queue)[-REDUNDANT_INPUTS:]
                session.on_datagram(encode(Input(ack=channel.last_tick, inputs=batch)))


# Interleaving: the writer's real commits and null commits alternate in slices of
# this length, and the first ticks after each switch count for neither side.
SLICE_S = 1.0
SWITCH_SETTLE_S = 0.1


async def run_matches(url: str, duration: float, warmup: float, seed: int, interleave: bool = False) -> MatchesRun:
    """10 matches with scripted clients, logging to ``url``; their tick lateness over
    ``duration`` seconds of real commits (and, with ``interleave``, as long again of
    null commits, alternating with them in SLICE_S slices: whatever else the machine
    does then weighs on both sides alike)."""
    gc.collect()
    switch_interval = sys.getswitchinterval()
    log = await SwitchableLog.open(url, SERVER_ID)
    writer = asyncio.create_task(log.run(), name="eventlog-writer")
    matches: list[Match] = []
    tasks: list[asyncio.Task[None]] = []
    sessions: list[Session] = []
    driver: asyncio.Task[None] | None = None
    pacer: asyncio.Task[None] | None = None
    try:
        for i in range(MATCHES):
            match = Match(
                MatchSettings(game_config=dict(GAME_CONFIG), seed=seed + i, tick_rate=TICK_RATE, send_rate=SEND_RATE),
                log,
            )
            tasks.append(asyncio.create_task(match.run(), name=f"match-{i}"))
            await match.opened.wait()
            for p in range(1, PLAYERS + 1):
                channel = NullChannel(f"null-{i}-{p}")
                session = channel.session = Session(channel)
                session.name = f"bot{p}"
                match.admit(session)
                sessions.append(session)
            matches.append(match)
            # Matches start when their players come, not all at one instant: spread
            # their tick phases over one tick.
            await asyncio.sleep(1.0 / TICK_RATE / MATCHES)
        gc.freeze()  # as Server.run does once start-up is over, and from then on it paces collections
        pacer = asyncio.create_task(GcPacer().run(), name="gc-pacer")
        sys.setswitchinterval(SWITCH_INTERVAL_S)  # as Server.run does too
        driver = asyncio.create_task(drive_inputs(sessions, random.Random(seed)), name="input-driver")
        await asyncio.sleep(warmup)
        for match in matches:
            if match.status != "running":
                raise RuntimeError(f"match {match.match_id[:8]} is {match.status}, not running")
        # Pool every match's samples from here on (Match.tick_late is a Samples it adds to).
        settling, work = Samples(), Samples(1_000_000)

        def count_into(target: Samples) -> None:
            for match in matches:
                match.tick_late = target
                match.tick_work = settling if target is settling else work

        log.commit_seconds = Samples(1_000_000)
        log.batches = []
        ticks0 = sum(m.tick for m in matches)
        catch0 = sum(m.catch_ups for m in matches)
        pauses0 = sum(m.pauses for m in matches)
        inputs0 = sum(m.inputs_applied for m in matches)
        bytes0 = sum(cast(NullChannel, s.channel).bytes for s in sessions)  # sessions on NullChannels
        spent = {True: [0.0, 0.0], False: [0.0, 0.0]}  # real -> [cpu s, wall s]
        slice_late: list[tuple[bool, list[float]]] = []
        slices = max(1, round(duration / SLICE_S)) * 2 if interleave else 1
        for i in range(slices):
            real = i % 2 == 0
            log.null = not real
            if interleave:
                count_into(settling)
                await asyncio.sleep(SWITCH_SETTLE_S)
            part = Samples(1_000_000)
            count_into(part)
            cpu0, t0 = cpu_seconds(), time.perf_counter()
            await asyncio.sleep(SLICE_S - SWITCH_SETTLE_S if interleave else duration)
            spent[real][0] += cpu_seconds() - cpu0
            spent[real][1] += time.perf_counter() - t0
            count_into(settling)
            slice_late.append((real, part.values()))
        log.null = False
        late, late_without = Samples(1_000_000), Samples(1_000_000)  # each side's slices, pooled
        for real, values in slice_late:
            for value in values:
                (late if real else late_without).add(value)
        result = MatchesRun(
            late=late,
            late_without=late_without if interleave else None,
            slice_late=slice_late,
            work=work,
            commit_s=log.commit_seconds.values(),
            batches=list(log.batches),
            ticks=sum(m.tick for m in matches) - ticks0,
            catch_ups=sum(m.catch_ups for m in matches) - catch0,
            pauses=sum(m.pauses for m in matches) - pauses0,
            cpu_pct=100 * spent[True][0] / spent[True][1],
            cpu_pct_without=100 * spent[False][0] / spent[False][1] if interleave else None,
            commits=len(log.batches),
            bytes_down=sum(cast(NullChannel, s.channel).bytes for s in sessions) - bytes0,
            inputs_applied=sum(m.inputs_applied for m in matches) - inputs0,
            match_ids=[m.match_id for m in matches],
        )
        log.batches = None
        kicked = [s for s in sessions if s.closed.is_set()]
        if kicked:
            raise RuntimeError(f"{len(kicked)} scripted clients were closed mid-run: {kicked[0].close_reason}")
    finally:
        for task in (driver, pacer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for match in matches:
            match.stop()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        log.stop()
        await writer
        await log.dispose()
        gc.unfreeze()
        sys.setswitchinterval(switch_interval)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return result


@dataclass
class StoredRows:
    """The rows one matches run committed, read back, to commit them again elsewhere."""

    matches: list[dict[str, Any]]
    ticks: dict[tuple[str, int], tuple[str, int, bytes, str]]
    keyframes: dict[tuple[str, int], tuple[str, int, bytes, str]]

    def batch(self, batch: Batch) -> tuple[list[tuple[str, int, bytes, str]], list[tuple[str, int, bytes, str]]]:
        return (
            [self.ticks[(m, t)] for is_kf, m, t in batch if not is_kf],
            [self.keyframes[(m, t)] for is_kf, m, t in batch if is_kf],
        )


def fetch_sqlite(src: Path, match_ids: list[str]) -> StoredRows:
    conn = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        marks = ",".join("?" * len(match_ids))
        return StoredRows(
            [dict(r) for r in conn.execute(f"SELECT * FROM matches WHERE match_id IN ({marks})", match_ids)],
            {
                (r[0], r[1]): tuple(r)
                for r in conn.execute(
                    f"SELECT match_id, tick, payload, hash FROM ticks WHERE match_id IN ({marks})", match_ids
                )
            },
            {
                (r[0], r[1]): tuple(r)
                for r in conn.execute(
                    f"SELECT match_id, tick, state, hash FROM keyframes WHERE match_id IN ({marks})", match_ids
                )
            },
        )
    finally:
        conn.close()


async def fetch_pg(dsn: str, match_ids: list[str]) -> StoredRows:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=15)
    try:
        return StoredRows(
            [dict(r) for r in await conn.fetch("SELECT * FROM matches WHERE match_id = ANY($1::text[])", match_ids)],
            {
                (r[0], r[1]): tuple(r)
                for r in await conn.fetch(
                    "SELECT match_id, tick, payload, hash FROM ticks WHERE match_id = ANY($1::text[])", match_ids
                )
            },
            {
                (r[0], r[1]): tuple(r)
                for r in await conn.fetch(
                    "SELECT match_id, tick, state, hash FROM keyframes WHERE match_id = ANY($1::text[])", match_ids
                )
            },
        )
    finally:
        await conn.close()


def raw_sqlite_commits(dst: Path, rows: StoredRows, batches: list[Batch]) -> list[float]:
    """Commit the same rows in the same groups through raw sqlite3; seconds per commit."""
    conn = raw_sqlite(dst)
    try:
        columns = list(rows.matches[0])
        conn.executemany(
            f"INSERT INTO matches ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [tuple(m.values()) for m in rows.matches],
        )
        times = []
        for batch in batches:
            tick_rows, kf_rows = rows.batch(batch)
            t0 = time.perf_counter()
            conn.execute("BEGIN")
            if tick_rows:
                conn.executemany(INSERT_TICKS_QMARK, tick_rows)
            if kf_rows:
                conn.executemany(INSERT_KEYFRAMES_QMARK, kf_rows)
            conn.execute("COMMIT")
            times.append(time.perf_counter() - t0)
        return times
    finally:
        conn.close()


async def raw_pg_commits(dst_dsn: str, rows: StoredRows, batches: list[Batch]) -> list[float]:
    """Commit the same rows in the same groups through raw asyncpg; seconds per commit."""
    import asyncpg

    conn = await asyncpg.connect(dst_dsn, timeout=15)
    try:
        columns = list(rows.matches[0])
        marks = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
        await conn.executemany(
            f"INSERT INTO matches ({', '.join(columns)}) VALUES ({marks})", [tuple(m.values()) for m in rows.matches]
        )
        times = []
        for batch in batches:
            tick_rows, kf_rows = rows.batch(batch)
            t0 = time.perf_counter()
            async with conn.transaction():
                if tick_rows:
                    await conn.executemany(INSERT_TICKS_PG, tick_rows)
                if kf_rows:
                    await conn.executemany(INSERT_KEYFRAMES_PG, kf_rows)
            times.append(time.perf_counter() - t0)
        return times
    finally:
        await conn.close()


async def idle_eventlog_commits(dst_url: str, rows: StoredRows, batches: list[Batch]) -> list[float]:
    """The same groups through the event log's own commit path (``EventLog.commit_group``),
    with nothing else running on the loop: separates what the matches' load adds to commit
    latency from what the log's own path costs."""
    log = await EventLog.open(dst_url, SERVER_ID)
    try:
        for match in rows.matches:
            await log.create_match(MatchHeader.from_row(match))
        groups: list[list[Record]] = []
        for batch in batches:
            group: list[Record] = []
            for is_kf, m, t in batch:
                if is_kf:
                    _m, _t, state, digest = rows.keyframes[(m, t)]
                    group.append(KeyframeRecord(m, t, decode_state(state), digest))
                else:
                    _m, _t, payload, digest = rows.ticks[(m, t)]
                    inputs, events = decode_payload(payload)
                    group.append(TickRecord(m, t, inputs, events, digest))
            groups.append(group)
        log.commit_seconds = Samples(1_000_000)
        for group in groups:
            await log.commit_group(group)  # commit_seconds times the transaction only, not the encoding
        return log.commit_seconds.values()
    finally:
        await log.dispose()


def late_summary(run: MatchesRun) -> dict[str, float]:
    return {
        "p50_ms": round(run.late.percentile(50) * 1000, 3),
        "p99_ms": round(run.late.percentile(99) * 1000, 3),
        "max_ms": round(run.late.max * 1000, 3),
    }


def batch_sizes(run: MatchesRun) -> dict[str, float]:
    sizes = [sum(1 for is_kf, _m, _t in b if not is_kf) for b in run.batches]
    return {"median": statistics.median(sizes) if sizes else 0, "max": max(sizes, default=0)}


async def fig_matches(report: Report, tmp: Path, duration: float, warmup: float, runs: int, pin: bool = True) -> None:
    with_p99, without_p99 = [], []  # pooled over each run's slices
    pair_with, pair_without = [], []  # p99 of each slice pair's two sides, every run
    commit_p99, raw_p99, idle_p99 = [], [], []
    with_runs: list[MatchesRun] = []
    server_cpus, _, pinning = cpu_plan()
    pinned = pinning.split(";")[0] if pin else "not pinned (--no-pin)"
    say(pinned)
    raw_dst, idle_dst = tmp / "commit-raw.db", tmp / "commit-idle.db"
    await migrated_sqlite(raw_dst)
    for i in range(runs):
        a_path = tmp / f"matches-{i}.db"
        say(
            f"matches run {i + 1}/{runs}: {MATCHES} matches x {PLAYERS} players, {duration:g} s with the SQLite "
            f"writer and {duration:g} s with commits doing nothing, in alternating {SLICE_S:g} s slices"
        )
        with affinity(server_cpus if pin else None):  # the matches' process on one core, as a server runs
            a = await run_matches(sqlite_url(a_path), duration, warmup, seed=100 * i + 1, interleave=True)
        assert a.late_without is not None and a.cpu_pct_without is not None
        rows = fetch_sqlite(a_path, a.match_ids)
        raw = raw_sqlite_commits(raw_dst, rows, a.batches)
        idle = await idle_eventlog_commits(sqlite_url(idle_dst), rows, a.batches)
        del rows
        with_runs.append(a)
        pa, pb = a.late.percentile(99) * 1000, a.late_without.percentile(99) * 1000
        with_p99.append(pa)
        without_p99.append(pb)
        # Each slice with the writer against the slice without it that follows.
        pairs = [
            (percentile(w, 99) * 1000, percentile(wo, 99) * 1000)
            for (_, w), (_, wo) in zip(a.slice_late[::2], a.slice_late[1::2], strict=True)
        ]
        pair_with += [w for w, _ in pairs]
        pair_without += [wo for _, wo in pairs]
        added_median = statistics.median(w - wo for w, wo in pairs)
        commit_p99.append(percentile(a.commit_s, 99) * 1000)
        raw_p99.append(percentile(raw, 99) * 1000)
        idle_p99.append(percentile(idle, 99) * 1000)
        say(
            f"  late p99 with {pa:.3f} ms, without {pb:.3f} ms (added {pa - pb:+.3f} ms; median over slice pairs "
            f"{added_median:+.3f} ms); "
            f"cpu {a.cpu_pct:.0f}% / {a.cpu_pct_without:.0f}%; commit p99 {commit_p99[-1]:.2f} ms over "
            f"{len(a.commit_s)} commits, raw {raw_p99[-1]:.2f} ms, EventLog on an idle loop {idle_p99[-1]:.2f} ms"
        )
        remove_sqlite(a_path)
    # The value: the median over slice pairs of (p99 with - p99 without); the ratio,
    # the median of p99 with / p99 without. Pooled p99s per run come as extras.
    added = [w - wo for w, wo in zip(pair_with, pair_without, strict=True)]
    ratios = [w / max(wo, 1e-6) for w, wo in zip(pair_with, pair_without, strict=True)]
    report.emit(
        figure(
            "tick_late_p99_added_ms",
            "ms",
            added,
            pair_without,
            f"p99 tick lateness of the same {MATCHES} matches (16 players each, 60 Hz) in the {SLICE_S:g} s slice "
            "after, when the EventLog's commits do nothing; value: median over slice pairs of p99 with - p99 "
            "without; ratio: median of p99 with / p99 without",
            "< 1 ms added",
            lambda v: v < 1,
            3,
            ratios=ratios,
            turns=runs,
            pooled_p99_with_ms=[round(v, 3) for v in with_p99],
            pooled_p99_without_ms=[round(v, 3) for v in without_p99],
            pooled_added_ms=[round(w - wo, 3) for w, wo in zip(with_p99, without_p99, strict=True)],
            added_quartiles_ms=[round(q, 3) for q in statistics.quantiles(added, n=4)],
            max_late_with_ms=round(statistics.median(r.late.max for r in with_runs) * 1000, 3),
            max_late_without_ms=round(
                statistics.median(r.late_without.max for r in with_runs if r.late_without) * 1000, 3
            ),
            ticks_per_run=int(statistics.median(r.ticks for r in with_runs)),
            inputs_applied_per_tick=round(statistics.median(r.inputs_applied / r.ticks for r in with_runs), 2),
            catch_ups=sum(r.catch_ups for r in with_runs),
            pauses=sum(r.pauses for r in with_runs),
            cpu_pct_with=round(statistics.median(r.cpu_pct for r in with_runs), 1),
            cpu_pct_without=round(statistics.median(r.cpu_pct_without or 0.0 for r in with_runs), 1),
            seconds_per_side=duration,
            slice_s=SLICE_S,
            pinned=pinned,
        )
    )
    report.emit(
        figure(
            "commit_p99_ms_sqlite",
            "ms",
            commit_p99,
            raw_p99,
            "raw sqlite3 executemany of the same rows (ticks + keyframes) in the same groups, one transaction "
            "each, run alone after the matches (no fencing UPDATE); EventLog's figure is measured while the "
            "10 matches tick",
            "none (reported)",
            None,
            3,
            idle_loop_commit_p99_ms=round(statistics.median(idle_p99), 3),
            commits_per_run=int(statistics.median(r.commits for r in with_runs)),
            ticks_per_commit=batch_sizes(with_runs[len(with_runs) // 2]),
            commit_p50_ms=round(statistics.median(percentile(r.commit_s, 50) * 1000 for r in with_runs), 3),
        )
    )


# --------------------------------------------------------------------------- 3. PostgreSQL


def _pg_urls(maintenance_url: str, database: str) -> tuple[str, str]:
    """(SQLAlchemy URL, asyncpg DSN) of ``database`` on the maintenance URL's server."""
    from sqlalchemy.engine import make_url

    url = make_url(maintenance_url).set(database=database)
    return (
        url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False),
        url.set(drivername="postgresql").render_as_string(hide_password=False),
    )


async def _pg_admin(maintenance_url: str, *statements: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    dsn = make_url(maintenance_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=15)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def fig_postgres(report: Report, pg_url: str | None, duration: float, warmup: float, runs: int) -> None:
    name = "commit_p99_ms_postgres"
    baseline_of = (
        "raw asyncpg executemany of the same rows (ticks + keyframes) in the same groups, one "
        "transaction each, run alone after the matches (no fencing UPDATE); EventLog's figure is "
        "measured while the 10 matches tick"
    )
    if not pg_url:
        report.emit(
            {
                "figure": name,
                "value": None,
                "unit": "ms",
                "baseline": None,
                "baseline_of": baseline_of,
                "ratio": None,
                "target": "none (reported)",
                "holds": None,
                "runs": 0,
                "spread": None,
                "cores": CORES,
                "python": PYTHON,
                "skipped": "no PostgreSQL URL",
            }
        )
        return
    token = uuid.uuid4().hex[:12]
    # The matches' log; the raw driver's copy; the idle-loop EventLog's copy.
    log_db, raw_db, idle_db = f"tlbench_{token}", f"tlbench_{token}_raw", f"tlbench_{token}_idle"
    databases = (log_db, raw_db, idle_db)
    await _pg_admin(pg_url, *(f'CREATE DATABASE "{db}"' for db in databases))
    say(f"postgres: created databases {', '.join(databases)}")
    try:
        log_url, log_dsn = _pg_urls(pg_url, log_db)
        raw_url, raw_dsn = _pg_urls(pg_url, raw_db)
        idle_url, _ = _pg_urls(pg_url, idle_db)
        schema = await EventLog.open(raw_url, SERVER_ID)  # the same schema, by the same migrations
        await schema.dispose()
        commit_p99, raw_p99, idle_p99, runs_done = [], [], [], []
        for i in range(runs):
            say(f"postgres run {i + 1}/{runs}: {MATCHES} matches x {PLAYERS} players, {duration:g} s")
            a = await run_matches(log_url, duration, warmup, seed=100 * i + 7)
            rows = await fetch_pg(log_dsn, a.match_ids)
            raw = await raw_pg_commits(raw_dsn, rows, a.batches)
            idle = await idle_eventlog_commits(idle_url, rows, a.batches)
            del rows
            runs_done.append(a)
            commit_p99.append(percentile(a.commit_s, 99) * 1000)
            raw_p99.append(percentile(raw, 99) * 1000)
            idle_p99.append(percentile(idle, 99) * 1000)
            say(
                f"  commit p99 {commit_p99[-1]:.2f} ms over {len(a.commit_s)} commits, raw {raw_p99[-1]:.2f} ms, "
                f"EventLog on an idle loop {idle_p99[-1]:.2f} ms; late p99 {a.late.percentile(99) * 1000:.3f} ms"
            )
        report.emit(
            figure(
                name,
                "ms",
                commit_p99,
                raw_p99,
                baseline_of,
                "none (reported)",
                None,
                3,
                idle_loop_commit_p99_ms=round(statistics.median(idle_p99), 3),
                commits_per_run=int(statistics.median(r.commits for r in runs_done)),
                ticks_per_commit=batch_sizes(runs_done[len(runs_done) // 2]),
                commit_p50_ms=round(statistics.median(percentile(r.commit_s, 50) * 1000 for r in runs_done), 3),
                tick_late_p99_ms=round(statistics.median(r.late.percentile(99) * 1000 for r in runs_done), 3),
            )
        )
    finally:
        await _pg_admin(
            pg_url,
            *(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' "
                "AND pid <> pg_backend_pid()"
                for db in databases
            ),
            *(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)' for db in databases),
        )
        say(f"postgres: dropped {', '.join(databases)}")


# --------------------------------------------------------------------------- 4. recovery, 5. replay read


@dataclass
class BuiltLog:
    path: Path  # the pristine SQLite file, checkpointed (no -wal)
    tls: Path
    match_id: str
    ticks: int
    final_hash: str
    build_s: float


async def build_recovery_log(tmp: Path, minutes: int) -> BuiltLog:
    """A 60 Hz, 16-player arena match of ``minutes`` written through the real writer,
    keyframes every 60 ticks, left 'running' as a crash leaves it (no end_match)."""
    n_ticks = minutes * 60 * TICK_RATE
    build_dir = tmp / "recovery-build"
    build_dir.mkdir()
    path = build_dir / "tickline.db"
    say(f"recovery: writing a {minutes}-minute match ({n_ticks} ticks) through the real writer")
    t0 = time.perf_counter()
    rules = make_rules("arena", GAME_CONFIG)
    header = new_header(rules, seed=424242)
    log = await EventLog.open(sqlite_url(path), SERVER_ID)
    try:
        await log.create_match(header)
        writer = asyncio.create_task(log.run(), name="eventlog-writer")
        for pid in range(1, PLAYERS + 1):
            log.add_player(PlayerRecord(header.match_id, pid, f"bot{pid}", token_hash(f"bench-token-{pid}")))
        digest = ""
        for tick, record, events, digest, state in simulate(rules, header.seed, n_ticks, random.Random(7)):
            if not log.has_room():
                await log.wait_for_room()
            log.append(TickRecord(header.match_id, tick, record, events, digest))
            if tick % KEYFRAME_EVERY == 0:
                log.add_keyframe(KeyframeRecord(header.match_id, tick, rules.dump_state(state), digest))
                await asyncio.sleep(0)  # a second of play: let the writer commit, as the server's loop does
            if tick % (n_ticks // 10) == 0:
                say(f"  {tick}/{n_ticks} ticks")
        assert not rules.is_over(state), "the match ended on its own; raise GAME_CONFIG's limits"
        log.stop()
        await writer
    finally:
        await log.dispose()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    status, last_tick, owner = conn.execute(
        "SELECT status, last_tick, owner FROM matches WHERE match_id = ?", (header.match_id,)
    ).fetchone()
    conn.close()
    assert (status, last_tick, owner) == ("running", n_ticks, SERVER_ID), (status, last_tick, owner)
    tls = build_dir / "tls"
    ensure_certificate(tls)  # the crashed server had made its certificate already
    build_s = time.perf_counter() - t0
    say(f"recovery: log built in {build_s:.1f} s, {path.stat().st_size / 1e6:.1f} MB")
    return BuiltLog(path, tls, header.match_id, n_ticks, digest, build_s)


def fresh_copy(built: BuiltLog, work: Path) -> None:
    """``work`` holding a copy of the built log and its server's certificate, and nothing else."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    shutil.copyfile(built.path, work / "tickline.db")
    shutil.copytree(built.tls, work / "tls")


async def time_recovery(built: BuiltLog, work: Path) -> dict[str, float]:
    """A server started on a copy of the log, as after a crash: its QUIC endpoint on a free
    port of 127.0.0.1 (binding it is well under a millisecond of the start), no HTTP."""
    fresh_copy(built, work)
    gc.collect()
    t0 = time.perf_counter()
    server = Server(ServerConfig(host="127.0.0.1", port=0, data_dir=work, server_id=SERVER_ID))
    task = asyncio.create_task(server.run(), name="server")
    async with asyncio.timeout(120):
        while not (server.resumed and server.resumed[0].tick > (server.resumed[0].resumed_at or 0)):
            if task.done():
                task.result()
                raise RuntimeError("the server stopped before resuming the match")
            await asyncio.sleep(0.0005)
    elapsed = time.perf_counter() - t0
    resumed = server.resumed[0]
    assert resumed.match_id == built.match_id and resumed.resumed_at == built.ticks, (
        resumed.match_id,
        resumed.resumed_at,
    )
    server.stop()
    await asyncio.wait_for(task, 30)
    return {"elapsed": elapsed, "server_recovery_s": server.recovery_s}


def replay_from_tick_one(path: Path, match_id: str, final_hash: str) -> float:
    """Rebuild the same state with no keyframe: read every stored tick, replay it from tick 1."""
    t0 = time.perf_counter()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        game, version, config, seed, hash_version = conn.execute(
            "SELECT game, game_version, config, seed, hash_version FROM matches WHERE match_id = ?", (match_id,)
        ).fetchone()
        rules = make_rules(game, json.loads(config), version)
        state = rules.initial_state(seed)
        expected = 1
        for tick, payload, stored_hash in conn.execute(
            "SELECT tick, payload, hash FROM ticks WHERE match_id = ? ORDER BY tick", (match_id,)
        ):
            replay_stored_tick(rules, state, expected, tick, payload, stored_hash, hash_version)
            expected += 1
    finally:
        conn.close()
    elapsed = time.perf_counter() - t0
    assert state_hash(state, hash_version) == final_hash, "replay from tick 1 did not reach the stored final state"
    return elapsed


async def fig_recovery(report: Report, built: BuiltLog, tmp: Path, runs: int, minutes: int) -> None:
    values, baselines, server_figs = [], [], []
    for i in range(runs):
        r = await time_recovery(built, tmp / "recovery-run")
        b = replay_from_tick_one(built.path, built.match_id, built.final_hash)
        values.append(r["elapsed"])
        baselines.append(b)
        server_figs.append(r["server_recovery_s"])
        say(
            f"recovery run {i + 1}/{runs}: server start to first new tick {r['elapsed']:.3f} s "
            f"(Server.recovery_s {r['server_recovery_s']:.3f}); replay from tick 1: {b:.2f} s"
        )
    report.emit(
        figure(
            "recovery_s",
            "s",
            values,
            baselines,
            f"rebuilding the same state from tick 1 with no keyframe: raw sqlite3 read of all {built.ticks} stored "
            "ticks + shared.logformat.replay_stored_tick over each",
            "< 1 s",
            lambda v: v < 1,
            3,
            match_minutes=minutes,
            ticks=built.ticks,
            players=PLAYERS,
            keyframe_every=KEYFRAME_EVERY,
            ticks_after_newest_keyframe=built.ticks % KEYFRAME_EVERY,
            server_recovery_s=round(statistics.median(server_figs), 3),
            log_mb=round(built.path.stat().st_size / 1e6, 1),
            measured_from="Server() constructed to resumed match's first new tick "
            "(QUIC endpoint on 127.0.0.1, no HTTP)",
        )
    )


async def read_with_reader(path: Path, match_id: str) -> tuple[float, int]:
    reader = await LogReader.open(sqlite_url(path))
    try:
        n = 0
        t0 = time.perf_counter()
        async for _stored in reader.ticks(match_id):
            n += 1
        return time.perf_counter() - t0, n
    finally:
        await reader.close()


def read_raw(path: Path, match_id: str) -> tuple[float, int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        n = 0
        t0 = time.perf_counter()
        for _row in conn.execute(
            "SELECT tick, payload, hash FROM ticks WHERE match_id = ? AND tick > ? ORDER BY tick", (match_id, 0)
        ):
            n += 1
        return time.perf_counter() - t0, n
    finally:
        conn.close()


async def fig_replay_read(report: Report, built: BuiltLog, runs: int) -> None:
    values, baselines = [], []
    for i in range(runs):
        a, na = await read_with_reader(built.path, built.match_id)
        b, nb = read_raw(built.path, built.match_id)
        assert na == nb == built.ticks, (na, nb, built.ticks)
        values.append(na / a)
        baselines.append(nb / b)
        say(f"replay read run {i + 1}/{runs}: LogReader {na / a:,.0f} ticks/s, raw {nb / b:,.0f} ticks/s")
    report.emit(
        figure(
            "replay_read_ticks_per_s",
            "ticks/s",
            values,
            baselines,
            "raw sqlite3 SELECT tick, payload, hash of the same rows, iterated",
            "none (reported)",
            None,
            0,
            ticks=built.ticks,
        )
    )


# --------------------------------------------------------------------------- main


async def amain(args: argparse.Namespace) -> None:
    quick = args.quick
    report = Report(Path(args.json_out) if args.json_out else None)
    pg_url = args.pg_url or os.environ.get(PG_URL_ENV) or None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tlbench-") as tmpdir:
        tmp = Path(tmpdir)
        only = set(args.only.split(",")) if args.only else set(PARTS)
        if "append" in only:
            await fig_append(report, tmp, n_ticks=5_000 if quick else 20_000, runs=3 if quick else 5)
        duration, warmup = (4.0, 0.5) if quick else (10.0, 1.0)
        if "matches" in only:
            await fig_matches(report, tmp, duration, warmup, runs=2 if quick else 3, pin=args.pin)
        if "postgres" in only:
            await fig_postgres(report, pg_url, duration, warmup, runs=2 if quick else 3)
        if only & {"recovery", "replay"}:
            minutes = 5 if quick else 30
            built = await build_recovery_log(tmp, minutes)
            if "recovery" in only:
                await fig_recovery(report, built, tmp, runs=2 if quick else 3, minutes=minutes)
            if "replay" in only:
                await fig_replay_read(report, built, runs=3 if quick else 5)
    say(f"done in {time.perf_counter() - started:.1f} s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.eventlog", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a run of about a minute: fewer, shorter turns")
    parser.add_argument("--json-out", metavar="FILE", help="also write the JSON lines to FILE")
    parser.add_argument(
        "--pg-url",
        metavar="URL",
        help=f"PostgreSQL maintenance URL (default: ${PG_URL_ENV}); a fresh database is "
        "created for the run and dropped after it",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="run the matches of tick_late_p99_added_ms on every CPU (default: on one, "
        "as `tickline capacity` runs a server)",
    )
    parser.add_argument("--only", metavar="PARTS", help=f"comma-separated subset of {','.join(PARTS)} (default: all)")
    args = parser.parse_args(argv)
    if args.only and not set(args.only.split(",")) <= set(PARTS):
        parser.error(f"--only takes a comma-separated subset of {','.join(PARTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
