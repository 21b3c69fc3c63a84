"""Shared process configuration and errors for the connected-product experience platform."""
