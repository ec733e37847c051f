"""Staff, roles, products and suppliers: reads, and the commands that record them as entries.

Enrolling staff and granting roles take two people (separation of duties): the manager or
administrator sending the request, and a second one who approves it on the same device with a
``Witness-Assertion`` (``POST .../witness-assertions``, bound to this very body), as witnesses
sign a waste. Only a registrant with no other manager or administrator may leave it out.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from api.http import queries
from api.http.auth import Witness
from api.http.deps import AuthDep, IdempotencyKey, LedgerDep, OptionalWitnessDep, actor
from api.http.schemas import (
    PROBLEM_RESPONSES,
    CommandResultPublic,
    ProductAddedPublic,
    ProductCreate,
    ProductPublic,
    RoleGrantCreate,
    RoleGrantedPublic,
    RoleRevokeCreate,
    StaffCreate,
    StaffEnrolledPublic,
    StaffId,
    StaffPublic,
    SupplierAddedPublic,
    SupplierCreate,
    SupplierPublic,
    SupplierRegistrationCreate,
    SupplierRegistrationPublic,
)
from ledger import services
from ledger.domain.commands import (
    AddProduct,
    AddressInput,
    AddSupplier,
    EnrollStaff,
    GrantRole,
    RecordSupplierRegistration,
    RevokeRole,
)
from ledger.domain.principal import Principal

router = APIRouter(prefix="/v1/registrants/{dea}", responses=PROBLEM_RESPONSES)
CREATED = status.HTTP_201_CREATED


@router.get("/staff", response_model=list[StaffPublic], tags=["staff"], name="list_staff")
def list_staff(ledger: LedgerDep, auth: AuthDep, who: Annotated[Principal, actor("list_staff")]) -> list[dict]:
    """Enrolled staff with the roles they hold now and whether they have a password."""
    return queries.staff(ledger, who.registrant, auth.store.has_credentials(who.registrant))


def _p(w: Witness | None) -> Principal | None:
    return w.principal if w is not None else None


@router.post("/staff", status_code=CREATED, response_model=StaffEnrolledPublic, tags=["staff"], name="enroll_staff")
def enroll_staff(body: StaffCreate, ledger: LedgerDep, who: Annotated[Principal, actor("enroll_staff")],
                 approver: OptionalWitnessDep, idempotency_key: IdempotencyKey = None) -> dict:
    """Enroll a staff member (entry ``staff_enrolled``) with initial roles (``role_granted``),
    approved by a second manager or administrator (``Witness-Assertion`` header). A printed name
    in two scripts, or one that looks like an existing staff member's, is refused (add a visible
    suffix such as "(2)")."""
    return services.enroll_staff(ledger, who, EnrollStaff(body.printed_name, body.username, tuple(body.roles)),
                                 approver=_p(approver), idempotency_key=idempotency_key)


@router.post("/staff/{staff_id}/roles", status_code=CREATED, response_model=RoleGrantedPublic, tags=["staff"],
             name="grant_role")
def grant_role(staff_id: StaffId, body: RoleGrantCreate, ledger: LedgerDep,
               who: Annotated[Principal, actor("grant_role")], approver: OptionalWitnessDep,
               idempotency_key: IdempotencyKey = None) -> dict:
    """Grant a role to someone else (entry ``role_granted``), approved by a second manager or
    administrator who is not the grantee (``Witness-Assertion`` header); only an administrator
    grants ``administrator``."""
    return services.grant_role(ledger, who, GrantRole(staff_id, body.role), approver=_p(approver),
                               idempotency_key=idempotency_key)


@router.post("/staff/{staff_id}/role-revocations", status_code=CREATED, response_model=CommandResultPublic,
             tags=["staff"], name="revoke_role")
def revoke_role(staff_id: StaffId, body: RoleRevokeCreate, ledger: LedgerDep,
                who: Annotated[Principal, actor("revoke_role")], approver: OptionalWitnessDep,
                idempotency_key: IdempotencyKey = None) -> dict:
    """Revoke a role, with the reason (entry ``role_revoked``); it takes effect on the next request.
    A manager or administrator role needs a second manager or administrator's approval
    (``Witness-Assertion``) where one exists."""
    return services.revoke_role(ledger, who, RevokeRole(staff_id, body.role, body.reason),
                                approver=approver.principal if approver else None, idempotency_key=idempotency_key)


@router.get("/products", response_model=list[ProductPublic], tags=["products"], name="list_products")
def list_products(ledger: LedgerDep, who: Annotated[Principal, actor("list_products")]) -> list[dict]:
    """Products added at this registrant, in the order they were added."""
    return queries.products(ledger, who.registrant)


@router.post("/products", status_code=CREATED, response_model=ProductAddedPublic, tags=["products"], name="add_product")
def add_product(body: ProductCreate, ledger: LedgerDep, who: Annotated[Principal, actor("add_product")],
                idempotency_key: IdempotencyKey = None) -> dict:
    """Add a product (entry ``product_added``): NDC, DEA drug code, schedule, form, strength, container."""
    return services.add_product(ledger, who, AddProduct(body.ndc, body.name, body.drug_code, body.schedule, body.form,
                                                        body.strength_mg_per_ml, body.container_ml,
                                                        unit_kind=body.unit_kind, unit_ndc=body.unit_ndc,
                                                        units_per_package=body.units_per_package),
                                idempotency_key=idempotency_key)


@router.get("/suppliers", response_model=list[SupplierPublic], tags=["suppliers"], name="list_suppliers")
def list_suppliers(ledger: LedgerDep, who: Annotated[Principal, actor("list_suppliers")]) -> list[dict]:
    """Suppliers added at this registrant."""
    return queries.suppliers(ledger, who.registrant)


@router.post("/suppliers", status_code=CREATED, response_model=SupplierAddedPublic, tags=["suppliers"],
             name="add_supplier")
def add_supplier(body: SupplierCreate, ledger: LedgerDep, who: Annotated[Principal, actor("add_supplier")],
                 idempotency_key: IdempotencyKey = None) -> dict:
    """Add a supplier (entry ``supplier_added``) with its address, DEA number, DEA registration
    (expiry, schedules) and DSCSA authorized-trading-partner status; receipts are checked against
    them (issue 19)."""
    a = body.address
    return services.add_supplier(ledger, who, AddSupplier(
        body.name, AddressInput(a.street, a.city, a.state, a.postal_code), body.dea_number,
        body.registration_expires_on, tuple(body.schedules), body.authorized_trading_partner),
        idempotency_key=idempotency_key)


@router.post("/suppliers/{supplier_id}/registration", status_code=CREATED, response_model=SupplierRegistrationPublic,
             tags=["suppliers"], name="record_supplier_registration")
def record_supplier_registration(supplier_id: Annotated[str, Path(min_length=1, max_length=64)],
                                 body: SupplierRegistrationCreate, ledger: LedgerDep,
                                 who: Annotated[Principal, actor("record_supplier_registration")],
                                 idempotency_key: IdempotencyKey = None) -> dict:
    """Record a supplier's renewed DEA registration and DSCSA status (entry
    ``supplier_registration_recorded``), or the first one of a supplier added before they were
    required: it supersedes what was recorded; nothing is edited."""
    return services.record_supplier_registration(ledger, who, RecordSupplierRegistration(
        supplier_id, body.registration_expires_on, tuple(body.schedules), body.authorized_trading_partner),
        idempotency_key=idempotency_key)
