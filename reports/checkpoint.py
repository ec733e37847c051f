"""The signed checkpoint a report was built from, as printed and as checked by
``verify-report`` (C2SP signed notes and cosignatures: ``ledger.checkpoints``, ``ledger.log``).

Printed: the checkpoint's origin, the log key's ID and SHA-256 fingerprint (a 4-byte key ID
identifies a key; only a fingerprint compared out of band authenticates one), and each witness
cosignature with its witness name, key ID, fingerprint and time.

Checked: the note's log signature under the keys *the ledger* holds (the keys embedded in the
report are only what it claims), that it names the report's size and root, each cosignature
under the ledger's witness policy, and that the ledger's latest signed checkpoint is consistent
with the report's (RFC 9162 consistency proof), so the log was not forked after the report.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from ledger.integrity import checkpoints as cp
from ledger.integrity import merkle


def verifiers(keys) -> list[cp.Verifier]:
    """Verifier keys parsed from their strings; unreadable ones are skipped."""
    out = []
    for k in keys or ():
        try:
            out.append(cp.Verifier.from_string(k))
        except cp.NoteError:
            continue
    return out


def _when(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def describe(state: dict[str, Any]) -> list[str]:
    """Footer lines for a state that carries a signed checkpoint note."""
    note = state["checkpoint"]
    logs = verifiers(state.get("verifier_keys"))
    witnesses = verifiers(state.get("witness_keys"))
    try:
        body, sigs = cp.split_note(note)
        parsed = cp.Checkpoint.parse(body)
    except cp.NoteError as exc:
        return [f"Checkpoint: unreadable ({exc})"]
    by_id = {(v.name, v.key_id): v for v in logs + witnesses}
    signed, cosigned = [], []
    for s in sigs:
        v = by_id.get((s.name, s.key_id))
        fp = v.fingerprint if v else "key not known to this ledger"
        if v is not None and v.sig_type == cp.SIG_COSIGNATURE_V1:
            try:
                ts = cp.verify_cosignature(body, s.line(), v)
                cosigned.append(f"{s.name} (key ID {s.key_id:08x}, {fp}) at {_when(ts)}")
            except cp.NoteError:
                cosigned.append(f"{s.name} (key ID {s.key_id:08x}): DOES NOT VERIFY")
        else:
            signed.append(f"key ID {s.key_id:08x}, fingerprint {fp}")
    out = [f"Signed checkpoint: origin {parsed.origin}, tree size {parsed.size}; log signature by "
           + "; ".join(signed)]
    out.append("Witness cosignatures: " + ("; ".join(cosigned) if cosigned else
                                           "none gathered when the report was made"))
    return out


def check_note(note: str, size: int, root: str, verifiers: list[cp.Verifier],
               witnesses: dict[tuple[str, int], cp.Verifier], *, keys: str) -> tuple[list[str], str]:
    """Problems with a report's signed checkpoint ``note`` under the log ``verifiers`` and the
    ``witnesses`` (by name and key ID), and a one-line summary (empty when the note does not
    verify); the same checks online and offline (``--bundle``). ``keys`` says whose log keys
    they are, for the message ("the ledger's log keys")."""
    try:
        parsed, opened = cp.open_checkpoint(note, verifiers)
    except cp.NoteError as exc:
        return [f"checkpoint: the report's signed checkpoint does not verify under {keys} ({exc})"], ""
    problems: list[str] = []
    if parsed.size != size or parsed.root.hex() != root:
        problems.append(f"checkpoint: it names size {parsed.size} root {parsed.root.hex()}, the report "
                        f"names size {size} root {root}")
    good = 0
    for s in opened.unverified:
        v = witnesses.get((s.name, s.key_id))
        if v is None:
            continue
        try:
            cp.verify_cosignature(parsed, s.line(), v)
            good += 1
        except cp.NoteError as exc:
            problems.append(f"checkpoint: the cosignature of witness {s.name} does not verify ({exc})")
    return problems, f"checkpoint signature OK, {good} witness cosignature(s) OK"


def check(conn: Connection, registrant: str, state: dict[str, Any]) -> tuple[list[str], str]:
    """Problems with the report's checkpoint against the ledger, and a one-line summary.

    Without a checkpoint in the report (a log without signing, or before issue 4) there is
    nothing to check here; the root is still recomputed from the entries by the caller.
    """
    from ledger.storage import log

    note = state.get("checkpoint")
    size, root = state["tree_size"], state["root"]
    keys = log.log_keys(conn, registrant)
    verifiers = [k.verifier for k in keys]
    problems: list[str] = []
    summary = ""
    if note:
        policy = log.witness_policy(conn, registrant)
        wit = {(w.verifier.name, w.verifier.key_id): w.verifier for w in (policy.witnesses if policy else ())}
        problems, summary = check_note(note, size, root, verifiers, wit, keys="the ledger's log keys")
        if not summary:
            return problems, ""
    latest = log.latest_checkpoint(conn, registrant)
    if latest is not None and latest.tree_size >= size:
        try:
            head, _ = cp.open_checkpoint(latest.note, verifiers)
            proof = merkle.consistency_proof(size, head.size, log.memo_reader(conn, registrant)) if size < head.size else []
            merkle.verify_consistency(size, head.size, proof, bytes.fromhex(root), head.root)
            summary += ("; " if summary else "") + f"consistent with the ledger's latest checkpoint (size {head.size})"
        except (cp.NoteError, merkle.ProofError, KeyError, ValueError) as exc:
            problems.append(f"checkpoint: the ledger's latest signed checkpoint (size {latest.tree_size}) is not "
                            f"consistent with the report's tree ({exc})")
    return problems, summary
