"""Test-suite wiring: fixtures live in tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.stack",
    "tests.fixtures.mqtt",
    "tests.fixtures.gateway",
    "tests.fixtures.pricing_fleet",
    "tests.fixtures.fleet",
    "tests.fixtures.api",
]


def pytest_addoption(parser):
    """--db-name: a test database of this session's own (parallel sessions must not share one); --fleet-seed."""
    parser.addoption("--db-name", default="cxp_test", help="database the integration tests use (created on demand)")
    parser.addoption("--fleet-seed", type=int, default=7,
                     help="seed of the analytics ground-truth fleet (the proofs must hold for any reasonable seed)")
