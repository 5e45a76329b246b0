"""In-process GGUF chat through llama-cpp-python (llama.cpp).

Default weights: Qwen2.5-Coder-1.5B-Instruct Q4_K_M (22 split packages, assembled once). ``Llama`` keeps the KV
cache of the previous call and reuses the longest common token prefix, so a conversation whose system prompt
stays fixed and whose history is only appended pays for the new turn only (0.38 s → 0.13 s first token,
shared/research/llm.md). One ``Llama`` object serves one conversation at a time (guarded by a lock).

Prompts are formatted here with the GGUF's own chat template (the same Jinja formatter llama-cpp-python's chat
handler uses) and sent as tokens, so that :meth:`turn_end_probability` and :meth:`stream` produce the same
token prefix: the end-of-turn check that runs on the user's partial transcript leaves exactly the KV cache the
reply then continues from.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from tingshuo.config import LlmConfig
from tingshuo.llm.base import Capabilities, LlmError, Message, emotion_question
from tingshuo.llm.ngrams import NoCopy
from tingshuo.llm.prompt_state import PromptStates, model_fingerprint

_LATIN = re.compile(rb"[A-Za-z]")
# The shortest run a reply may not copy from its previous replies or its prompt's example answer (ngrams.py).
NO_COPY_TOKENS = 5
# Tokens that close a sentence. P(one of them next | the user's words so far) is the model's own judgement of
# whether the utterance is complete: ~0.7–0.9 after "你能给我讲个故事吗", < 0.01 after "帮我订一张明天去北京的".
_SENTENCE_END = ["。", "？", "！", ".", "?", "!", "?\n", "。\n", "！\n", "~", "～", "<|im_end|>"]


def gguf_path(cfg: LlmConfig, cache_dir: Path | None = None) -> Path:
    if cfg.gguf is not None:
        p = Path(cfg.gguf).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"llm.gguf = {p} does not exist")
        return p
    from tingshuo.assets import QWEN_0_5B, QWEN_1_5B

    bundled = {"qwen2.5-coder-1.5b": QWEN_1_5B, "qwen2.5-coder-0.5b": QWEN_0_5B}
    if cfg.model in bundled:
        return bundled[cfg.model].ensure(cache_dir)
    from tingshuo.config import default_cache_dir
    from tingshuo.llm.hub import gguf_for

    return gguf_for(cache_dir or default_cache_dir(), cfg.model)


def gpu_layers(cfg: LlmConfig) -> int:
    """``llm.gpu_layers``, with None resolved: every layer (-1) when this llama-cpp-python can offload, else 0."""
    if cfg.gpu_layers is not None:
        return cfg.gpu_layers
    import llama_cpp

    return -1 if llama_cpp.llama_supports_gpu_offload() else 0


def server_command(cfg: LlmConfig, cache_dir: Path | None, *, host: str, port: int, threads: int | None = None,
                   n_ctx: int | None = None) -> list[str]:
    """``llama_cpp.server`` (llama-cpp-python's OpenAI-compatible server) over the configured GGUF: the ``llm``
    service of the compose deployment, and what the remote-LLM tests run on loopback. The alias is the
    ``llm.model_name`` the openai backend asks for by default."""
    import sys

    return [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path(cfg, cache_dir)), "--host", host,
            "--port", str(port), "--n_ctx", str(n_ctx or cfg.n_ctx), "--n_threads", str(threads or cfg.threads),
            "--n_gpu_layers", str(gpu_layers(cfg)),
            # a RAM cache of prompt states: the conversation and the safety guard's long fixed prompt take turns on
            # the server's one context, and without it every guard check re-reads ~1,000 tokens (18 s vs 2 s here)
            "--cache", "True", "--verbose", "False",
            # by default a new request cuts the one being streamed: the guard's check of a clause, made while the
            # reply is still being written, ended every remote reply after its first clause ("交易几乎停滞？这")
            "--interrupt_requests", "False", "--model_alias", LlmConfig().model_name]



def label_softmax(logits: np.ndarray, ids: list[int], labels: list[str]) -> dict[str, float]:
    """P over ``labels`` from next-token ``logits`` at their first tokens ``ids``."""
    sel = logits[ids]
    p = np.exp(sel - sel.max())
    p /= p.sum()
    return {label: float(x) for label, x in zip(labels, p)}

class LlamaCppChat:
    caps = Capabilities(prompt_scores=True, grammar=True, json_schema=True)

    def __init__(self, cfg: LlmConfig, cache_dir: Path | None = None) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.cfg = cfg
        self._fixed: dict[str, list[int]] = {}  # a fixed prompt's tokens (prime, next_token_logits)
        self._stem: list[int] | None = None  # the tokens prepare() evaluated ahead on the fixed prompt's state
        path = gguf_path(cfg, cache_dir)
        self.name = f"llama-cpp:{path.name}"
        self._latin_ids: tuple[np.ndarray, frozenset[int]] | None = None
        self.llm = Llama(
            model_path=str(path),
            n_ctx=cfg.n_ctx,
            n_threads=cfg.threads,
            n_threads_batch=cfg.threads,
            n_gpu_layers=gpu_layers(cfg),
            seed=cfg.seed if cfg.seed is not None else -1,
            verbose=False,
        )
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise LlmError(f"{path.name} carries no chat template; tingshuo needs a chat (instruct) GGUF")
        eos = self.llm.token_eos()
        self._eos_text = self.llm._model.token_get_text(eos) if eos != -1 else ""
        self._format = Jinja2ChatFormatter(template=template, eos_token=self._eos_text, bos_token="")
        # Hybrid thinking models (Qwen3) think aloud unless told not to: a spoken reply cannot wait for that.
        self._template_args = {"enable_thinking": False} if "enable_thinking" in template else {}
        ends: set[int] = set()
        for s in _SENTENCE_END:
            ids = self._tokenize(s)
            if len(ids) == 1:
                ends.add(ids[0])
        self._end_ids = np.array(sorted(ends), np.int64)
        self._lock = threading.Lock()
        self._states: PromptStates | None = None
        if cfg.prompt_state_mb > 0:
            import llama_cpp

            from tingshuo.config import default_cache_dir

            root = cfg.prompt_state_dir or (cache_dir or default_cache_dir()) / "prompt-state"
            identity = {"model": model_fingerprint(path), "llama_cpp": llama_cpp.__version__, "n_ctx": cfg.n_ctx}
            self._states = PromptStates(Path(root).expanduser(), identity, cfg.prompt_state_mb << 20)

    def _latin(self) -> tuple[np.ndarray, frozenset[int]]:
        """The vocabulary's tokens that hold Latin letters (ngrams.NoCopy), listed once (~0.35 s for Qwen's 152k)."""
        if self._latin_ids is None:
            ids = [i for i in range(self.llm.n_vocab()) if _LATIN.search(self.llm.detokenize([i]))]
            self._latin_ids = (np.array(ids, dtype=np.intc), frozenset(ids))
        return self._latin_ids

    def _tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def _prompt(self, messages: list[Message]) -> str:
        return self._format(messages=list(messages), **self._template_args).prompt  # type: ignore[arg-type]

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def warmup(self, system_prompt: str) -> None:
        """Have the system prompt cached so the first real turn only pays for its own tokens."""
        self.prime([{"role": "system", "content": system_prompt}])

    def prime(self, messages: list[Message]) -> str:
        """Have the fixed prefix ``messages`` (followed by a user turn) in the KV cache: kept when it is there,
        else loaded from its saved state, else evaluated and saved. Returns "cached", "loaded" or "evaluated"."""
        prefix = self._prefix_tokens(messages)
        if not prefix:
            return "cached"
        with self._lock:
            if list(self.llm._input_ids[: len(prefix)]) == prefix:
                return "cached"
            try:
                return self._restore(prefix)
            except Exception as e:
                raise LlmError(f"evaluating the prompt failed: {e}") from e

    def _restore(self, prefix: list[int], fresh: bool = False) -> str:
        """Only ``prefix`` in the KV cache, from its saved state, else evaluated (from nothing when ``fresh``: no
        cells of earlier calls) and saved; "loaded" or "evaluated" (caller holds the lock)."""
        if self._states is not None and self._states.load(self.llm, prefix):
            return "loaded"
        self._logits_after(prefix, 0 if fresh else None)
        if self._states is not None:
            self._states.save(self.llm, prefix)
        return "evaluated"

    def _prefix_tokens(self, messages: list[Message]) -> list[int]:
        """The tokens of the fixed ``messages`` up to where a following user turn's words begin."""
        key = json.dumps(messages, ensure_ascii=False)
        if key not in self._fixed:
            a = self._tokenize(self._prompt([*messages, {"role": "user", "content": "甲"}]))
            b = self._tokenize(self._prompt([*messages, {"role": "user", "content": "乙"}]))
            n = 0
            while n < min(len(a), len(b)) and a[n] == b[n]:
                n += 1
            self._fixed[key] = a[:n]  # everything up to the user's words, as the template renders it
        return self._fixed[key]

    def _logits_after(self, tokens: list[int], reuse: int | None = None) -> np.ndarray:
        """Evaluate ``tokens`` reusing the longest cached prefix (at most ``reuse`` tokens of it); the next-token
        logits (caller holds the lock)."""
        L = self.llm
        n = 0
        for a, b in zip(L._input_ids, tokens):
            if a != b:
                break
            n += 1
        n = min(n, len(tokens) - 1, len(tokens) if reuse is None else reuse)  # the last token at least: its logits
        if n > 0 and not L._ctx.kv_cache_seq_rm(-1, n, -1):
            n = 0
        if n == 0:
            L.reset()
        L.n_tokens = n
        L.eval(tokens[n:])
        L._requires_eval = False
        return np.ctypeslib.as_array(L._ctx.get_logits(), shape=(L._n_vocab,)).astype(np.float64)

    def label_probabilities(self, messages: list[Message], labels: list[str], *,
                            answer: str | None = None) -> dict[str, float]:
        """P over ``labels`` as the first token of the assistant's answer to ``messages`` (one forward pass; the
        cached prefix is reused). Labels must start with distinct tokens. Used for the emotion of the words and
        the safety guard's categories: a distribution to threshold, where a generated word would be a guess.

        ``answer``: the answer so far (the turn plan reads its fields one after another); the labels are then read
        after it, behind the template's own assistant header. Without it the header is written a second time:
        the guard's and the emotion reading's thresholds were measured on that prompt, so it stays until they are
        measured again (the safety issue)."""
        prompt = self._prompt(messages)
        prompt += answer if answer is not None else "<|im_start|>assistant\n"
        tokens = self._tokenize(prompt)  # type: ignore[arg-type]
        ids = self.label_ids(labels)
        with self._lock:
            try:
                logits = self._logits_after(tokens)
            except Exception as e:
                raise LlmError(f"label scoring failed: {e}") from e
        return label_softmax(logits, ids, labels)

    def label_ids(self, labels: list[str]) -> list[int]:
        """Each label's first token (they must differ: a label is read from one next-token distribution)."""
        ids = [self._tokenize(label)[0] for label in labels]
        if len(set(ids)) != len(ids):
            raise ValueError(f"labels must start with distinct tokens: {labels}")
        return ids

    def next_token_logits(self, messages: list[Message], fixed: int | None = None, *,
                          answer: str | None = None) -> np.ndarray:
        """The whole next-token logit vector where :meth:`label_probabilities` reads its labels (same prompt, same
        cached prefix): the safety guard's care probe reads more of it than the labels' share.

        ``fixed``: the first ``fixed`` messages are a prompt that never changes (then followed by one user turn).
        Each call starts from that prompt's saved state and evaluates the rest in full. Reusing whatever the
        previous call left leaves the cache's cells laid out by history, the attention's sums come out slightly
        different, and a probe over the logits magnifies that: the same turn read 0.24 after one call and 0.16
        after another. From the saved state the same messages give the same logits (~10 ms to restore).

        ``answer``: as in :meth:`label_probabilities` (the turn plan reads after the template's own header)."""
        tail = answer if answer is not None else "<|im_start|>assistant\n"
        tokens = self._tokenize(self._prompt(messages) + tail)  # type: ignore[arg-type]
        reuse = None
        with self._lock:
            try:
                if fixed is not None and self._states is not None:
                    prefix = self._prefix_tokens(messages[:fixed])
                    stem = self._stem
                    if (stem and len(stem) < len(tokens) and tokens[: len(stem)] == stem
                            and list(self.llm._input_ids[: len(stem)]) == stem):
                        reuse = len(stem)  # evaluated ahead by prepare(), on top of the prompt's saved state
                    elif tokens[: len(prefix)] == prefix:
                        self._restore(prefix, fresh=True)
                        reuse = len(prefix)
                return self._logits_after(tokens, reuse)
            except Exception as e:
                raise LlmError(f"scoring failed: {e}") from e

    def prepare(self, messages: list[Message], fixed: int, *, answer: str | None = None) -> None:
        """Evaluate ahead what the next :meth:`next_token_logits` call will share with ``messages``: the fixed
        prompt (from its saved state) and the last message up to where the coming turn's words will follow
        (the conversation's context lines). Those cost ~10 ms a token on 2 cores — a two-line context tripled a
        turn plan's read (325 → 1,030 ms) — and they are known when the reply before the turn ends. Evaluated in
        two batches rather than one, the logits differ from a read from the saved state in their last bits (label
        P ~0.002 apart; tests/test_prompt_state.py compares), and are the same for the same turn every time."""
        tail = answer if answer is not None else "<|im_start|>assistant\n"
        head, last = messages[:-1], messages[-1]
        a = self._tokenize(self._prompt([*head, {**last, "content": last["content"] + "甲"}]) + tail)  # type: ignore[arg-type]
        b = self._tokenize(self._prompt([*head, {**last, "content": last["content"] + "乙"}]) + tail)  # type: ignore[arg-type]
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        stem = a[:n]
        with self._lock:
            if self._states is None:
                return
            prefix = self._prefix_tokens(messages[:fixed])
            if stem[: len(prefix)] != prefix:
                return
            try:
                self._restore(prefix, fresh=True)
                if len(stem) > len(prefix):
                    self._logits_after(stem, len(prefix))
                self._stem = stem
            except Exception as e:
                self._stem = None
                raise LlmError(f"preparing the context failed: {e}") from e

    def emotion_probabilities(self, history: list[Message], user_text: str, labels: list[str]) -> dict[str, float]:
        """How the user feels, as the model reads their words: P over ``labels`` (Chinese words, one token each
        at the start) after the question below, asked *after* the user's turn so the conversation prefix (and the
        user's words, pre-filled by the end-of-turn scorer) stays cached. One forward pass of ~30 tokens
        (≈0.25–0.45 s on 2 cores); measured right on 8 of 8 zh/en sentences (sad, happy, angry, anxious, tired,
        neutral), see docs/emotion.md.
        """
        q = emotion_question(labels)
        msgs: list[Message] = [*history, {"role": "user", "content": user_text.strip()}, {"role": "system", "content": q}]
        return self.label_probabilities(msgs, labels)

    def turn_end_probability(self, history: list[Message], user_text: str) -> float:
        """P(the user's utterance is complete), read from the next-token distribution after their words.

        The text is placed where the reply prompt will put it (after ``history``), trailing punctuation removed
        (Whisper's punctuation is a guess), and the probability mass of sentence-closing tokens is returned. The
        KV cache keeps the evaluated prefix, so calling this on partial transcripts while the user is talking
        also pre-fills the prompt the reply will need; it costs only the tokens that changed.
        """
        text = user_text.strip().rstrip("。？！.?!～~…,，、 ")
        if not text:
            return 0.0
        msgs = [*history, {"role": "user", "content": text}]
        prompt = self._prompt(msgs)  # type: ignore[arg-type]
        cut = prompt.rfind(text)
        tokens = self._tokenize(prompt[: cut + len(text)])
        with self._lock:
            try:
                logits = self._logits_after(tokens)
            except Exception as e:  # e.g. context overflow: no verdict rather than a crash
                raise LlmError(f"end-of-turn scoring failed: {e}") from e
        p = np.exp(logits - logits.max())
        return float(p[self._end_ids].sum() / p.sum())

    def complete_with_grammar(self, messages: list[Message], grammar: str, *, max_tokens: int,
                              temperature: float) -> str:
        """A whole reply whose text must match a GBNF ``grammar`` (llama.cpp samples only tokens it allows):
        used where the form is not negotiable, e.g. new lyrics with exactly one syllable per note."""
        from llama_cpp import LlamaGrammar

        return self._complete(messages, LlamaGrammar.from_string(grammar, verbose=False), max_tokens, temperature)

    def complete_json(self, messages: list[Message], schema: dict, *, max_tokens: int = 48) -> dict:
        """An answer that is a JSON object valid under ``schema`` (converted to a grammar by llama.cpp): the
        tool decision of shared/research/llm.md — reliable on the 1.5B where its native tool calls were not."""
        from llama_cpp import LlamaGrammar

        g = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        text = self._complete(messages, g, max_tokens, 0.0)
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:  # cut by max_tokens
            raise LlmError(f"the model's JSON answer was incomplete: {text!r}") from e

    def _complete(self, messages: list[Message], grammar, max_tokens: int, temperature: float) -> str:
        with self._lock:
            tokens = self._tokenize(self._prompt(messages) + "<|im_start|>assistant\n")  # type: ignore[arg-type]
            try:
                out = self.llm.create_completion(prompt=tokens, max_tokens=max_tokens, temperature=temperature,
                                                 top_p=self.cfg.top_p, repeat_penalty=1.1, grammar=grammar,
                                                 seed=self.cfg.seed if self.cfg.seed is not None else -1)
            except ValueError as e:
                raise LlmError(f"the local model refused the request: {e}") from e
        return out["choices"][0]["text"]  # type: ignore[index]

    def stream(self, messages: list[Message], *, max_tokens: int, temperature: float, prefix: str = "",
               stop: threading.Event | None = None, avoid: Sequence[str] = ()) -> Iterator[str]:
        """``prefix``: the start of the reply, already said (not yielded again); the model continues it.
        ``stop`` is looked at between tokens (the prefill itself runs to its end). ``avoid``: texts the reply
        may not copy runs of :data:`NO_COPY_TOKENS` tokens from (:mod:`tingshuo.llm.ngrams`)."""
        with self._lock:
            tokens = self._tokenize(self._prompt(messages) + prefix)
            if len(tokens) + max_tokens > self.cfg.n_ctx:
                raise LlmError(f"the prompt ({len(tokens)} tokens) does not fit the context window "
                               f"({self.cfg.n_ctx}); lower dialogue.history_tokens or raise llm.n_ctx")
            processors = None
            sources = [self._tokenize(a) for a in avoid if a and a.strip()]
            if sources:
                from llama_cpp import LogitsProcessorList

                processors = LogitsProcessorList([NoCopy(sources, NO_COPY_TOKENS, len(tokens), self._latin())])
            try:
                chunks = self.llm.create_completion(
                    logits_processor=processors,
                    prompt=tokens,
                    stream=True,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    top_p=self.cfg.top_p,
                    repeat_penalty=1.1,
                    stop=[s for s in (self._eos_text, "<|im_end|>", "<|endoftext|>") if s],
                )
            except ValueError as e:
                raise LlmError(f"the local model refused the request: {e}") from e
            try:
                for chunk in chunks:
                    if stop is not None and stop.is_set():
                        break
                    delta = chunk["choices"][0]["text"]  # type: ignore[index]
                    if delta:
                        yield delta
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()  # stops llama.cpp's generation loop when the consumer stops early
