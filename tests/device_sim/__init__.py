"""Unit tests of the device simulator."""
