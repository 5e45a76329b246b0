"""The OpenAI-Realtime-compatible server (``tingshuo serve``); the transcript store is ``tingshuo.store``."""
