"""Connected-product experience platform: telemetry over MQTT → gateway → TimescaleDB → analytics and pricing → API."""
