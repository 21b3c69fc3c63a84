"""Exceptions of the device simulator, all under one root."""

from __future__ import annotations


class SimError(Exception):
    """Root of every error the device simulator raises."""


class ConfigError(SimError, ValueError):
    """A fleet, product or persona parameter is invalid."""


class SequenceError(SimError, ValueError):
    """An event's sequence number does not increase."""


class PublisherError(SimError):
    """The MQTT publisher failed (connect, publish or acknowledgement)."""


class PublishTimeout(PublisherError, TimeoutError):
    """Waiting for the broker (connection or acknowledgements) took longer than allowed."""


class ConnectRefused(PublisherError):
    """A device's connection was refused: `kind` is auth (CONNACK reason), tls (handshake), network or closed."""

    def __init__(self, message: str, *, kind: str, code: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
