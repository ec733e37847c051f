"""Issue 20: the count tolerance for opened containers, one rule for the count service and for
``verify --deep``'s replay.

An opened vial's content is estimated (read against its graduations, or drawn into a syringe), so
a count of it may differ a little from the book without anything being lost; the registrant's
policy says how much (``policy.open_count_tolerance_ml``, mL per opened container). Containers
themselves are counted, not estimated: a line whose sealed or opened containers differ from the
book is exact, and so is every line of a blind count whose counters read the book while it was
open (such a count confirms nothing). A difference within the tolerance is still recorded on the
line (``difference_ml``) and still feeds the pattern-of-small-losses signal
(``alerts.state.loss_pattern``); it only opens no discrepancy.
"""

from __future__ import annotations

from decimal import Decimal

from ledger.domain.quantities import norm

ZERO = Decimal("0.00")


def line_tolerance(per_container: Decimal, *, sealed: int, opened: int, expected_sealed: int,
                   expected_opened: int, book_read: bool) -> Decimal:
    """The mL a count line may differ from the book without a discrepancy: ``per_container`` x
    the opened containers, when the containers counted are the book's and nobody read the book;
    else 0.00 (exact)."""
    if book_read or sealed != expected_sealed or opened != expected_opened or opened == 0:
        return ZERO
    return norm(per_container * opened)


def within_tolerance(difference: Decimal, tolerance: Decimal) -> bool:
    """A non-zero difference no larger than the tolerance (a zero difference needs none)."""
    return difference != 0 and abs(difference) <= tolerance


def opens_discrepancy(difference: Decimal, tolerance: Decimal, *, sealed_differs: bool, book_read: bool) -> bool:
    """Whether a count line opens a discrepancy: any sealed difference, any line of a count
    whose counters read the book, and any mL difference beyond the tolerance."""
    return sealed_differs or book_read or (difference != 0 and not within_tolerance(difference, tolerance))
