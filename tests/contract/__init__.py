"""Contract suites: one per port, subclassed by every implementation's test module (CONVENTIONS, Tests)."""

import pytest

# The suites live outside test_*.py files; have pytest rewrite their asserts anyway (before first import).
pytest.register_assert_rewrite("tests.contract.provider_contract")
