"""The ASGI entry point for uvicorn (`cxp.api.main:app`): the app built from this process's settings."""

from cxp.api.app import create_app

app = create_app()
