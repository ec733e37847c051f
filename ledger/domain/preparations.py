"""The arithmetic of a diluted preparation (issue 19), pure, shared by the service that records
it, by ``verify --deep``'s rules replay, the audit and the reports, so none can drift.

- A preparation holds ``mg`` = the sum of its draws' mL x strength, **exact** (never rounded),
  in ``final_ml`` of diluted volume. Its concentration is ``mg / final_ml``, derived for display
  only and never stored (a rounded concentration times a volume is how mg go missing).
- An infusion from it gives ``mg_given = mg x ml_infused / final_ml``, rounded half-even to
  0.01 mg; the waste is ``mg - mg_given`` exactly, so mg drawn = mg given + mg wasted to the last
  digit, whatever the dilution.
- The audit counts stock in product mL: the product mL drawn are split the same way,
  ``product_ml_given = ml_drawn x mg_given / mg`` (half-even to 0.001 mL) and
  ``product_ml_wasted = ml_drawn - product_ml_given``, which sum back to ``ml_drawn`` exactly.
- USP <797> immediate use: administration begins within 4 hours of the start of preparation
  (``BEYOND_USE``), and never before it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

#: USP <797> immediate-use compounded sterile preparation: administration begins within 4 hours
#: of the start of preparation.
BEYOND_USE = timedelta(hours=4)

CONTAINERS = ("bag", "syringe")

#: The largest syringe a syringe pump takes; a bag may hold up to MAX_BAG_ML.
MAX_SYRINGE_ML = Decimal("60.00")
MAX_BAG_ML = Decimal("1000.00")

CENT = Decimal("0.01")
#: The scale product mL given is rounded to: syringe resolution, the finest a volume is recorded
#: in (``quantities.VOLUME_SCALE``), so a draw of 0.035 mL never splits into 0.04 mL given.
PRODUCT_ML_QUANTUM = Decimal("0.001")


def exact(d: Decimal) -> Decimal:
    """``d`` at 2 decimals when that is exact, else reduced to its exact digits (never rounded):
    one text per value, so the canonical bytes of an exact mg do not depend on how it was summed."""
    if d == d.quantize(CENT):
        return d.quantize(CENT)
    return d.normalize()


def mg_of_draws(draws: Iterable[tuple[Decimal, Decimal]]) -> Decimal:
    """Exact mg of (mL, strength mg/mL) draws."""
    return exact(sum((ml * strength for ml, strength in draws), Decimal(0)))


def mg_given(mg: Decimal, ml_infused: Decimal, final_ml: Decimal) -> Decimal:
    """mg x mL infused / final mL, half-even to 0.01 mg (the preparation's share infused).
    Rounded down instead when half-even would give more than the preparation holds (only an mg
    with digits below 0.01 mg can: the waste is never negative)."""
    share = mg * ml_infused / final_ml
    given = share.quantize(CENT, ROUND_HALF_EVEN)
    return given if given <= mg else share.quantize(CENT, ROUND_DOWN)


def product_ml_given(ml_drawn: Decimal, mg_given_: Decimal, mg: Decimal) -> Decimal:
    """The product mL the mg given stand for: mL drawn x mg given / mg, half-even to 0.001 mL,
    written by the 2-or-3 rule (``exact``: "0.49", "0.487"). Never more than ``ml_drawn`` (on the
    0.001 mL grid itself), so the product mL wasted is never negative."""
    if mg == 0:
        return Decimal("0.00")
    return exact((ml_drawn * mg_given_ / mg).quantize(PRODUCT_ML_QUANTUM, ROUND_HALF_EVEN))


def concentration(mg: Decimal, final_ml: Decimal, places: int = 4) -> Decimal:
    """mg/mL for display only (rounded down to ``places``: shown, never stored or multiplied)."""
    return (mg / final_ml).quantize(Decimal(1).scaleb(-places), ROUND_DOWN)


def beyond_use_at(started: datetime) -> datetime:
    """When administration must have begun: the start of preparation + 4 hours."""
    return started + BEYOND_USE


def infusion_start_refusal(started: datetime, prepared: datetime, beyond_use: datetime) -> str | None:
    """Why an infusion starting at ``started`` may not use a preparation started at ``prepared``
    whose beyond-use time is ``beyond_use``, or None."""
    if started < prepared:
        return "the infusion cannot start before its preparation was started"
    if started > beyond_use:
        return ("the preparation was past its beyond-use time (USP <797> immediate use: administration begins "
                "within 4 hours of the start of preparation); waste it whole and prepare a new one")
    return None


def allowance_mg(n_draws: int, strength: Decimal, resolution_ml: Decimal) -> Decimal:
    """What a preparation may exceed its order by without anyone giving more than ordered: half a
    syringe graduation per draw (``resolution_ml`` x strength each), rounded down to 0.01 mg."""
    return (resolution_ml * strength * n_draws).quantize(CENT, ROUND_DOWN)
