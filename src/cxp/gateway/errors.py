"""The gateway's exceptions; paho and store errors are mapped to these at the boundary."""


class GatewayError(Exception):
    """Root of every gateway error."""


class BrokerUnavailable(GatewayError):
    """The MQTT broker refused or dropped the connection."""
