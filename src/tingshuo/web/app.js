// tingshuo call page: speaks the OpenAI Realtime protocol (GA event names) to /v1/realtime, like any client.
// Plain JavaScript, no build step. State worth checking from tests is mirrored on window.tingshuo.
"use strict";

const I18N = {
  zh: {
    call: "开始通话", hangup: "挂断", idle: "未连接", connecting: "正在连接…", listening: "在听…", thinking: "在想…",
    speaking: "在说…", paused: "你在说话，先停一下…", backchannel: "（听到附和：{t}）", ended: "通话结束",
    persona: "角色", voice: "声音", key: "API 密钥", emotion: "识别到的情绪", style: "说话风格", latency: "延迟",
    typeHere: "输入文字…", speakReply: "语音回复", send: "发送", micDenied: "无法使用麦克风：{e}", error: "错误：{e}",
    firstAudio: "首音 {ms} ms", asr: "识别", llm: "首字", tts: "合成", speed: "语速", unknown: "—",
    closed: "连接已断开（{c}）", greetingHint: "点击按钮开始语音通话，或直接输入文字",
    busy: "服务器现在太忙，接不了新的通话，请过一会儿再试。",
    kept: "这次通话会保存 {d} 天", keptAudio: "（含录音）", notKept: "这次通话不会被保存", erase: "删除",
    erased: "这次通话已删除", eraseFailed: "删除失败：{e}", eraseConfirm: "删除这次通话的全部文字和录音？删除后无法恢复。",
  },
  en: {
    call: "Call", hangup: "Hang up", idle: "Not connected", connecting: "Connecting…", listening: "Listening…",
    thinking: "Thinking…", speaking: "Speaking…", paused: "You're talking — pausing…", backchannel: "(heard a backchannel: {t})",
    ended: "Call ended", persona: "Persona", voice: "Voice", key: "API key", emotion: "Detected emotion",
    style: "Speaking style", latency: "Latency", typeHere: "Type a message…", speakReply: "Spoken reply", send: "Send",
    micDenied: "Microphone unavailable: {e}", error: "Error: {e}", firstAudio: "first audio {ms} ms", asr: "ASR",
    llm: "LLM", tts: "TTS", speed: "speed", unknown: "—", closed: "Disconnected ({c})",
    greetingHint: "Press the button to talk, or type a message",
    busy: "The server is at capacity and cannot take another call right now; please try again in a minute.",
    kept: "This call is kept for {d} days", keptAudio: " (with its audio)", notKept: "This call is not kept",
    erase: "Delete", erased: "This call was deleted", eraseFailed: "Could not delete: {e}",
    eraseConfirm: "Delete everything said in this call, text and audio? This cannot be undone.",
  },
};

const $ = (id) => document.getElementById(id);
const state = {
  lang: localStorage.getItem("tingshuo.lang") || ((navigator.language || "zh").toLowerCase().startsWith("zh") ? "zh" : "en"),
  ws: null, ready: null, ctx: null, stream: null, capture: null, player: null, inCall: false,
  items: {}, responses: {}, active: null, speechStoppedAt: null, waitingFirstAudio: false, personaNames: {}, voiceLabels: {},
  store: null, sessionId: null, lastSession: null,
};
// What tests read: counters and the last events, nothing the page itself depends on.
window.tingshuo = { played: 0, playedById: {}, audioDeltas: 0, userCaptions: [], assistantCaptions: [], errors: [],
  events: [], latencyMs: [], stops: [], statuses: {} };

function t(key, vars) {
  let s = (I18N[state.lang] || I18N.zh)[key] || key;
  for (const [k, v] of Object.entries(vars || {})) s = s.replace(`{${k}}`, v);
  return s;
}

function renderI18n() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  document.querySelectorAll("[data-i18n-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
  $("lang").textContent = state.lang === "zh" ? "EN" : "中文";
  $("callText").textContent = state.inCall ? t("hangup") : t("call");
  if (state.store !== null) renderKept();
}

