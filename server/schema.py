"""The event log's tables, declared once as SQLAlchemy Core ``Table`` objects.

The server creates and writes them; the record format inside ``ticks.payload``
is ``shared.logformat``'s. (match_id, tick) is the primary key, so a tick is
written once.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

matches = Table(
    "matches",
    metadata,
    Column("match_id", String(32), primary_key=True),
    Column("game", String(64), nullable=False),
    Column("game_version", Integer, nullable=False),
    Column("seed", BigInteger, nullable=False),
    Column("config", Text, nullable=False),  # JSON: the rules' full config
    Column("tick_rate", Integer, nullable=False),
    Column("send_rate", Integer, nullable=False),
    Column("created_at", Float, nullable=False),  # wall clock, for people; never simulated
    Column("status", String(16), nullable=False),  # running | finished | stopped
    Column("last_tick", Integer, nullable=False, default=0),
    Column("final_hash", String(32)),
    Column("ended_at", Float),
    Column("stats", Text),  # JSON: the server's figures for the match, written at its end
)

ticks = Table(
    "ticks",
    metadata,
    Column("match_id", String(32), ForeignKey("matches.match_id"), primary_key=True),
    Column("tick", Integer, primary_key=True),
    Column("payload", LargeBinary, nullable=False),  # zlib(orjson({"in": ..., "ev": [...]}))
    Column("hash", String(32), nullable=False),  # state hash after the tick
)
