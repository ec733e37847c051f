"""Deployment settings, read by pydantic-settings from the environment (prefix ``CSLEDGER_``).

The command line's ``--db`` overrides ``CSLEDGER_DATABASE_URL``; nothing else in the code reads
``os.environ`` directly.
"""

from __future__ import annotations

import os
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
    # --- HTTP API (issue 5) ---
    session_idle_minutes: int = Field(default=15, ge=1, description="A bearer token unused this long expires.")
    session_max_minutes: int = Field(default=480, ge=1, description="A bearer token expires this long after login.")
    lockout_after_failures: int = Field(
        default=5, ge=1,
        description="Consecutive failed sign-ins (logins, witness sign-offs, password changes) after which the "
                    "login is throttled: each further attempt waits for a delay and is refused (429) before "
                    "any password is checked.")
    throttle_delay_seconds: int = Field(
        default=30, ge=1, le=3600,
        description="The wait after the failure that throttles a login; it doubles with each further failed "
                    "attempt (one is checked per delay) up to throttle_max_delay_seconds.")
    throttle_max_delay_seconds: int = Field(
        default=900, ge=1, le=86400,
        description="The longest wait between two checked attempts of a throttled login. A manager or "
                    "administrator can clear the throttle at once.")
    password_hash_slots: int = Field(
        default_factory=lambda: max(2, os.cpu_count() or 2), ge=1, le=256,
        description="Password checks (argon2id, 64 MiB each) run at once; more wait. Default: the CPU count.")
    request_threads: int = Field(default=100, ge=4, le=1000,
                                 description="Threads that run API requests at once (queued password checks hold one).")
    witness_assertion_seconds: int = Field(default=120, ge=1, le=120, description="Witness assertion lifetime (at most 2 minutes).")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS; none by default.")
    webauthn_rp_id: str = Field(default="localhost", description="WebAuthn relying-party id fixed in a registrant's root "
                                "credential when it is made here (init, or an older database's first signing key): "
                                "the clinic's DNS name in production, behind HTTPS.")
    webauthn_origins: list[str] = Field(default_factory=lambda: ["http://localhost:8000", "http://127.0.0.1:8000"],
                                        description="Origins passkey confirmations may come from (fixed with the RP id).")
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="Larger request bodies are refused (413).")
    # --- trust from outside the database, checks before writing (issue 16) ---
    pinned_keys_file: Path | None = Field(
        default=None,
        description="File of the log verifier keys kept outside the database (the output of `csledger keys "
                    "show`): `verify` and the server's chain checks accept checkpoints signed by these keys only.")
    verify_interval_minutes: int = Field(
        default=60, ge=0, le=10080,
        description="The server re-verifies every chain (hash chain, Merkle root, latest checkpoint) this often "
                    "and refuses appends (503 chain-unverified) to a chain that fails; 0 turns it off.")
    # --- patients (issue 3): the registry's key never touches the database ---
    patient_key: str = Field(
        default="",
        description="Patient registry key (32 bytes, base64), CSLEDGER_PATIENT_KEY; used instead of the file when set.",
    )
    patient_key_file: Path = Field(
        default=Path("csledger-keys/patient.key"),
        description="File holding the patient registry key (base64, mode 0600). Back it up: without it "
                    "the patient names and addresses the law requires are lost.",
    )
    # --- TOTP secrets at rest (issue 16): sealed with a key that never touches the database ---
    totp_key: str = Field(
        default="",
        description="Key sealing the TOTP secrets (32 bytes, base64), CSLEDGER_TOTP_KEY; used instead of the file when set.",
    )
    totp_key_file: Path | None = Field(
        default=None,
        description="File holding the TOTP key (base64, mode 0600); default <key_dir>/totp.key, created at first "
                    "use. Without it managers and administrators must be given new TOTP secrets.",
    )


def get_settings(**overrides) -> Settings:
    """Settings from the environment, with explicit overrides (e.g. ``--db``) applied on top."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)
