"""The live server's authority (not only ``verify``) refuses role entries that carry genuine
signatures copied from elsewhere: found by the documentation review of issue 17, when a copy of
Yan's grant re-granted a revoked role and a destruction's signatures made a nurse a manager."""

from __future__ import annotations

import pytest

from ledger import services
from ledger.domain.commands import EnrollStaff, RevokeRole
from ledger.storage.authority import authority_at
from tests.conftest import BACKENDS, DEA
from tests.integrity.test_staff_signatures_verify import entry, force, last_seq, signed_clinic

pytestmark = pytest.mark.parametrize("db_url", BACKENDS, indirect=True)


def roles(ledger, sid):
    with ledger.reading() as c:
        return authority_at(c, DEA).roles(sid)


def test_copied_signatures_grant_nothing_on_the_server(ledger, tmp_path):
    chain = signed_clinic(ledger, tmp_path)
    services.enroll_staff(ledger, chain.admin, EnrollStaff("Yan Young", "yan", ("nurse",)), approver=chain.manager)
    grant = entry(ledger, last_seq(ledger))
    yan = grant["staff_id"]
    assert roles(ledger, yan) == {"nurse"}
    services.revoke_role(ledger, chain.admin, RevokeRole(yan, "nurse", "left"))
    assert roles(ledger, yan) == frozenset()
    # the very grant, replayed later with its own signatures: a reused nonce
    force(ledger, "role_granted", {"staff_id": yan, "role": "nurse"}, grant["signatures"])
    assert roles(ledger, yan) == frozenset()
    # the grant's signatures on a grant of another role to another person: not what was signed
    force(ledger, "role_granted", {"staff_id": chain.nurse.staff_id, "role": "administrator"}, grant["signatures"])
    assert "administrator" not in roles(ledger, chain.nurse.staff_id)
    # a destruction's signatures on a manager grant
    destruction = entry(ledger, chain.destroy_seq)
    force(ledger, "role_granted", {"staff_id": chain.nurse2.staff_id, "role": "manager"}, destruction["signatures"])
    assert "manager" not in roles(ledger, chain.nurse2.staff_id)


def test_signatures_of_another_command_fail_every_checker(ledger, tmp_path):
    """Genuine signatures of one command (a waste), all alike, on an entry that command never
    writes (a Form 41): the statement does not describe the entry."""
    from tests.integrity.test_staff_signatures_verify import (
        assert_all_refuse,
        forged_destruction_body,
        key_sig,
    )

    chain = signed_clinic(ledger, tmp_path)
    (pk, pcid), (nk, ncid) = chain.keys["pharmacist"], chain.keys["nurse"]
    sigs = [key_sig(chain.pharmacist, "performed", pk, pcid, command="record_waste", fields={"type": "RecordWaste"}),
            key_sig(chain.nurse, "witnessed", nk, ncid, command="record_waste", fields={"type": "RecordWaste"})]
    seq = force(ledger, "stock_destroyed", forged_destruction_body(chain, chain.vials[2:4]), sigs)
    assert_all_refuse(chain, seq, "the signed command (record_waste) does not write stock_destroyed entries")


def test_a_statement_for_other_vials_fails_every_checker(ledger, tmp_path):
    """Genuine signatures of a destruction whose signed command names one vial, on a Form 41 of
    two others: every vial an entry moves must be named by the command its signers signed."""
    from tests.integrity.test_staff_signatures_verify import (
        assert_all_refuse,
        forged_destruction_body,
        key_sig,
    )

    chain = signed_clinic(ledger, tmp_path)
    (pk, pcid), (nk, ncid), (n2k, n2cid) = chain.keys["pharmacist"], chain.keys["nurse"], chain.keys["nurse2"]
    fields = {"type": "DestroyStock", "vial_ids": [chain.vials[1]], "method": "incinerated"}
    sigs = [key_sig(chain.pharmacist, "performed", pk, pcid, fields=fields),
            key_sig(chain.nurse, "witnessed", nk, ncid, fields=fields),
            key_sig(chain.nurse2, "witnessed", n2k, n2cid, fields=fields)]
    seq = force(ledger, "stock_destroyed", forged_destruction_body(chain, chain.vials[2:4]), sigs)
    assert_all_refuse(chain, seq, "the entry moves vials its signed command does not name",
                      chain.vials[2], chain.vials[3])
