"""The `cxp` command line: wires the stack, store, gateway, simulator, analytics and pricing together."""
