"""The signed checkpoint a report was built from, as printed and as checked by
``verify-report`` (C2SP signed notes, ``ledger.checkpoints``).

Printed: the signature lines' key names with key IDs, and the SHA-256 fingerprints of the log's
verifier keys (a 4-byte key ID identifies a key; only a fingerprint compared out of band
authenticates one). Cosignature lines from witnesses are listed by name and key ID too.
"""

from __future__ import annotations

from typing import Any

from ..ledger import checkpoints as cp


def describe(state: dict[str, Any]) -> list[str]:
    """Footer lines for a state that carries a signed checkpoint note."""
    note = state["checkpoint"]
    try:
        body, sigs = cp.split_note(note)
        parsed = cp.Checkpoint.parse(body)
    except cp.NoteError as exc:
        return [f"Checkpoint: unreadable ({exc})"]
    out = [f"Checkpoint origin {parsed.origin}, size {parsed.size}, signed by: "
           + "; ".join(f"{s.name} (key ID {s.key_id:08x})" for s in sigs)]
    fps = []
    for k in state.get("verifier_keys") or ():
        try:
            v = cp.Verifier.from_string(k)
        except cp.NoteError:
            continue
        fps.append(f"{v.name}+{v.key_id_hex} {v.fingerprint}")
    if fps:
        out.append("Log key fingerprints: " + "; ".join(fps))
    return out


def check(state: dict[str, Any]) -> list[str]:
    """Problems with the embedded checkpoint: its signatures under the embedded or current log
    keys, and that it names the same size and root as the state. Empty when fine."""
    note = state.get("checkpoint")
    if not note:
        return []
    problems: list[str] = []
    verifiers = []
    for k in state.get("verifier_keys") or ():
        try:
            verifiers.append(cp.Verifier.from_string(k))
        except cp.NoteError as exc:
            problems.append(f"checkpoint: verifier key unreadable: {exc}")
    try:
        parsed, opened = cp.open_checkpoint(note, verifiers)
    except cp.NoteError as exc:
        return problems + [f"checkpoint: signature check failed: {exc}"]
    if parsed.size != state["tree_size"] or parsed.root.hex() != state["root"]:
        problems.append(f"checkpoint: names size {parsed.size} root {parsed.root.hex()}, "
                        f"the report names size {state['tree_size']} root {state['root']}")
    return problems
