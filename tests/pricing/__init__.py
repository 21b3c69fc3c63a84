"""Unit tests of the pricing core (pure: no database, no broker)."""
