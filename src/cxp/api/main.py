"""The ASGI entry point for uvicorn (`cxp.api.main:app`): the app built from this process's settings."""

from cxp.api.app import create_app
from cxp.core.config import get_settings
from cxp.core.memory import limit_malloc_arenas, use_system_arrow_pool

# Before uvicorn starts the threads that compute the views (each uvicorn worker process imports this module).
limit_malloc_arenas(get_settings().api.malloc_arenas)
use_system_arrow_pool()  # so that release_free_memory returns what the views' string columns held
app = create_app()
