"""One recorded turn through a session, with its timings (bench/run.py and bench/emotion.py share it)."""

from __future__ import annotations

import asyncio

import numpy as np

from tingshuo.engine import ModelStack, Session


async def one_turn(stack: ModelStack, audio: np.ndarray) -> dict:
    s = Session(stack)
    timings: dict = {}
    audio_s = 0.0

    async def consume():
        nonlocal audio_s
        async for ev in s.events():
            if ev.type == "response.done":
                timings.update(ev.timings_ms)
            elif ev.type == "reply.audio":
                audio_s += len(ev.audio) / ev.sample_rate

    task = asyncio.create_task(consume())
    await s.push_utterance(audio)
    await s.wait_idle()
    await s.close()
    await task
    return {**timings, "reply_audio_s": audio_s}
