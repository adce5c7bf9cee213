"""The HTTP service: `create_app(settings)` builds it; `dattavani-asr serve` runs it under uvicorn."""

from .app import create_app
from .settings import ServerSettings, load_server_settings

__all__ = ["ServerSettings", "create_app", "load_server_settings"]
