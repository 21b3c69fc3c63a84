"""Experience analytics over the stored telemetry (rollups first, raw events only when needed)."""
