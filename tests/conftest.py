"""Test-suite wiring: fixtures live in tests/fixtures/."""

pytest_plugins = ["tests.fixtures.stack", "tests.fixtures.mqtt", "tests.fixtures.gateway"]
