"""The pure alerts core: rule types, the lifecycle state machine, conditions, webhook payloads and signing."""
