"""Log signing keys on disk: one Ed25519 signer key file per registrant and generation
(mode 0600), or keys from ``CSLEDGER_LOG_KEYS``; never in the database.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ledger.domain.errors import IntegrityFailure
from ledger.integrity.checkpoints import (
    SIG_ED25519,
    NoteError,
    Signer,
)


class LogKeyError(IntegrityFailure):
    """The log key is missing, unreadable, or not the key the database says is current."""



class KeyStore:
    """Private log keys: files under ``key_dir`` (mode 0600) or signer strings from settings."""

    def __init__(self, key_dir: Path, env_keys: str = ""):
        self.key_dir = Path(key_dir)
        self._env: dict[str, Signer] = {}
        for text in env_keys.split():
            try:
                s = Signer.from_string(text)
            except NoteError as exc:
                raise LogKeyError(f"CSLEDGER_LOG_KEYS holds a malformed signer key ({exc})") from None
            self._env[s.name] = s

    def path(self, registrant: str, log_id: str) -> Path:
        return self.key_dir / f"{registrant}-{log_id}.key"

    @staticmethod
    def _write_private(path: Path, text: str, *, exclusive: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
        # Created 0600 from the first byte: no window where another user could read it.
        fd = os.open(path, flags, 0o600)
        try:
            os.write(fd, (text + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def create(self, registrant: str, log_id: str, origin: str) -> Signer:
        """Make a new log key for a registrant; refuse to overwrite an existing one."""
        signer = Signer.generate(origin, SIG_ED25519)
        try:
            self._write_private(self.path(registrant, log_id), signer.to_string(), exclusive=True)
        except FileExistsError:
            raise LogKeyError(f"a log key for {registrant} already exists at {self.path(registrant, log_id)}") from None
        return signer

    def load(self, registrant: str, log_id: str, origin: str) -> Signer | None:
        """The private key for ``origin``, from the environment or the key file; None if absent."""
        if origin in self._env:
            return self._env[origin]
        path = self.path(registrant, log_id)
        pending = path.with_suffix(".key.next")
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            text = None
        except OSError as exc:
            raise LogKeyError(f"cannot read the log key {path}: {exc}") from None
        if text is None and not pending.exists():
            return None
        signers = []
        for t in ([text] if text else []) + ([pending.read_text().strip()] if pending.exists() else []):
            try:
                signers.append(Signer.from_string(t))
            except NoteError as exc:
                raise LogKeyError(f"the log key file of {registrant} is malformed ({exc})") from None
        for s in signers:
            if s.name != origin:
                raise LogKeyError(f"the log key of {registrant} is named {s.name!r}, not the origin {origin!r}")
        # With a rotation interrupted between database commit and file rename, both files
        # exist; the caller picks the one whose verifier key is current (see TransparencyLog).
        return signers[-1] if len(signers) == 1 else _Pair(signers[0], signers[1])  # type: ignore[return-value]

    def stage_rotation(self, registrant: str, log_id: str, origin: str) -> Signer:
        """Write a new key beside the current one (``.key.next``) before the database knows it."""
        signer = Signer.generate(origin, SIG_ED25519)
        path = self.path(registrant, log_id).with_suffix(".key.next")
        self._write_private(path, signer.to_string(), exclusive=False)
        return signer

    def finish_rotation(self, registrant: str, log_id: str) -> None:
        """Move the new key over the old one: the retired private key is destroyed."""
        path = self.path(registrant, log_id)
        os.replace(path.with_suffix(".key.next"), path)


@dataclass(frozen=True)
class _Pair:
    """Old and staged key while a rotation is half done; resolved against ``log_keys``."""

    current_file: Signer
    staged: Signer
