"""The ASGI entry point for uvicorn (`cxp.api.main:app`): the app built from this process's settings."""

from cxp.api.app import create_app
from cxp.core.config import get_settings
from cxp.core.memory import limit_malloc_arenas

# Before uvicorn starts the threads that compute the views (each uvicorn worker process imports this module).
limit_malloc_arenas(get_settings().api.malloc_arenas)
app = create_app()
