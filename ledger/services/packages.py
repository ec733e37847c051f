"""Cartons are not vials (issue 19, package hierarchy): receipts in packages and the witnessed
opening of a package.

A product is bought in packages (a carton of 10 or 25 vials, a kit of 2 or 3 nasal-spray devices:
one package NDC, one DSCSA serial per package) and used in units (the commercial containers of
21 CFR 1300.01: a vial, a device), each of which the book tracks. So:

- A receipt line in packages (``ReceivedLineInput.packages``) records the packages received and
  invoiced and the units per package copied from the product; each package gets an identity
  (carton GTIN + serial from its scanned GS1 code, else ``P<receipt seq>-<n>``), and each of its
  units goes on the book at receipt (the receipt record of 21 CFR 1304.22(c) counts commercial
  containers and the units in each) as a ``vials`` row named after its package and position
  (``<package id>:03``; ``:`` rather than ``/``, so a unit id stays one URL path segment), sealed
  *in* the package: not drawn from, transferred, returned or destroyed alone.
- Opening a package (``package_opened``) is done by one authenticated person and witnessed by a
  second, who record how many units they found. The units found become usable; the units not
  found stay on the book, unusable, under a discrepancy opened by the entry (the opening is the
  package's count), which a manager who neither opened nor witnessed resolves like a count's
  (``services.discrepancies``): an accepted loss takes exactly those units off the book.
  Opening twice, opening a package not on hand at this registrant, or finding more units than
  the package was received with, are refused.
- A whole sealed package may move (transfer, return, destruction, theft or loss, quarantine):
  every one of its units on hand must be named, and each entry line names the package.

A product whose package holds one unit (``units_per_package`` 1) has nothing to open: its
package is the unit, as every receipt line before issue 19 was.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

from ledger.domain import entries as ev
from ledger.domain import gs1
from ledger.domain.commands import OpenPackage
from ledger.domain.errors import Conflict, InvalidInput, NotFound
from ledger.domain.principal import Meaning, Principal, Role
from ledger.domain.quantities import parse_count
from ledger.services.common import (
    event_time,
    product_from_row,
    request_fields,
    run,
    sign_witness,
)
from ledger.storage.store import CommandContext, Ledger

#: Who opens a package: whoever receives stock into the medication room.
OPENERS = frozenset({Role.NURSE, Role.PHARMACIST, Role.MANAGER})

#: Most packages on one receipt line (a pallet of cartons is several lines).
MAX_PACKAGES_PER_LINE = 200

#: Most units one receipt line may put on the book.
MAX_UNITS_PER_LINE = 5000


def unit_id(package_id: str, position: int, units_per_package: int) -> str:
    """The identity of the unit at ``position`` (1-based) in a package: ``<package id>:<nn>``."""
    return f"{package_id}:{position:0{max(2, len(str(units_per_package)))}d}"


def package_line(ctx: CommandContext, line: Any, product: ev.ProductDescription, lot: str, expiry: date, *,
                 field: str, seen: set[str], number: list[int], identifiers) -> ev.ReceivedLine:
    """A receipt line given in packages, checked and numbered: its packages' identities and its
    units' (``number`` is the receipt's running package number, for packages without a serial;
    ``seen`` the identities already used in the receipt; ``identifiers`` the receipt's GS1
    parser, called with the number of packages)."""
    packages = parse_count(line.packages, field=f"{field}.packages", allow_zero=False)
    if packages > MAX_PACKAGES_PER_LINE:
        raise InvalidInput(f"at most {MAX_PACKAGES_PER_LINE} packages per line", field=f"{field}.packages")
    per = product.units_per_package
    units = packages * per
    if units > MAX_UNITS_PER_LINE:
        raise InvalidInput(f"{packages} packages of {per} are {units} units; at most {MAX_UNITS_PER_LINE} per line",
                           field=f"{field}.packages")
    if line.containers is not None:
        given = parse_count(line.containers, field=f"{field}.containers")
        if given != units:
            raise InvalidInput(f"{packages} packages of {per} {_unit_word(product, per)} hold {units} units, not "
                               f"{given}; give the packages, or the units that match them", field=f"{field}.containers")
    if getattr(line, "invoiced_containers", None) is not None:
        raise InvalidInput("a line in packages is checked against the packages the invoice lists: give "
                           "invoiced_packages", field=f"{field}.invoiced_containers")
    invoiced = None
    if getattr(line, "invoiced_packages", None) is not None:
        invoiced = parse_count(line.invoiced_packages, field=f"{field}.invoiced_packages")
    for name in ("scans", "serials"):
        given_ids = tuple(getattr(line, name, ()) or ())
        if given_ids and len(given_ids) != packages:
            raise InvalidInput(f"{packages} packages need {packages} scanned {name}, one per package, not "
                               f"{len(given_ids)}", field=f"{field}.packages")
    gtin, serials = identifiers(packages)
    package_ids: list[str] = []
    for k in range(packages):
        if serials:
            pid = gs1.vial_id(gtin, serials[k])
            if pid in seen or _known(ctx, pid):
                raise Conflict(f"a package with GTIN {gtin} and serial {serials[k]} is already on record "
                               "(suspect product: quarantine and verify it)", field=f"{field}.serials[{k}]")
        else:
            number[0] += 1
            pid = f"P{ctx.next_seq}-{number[0]}"
        seen.add(pid)
        package_ids.append(pid)
    if per == 1:
        vial_ids = tuple(package_ids)  # the package is the unit
    else:
        vial_ids = tuple(unit_id(p, i, per) for p in package_ids for i in range(1, per + 1))
    return ev.ReceivedLine(product=product, containers=units, lot=lot, expiry=expiry, vial_ids=vial_ids, gtin=gtin,
                           serials=serials, quarantined=bool(getattr(line, "quarantine", False)),
                           packages=packages, units_per_package=per, invoiced_packages=invoiced,
                           package_ids=tuple(package_ids))


def _known(ctx: CommandContext, identity: str) -> bool:
    return (ctx.view.get("packages", (ctx.registrant, identity)) is not None
            or ctx.view.get("vials", (ctx.registrant, identity)) is not None)


def _unit_word(product: ev.ProductDescription, n: int) -> str:
    word = product.unit_kind.replace("_", " ").replace("nasal spray device", "device")
    return word + ("s" if n != 1 else "")


def open_package(ledger: Ledger, principal: Principal, cmd: OpenPackage, *, witness: Principal | None = None,
                 idempotency_key: str | None = None) -> dict:
    """Open a sealed package before ``witness`` (a second, authenticated person) and record the
    units found (entry ``package_opened``): found units become usable; a shortfall opens a
    discrepancy over the missing units, which stay on the book, unusable, until a manager
    resolves it."""
    package_id = cmd.package_id
    if not isinstance(package_id, str) or not package_id or len(package_id) > 128:
        raise InvalidInput("must be a package id", field="package_id")
    found = parse_count(cmd.units_found, field="units_found")
    if witness is not None and not isinstance(witness, Principal):
        raise InvalidInput("must be an authenticated staff member", field="witness")

    def build(ctx: CommandContext) -> dict:
        sig = ctx.signature(principal, Meaning.PERFORMED, roles=OPENERS)
        occurred, late = event_time(ctx, cmd.occurred_at, cmd.late_reason)
        pkg = ctx.view.get("packages", (ctx.registrant, package_id))
        if pkg is None:
            # Never says whether another registrant holds it: each ledger opens only its own.
            raise NotFound(f"no package {package_id[:64]!r} was received at {ctx.registrant}; a package is opened "
                           "where it was received", field="package_id")
        if pkg["opened_seq"] is not None:
            raise Conflict(f"package {package_id} was opened by entry {pkg['opened_seq']} ({pkg['units_found']} "
                           "units found); a package is opened once", field="package_id")
        units = sorted(ctx.view.select("vials", registrant=ctx.registrant, package_id=package_id),
                       key=lambda v: v["vial_id"])
        gone = [v for v in units if v["state"] not in ("sealed", "quarantined")]
        if gone:
            raise Conflict(f"package {package_id} is no longer on hand (its units are {gone[0]['state']}, entry "
                           f"{gone[0]['last_seq']}); only a package on hand is opened", field="package_id")
        if any(v["state"] == "quarantined" for v in units):
            raise Conflict(f"package {package_id} is quarantined (suspect product); release it before opening it",
                           field="package_id")
        per = pkg["units_per_package"]
        if found > per:
            raise Conflict(f"package {package_id} was received holding {per} units; {found} cannot be found in it. "
                           "Units not received are not on the book: recount, and put any extra units in quarantine "
                           "and ask the supplier", field="units_found")
        wsig = sign_witness(ctx, principal, witness)
        product = product_from_row(ctx.view.get("products", (ctx.registrant, pkg["ndc_key"])))
        found_ids = tuple(v["vial_id"] for v in units[:found])
        missing_ids = tuple(v["vial_id"] for v in units[found:])
        disc = f"D{ctx.next_seq}-P" if missing_ids else None
        e = ctx.append(ev.PackageOpened(
            package_id=package_id, product=product, lot=pkg["lot"], expiry=date.fromisoformat(pkg["expiry"]),
            receipt_seq=pkg["received_seq"], units_per_package=per, units_found=found_ids,
            units_missing=missing_ids, discrepancy_id=disc, gtin=pkg["gtin"], serial=pkg["serial"],
            late_reason=late), signatures=[sig, wsig], occurred_at=occurred)
        return {"package_id": package_id, "package_opened_seq": e.seq, "units_found": list(found_ids),
                "units_missing": list(missing_ids), "discrepancy_id": disc}

    return run(ledger, principal, "open_package", cmd, build, idempotency_key,
               {**request_fields(cmd), "witness": getattr(witness, "staff_id", None)})


def whole_packages(ctx: CommandContext, vials: Sequence[dict], *, field: str = "vial_ids",
                   suffix: str = "") -> dict[str, str]:
    """For a command that moves units (transfer, return, destruction, theft or loss, quarantine):
    units still in a package move only with the whole package, sealed. Returns vial id -> package
    id for the packaged units named; refuses a package named in part, and units left in an opened
    package (those its opening did not find: their discrepancy is resolved first)."""
    named = {v["vial_id"] for v in vials}
    out: dict[str, str] = {}
    checked: set[str] = set()
    for i, v in enumerate(vials):
        if not v.get("packaged"):
            continue
        pid = v["package_id"]
        out[v["vial_id"]] = pid
        if pid in checked:
            continue
        checked.add(pid)
        pkg = ctx.view.get("packages", (ctx.registrant, pid))
        if pkg is not None and pkg["opened_seq"] is not None:
            raise Conflict(f"vial {v['vial_id']} was not found when package {pid} was opened (entry "
                           f"{pkg['opened_seq']}); discrepancy {pkg['discrepancy_id']} settles it, nothing else moves it",
                           field=f"{field}[{i}]{suffix}")
        on_hand = [u["vial_id"] for u in ctx.view.select("vials", registrant=ctx.registrant, package_id=pid)
                   if u["packaged"] and u["state"] in ("sealed", "quarantined")]
        left_out = [u for u in on_hand if u not in named]
        if left_out:
            raise Conflict(f"vial {v['vial_id']} is in sealed package {pid}: open the package (witnessed) first, or "
                           f"name all its {len(on_hand)} units to move it whole ({left_out[0]} is not named)",
                           field=f"{field}[{i}]{suffix}")
    return out


def sealed_packages(ctx: CommandContext, vials: Iterable[dict]) -> dict[str, list[dict]]:
    """Units on hand in packages not yet opened, by package id (counts and inventories of sealed
    packages). The units an opening did not find are not in a sealed package any more."""
    out: dict[str, list[dict]] = {}
    for v in vials:
        if v.get("packaged") and v["state"] in ("sealed", "quarantined"):
            out.setdefault(v["package_id"], []).append(v)
    return {pid: units for pid, units in out.items()
            if (ctx.view.get("packages", (ctx.registrant, pid)) or {}).get("opened_seq") is None}
