"""API routers, one per endpoint group."""
