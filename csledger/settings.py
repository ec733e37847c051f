"""Deployment settings, read by pydantic-settings from the environment (prefix ``CSLEDGER_``).

The command line's ``--db`` overrides ``CSLEDGER_DATABASE_URL``; nothing else in the code reads
``os.environ`` directly.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CSLEDGER_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///csledger.db",
        description="SQLAlchemy URL; default a SQLite file in the working folder.",
    )
    origin_prefix: str = Field(
        default="csledger.local",
        description="Names this deployment in checkpoint origins: <prefix>/<DEA>/<log id>.",
    )
    key_dir: Path = Field(
        default=Path("csledger-keys"),
        description="Folder of the per-registrant log signing keys (mode 0600), never the DB.",
    )
    log_keys: str = Field(
        default="",
        description="Log signer keys (PRIVATE+KEY+<origin>+...) separated by whitespace, used instead of "
                    "key files when set; matched to a log by origin.",
    )
    host: str = "127.0.0.1"
    port: int = 8000


def get_settings(**overrides) -> Settings:
    """Settings from the environment, with explicit overrides (e.g. ``--db``) applied on top."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)
