"""Group commit (issue 22): commands that wait behind a transaction in flight commit together.

Each command is still atomic (its own savepoint), is answered only after the commit, and a
command that fails writes nothing while the others of its group are recorded. One checkpoint is
signed per commit, over the tree the group leaves. Run against SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from ledger import services
from ledger.domain.errors import Conflict, IntegrityFailure, InvalidInput, LedgerError
from ledger.integrity.canonical import decode
from ledger.services.verify import verify
from ledger.settings import get_settings
from ledger.storage.log import attach
from ledger.storage.store import Ledger, NodeCache, entries_t, make_engine, migrate
from tests.conftest import DEA, Clinic
from tests.contract.test_ledger_contract import receipt


def _attach(ledger: Ledger, db_url: str, tmp_path) -> None:
    attach(ledger, get_settings(database_url=db_url, key_dir=tmp_path / "keys"))


def _invoices(ledger: Ledger) -> list[tuple[int, str]]:
    with ledger.reading() as c:
        rows = c.execute(sa.select(entries_t.c.seq, entries_t.c.canonical)
                         .where(entries_t.c.registrant == DEA, entries_t.c.kind == "stock_received")
                         .order_by(entries_t.c.seq)).all()
    return [(seq, decode(bytes(data))["invoice_number"]) for seq, data in rows]


def _checkpoint_sizes(ledger: Ledger) -> list[int]:
    with ledger.reading() as c:
        return [r[0] for r in c.execute(sa.text(
            "SELECT tree_size FROM checkpoints WHERE registrant = :r ORDER BY tree_size"), {"r": DEA})]


def _size(ledger: Ledger) -> int:
    with ledger.reading() as c:
        return int(c.execute(sa.select(sa.func.count()).select_from(entries_t)
                             .where(entries_t.c.registrant == DEA)).scalar())


class _Held:
    """Holds the first command (invoice INV-HOLD) inside its transaction until released, so the
    commands started meanwhile queue up and commit as one group."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.entered, self.gate = threading.Event(), threading.Event()
        self.results: dict[str, object] = {}
        self.visible_on_return: dict[str, bool] = {}
        self.threads: list[threading.Thread] = []

    def hook(self, ctx) -> None:
        if ctx.request.get("invoice_number") == "INV-HOLD":
            self.entered.set()
            assert self.gate.wait(60)

    def start(self, clinic: Clinic, invoice: str, key: str | None = None, cmd=None) -> None:
        cmd = cmd or receipt(clinic, invoice)

        def run() -> None:
            try:
                res = services.receive_stock(self.ledger, clinic.nurse, cmd, idempotency_key=key)
                self.results[invoice if key is None else f"{invoice}/{threading.get_ident()}"] = res
                # Answered only after the commit: another connection sees the entries already.
                seqs = {e["seq"] for e in res["entries"]}
                with self.ledger.reading() as c:
                    found = set(c.execute(sa.select(entries_t.c.seq).where(
                        entries_t.c.registrant == DEA, entries_t.c.seq.in_(seqs))).scalars())
                self.visible_on_return[invoice] = found == seqs
            except LedgerError as exc:
                self.results[invoice] = exc

        before = self.ledger.waiting(DEA)
        t = threading.Thread(target=run)
        self.threads.append(t)
        t.start()
        if invoice == "INV-HOLD":
            assert self.entered.wait(60)
            return
        deadline = time.monotonic() + 60
        while self.ledger.waiting(DEA) <= before:  # queued, in this order
            assert time.monotonic() < deadline, "the command never queued behind the one in flight"
            time.sleep(0.005)

    def release(self) -> None:
        self.gate.set()
        for t in self.threads:
            t.join(60)
            assert not t.is_alive()


