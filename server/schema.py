"""The event log's tables, declared once as SQLAlchemy Core ``Table`` objects.

The server creates and upgrades them through Alembic (``server/migrations``);
the record format inside ``ticks.payload`` and ``keyframes.state`` is
``shared.logformat``'s. (match_id, tick) is the primary key of ``ticks``, so a
tick is written once; ``matches.owner`` and ``matches.epoch`` fence a match to
the one server that may write it.
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
    Column("status", String(16), nullable=False),  # running | finished | stopped | failed
    Column("last_tick", Integer, nullable=False, default=0),
    Column("final_hash", String(32)),
    Column("ended_at", Float),
    Column("stats", Text),  # JSON: the server's figures for the match, written at its end
    Column("owner", String(64)),  # the server that may write this match
    Column("epoch", Integer, nullable=False, server_default="0"),  # bumped on every takeover
    # shared.game.state_hash's version for this match's hashes; logs from before it: 1
    Column("hash_version", Integer, nullable=False, server_default="1"),
)

ticks = Table(
    "ticks",
    metadata,
    Column("match_id", String(32), ForeignKey("matches.match_id"), primary_key=True),
    Column("tick", Integer, primary_key=True),
    Column("payload", LargeBinary, nullable=False),  # shared.logformat.encode_payload
    Column("hash", String(32), nullable=False),  # state hash after the tick
)

keyframes = Table(
    "keyframes",
    metadata,
    Column("match_id", String(32), ForeignKey("matches.match_id"), primary_key=True),
    Column("tick", Integer, primary_key=True),
    Column("state", LargeBinary, nullable=False),  # shared.logformat.encode_state
    Column("hash", String(32), nullable=False),
)

players = Table(
    "players",
    metadata,
    Column("match_id", String(32), ForeignKey("matches.match_id"), primary_key=True),
    Column("player_id", Integer, primary_key=True),
    Column("name", String(64), nullable=False),
    Column("token_hash", String(64), nullable=False),  # sha256 of the reconnect token
)
