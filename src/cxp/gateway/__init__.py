"""The ingest gateway: MQTT (QoS 1, manual acks) → validation → TimescaleDB, acking only after commit."""
