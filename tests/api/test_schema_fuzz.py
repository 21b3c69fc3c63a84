"""Schemathesis against the app's own OpenAPI document: no 5xx, every response matches its schema."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from cxp.api.app import create_app

pytestmark = pytest.mark.integration

# The document is the app's own; loading it needs no database, so operations are known at collection.
SCHEMA = schemathesis.openapi.from_dict(create_app().openapi())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_no_server_errors_and_responses_match_the_schema(operation, live_api) -> None:
    headers = {"Authorization": f"Bearer {live_api.tokens['admin']}"}

    @given(case=operation.as_strategy())
    # Derandomized: CI sees the same cases every run (a flaky gate blocks landings); widen the search by
    # hand with `derandomize=False` and more examples, or the schemathesis CLI, when hunting.
    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=True)
    def check(case) -> None:
        case.call_and_validate(base_url=live_api.url, headers=headers,
                               checks=[not_a_server_error, response_schema_conformance, content_type_conformance])

    check()
