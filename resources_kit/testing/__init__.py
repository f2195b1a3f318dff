"""Test helpers for your own resources: Hypothesis strategies from marshmallow schemas and
a stateful CRUD contract. Opt-in: import it in your tests; it is not a pytest plugin.
Install its one extra dependency with ``pip install resources_kit[testing]``.

>>> from resources_kit.testing import crud_contract
>>> contract = crud_contract(client, "/api/teachers", resource=TeacherResource)  # doctest: +SKIP
>>> run_contract(contract)  # doctest: +SKIP
"""

from resources_kit.testing.contract import crud_contract
from resources_kit.testing.runs import contract_settings, run_contract
from resources_kit.testing.strategies import (
    UnsupportedField,
    field_strategy,
    invalid_payloads,
    payloads,
    register_field_strategy,
)

__all__ = [
    "UnsupportedField",
    "contract_settings",
    "crud_contract",
    "field_strategy",
    "invalid_payloads",
    "payloads",
    "register_field_strategy",
    "run_contract",
]
