"""The tutor persona coaches pronunciation on spoken turns: the learner says the sentence the tutor asked for
(our TTS reading it with a sound substituted: river → liver, r → l); the coach flags the word, the reply talks about it, and the
correct sentence is said at the end as a model answer."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from conftest import one_turn, reply_of
from tingshuo.tts import VoiceSettings

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("push_to_talk", [False, True], ids=["auto", "push_to_talk"])
def test_tutor_flags_the_sound_and_says_the_model_answer(stack, tts, push_to_talk):
    """Also when the client answers the turn itself (``respond()``): every reply to a turn is set up from its plan
    (it lost the model sentence there before)."""
    sentence = "We walked along the river after dinner."
    said = soxr.resample(tts.synthesize("We walked along the liver after dinner.", VoiceSettings(), "en"),
                         tts.sample_rate, 16000).astype(np.float32)

    def prepare(s):
        s.conversation.add_user("Can you help me with my pronunciation?", "item_u0")
        s.conversation.add_assistant(f'Sure! Please read this sentence: "{sentence}"', "item_a0")

    events, _ = one_turn(stack, audio=said, persona="tutor", prepare=prepare, push_to_talk=push_to_talk)
    reports = [e for e in events if e.type == "pronunciation.report"]
    assert reports, [e.type for e in events]
    rep = reports[0]
    assert rep.expected.rstrip(".") == sentence.rstrip(".")
    river = next(w for w in rep.words if w["word"] == "river")
    assert river["flagged"] and river["score"] < 80, rep.words
    others = [w for w in rep.words if w["word"] != "river"]
    assert np.mean([w["score"] for w in others]) >= 85, rep.words
    reply = reply_of(events)
    assert reply.rstrip().endswith("Listen, and say it with me: We walked along the river after dinner."), reply
