"""The local stack: real Mosquitto and PostgreSQL + TimescaleDB on loopback, data under .stack/."""

from cxp.stack.local import StackError, StackStatus, get_status, start_stack, stop_stack

__all__ = ["StackError", "StackStatus", "get_status", "start_stack", "stop_stack"]
