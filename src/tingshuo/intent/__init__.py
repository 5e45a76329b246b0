"""What a user turn asks the assistant to do, judged by the chat model (the turn plan of issue 19)."""

from tingshuo.intent.plan import CHAT, INTENTS, Intent, VoiceAsk
from tingshuo.intent.gate import settle
from tingshuo.intent.reader import IntentReader

__all__ = ["CHAT", "INTENTS", "Intent", "IntentReader", "VoiceAsk", "settle"]
