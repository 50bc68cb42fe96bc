"""The first event log: matches and ticks (tickline 0.1).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "matches",
        sa.Column("match_id", sa.String(32), primary_key=True),
        sa.Column("game", sa.String(64), nullable=False),
        sa.Column("game_version", sa.Integer, nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("tick_rate", sa.Integer, nullable=False),
        sa.Column("send_rate", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_tick", sa.Integer, nullable=False),
        sa.Column("final_hash", sa.String(32)),
        sa.Column("ended_at", sa.Float),
        sa.Column("stats", sa.Text),
    )
    op.create_table(
        "ticks",
        sa.Column("match_id", sa.String(32), sa.ForeignKey("matches.match_id"), primary_key=True),
        sa.Column("tick", sa.Integer, primary_key=True),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("hash", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ticks")
    op.drop_table("matches")
