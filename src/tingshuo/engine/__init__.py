"""The session engine: typed events, the model stack, and ``Session``."""

from tingshuo.engine.events import *  # noqa: F401,F403
from tingshuo.engine.session import Session
from tingshuo.engine.stack import ModelStack

__all__ = ["ModelStack", "Session"]
