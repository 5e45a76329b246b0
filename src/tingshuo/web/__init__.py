"""The call page: static files served by ``tingshuo serve`` (no build step)."""
