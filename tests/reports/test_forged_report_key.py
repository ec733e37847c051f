"""A report key certified by whoever holds the log key, not by an administrator (issue 18).

``verify-report`` trusts a signer whose certificate a ``report_key_certified`` entry records.
Someone who can write the database and holds the log key file can append such an entry for a key
of their own, with a signature that is not the administrator's, and sign the new checkpoint. The
report they then sign must still fail: online because ``verify-report`` checks the people's own
signatures (issue 17) over the entries it builds from, offline because the bundle does not
verify. The genuine certification, signed by the administrator's own credential, passes both
ways. On a chain with staff credentials, SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from ledger.services.report_key import make_report_key
from reports.base import build_report
from reports.verify import verify_report, verify_report_offline
from tests.conftest import BACKENDS, DEA, clinic_today
from tests.integrity.test_staff_signatures_verify import force, plain_sig, signed_clinic
from tests.reports.report_keys import bundle_of, certify

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


def vial_history(chain, key=None) -> bytes:
    today = clinic_today().isoformat()
    pdf, _ = build_report(chain.ledger, "vial", DEA, today, today, params={"vial": chain.vials[0]}, report_key=key)
    return pdf


def test_a_report_key_certified_without_an_administrators_signature_signs_no_report(ledger, tmp_path):
    chain = signed_clinic(ledger, tmp_path)
    certify(ledger, chain.admin, tmp_path / "keys")
    genuine = vial_history(chain)
    assert verify_report(ledger, genuine).ok
    assert verify_report_offline(genuine, bundle_of(ledger, DEA)).ok

    theirs = make_report_key(DEA, "Calm Waters Ketamine Clinic", datetime.now(UTC))
    seq = force(ledger, "report_key_certified", {
        "certificate": base64.b64encode(theirs.certificate_der).decode(), "fingerprint": theirs.fingerprint,
        "algorithm": "ecdsa-p256"}, [plain_sig(chain.admin, "performed")])
    forged = vial_history(chain, theirs)  # the build takes the key: an entry certifies it

    online = verify_report(ledger, forged)
    assert not online.ok
    assert any(p.startswith(f"staff signatures: entry {seq}: report_key_certified in the name of "
                            f"{chain.admin.staff_id}") for p in online.problems), online.problems
    offline = verify_report_offline(forged, bundle_of(ledger, DEA))
    assert not offline.ok and offline.problems[0].startswith("the bundle ledger.bundle does not verify: "), \
        offline.problems
    assert f"(seq {seq})" in offline.problems[0]