class GroupCommitContract:
    backend: str

    def test_waiting_commands_commit_together_and_a_failed_one_writes_nothing(self, ledger, db_url, tmp_path):
        _attach(ledger, db_url, tmp_path)
        clinic = Clinic(ledger)
        held = _Held(ledger)

        def refuse_c(ctx) -> None:  # after the command's entry is appended: its savepoint must undo it
            if ctx.request.get("invoice_number") == "INV-C":
                raise InvalidInput("refused by the test after appending", field="invoice_number")

        ledger.before_commit[:0] = [held.hook, refuse_c]
        commits = ledger.commits
        held.start(clinic, "INV-HOLD")
        for inv in ("INV-B", "INV-C", "INV-D"):
            held.start(clinic, inv)
        held.release()

        assert isinstance(held.results["INV-C"], InvalidInput)
        assert ledger.commits == commits + 2, "the three waiting commands were not one commit"
        invoices = _invoices(ledger)
        assert [inv for _, inv in invoices[-3:]] == ["INV-HOLD", "INV-B", "INV-D"]
        seq_b, seq_d = invoices[-2][0], invoices[-1][0]
        assert seq_d == seq_b + 1, "the refused command left a gap or an entry"
        assert held.visible_on_return == {"INV-HOLD": True, "INV-B": True, "INV-D": True}
        sizes = _checkpoint_sizes(ledger)
        assert sizes[-1] == seq_d + 1 and seq_b + 1 not in sizes, "not one checkpoint per commit"
        report = verify(ledger, deep=True)
        assert report.ok, report

    def test_a_write_the_database_refuses_fails_only_its_own_command(self, ledger, db_url, tmp_path):
        """On PostgreSQL the refusal of a queued INSERT arrives at the command's next read, with
        the pipeline aborted: the command must still be rolled back alone (review of issue 22)."""
        _attach(ledger, db_url, tmp_path)
        clinic = Clinic(ledger)
        held = _Held(ledger)

        def clash(ctx) -> None:
            if ctx.request.get("invoice_number") != "INV-C":
                return
            r = ctx.view.raw
            cp = r.one(ctx.conn, "SELECT tree_size, root_hash, note, signed_at FROM checkpoints WHERE registrant = :r "
                                 "ORDER BY tree_size DESC LIMIT 1", {"r": ctx.registrant})
            r.run(ctx.conn, "INSERT INTO checkpoints (registrant, tree_size, root_hash, note, signed_at) "
                            "VALUES (:r, :s, :h, :n, :t)",  # already there: the primary key refuses it
                  {"r": ctx.registrant, "s": cp["tree_size"], "h": cp["root_hash"], "n": cp["note"], "t": cp["signed_at"]})
            r.scalar(ctx.conn, "SELECT count(*) FROM entries WHERE registrant = :r", {"r": ctx.registrant})

        ledger.before_commit[:0] = [held.hook, clash]
        held.start(clinic, "INV-HOLD")
        for inv in ("INV-B", "INV-C", "INV-D"):
            held.start(clinic, inv)
        held.release()
        assert isinstance(held.results["INV-C"], Conflict), held.results["INV-C"]
        assert not isinstance(held.results["INV-B"], Exception) and not isinstance(held.results["INV-D"], Exception)
        invoices = _invoices(ledger)
        assert [inv for _, inv in invoices[-3:]] == ["INV-HOLD", "INV-B", "INV-D"]
        assert invoices[-1][0] == invoices[-2][0] + 1
        assert verify(ledger, deep=True).ok

    def test_the_same_idempotency_key_twice_in_one_group_records_once(self, ledger, db_url, tmp_path):
        _attach(ledger, db_url, tmp_path)
        clinic = Clinic(ledger)
        held = _Held(ledger)
        ledger.before_commit.insert(0, held.hook)
        held.start(clinic, "INV-HOLD")
        retried = receipt(clinic, "INV-E")  # the same request, sent twice
        held.start(clinic, "INV-E", key="retry-E", cmd=retried)
        held.start(clinic, "INV-E", key="retry-E", cmd=retried)
        held.release()
        answers = [v for k, v in held.results.items() if k.startswith("INV-E/")]
        assert len(answers) == 2
        assert sorted(bool(a.get("replayed")) for a in answers) == [False, True]
        assert answers[0]["entries"] == answers[1]["entries"]
        assert [inv for _, inv in _invoices(ledger)].count("INV-E") == 1

    def test_a_failed_commit_fails_every_command_of_the_group(self, ledger, db_url, tmp_path):
        _attach(ledger, db_url, tmp_path)
        clinic = Clinic(ledger)
        held = _Held(ledger)
        fail = {"on": True}

        def refuse_group(ctx) -> None:
            if fail["on"] and ctx.request.get("invoice_number") != "INV-HOLD":
                raise IntegrityFailure("the test refuses this group's checkpoint", registrant=ctx.registrant, seq=None)

        refuse_group.once_per_commit = True  # type: ignore[attr-defined]
        ledger.before_commit[:0] = [held.hook]
        ledger.before_commit.append(refuse_group)
        size = _size(ledger)
        held.start(clinic, "INV-HOLD")
        held.start(clinic, "INV-F")
        held.start(clinic, "INV-G")
        held.release()
        assert isinstance(held.results["INV-F"], IntegrityFailure)
        assert isinstance(held.results["INV-G"], IntegrityFailure)
        assert _size(ledger) == size + 1  # only the held command's entry
        fail["on"] = False
        services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-F"))
        assert verify(ledger, deep=True).ok


