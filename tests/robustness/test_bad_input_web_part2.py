"""Bad input on every HTML form under /ui/, second part: the forms of ``PARTS[1]`` (the
preparations on), swept exactly as test_bad_input_web.py sweeps the first part (its docstring
says how, and ``test_every_form_route_is_fuzzed`` there checks that the two parts together are
every form). A file of its own so that ``--dist loadfile`` can run the halves on two workers."""

from __future__ import annotations

import pytest

from tests.conftest import BACKENDS
from tests.robustness.test_bad_input_web import PARTS, sweep

pytestmark = [pytest.mark.parametrize("db_url", BACKENDS, indirect=True), pytest.mark.slow]


def test_bad_input_on_every_form_part2(ledger):
    sweep(ledger, PARTS[1])