function setStatus(key, vars, isError) {
  const el = $("status");
  el.textContent = t(key, vars);
  el.style.color = isError ? "#d64545" : "";
}

function caption(role, id, text, cls) {
  let li = state.items[id];
  if (!li) {
    li = document.createElement("li");
    li.className = role;
    $("captions").appendChild(li);
    state.items[id] = li;
  }
  if (text !== undefined) li.textContent = text;
  li.classList.toggle("partial", cls === "partial");
  if (cls === "cut") li.classList.add("cut");
  li.scrollIntoView({ block: "end", behavior: "smooth" });
  return li;
}

// ---------------------------------------------------------------- connection
function send(ev) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(ev));
}

function connect() {
  if (state.ready) return state.ready;
  setStatus("connecting");
  const protocols = ["realtime"];
  const key = $("key").value.trim();
  if (key) { protocols.push("openai-insecure-api-key." + key); localStorage.setItem("tingshuo.key", key); }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/v1/realtime?model=tingshuo`, protocols);
  state.ws = ws;
  state.ready = new Promise((resolve, reject) => {
    ws.onmessage = (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch { return; }
      if (ev.type === "session.created") {
        state.sessionId = ev.session.id;
        send({ type: "session.update", session: sessionConfig() });
        resolve();
      }
      handle(ev);
    };
    ws.onclose = (e) => {
      reject(new Error(e.reason || String(e.code)));
      const wasCall = state.inCall;
      if (state.sessionId) state.lastSession = state.sessionId;  // what "delete" erases once the call is over
      state.sessionId = null;
      state.ws = null; state.ready = null;
      renderKept();
      stopAudio();
      if (e.code === 1013) setStatus("busy", {}, true);  // admission control: try again later
      else setStatus(wasCall && e.code === 1000 ? "ended" : "closed", { c: e.reason || e.code }, e.code !== 1000);
    };
  });
  state.ready.catch(() => {});
  return state.ready;
}

function sessionConfig() {
  const s = {
    type: "realtime",
    audio: {
      input: { transcription: { model: "whisper-base" }, turn_detection: { type: "semantic_vad", eagerness: "auto" } },
      output: {},
    },
    tingshuo: { persona: $("persona").value || "companion" },
  };
  if ($("voice").value) s.audio.output.voice = $("voice").value;
  return s;
}

// ---------------------------------------------------------------- audio
async function startAudio() {
  let ctx;
  try { ctx = new AudioContext({ sampleRate: 24000, latencyHint: "interactive" }); } catch { ctx = new AudioContext(); }
  state.ctx = ctx;
  await ctx.audioWorklet.addModule("/static/capture-worklet.js");
  state.player = new AudioWorkletNode(ctx, "player", { outputChannelCount: [1] });
  state.player.connect(ctx.destination);
  state.player.port.onmessage = onPlayer;
  state.stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
  });
  const src = ctx.createMediaStreamSource(state.stream);
  state.capture = new AudioWorkletNode(ctx, "capture");
  const mute = ctx.createGain();
  mute.gain.value = 0; // keeps the capture node pulled by the graph without sending the mic to the speaker
  src.connect(state.capture).connect(mute).connect(ctx.destination);
  state.capture.port.onmessage = (e) => {
    $("level").style.width = Math.min(100, e.data.level * 400) + "%";
    if (state.inCall) send({ type: "input_audio_buffer.append", audio: b64(e.data.pcm) });
  };
  if (ctx.state === "suspended") await ctx.resume();
}

async function ensurePlayer() {
  if (state.ctx) return;
  const ctx = new AudioContext({ sampleRate: 24000 });
  state.ctx = ctx;
  await ctx.audioWorklet.addModule("/static/capture-worklet.js");
  state.player = new AudioWorkletNode(ctx, "player", { outputChannelCount: [1] });
  state.player.connect(ctx.destination);
  state.player.port.onmessage = onPlayer;
}

function onPlayer(e) {
  const m = e.data;
  if (m.type === "played" || m.type === "cleared") {
    window.tingshuo.playedById = m.played;
    window.tingshuo.played = Object.values(m.played).reduce((a, b) => a + b, 0);
  }
  if (m.type === "cleared") {
    const stop = window.tingshuo.stops[window.tingshuo.stops.length - 1];
    if (stop && stop.playedAtClear === undefined) stop.playedAtClear = m.played[stop.responseId] || 0;
  }
}

function stopAudio() {
  state.inCall = false;
  if (state.stream) state.stream.getTracks().forEach((tr) => tr.stop());
  if (state.ctx) state.ctx.close();
  state.stream = state.ctx = state.capture = state.player = null;
  $("call").setAttribute("aria-pressed", "false");
  $("level").style.width = "0";
  renderI18n();
}

function b64(buffer) {
  const bytes = new Uint8Array(buffer);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function play(delta, responseId) {
  const bin = atob(delta);
  const n = bin.length >> 1;
  const f = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let v = bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8);
    if (v >= 0x8000) v -= 0x10000;
    f[i] = v / 32768;
  }
  if (state.player) state.player.port.postMessage({ type: "chunk", samples: f.buffer, id: responseId }, [f.buffer]);
}

function stopPlayback() {
  if (!state.player) return;
  if (state.active) window.tingshuo.stops.push({ responseId: state.active, at: performance.now() });
  state.player.port.postMessage({ type: "clear" });
}

// ---------------------------------------------------------------- events
function handle(ev) {
  const log = window.tingshuo.events;
  if (ev.type !== "response.output_audio.delta") { log.push(ev.type); if (log.length > 400) log.shift(); }
  switch (ev.type) {
    case "session.created":
    case "session.updated":
      showStyle({ voice: ev.session.audio && ev.session.audio.output.voice, speed: ev.session.audio && ev.session.audio.output.speed });
      break;
    case "input_audio_buffer.speech_started":
      stopPlayback(); // barge-in: silence at once; the server resumes from what was heard if it was only "嗯"
      setStatus("listening");
      break;
    case "input_audio_buffer.speech_stopped":
      state.speechStoppedAt = performance.now();
      state.waitingFirstAudio = true;
      setStatus("thinking");
      break;
    case "tingshuo.input_audio_transcription.partial":
      caption("user", ev.item_id, ev.transcript, "partial");
      break;
    case "conversation.item.input_audio_transcription.completed":
      caption("user", ev.item_id, ev.transcript);
      window.tingshuo.userCaptions.push(ev.transcript);
      showEmotion(ev.tingshuo && ev.tingshuo.emotion);
      break;
    case "tingshuo.paralinguistics":
      showEmotion(ev.emotion);
      window.tingshuo.emotions = (window.tingshuo.emotions || []).concat([ev.emotion.label]);
      break;
    case "conversation.item.added":
      if (ev.item.role === "user" && ev.item.content[0] && ev.item.content[0].type === "input_text") {
        caption("user", ev.item.id, ev.item.content[0].text);
        window.tingshuo.userCaptions.push(ev.item.content[0].text);
      }
      break;
    case "response.created":
      state.active = ev.response.id;
      state.responses[ev.response.id] = { item: null, text: "" };
      if (ev.tingshuo && ev.tingshuo.style) showStyle(ev.tingshuo.style);
      break;
    case "response.output_item.added":
      state.responses[ev.response_id].item = ev.item.id;
      caption("assistant", ev.item.id, "");
      break;
    case "response.output_audio_transcript.delta":
    case "response.output_text.delta": {
      const r = state.responses[ev.response_id];
      if (r) {
        const mark = (r.marks || {})[ev.delta.trim()] || "";  // a story line's speaker, or ♪ for a sung phrase
        r.text += (mark && r.text && !r.text.endsWith("\n") ? "\n" : "") + mark + ev.delta;
        caption("assistant", ev.item_id, r.text);
      }
      break;
    }
    case "tingshuo.reply.clause": {
      const r = state.responses[ev.response_id];
      if (r) {
        r.marks = r.marks || {};
        r.marks[ev.text.trim()] = ev.sung ? "♪ " : (ev.speaker && !/^(旁白|narrator)$/i.test(ev.speaker) ? ev.speaker + "：" : "");
      }
      break;
    }
    case "tingshuo.persona.changed":
      if ([...$("persona").options].some((o) => o.value === ev.persona)) $("persona").value = ev.persona;
      window.tingshuo.personas = (window.tingshuo.personas || []).concat([ev.persona]);
      break;
    case "response.output_audio.delta":
      window.tingshuo.audioDeltas++;
      if (state.waitingFirstAudio && state.speechStoppedAt !== null) {
        const ms = Math.round(performance.now() - state.speechStoppedAt);
        window.tingshuo.latencyMs.push(ms);
        state.waitingFirstAudio = false;
        $("latency").textContent = t("firstAudio", { ms });
      }
      setStatus("speaking");
      play(ev.delta, ev.response_id);
      break;
    case "tingshuo.playback.paused":
      setStatus("paused");
      break;
    case "tingshuo.playback.resumed":
      setStatus("speaking");
      break;
    case "tingshuo.backchannel":
      setStatus("backchannel", { t: ev.text || "…" });
      break;
    case "response.done": {
      const resp = ev.response;
      const item = resp.output && resp.output[0];
      if (item) {
        const part = item.content[0] || {};
        const text = part.transcript !== undefined && part.transcript !== null ? part.transcript : part.text;
        if (!text && resp.status !== "completed" && state.items[item.id]) {
          state.items[item.id].remove(); // cut off before a word was heard: nothing to show
          delete state.items[item.id];
        } else {
          caption("assistant", item.id, text || "", resp.status === "completed" ? "" : "cut");
        }
        window.tingshuo.assistantCaptions.push(text || "");
      }
      if (state.active === resp.id) state.active = null;
      window.tingshuo.statuses[resp.id] = resp.status;
      const tm = resp.tingshuo && resp.tingshuo.timings_ms;
      if (tm) showTimings(tm);
      setStatus(state.inCall ? "listening" : "idle");
      break;
    }
    case "error":
      window.tingshuo.errors.push(ev.error);
      setStatus("error", { e: ev.error.message }, true);
      break;
  }
}

function showEmotion(emotion) {
  if (!emotion) { $("emotion").textContent = t("unknown"); return; }
  if (typeof emotion === "string") { $("emotion").textContent = emotion; return; }
  const zh = state.lang === "zh";
  const parts = [`${zh ? emotion.label_zh : emotion.label} ${Math.round((emotion.confidence || 0) * 100)}%`];
  if (emotion.whisper) parts.push(zh ? "悄悄话" : "whisper");
  if (emotion.pace && emotion.pace !== "normal") parts.push(emotion.pace);
  $("emotion").textContent = parts.join(" · ");
}

function showStyle(style) {
  if (!style) return;
  const parts = [];
  if (style.persona) parts.push(state.personaNames[style.persona] || style.persona);
  if (style.voice) parts.push(state.voiceLabels[style.voice] || style.voice);
  if (style.speed) parts.push(`${t("speed")} ×${Number(style.speed).toFixed(2)}`);
  if (style.emotion) parts.push(style.emotion);
  $("style").textContent = parts.join(" · ") || t("unknown");
}

function showTimings(tm) {
  const parts = [];
  if (tm.first_audio !== undefined) parts.push(t("firstAudio", { ms: Math.round(tm.first_audio) }));
  if (tm.asr !== undefined) parts.push(`${t("asr")} ${Math.round(tm.asr)}`);
  if (tm.llm_first_token !== undefined) parts.push(`${t("llm")} ${Math.round(tm.llm_first_token)}`);
  if (tm.tts_first_audio !== undefined) parts.push(`${t("tts")} ${Math.round(tm.tts_first_audio)}`);
  if (parts.length) $("latency").textContent = parts.join(" · ") + " ms";
}

// ---------------------------------------------------------------- what is kept
// The line under the call button says what the server keeps of this call (README "What is kept"); once the call
// is over, "delete" erases it: DELETE /v1/tingshuo/sessions/{id} with the same key the call used.
function renderKept() {
  const st = state.store;
  $("kept").hidden = !st;
  if (!st) return;
  $("keptText").textContent = st.enabled ? t("kept", { d: st.retention_days }) + (st.keep_audio ? t("keptAudio") : "")
    : t("notKept");
  $("erase").hidden = !st.enabled;
  $("erase").disabled = !(st.enabled && state.lastSession && !state.ws);
}

async function eraseCall() {
  const sid = state.lastSession;
  if (!sid || state.ws || !window.confirm(t("eraseConfirm"))) return;
  const headers = {};
  const key = $("key").value.trim();
  if (key) headers.Authorization = "Bearer " + key;
  try {
    const r = await fetch(`/v1/tingshuo/sessions/${encodeURIComponent(sid)}`, { method: "DELETE", headers });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error((body.error && body.error.message) || r.status);
    state.lastSession = null;
    for (const li of Object.values(state.items)) li.remove();
    state.items = {};
    window.tingshuo.erased = (window.tingshuo.erased || []).concat([sid]);
    setStatus("erased");
  } catch (e) {
    setStatus("eraseFailed", { e: e.message || e }, true);
  }
  renderKept();
}

// ---------------------------------------------------------------- UI
async function toggleCall() {
  if (state.inCall) {
    stopPlayback();
    if (state.ws) state.ws.close(1000, "hang up");
    stopAudio();
    setStatus("ended");
    return;
  }
  state.inCall = true;
  $("call").setAttribute("aria-pressed", "true");
  renderI18n();
  try {
    if (state.ctx) { state.ctx.close(); state.ctx = null; }
    await startAudio();
  } catch (e) {
    stopAudio();
    setStatus("micDenied", { e: e.message || e }, true);
    return;
  }
  try { await connect(); } catch (e) { return; }
  if (state.active) send({ type: "response.cancel" });
  send({ type: "response.create", response: { tingshuo: { greeting: true } } });
  setStatus("listening");
}

async function sendTyped(e) {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  $("text").value = "";
  try {
    if (!state.ctx && $("speakReply").checked) await ensurePlayer();
    await connect();
  } catch (err) { return; }
  stopPlayback();
  if (state.active) send({ type: "response.cancel" });
  send({ type: "conversation.item.create", item: { type: "message", role: "user", content: [{ type: "input_text", text }] } });
  send({ type: "response.create", response: { output_modalities: [$("speakReply").checked ? "audio" : "text"] } });
  state.speechStoppedAt = performance.now();
  state.waitingFirstAudio = true;
}

async function loadOptions() {
  try {
    const o = await (await fetch("/v1/tingshuo/options")).json();
    for (const p of o.personas) {
      $("persona").add(new Option(`${p.name} (${p.key})`, p.key));
      state.personaNames[p.key] = p.name;
    }
    const labels = o.voice_labels || {};
    state.voiceLabels = labels;
    for (const v of o.voices) $("voice").add(new Option(labels[v] || v, v, v === o.default_voice, v === o.default_voice));
    if (o.auth) { $("keybox").hidden = false; $("key").value = localStorage.getItem("tingshuo.key") || ""; }
    state.store = o.store || null;
    renderKept();
  } catch (e) {
    setStatus("error", { e: e.message }, true);
  }
}

function onPicker() {
  if (state.ws) send({ type: "session.update", session: sessionConfig() });
}

$("call").addEventListener("click", toggleCall);
$("typed").addEventListener("submit", sendTyped);
$("erase").addEventListener("click", eraseCall);
$("persona").addEventListener("change", onPicker);
$("voice").addEventListener("change", onPicker);
$("lang").addEventListener("click", () => {
  state.lang = state.lang === "zh" ? "en" : "zh";
  localStorage.setItem("tingshuo.lang", state.lang);
  renderI18n();
});
renderI18n();
setStatus("greetingHint");
loadOptions();
