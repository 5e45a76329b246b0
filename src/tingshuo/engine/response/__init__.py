"""The response: one cancellable task tree per reply (LLM source → text stage → voice stage → playout).

``model`` (the response, its options, the stop signal, clauses), ``source`` (the LLM thread), ``text`` (tags,
clauses, the output check, sung phrases), ``voices`` (who speaks what), ``voice`` (TTS or singer, playout),
``run`` (the task tree and its bookkeeping), ``control`` (the session's current reply, launched and released).
"""

from tingshuo.engine.response.model import Response, ResponseOptions
from tingshuo.engine.response.source import ReplyDeltas

__all__ = ["ReplyDeltas", "Response", "ResponseOptions"]
