"""staff signing keys (issue 17)

``staff_credentials.signing_key``: the person's password key record (JSON: salt, argon2id cost,
password verifier, the Ed25519 key wrapped under the password-derived key, its credential id),
never the key itself. ``api_sessions.signing_key`` and ``witness_assertions.signing_key``: the
opened key sealed under the bearer token or assertion token, of which the server stores only the
hash. ``witness_assertions.nonce`` and ``method``: a witness confirming with a passkey signs the
statement with this nonce. ``policies.passkey_required_for``: where the registrant's policy
requires passkeys (JSON list).

Revision ID: 0008
Revises: 0007
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.add_column("staff_credentials", sa.Column("signing_key", sa.Text(), nullable=True))
    op.add_column("api_sessions", sa.Column("signing_key", sa.Text(), nullable=True))
    op.add_column("witness_assertions", sa.Column("signing_key", sa.Text(), nullable=True))
    op.add_column("witness_assertions", sa.Column("nonce", S(length=64), nullable=True))
    op.add_column("witness_assertions", sa.Column("method", S(length=32), nullable=True))
    op.add_column("policies", sa.Column("passkey_required_for", S(length=200), nullable=True))


def downgrade() -> None:
    op.drop_column("policies", "passkey_required_for")
    op.drop_column("witness_assertions", "method")
    op.drop_column("witness_assertions", "nonce")
    op.drop_column("witness_assertions", "signing_key")
    op.drop_column("api_sessions", "signing_key")
    op.drop_column("staff_credentials", "signing_key")
