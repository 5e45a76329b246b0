"""What the session acts on: the model's plan, held back where the turn's words cannot be asking for it.

The model decides what a turn asks for; these checks can only *block* a reading, never start an action (the
project's rule after word lists misfired on ordinary conversation). They exist because the 1.5B reads some
mentions as requests: "时间过得太快了" as "speak faster", an angry "你们这个破服务，气死我了！" as "use an angry
voice", a learner reading "We walked along the liver after dinner." to the tutor as new words for a song (P 0.86),
"长城有多长" as needing the web. A request for a song names singing, for a story a story, for silence stopping,
for a voice change speech, for a search something current. One function, :func:`settle`, so that the session,
``tingshuo understand`` and ``bench/understand.py`` report and do the same thing.
"""

from __future__ import annotations

import re
from dataclasses import replace

from tingshuo.intent.plan import Intent
from tingshuo.search.decide import FRESH_CUE

_CAN = {
    "sing": re.compile(r"唱|歌|曲|调|哼|旋律|sing|song|tune|hum|lyric|melody", re.I),
    "story": re.compile(r"故事|童话|寓言|传说|神话|讲|说|编|story|stories|tale|tell", re.I),
    "stop": re.compile(r"停|别|不要|不用|闭嘴|安静|够了|等|暂停|嘘|打住|先不|stop|enough|quiet|hold on|wait|shh|"
                       r"hang on|silence|shut", re.I),
    "search": FRESH_CUE,
}
_CAN["sing_adapt"] = _CAN["sing_new"] = _CAN["sing"]

# the words of a voice request name speech ("说慢点", "声音太小", "慢慢讲", "slow down", "speak up")
SPEECH = re.compile(r"[说讲念读聊声音语话嗓腔]|口气|一点|点儿|些吧|点吧|speak|talk|voice|say|read|slow ?down|"
                    r"speed (it )?up|louder|quieter|softer|whisper|volume|hear", re.I)


def can_mean(text: str, intent: str) -> bool:
    """Whether the words can be asking for ``intent`` at all (only the model says that they do)."""
    cue = _CAN.get(intent)
    return cue is None or bool(cue.search(text))


def can_ask_voice(text: str) -> bool:
    """Whether the words can be asking for a change to the assistant's voice (they name speech)."""
    return bool(SPEECH.search(text))


def settle(text: str, it: Intent) -> Intent:
    """The plan the session acts on: ``it`` with the intent set to ``chat`` and the voice change dropped where the
    words cannot ask for them. ``held`` on the result names what was held back (for logs and the benchmark)."""
    held = []
    intent, voice = it.intent, it.voice
    if not can_mean(text, intent):
        held.append(intent)
        intent = "chat"
    if voice is not None and not can_ask_voice(text):
        held.append("voice")
        voice = None
    if not held:
        return it
    return replace(it, intent=intent, voice=voice, addressed=intent != "chat" or voice is not None,
                   held=tuple(held))
