"""Alerts: typed rules, stateful alerts evaluated after each rollup refresh, signed webhook delivery."""