class TestSQLite(GroupCommitContract):
    backend = "sqlite"


@pytest.mark.postgres
class TestPostgres(GroupCommitContract):
    backend = "postgresql"


@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_merkle_nodes_of_a_rolled_back_command_are_never_reused(db_url, tmp_path):
    """The checkpoint of each command is signed over Merkle nodes this process remembers; nodes
    of a command that rolled back must never be among them, or another process's entry at the
    same position would be hashed with the wrong neighbour and the log would refuse to sign."""
    first = Ledger(make_engine(db_url))
    migrate(first.engine)
    _attach(first, db_url, tmp_path)
    clinic = Clinic(first)
    if _size(first) % 2:
        services.receive_stock(first, clinic.nurse, receipt(clinic, "INV-EVEN"))

    def refuse_x(ctx) -> None:  # after the entry and its Merkle leaf node are written
        if ctx.request.get("invoice_number") == "INV-X":
            raise InvalidInput("refused by the test", field="invoice_number")

    first.before_commit.insert(0, refuse_x)
    with pytest.raises(InvalidInput):
        services.receive_stock(first, clinic.nurse, receipt(clinic, "INV-X"))
    second = Ledger(make_engine(db_url))  # another process: its own caches
    _attach(second, db_url, tmp_path)
    services.receive_stock(second, clinic.nurse, receipt(clinic, "INV-Y"))  # same position as INV-X
    services.receive_stock(first, clinic.nurse, receipt(clinic, "INV-Z"))  # its sibling is INV-Y's leaf
    assert verify(first, deep=True).ok
    first.dispose()
    second.dispose()


def test_node_cache_forgets_a_registrant_whose_chain_is_not_the_one_it_saw():
    cache = NodeCache()
    leaves = {0: "a" * 64, 1: "b" * 64, 2: "c" * 64}
    cache.remember(DEA, {(0, 0): b"a" * 32, (0, 1): b"b" * 32}, 2, leaves[1])
    cache.check_chain(DEA, 2, leaves[1], leaves.get)  # the head it saw committed
    cache.check_chain(DEA, 3, leaves[2], leaves.get)  # another process appended since
    assert cache.get(DEA, (0, 1)) == b"b" * 32
    cache.check_chain(DEA, 1, leaves[0], leaves.get)  # the database now holds one entry: restored
    assert cache.get(DEA, (0, 0)) is None and cache.get(DEA, (0, 1)) is None
    cache.remember(DEA, {(0, 0): b"a" * 32}, 2, leaves[1])
    forked = {0: "a" * 64, 1: "f" * 64, 2: "c" * 64}  # restored, then appended to by another process
    cache.check_chain(DEA, 3, forked[2], forked.get)
    assert cache.get(DEA, (0, 0)) is None


def test_a_command_started_inside_another_on_the_same_registrant_is_refused(ledger):
    """It would otherwise wait for its own group's commit forever."""
    clinic = Clinic(ledger)
    outcome: dict[str, object] = {}

    def nested(ctx) -> None:
        if ctx.request.get("invoice_number") == "INV-OUTER":
            services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-INNER"))

    ledger.before_commit.insert(0, nested)

    def run() -> None:
        try:
            services.receive_stock(ledger, clinic.nurse, receipt(clinic, "INV-OUTER"))
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "the nested command hung"
    assert isinstance(outcome.get("error"), RuntimeError)
    assert not [inv for _, inv in _invoices(ledger) if inv in ("INV-OUTER", "INV-INNER")]


@pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_sqlalchemy_and_hand_written_reads_both_see_rows_inside_an_append_transaction(ledger):
    """On PostgreSQL the append transaction runs in psycopg's pipeline mode, where a result's
    description arrives only at a sync: a SQLAlchemy statement there must still return its rows."""
    Clinic(ledger)
    seen: dict[str, int] = {}

    def build(ctx):
        seen["sqlalchemy"] = ctx.conn.execute(sa.select(sa.func.count()).select_from(entries_t)
                                              .where(entries_t.c.registrant == DEA)).scalar()
        seen["hand-written"] = ctx.view.raw.scalar(ctx.conn, "SELECT count(*) FROM entries WHERE registrant = :r",
                                                   {"r": DEA})
        raise InvalidInput("the probe records nothing", field="probe")

    with pytest.raises(InvalidInput):
        ledger.execute(DEA, "probe", {}, build, principal_id=None)
    assert seen == {"sqlalchemy": _size(ledger), "hand-written": _size(ledger)}
