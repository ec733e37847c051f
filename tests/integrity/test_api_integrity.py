"""The public verifiable-ledger endpoints over HTTP (FastAPI TestClient)."""

from __future__ import annotations

import base64

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.http.app import create_app
from ledger import services
from ledger.integrity import merkle
from ledger.integrity.checkpoints import Verifier, open_checkpoint
from ledger.settings import Settings
from tests.conftest import DEA
from tests.contract.test_ledger_contract import receipt

pytestmark = pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)


def canonical(lg, seq: int) -> bytes:
    """An entry's canonical bytes (the role-gated entry endpoint belongs to the API tests)."""
    with lg.reading() as c:
        return bytes(c.execute(sa.text("SELECT canonical FROM entries WHERE registrant = :r AND seq = :s"),
                               {"r": DEA, "s": seq}).scalar())


@pytest.fixture
def client(signed_clinic, tmp_path):
    for i in range(6):
        services.receive_stock(signed_clinic.ledger, signed_clinic.nurse, receipt(signed_clinic, invoice=f"INV-{i}"))
    settings = Settings(database_url="sqlite:///unused.db", key_dir=tmp_path / "keys", origin_prefix="clinic.test")
    with TestClient(create_app(signed_clinic.ledger, settings), raise_server_exceptions=False) as c:
        c.lg = signed_clinic.ledger
        yield c


def b64s(hashes):
    return [base64.b64decode(h) for h in hashes]


def test_checkpoint_and_verifier_key(client):
    keys = client.get(f"/v1/registrants/{DEA}/verifier-key")
    assert keys.status_code == 200 and keys.headers["content-type"].startswith("text/plain")
    verifiers = [Verifier.from_string(line) for line in keys.text.splitlines()]
    cp = client.get(f"/v1/registrants/{DEA}/checkpoint")
    assert cp.status_code == 200
    body, opened = open_checkpoint(cp.text, verifiers)
    assert body.origin.startswith(f"clinic.test/{DEA}/") and body.size == int(cp.headers["csledger-tree-size"])


def test_every_inclusion_proof_verifies_against_the_checkpoint(client):
    verifiers = [Verifier.from_string(x) for x in client.get(f"/v1/registrants/{DEA}/verifier-key").text.splitlines()]
    body, _ = open_checkpoint(client.get(f"/v1/registrants/{DEA}/checkpoint").text, verifiers)
    for seq in range(body.size):
        leaf = merkle.leaf_hash(canonical(client.lg, seq))
        p = client.get(f"/v1/registrants/{DEA}/proofs/inclusion", params={"seq": seq, "tree_size": body.size}).json()
        assert p["tree_size"] == body.size and p["seq"] == seq
        merkle.verify_inclusion(leaf, seq, body.size, b64s(p["hashes"]), body.root)
    # default tree size: the latest checkpoint
    assert client.get(f"/v1/registrants/{DEA}/proofs/inclusion", params={"seq": 0}).json()["tree_size"] == body.size


def test_consistency_proofs_between_signed_sizes(client):
    verifiers = [Verifier.from_string(x) for x in client.get(f"/v1/registrants/{DEA}/verifier-key").text.splitlines()]
    body, _ = open_checkpoint(client.get(f"/v1/registrants/{DEA}/checkpoint").text, verifiers)
    # roots of every prefix, computed independently from the entries
    leaves = [merkle.leaf_hash(canonical(client.lg, s)) for s in range(body.size)]
    tree = merkle.MemoryTree(leaves)
    for first in range(1, body.size + 1):
        p = client.get(f"/v1/registrants/{DEA}/proofs/consistency", params={"first": first, "second": body.size}).json()
        merkle.verify_consistency(first, body.size, b64s(p["hashes"]), tree.root(first), body.root)


@pytest.mark.parametrize("path,params,status,field", [
    ("proofs/inclusion", {"seq": 10_000, "tree_size": 5}, 422, "seq"),
    ("proofs/inclusion", {"seq": 5, "tree_size": 5}, 422, "seq"),
    ("proofs/inclusion", {"seq": 0, "tree_size": 0}, 422, "query.tree_size"),
    ("proofs/inclusion", {"seq": 0, "tree_size": 10_000}, 404, "tree_size"),
    ("proofs/inclusion", {"seq": -1, "tree_size": 3}, 422, "query.seq"),
    ("proofs/inclusion", {"seq": "x", "tree_size": 3}, 422, "query.seq"),
    ("proofs/inclusion", {"seq": "1.5", "tree_size": 3}, 422, "query.seq"),
    ("proofs/inclusion", {"seq": str(1 << 70), "tree_size": 3}, 422, "query.seq"),
    ("proofs/inclusion", {}, 422, "query.seq"),
    ("proofs/consistency", {"first": 0, "second": 3}, 422, "first"),
    ("proofs/consistency", {"first": 4, "second": 3}, 422, "first"),
    ("proofs/consistency", {"first": 1, "second": 10_000}, 404, "second"),
    ("proofs/consistency", {"first": "a", "second": 3}, 422, "query.first"),
    ("proofs/consistency", {"first": 1}, 422, "query.second"),
])
def test_bad_input_is_problem_json_never_500(client, path, params, status, field):
    r = client.get(f"/v1/registrants/{DEA}/{path}", params=params)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert doc["status"] == status
    if field:
        names = [e["field"] for e in doc.get("errors", [])]
        assert any(field.split(".")[-1] in (n or "") for n in names), (names, doc)


@pytest.mark.parametrize("path", ["checkpoint", "verifier-key", "proofs/inclusion?seq=0&tree_size=1",
                                  "proofs/consistency?first=1&second=1"])
def test_unknown_registrant_is_404(client, path):
    r = client.get(f"/v1/registrants/FB7654329/{path}")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")


def test_equal_sizes_give_an_empty_consistency_proof(client):
    r = client.get(f"/v1/registrants/{DEA}/proofs/consistency", params={"first": 3, "second": 3})
    assert r.status_code == 200 and r.json()["hashes"] == []
