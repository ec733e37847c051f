"""Certify a registrant's report key in a test ledger (issue 18): reports are signed with it.

The command line reads the key from its key folder: ``csledger-keys`` under the folder it runs in
(the settings' default), unless ``CSLEDGER_KEY_DIR`` says otherwise; in-process builds read
``ledger.report_key_dir``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ledger.domain.principal import AuthMethod, Principal
from ledger.services.bundle import export_bundle
from ledger.services.report_key import certify_report_key
from ledger.storage.store import Ledger

#: Where ``csledger`` run in folder F looks for keys by default.
CLI_KEY_DIR = "csledger-keys"


def admin_of(ledger: Ledger, dea: str) -> Principal:
    """The registrant's first administrator (the one ``register_registrant`` enrolled), as the
    console bootstrap signs for them while the registrant has no signing credentials."""
    from ledger.storage.authority import authority_at

    with ledger.reading() as conn:
        authority = authority_at(conn, dea)
    staff_id = next(s for s in authority.staff if "administrator" in authority.roles(s))
    member = authority.member(staff_id)
    return Principal(dea, staff_id, member.printed_name, AuthMethod.CONSOLE_BOOTSTRAP)


def certify(ledger: Ledger, admin: Principal, key_dir: Path) -> dict:
    """Make and certify the report key in ``key_dir``; in-process builds of ``ledger`` use it."""
    res = certify_report_key(ledger, admin, Path(key_dir))
    ledger.report_key_dir = Path(key_dir)  # type: ignore[attr-defined]
    return res


def bundle_of(ledger: Ledger, dea: str) -> Path:
    """The registrant's ledger up to its latest signed checkpoint, exported as an offline bundle
    (what ``csledger export`` writes), in a fresh temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="csledger-bundle-"))
    with ledger.reading() as conn, (folder / "ledger.bundle").open("wb") as f:
        export_bundle(conn, dea, f)
    return folder / "ledger.bundle"


def check(api, pdf: bytes, *, offline_same: bool = True) -> list[str]:
    """The problems ``verify-report`` names online (none: it passes). The same report is checked
    offline against a bundle exported now (``--bundle``) too: it must pass or fail alike and, with
    ``offline_same``, name the same problems (the offline ones are left in ``api.offline_problems``)."""
    from reports.verify import verify_report, verify_report_offline
    from tests.conftest import DEA

    result = verify_report(api.ledger, pdf)
    offline = verify_report_offline(pdf, bundle_of(api.ledger, DEA))
    assert offline.ok == result.ok, (result.problems, offline.problems)
    if offline_same:
        assert offline.problems == result.problems
    api.offline_problems = offline.problems
    return [] if result.ok else result.problems
