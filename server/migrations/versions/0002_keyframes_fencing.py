"""Keyframes, reconnect credentials, and match ownership (owner, epoch) for fencing.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("matches") as batch:
        batch.add_column(sa.Column("owner", sa.String(64)))
        batch.add_column(sa.Column("epoch", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "keyframes",
        sa.Column("match_id", sa.String(32), sa.ForeignKey("matches.match_id"), primary_key=True),
        sa.Column("tick", sa.Integer, primary_key=True),
        sa.Column("state", sa.LargeBinary, nullable=False),
        sa.Column("hash", sa.String(32), nullable=False),
    )
    op.create_table(
        "players",
        sa.Column("match_id", sa.String(32), sa.ForeignKey("matches.match_id"), primary_key=True),
        sa.Column("player_id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("players")
    op.drop_table("keyframes")
    with op.batch_alter_table("matches") as batch:
        batch.drop_column("epoch")
        batch.drop_column("owner")
