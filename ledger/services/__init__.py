"""Use cases: one function per command. Each takes the ledger, the authenticated principal(s),
the command and an optional idempotency key; validates every field up front (errors name the
field); appends its entries through ``Ledger.execute`` in one transaction; returns the response.
Nothing here commits by hand or trusts a typed name.

One module per area of the clinic's work; this package re-exports each command so the
interfaces call ``services.<command>``:

- ``reference``       the registrant, products, suppliers, staff, roles, policy
- ``receiving``       receipts on invoices, initial and biennial inventories
- ``patients``        the encrypted patient registry
- ``administration``  doses drawn, given and wasted (witnessed)
- ``counts``          blind counts by two counters
- ``discrepancies``   count discrepancies and their resolution (two people)
- ``breakage``        breakage and spills recorded at the time (two people who saw it)
- ``disposal``        destruction (Form 41), transfers, returns, theft or loss (Form 106)
- ``loss_followup``   a theft or loss report's notice to DEA and its Form 106 filing (issue 20)
- ``corrections``     corrections that reference the corrected entry
- ``quarantine``      stock held back and released
- ``prescribers``     who may order a dose: registered prescribers (issue 19)
- ``preparations``    diluted infusions: a bag or syringe prepared, infused, its remainder wasted (issue 19)
- ``esketamine``      esketamine (Spravato) nasal-spray sessions: whole devices, REMS (issue 19)
- ``packages``        receipts in packages (cartons, kits) and their witnessed opening (issue 19)
- ``documents``       stored documents (invoices, form copies), by SHA-256
- ``common``          the checks every command shares, and ``run`` (one command, one transaction)

Reads built on the ledger live beside them: ``stock``, ``audit`` (the accountability audit),
``alerts`` and ``notify``, ``verify``, ``bundle`` (offline proofs), ``backup``.
"""

from __future__ import annotations

from ledger.services.administration import administer_dose, record_waste
from ledger.services.breakage import record_breakage
from ledger.services.common import product_copy, request_fields
from ledger.services.corrections import correct_entry
from ledger.services.counts import start_count, submit_count
from ledger.services.discrepancies import DISCREPANCY_CATEGORIES, resolve_discrepancy
from ledger.services.disposal import (
    LOSS_TYPES,
    destroy_stock,
    next_business_day,
    notice_deadlines,
    report_theft_or_loss,
    return_stock,
    transfer_stock,
)
from ledger.services.documents import (
    DOCUMENT_TYPES,
    MAX_DOCUMENT_BYTES,
    document_media_type,
    read_document,
    store_document,
)
from ledger.services.esketamine import record_esketamine_session  # issue 19
from ledger.services.loss_followup import record_dea_notice, record_form_106_filing  # issue 20
from ledger.services.packages import open_package  # issue 19
from ledger.services.patients import (
    change_patient_details,
    check_patient_key,
    check_registry,
    find_patients,
    read_patient,
    register_patient,
    verify_patient_key,
)
from ledger.services.preparations import (  # issue 19
    infuse_preparation,
    make_preparation,
    waste_preparation,
)
from ledger.services.prescribers import register_prescriber
from ledger.services.quarantine import quarantine_stock, release_quarantine
from ledger.services.receiving import receive_stock, take_inventory
from ledger.services.reference import (
    add_product,
    add_supplier,
    enroll_staff,
    grant_role,
    record_supplier_registration,
    register_registrant,
    revoke_role,
    set_policy,
)

__all__ = [
    "DISCREPANCY_CATEGORIES",
    "DOCUMENT_TYPES",
    "LOSS_TYPES",
    "MAX_DOCUMENT_BYTES",
    "add_product",
    "add_supplier",
    "administer_dose",
    "change_patient_details",
    "check_patient_key",
    "check_registry",
    "correct_entry",
    "destroy_stock",
    "enroll_staff",
    "find_patients",
    "grant_role",
    "infuse_preparation",
    "make_preparation",
    "next_business_day",
    "notice_deadlines",
    "open_package",
    "product_copy",
    "quarantine_stock",
    "document_media_type",
    "read_document",
    "read_patient",
    "receive_stock",
    "record_supplier_registration",
    "record_breakage",
    "record_dea_notice",
    "record_form_106_filing",
    "record_esketamine_session",
    "record_waste",
    "register_patient",
    "register_prescriber",
    "register_registrant",
    "release_quarantine",
    "report_theft_or_loss",
    "request_fields",
    "resolve_discrepancy",
    "return_stock",
    "revoke_role",
    "set_policy",
    "start_count",
    "store_document",
    "submit_count",
    "take_inventory",
    "transfer_stock",
    "verify_patient_key",
    "waste_preparation",
]
