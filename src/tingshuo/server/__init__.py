"""The OpenAI-Realtime-compatible server (``tingshuo serve``) and the transcript store."""
