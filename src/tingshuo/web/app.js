// tingshuo call screen: speaks the OpenAI Realtime protocol (GA event names) to /v1/realtime, like any client.
// Plain JavaScript, no build step, no assets beyond this folder. State worth checking from tests is mirrored on
// window.tingshuo (counters, the last events, the presence's drawn level next to the real audio levels).
"use strict";

const I18N = {
  zh: {
    call: "开始通话", hangup: "挂断", mute: "静音", unmute: "取消静音", type: "打字", details: "详情",
    idle: "点一下，开始通话", connecting: "正在连接…", listening: "在听", thinking: "在想", speaking: "在说",
    muted: "已暂停 · 麦克风已关", reconnecting: "正在重新连接…", backchannel: "在听（听到：{t}）", ended: "通话结束",
    persona: "角色", voice: "声音", key: "API 密钥", latency: "延迟", turn: "轮次判断", safety: "安全",
    captions: "字幕", typeHere: "输入文字…", speakReply: "语音回复", send: "发送", copy: "复制记录", download: "下载记录",
    copied: "已复制", me: "我", firstAudio: "首音 {ms} ms", asr: "识别", llm: "首字", tts: "合成", speed: "语速",
    namedInCall: "这次通话里请来的角色", unknown: "—",
    micDenied: "麦克风被拒绝了。请点地址栏左边的图标，允许这个网页使用麦克风，再点「开始通话」。也可以先打字。",
    noMic: "没有找到麦克风。请接上耳机或麦克风后再试；也可以先打字聊天。",
    insecure: "浏览器只允许 https 或本机（localhost）打开的网页使用麦克风。请用 https 地址打开，或在运行 tingshuo 的电脑上打开 {url}。现在可以先打字聊天。",
    micError: "麦克风打不开（{e}）。可以先打字聊天。",
    busy: "服务器现在太忙，接不了新的通话，请过一会儿再试。",
    dropped: "连接断了，正在重新连接…你这时说的话会在连上后送出。",
    reconnected: "已经重新连上，接着刚才的话聊。",
    lost: "连不上服务器了。请看看 tingshuo 是否还在运行，然后再点「开始通话」。",
    restarted: "服务器重启过，刚才的通话没能接上，已经开始了一个新的通话。",
    error: "出了点问题：{e}", retry: "重试", closeBanner: "知道了",
    kept: "这次通话会保存 {d} 天", keptAudio: "（含录音）", notKept: "这次通话不会被保存", erase: "删除",
    erased: "这次通话已删除", eraseFailed: "删除失败：{e}", eraseConfirm: "删除这次通话的全部文字和录音？删除后无法恢复。",
  },
  en: {
    call: "Call", hangup: "Hang up", mute: "Mute", unmute: "Unmute", type: "Type", details: "Details",
    idle: "Tap to start a call", connecting: "Connecting…", listening: "Listening", thinking: "Thinking",
    speaking: "Speaking", muted: "Paused · microphone off", reconnecting: "Reconnecting…",
    backchannel: "Listening (heard: {t})", ended: "Call ended", persona: "Character", voice: "Voice", key: "API key",
    latency: "Latency", turn: "Turn scores", safety: "Safety", captions: "Captions", typeHere: "Type a message…",
    speakReply: "Spoken reply", send: "Send", copy: "Copy transcript", download: "Download transcript",
    copied: "Copied", me: "Me", firstAudio: "first audio {ms} ms", asr: "ASR", llm: "LLM", tts: "TTS", speed: "speed",
    namedInCall: "a character asked for in this call", unknown: "—",
    micDenied: "Microphone access was refused. Click the icon left of the address bar, allow the microphone for this page, then press Call. You can type meanwhile.",
    noMic: "No microphone was found. Plug in a headset or microphone and try again; you can type meanwhile.",
    insecure: "Browsers allow the microphone only on https pages or on this computer (localhost). Open the page over https, or open {url} on the machine running tingshuo. You can type meanwhile.",
    micError: "The microphone could not be opened ({e}). You can type meanwhile.",
    busy: "The server is at capacity and cannot take another call right now; please try again in a minute.",
    dropped: "The connection dropped; reconnecting… What you say meanwhile is sent once it is back.",
    reconnected: "Reconnected: carrying on where you left off.",
    lost: "The server cannot be reached. Check that tingshuo is still running, then press Call.",
    restarted: "The server was restarted and could not pick up the call; a new call has started.",
    error: "Something went wrong: {e}", retry: "Retry", closeBanner: "OK",
    kept: "This call is kept for {d} days", keptAudio: " (with its audio)", notKept: "This call is not kept",
    erase: "Delete", erased: "This call was deleted", eraseFailed: "Could not delete: {e}",
    eraseConfirm: "Delete everything said in this call, text and audio? This cannot be undone.",
  },
};

const $ = (id) => document.getElementById(id);
const RECONNECT_MS = [500, 1000, 2000, 4000, 8000];  // then the call is given up and the person told why
const HELD_FRAMES = 750;  // 15 s of 20 ms frames kept while reconnecting, sent once the call is back
const reducedMotion = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;

const state = {
  lang: localStorage.getItem("tingshuo.lang") || ((navigator.language || "zh").toLowerCase().startsWith("zh") ? "zh" : "en"),
  ws: null, ready: null, ctx: null, stream: null, capture: null, player: null, inCall: false, muted: false,
  items: {}, responses: {}, active: null, speechStoppedAt: null, waitingFirstAudio: false,
  personas: [], persona: "companion", voiceLabels: {}, store: null, sessionId: null, lastSession: null,
  // what the presence shows: the phase, and the levels it is drawn from (RMS, 0…1)
  phase: "idle", userSpeaking: false, thinking: false, playing: false, inLevel: 0, outLevel: 0, drawn: 0,
  reconnecting: false, attempt: 0, held: [], hangingUp: false, transcript: [], bannerTimer: null, statusNote: null,
};
// What tests read: counters and the last events, nothing the page itself depends on.
window.tingshuo = { played: 0, playedById: {}, audioDeltas: 0, userCaptions: [], assistantCaptions: [], errors: [],
  events: [], latencyMs: [], stops: [], statuses: {}, presence: [], sentFrames: 0, banners: [], reconnects: 0,
  sessions: [] };

function t(key, vars) {
  let s = (I18N[state.lang] || I18N.zh)[key] || key;
  for (const [k, v] of Object.entries(vars || {})) s = s.replace(`{${k}}`, v);
  return s;
}

function renderI18n() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  document.querySelectorAll("[data-i18n-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
  document.querySelectorAll("[data-i18n-label]").forEach((el) => el.setAttribute("aria-label", t(el.dataset.i18nLabel)));
  $("lang").textContent = state.lang === "zh" ? "EN" : "中文";
  $("lang").lang = state.lang === "zh" ? "en" : "zh-CN";
  $("callText").textContent = state.inCall ? t("hangup") : t("call");
  $("muteText").textContent = state.muted ? t("unmute") : t("mute");
  renderPersonas();
  renderPhase(true);
  if (state.store !== null) renderKept();
}

// ---------------------------------------------------------------- what the person is told
// The phase is derived from what is really happening (the player playing, the server's speech events), never
// from a timer: 在听 / 在想 / 在说 / 已暂停.
function phaseNow() {
  if (state.reconnecting) return "reconnecting";
  if (!state.inCall && !state.ws) return "idle";
  if (state.inCall && state.muted) return "muted";
  if (state.userSpeaking) return "listening";
  if (state.playing) return "speaking";
  if (state.thinking) return "thinking";
  return state.inCall ? "listening" : "idle";
}

function renderPhase(force) {
  const ph = phaseNow();
  if (ph === state.phase && !force) return;
  const changed = ph !== state.phase;
  state.phase = ph;
  $("app").dataset.state = ph;
  $("app").dataset.incall = String(state.inCall);
  if (changed) state.statusNote = null;
  $("status").textContent = state.statusNote || t(ph === "idle" && state.ended ? "ended" : ph);
}

function note(key, vars) {  // a passing remark in the status line (a backchannel heard), until the phase changes
  state.statusNote = t(key, vars);
  $("status").textContent = state.statusNote;
}

function banner(key, vars, opts) {
  const o = opts || {};
  window.tingshuo.banners.push(key);
  clearTimeout(state.bannerTimer);
  $("bannerText").textContent = t(key, vars);
  $("banner").className = o.error ? "error" : "";
  $("banner").hidden = false;
  const act = $("bannerAction");
  act.hidden = !o.action;
  if (o.action) { act.textContent = t(o.actionLabel || "closeBanner"); act.onclick = o.action; }
  if (o.autoHideMs) state.bannerTimer = setTimeout(hideBanner, o.autoHideMs);
}

function hideBanner() { $("banner").hidden = true; }

// ---------------------------------------------------------------- captions and the transcript
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
  li.scrollIntoView({ block: "end", behavior: reducedMotion ? "auto" : "smooth" });
  return li;
}

function remember(role, id, text) {  // the transcript that can be copied or downloaded: final words only
  if (!text) return;
  const at = new Date();
  const old = state.transcript.find((x) => x.id === id);
  if (old) old.text = text; else state.transcript.push({ id, role, text, at });
  $("transcriptActions").hidden = false;
}

function transcriptText() {
  const who = (r) => (r === "user" ? t("me") : (personaOf(state.persona) || {}).name || "tingshuo");
  const hhmm = (d) => d.toTimeString().slice(0, 5);
  return state.transcript.map((x) => `[${hhmm(x.at)}] ${who(x.role)}：${x.text}`).join("\n") + "\n";
}

async function copyTranscript() {
  const text = transcriptText();
  try { await navigator.clipboard.writeText(text); } catch {
    const ta = document.createElement("textarea");  // clipboard API refused (not focused, old browser)
    ta.value = text; document.body.appendChild(ta); ta.select(); document.execCommand("copy"); ta.remove();
  }
  window.tingshuo.copied = text;
  note("copied");
}

function downloadTranscript() {
  const text = transcriptText();
  const a = document.createElement("a");
  const stamp = new Date().toISOString().slice(0, 16).replace(/[-:T]/g, "");
  a.href = URL.createObjectURL(new Blob([text], { type: "text/plain;charset=utf-8" }));
  a.download = `tingshuo-${stamp}.txt`;
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 5000);
}

// ---------------------------------------------------------------- connection
function send(ev) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) { state.ws.send(JSON.stringify(ev)); return true; }
  return false;
}

function connect(resumeId) {
  if (state.ready) return state.ready;
  if (!state.reconnecting) renderPhase();
  const protocols = ["realtime"];
  const key = $("key").value.trim();
  if (key) { protocols.push("openai-insecure-api-key." + key); localStorage.setItem("tingshuo.key", key); }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const resume = resumeId ? `&tingshuo_session=${encodeURIComponent(resumeId)}` : "";
  const ws = new WebSocket(`${scheme}://${location.host}/v1/realtime?model=tingshuo${resume}`, protocols);
  state.ws = ws;
  let refused = null;
  state.ready = new Promise((resolve, reject) => {
    ws.onmessage = (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch { return; }
      if (ev.type === "session.created") {
        state.sessionId = ev.session.id;
        window.tingshuo.sessions.push(ev.session.id);
        send({ type: "session.update", session: sessionConfig() });
        resolve();
      }
      if (ev.type === "error" && ev.event_id === "event_limit") refused = ev.error.code;  // refused at the door
      handle(ev);
    };
    ws.onclose = (e) => {
      reject(new Error(e.reason || String(e.code)));
      if (state.ws !== ws) return;
      if (state.sessionId) state.lastSession = state.sessionId;  // what "delete" erases once the call is over
      state.ws = null; state.ready = null;
      onClosed(e, refused || e.reason, resumeId);
    };
  });
  state.ready.catch(() => {});
  return state.ready;
}

function onClosed(e, reason, resumeId) {
  if (state.hangingUp) { state.hangingUp = false; renderKept(); return; }
  if (reason === "server_busy" || e.code === 1013) {
    endCall();
    banner("busy", {}, { error: true });
    return;
  }
  if (resumeId && reason === "session_not_found") {
    // the server no longer knows this call (restarted without its store, or the store was wiped): a new one
    state.sessionId = null;
    state.reconnecting = false;
    state.attempt = 0;
    banner("restarted", {}, { autoHideMs: 8000 });
    startSession(true).then(() => { for (const f of state.held.splice(0)) sendFrame(f); });
    return;
  }
  if (state.inCall || state.reconnecting) {  // the line dropped: reconnect and carry on with the same session
    scheduleReconnect();
    return;
  }
  state.sessionId = null;
  renderKept();
  renderPhase();
  if (e.code !== 1000) banner("lost", {}, { error: true });
}

function scheduleReconnect() {
  const sid = state.sessionId || state.lastSession;
  if (!sid || state.attempt >= RECONNECT_MS.length) {
    state.reconnecting = false;
    endCall();
    banner("lost", {}, { error: true, action: () => { hideBanner(); toggleCall(); }, actionLabel: "retry" });
    return;
  }
  if (!state.reconnecting) {
    state.reconnecting = true;
    state.playing = false;
    if (state.player) state.player.port.postMessage({ type: "clear" });  // the rest of that reply is not coming
    banner("dropped");
  }
  renderPhase();
  const wait = RECONNECT_MS[state.attempt++];
  setTimeout(async () => {
    if (!state.reconnecting) return;
    window.tingshuo.reconnects++;
    try {
      await connect(sid);
    } catch { return; }  // onclose schedules the next try
    state.reconnecting = false;
    state.attempt = 0;
    for (const f of state.held.splice(0)) sendFrame(f);
    banner("reconnected", {}, { autoHideMs: 4000 });
    renderPhase();
  }, wait);
}

function sessionConfig() {
  const s = {
    type: "realtime",
    audio: {
      input: { transcription: { model: "whisper-base" }, turn_detection: { type: "semantic_vad", eagerness: "auto" } },
      output: {},
    },
  };
  if (personaOf(state.persona) && !personaOf(state.persona).named) s.tingshuo = { persona: state.persona };
  if ($("voice").value) s.audio.output.voice = $("voice").value;
  return s;
}

// ---------------------------------------------------------------- audio
async function openMicrophone() {
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    const url = `http://localhost:${location.port || 80}/`;
    const err = new Error("insecure context"); err.key = "insecure"; err.vars = { url }; throw err;
  }
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
  } catch (e) {
    const name = e && e.name;
    e.key = name === "NotAllowedError" || name === "SecurityError" ? "micDenied"
      : name === "NotFoundError" || name === "OverconstrainedError" || name === "NotReadableError" && /device/i.test(e.message) ? "noMic"
      : "micError";
    e.vars = { e: e.message || name };
    throw e;
  }
}

async function startPlayer(ctx) {
  await ctx.audioWorklet.addModule("/static/capture-worklet.js");
  state.player = new AudioWorkletNode(ctx, "player", { outputChannelCount: [1] });
  state.player.connect(ctx.destination);
  state.player.port.onmessage = onPlayer;
}

async function startAudio() {
  const stream = await openMicrophone();  // first: a refused microphone leaves nothing half open
  let ctx;
  try { ctx = new AudioContext({ sampleRate: 24000, latencyHint: "interactive" }); } catch { ctx = new AudioContext(); }
  state.ctx = ctx;
  state.stream = stream;
  await startPlayer(ctx);
  const src = ctx.createMediaStreamSource(stream);
  state.capture = new AudioWorkletNode(ctx, "capture");
  const silent = ctx.createGain();
  silent.gain.value = 0; // keeps the capture node pulled by the graph without sending the mic to the speaker
  src.connect(state.capture).connect(silent).connect(ctx.destination);
  state.capture.port.onmessage = (e) => {
    state.inLevel = state.muted ? 0 : e.data.level;
    if (!state.inCall || state.muted) return;  // muted: nothing leaves the page
    if (state.reconnecting || !state.ws) {
      state.held.push(e.data.pcm);
      if (state.held.length > HELD_FRAMES) state.held.shift();
      return;
    }
    sendFrame(e.data.pcm);
  };
  if (ctx.state === "suspended") await ctx.resume();
}

function sendFrame(pcm) {
  if (send({ type: "input_audio_buffer.append", audio: b64(pcm) })) window.tingshuo.sentFrames++;
}

async function ensurePlayer() {
  if (state.ctx) return;
  const ctx = new AudioContext({ sampleRate: 24000 });
  state.ctx = ctx;
  await startPlayer(ctx);
}

function onPlayer(e) {
  const m = e.data;
  if (m.type === "level") {
    state.outLevel = m.rms;
    if (m.playing !== state.playing) { state.playing = m.playing; if (m.playing) state.thinking = false; renderPhase(); }
    return;
  }
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
  if (state.stream) state.stream.getTracks().forEach((tr) => tr.stop());
  if (state.ctx) state.ctx.close();
  state.stream = state.ctx = state.capture = state.player = null;
  state.playing = false; state.inLevel = state.outLevel = 0;
}

function endCall() {
  state.inCall = false;
  state.muted = false;
  state.thinking = state.userSpeaking = false;
  state.held = [];
  stopAudio();
  $("call").setAttribute("aria-pressed", "false");
  $("mute").setAttribute("aria-pressed", "false");
  $("mute").disabled = true;
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

// ---------------------------------------------------------------- the presence
// An orb drawn each animation frame from the real levels: the user's microphone RMS while they talk (and, softly,
// while listening), the assistant's played RMS while it speaks; a slow breath while listening, orbiting dots
// while thinking. With prefers-reduced-motion the breath and the orbit stop; the level still shows, as size only.
const COLOURS = {
  idle: ["#f4b6cc", "#c9a7e8"], listening: ["#f48fb1", "#b39ddb"], thinking: ["#ce93d8", "#90caf9"],
  speaking: ["#ec407a", "#7e57c2"], muted: ["#c7c2cc", "#a7a1b0"], reconnecting: ["#ffcc80", "#c7c2cc"],
};

function levelOf(rms) { return Math.min(1, Math.sqrt(Math.max(0, rms)) * 2.2); }  // speech RMS 0.02–0.2 → 0.3–1

function drawPresence(now) {
  const c = $("orb"), g = c.getContext("2d");
  const W = c.width, cx = W / 2;
  const ph = state.phase;
  const target = ph === "speaking" ? levelOf(state.outLevel) : ph === "listening" ? levelOf(state.inLevel) : 0;
  state.drawn += (target - state.drawn) * (target > state.drawn ? 0.6 : 0.3);  // fast attack, softer release
  const breath = reducedMotion ? 0 : ph === "listening" ? 0.035 * Math.sin(now / 650)
    : ph === "idle" ? 0.02 * Math.sin(now / 1400) : 0;
  const r = W * 0.25 * (1 + breath + 0.42 * state.drawn);
  g.clearRect(0, 0, W, W);
  const [a, b] = COLOURS[ph] || COLOURS.idle;
  const halo = g.createRadialGradient(cx, cx, r * 0.6, cx, cx, r * 1.55);
  halo.addColorStop(0, a + "88"); halo.addColorStop(1, a + "00");
  g.fillStyle = halo; g.beginPath(); g.arc(cx, cx, r * 1.55, 0, 2 * Math.PI); g.fill();
  const body = g.createLinearGradient(cx - r, cx - r, cx + r, cx + r);
  body.addColorStop(0, a); body.addColorStop(1, b);
  g.fillStyle = body; g.beginPath(); g.arc(cx, cx, r, 0, 2 * Math.PI); g.fill();
  if (ph === "thinking") {
    g.fillStyle = "#ffffffcc";
    for (let k = 0; k < 3; k++) {
      const ang = (reducedMotion ? 0 : now / 420) + (k * 2 * Math.PI) / 3;
      g.beginPath(); g.arc(cx + Math.cos(ang) * r * 0.55, cx + Math.sin(ang) * r * 0.55, W * 0.022, 0, 2 * Math.PI); g.fill();
    }
  }
  const p = window.tingshuo.presence;
  p.push({ t: Math.round(now), s: ph, d: +state.drawn.toFixed(4), i: +state.inLevel.toFixed(5), o: +state.outLevel.toFixed(5),
    r: +(r / W).toFixed(4) });
  if (p.length > 3000) p.splice(0, p.length - 3000);
  requestAnimationFrame(drawPresence);
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
      state.userSpeaking = true;
      renderPhase();
      break;
    case "input_audio_buffer.speech_stopped":
      state.speechStoppedAt = performance.now();
      state.waitingFirstAudio = true;
      state.userSpeaking = false;
      state.thinking = true;
      renderPhase();
      break;
    case "tingshuo.input_audio_transcription.partial":
      caption("user", ev.item_id, ev.transcript, "partial");
      break;
    case "conversation.item.input_audio_transcription.completed":
      caption("user", ev.item_id, ev.transcript);
      remember("user", ev.item_id, ev.transcript);
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
        remember("user", ev.item.id, ev.item.content[0].text);
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
      choosePersona(ev.persona, { name: ev.name, fromServer: true });
      if (ev.voice && [...$("voice").options].some((o) => o.value === ev.voice)) $("voice").value = ev.voice;
      window.tingshuo.personas = (window.tingshuo.personas || []).concat([ev.persona]);
      break;
    case "tingshuo.voice.changed":
      showStyle(ev.state);
      break;
    case "tingshuo.turn.detected":
      $("turnScores").textContent = `P(audio) ${fmt(ev.p_audio)} · P(text) ${fmt(ev.p_text)} · ${Math.round(ev.waited_ms || 0)} ms`;
      break;
    case "tingshuo.safety":
      $("safetyScores").textContent = `${ev.action} · ${ev.category} · ${fmt(ev.confidence)} (${ev.source})`;
      break;
    case "response.output_audio.delta":
      window.tingshuo.audioDeltas++;
      if (state.waitingFirstAudio && state.speechStoppedAt !== null) {
        const ms = Math.round(performance.now() - state.speechStoppedAt);
        window.tingshuo.latencyMs.push(ms);
        state.waitingFirstAudio = false;
        $("latency").textContent = t("firstAudio", { ms });
      }
      play(ev.delta, ev.response_id);
      break;
    case "tingshuo.backchannel":
      note("backchannel", { t: ev.text || "…" });
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
          remember("assistant", item.id, text);
        }
        window.tingshuo.assistantCaptions.push(text || "");
      }
      if (state.active === resp.id) state.active = null;
      window.tingshuo.statuses[resp.id] = resp.status;
      const tm = resp.tingshuo && resp.tingshuo.timings_ms;
      if (tm) showTimings(tm);
      state.thinking = false;
      renderPhase();
      break;
    }
    case "error":
      window.tingshuo.errors.push(ev.error);
      if (ev.event_id !== "event_limit") banner("error", { e: ev.error.message }, { error: true, autoHideMs: 8000 });
      break;
  }
}

function fmt(x) { return typeof x === "number" ? x.toFixed(2) : "—"; }

function showEmotion(emotion) {
  const chip = $("emotionChip");
  if (!emotion || (typeof emotion === "object" && !emotion.label)) { chip.hidden = true; return; }
  if (typeof emotion === "string") { chip.textContent = emotion; chip.hidden = false; return; }
  const zh = state.lang === "zh";
  const parts = [zh ? emotion.label_zh || emotion.label : emotion.label];
  if (emotion.whisper) parts.push(zh ? "悄悄话" : "whisper");
  if (emotion.pace && emotion.pace !== "normal") parts.push(emotion.pace);
  chip.textContent = parts.join(" · ");
  chip.title = `${Math.round((emotion.confidence || 0) * 100)}%`;
  chip.hidden = parts[0] === "neutral" && parts.length === 1;  // nothing to say about a calm turn
}

function showStyle(style) {
  if (!style) return;
  const parts = [];
  if (style.voice) parts.push(state.voiceLabels[style.voice] || style.voice);
  if (style.speed && Math.abs(style.speed - 1) > 0.03) parts.push(`${t("speed")} ×${Number(style.speed).toFixed(2)}`);
  if (style.whisper) parts.push(state.lang === "zh" ? "悄悄话" : "whisper");
  if (style.style) parts.push(style.style);
  if (style.emotion) parts.push(style.emotion);
  if (style.dialect) parts.push(style.dialect);
  $("styleChip").textContent = parts.join(" · ");
  $("styleChip").hidden = !parts.length;
}

function showTimings(tm) {
  const parts = [];
  if (tm.first_audio !== undefined) parts.push(t("firstAudio", { ms: Math.round(tm.first_audio) }));
  if (tm.asr !== undefined) parts.push(`${t("asr")} ${Math.round(tm.asr)}`);
  if (tm.llm_first_token !== undefined) parts.push(`${t("llm")} ${Math.round(tm.llm_first_token)}`);
  if (tm.tts_first_audio !== undefined) parts.push(`${t("tts")} ${Math.round(tm.tts_first_audio)}`);
  if (parts.length) $("latency").textContent = parts.join(" · ") + " ms";
}

// ---------------------------------------------------------------- characters
function personaOf(key) { return state.personas.find((p) => p.key === key); }

function hue(s) { let h = 0; for (const ch of s) h = (h * 31 + ch.codePointAt(0)) % 360; return h; }

function renderPersonas() {
  const box = $("personas");
  box.setAttribute("aria-label", t("persona"));
  box.textContent = "";
  for (const p of state.personas) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "card" + (p.named ? " named" : "");
    b.setAttribute("role", "radio");
    b.setAttribute("aria-checked", String(p.key === state.persona));
    b.dataset.key = p.key;
    const av = document.createElement("span");
    av.className = "avatar";
    av.setAttribute("aria-hidden", "true");
    const h = hue(p.key);  // a colour of its own, dark enough for white text at any hue (tests/test_web_page.py)
    av.style.background = `linear-gradient(135deg, hsl(${h} 55% 30%), hsl(${(h + 40) % 360} 55% 26%))`;
    av.textContent = [...p.name][0] || "?";
    const name = document.createElement("b");
    name.textContent = p.name;
    const desc = document.createElement("small");
    desc.textContent = p.named ? t("namedInCall") : p.description || "";
    b.append(av, name, desc);
    b.addEventListener("click", () => choosePersona(p.key));
    box.appendChild(b);
  }
  const cur = personaOf(state.persona);
  $("whoName").textContent = cur ? cur.name : "tingshuo";
}

function choosePersona(key, opts) {
  const o = opts || {};
  if (!personaOf(key)) state.personas.push({ key, name: o.name || key, description: "", named: true });
  state.persona = key;
  renderPersonas();
  const p = personaOf(key);
  if (!o.fromServer) {
    if (p.voice && [...$("voice").options].some((x) => x.value === p.voice)) $("voice").value = p.voice;
    if (state.ws) send({ type: "session.update", session: sessionConfig() });
  }
  window.tingshuo.persona = key;
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
    state.transcript = [];
    $("transcriptActions").hidden = true;
    window.tingshuo.erased = (window.tingshuo.erased || []).concat([sid]);
    note("erased");
  } catch (e) {
    banner("eraseFailed", { e: e.message || e }, { error: true });
  }
  renderKept();
}

// ---------------------------------------------------------------- controls
async function startSession(greet) {
  try { await connect(); } catch (e) { return; }
  if (state.active) send({ type: "response.cancel" });
  if (greet) send({ type: "response.create", response: { tingshuo: { greeting: true } } });
  renderPhase();
}

async function toggleCall() {
  if (state.inCall) {
    stopPlayback();
    state.ended = true;
    state.reconnecting = false;
    if (state.ws) { state.hangingUp = true; state.ws.close(1000, "hang up"); }
    endCall();
    return;
  }
  hideBanner();
  state.ended = false;
  state.attempt = 0;
  try {
    if (state.ctx) { state.ctx.close(); state.ctx = null; }
    await startAudio();
  } catch (e) {
    stopAudio();
    banner(e.key || "micError", e.vars || { e: e.message || e }, { error: true });
    openDrawer(true);  // typing still works
    renderPhase();
    return;
  }
  state.inCall = true;
  $("call").setAttribute("aria-pressed", "true");
  $("mute").disabled = false;
  renderI18n();
  await startSession(true);
}

function toggleMute() {
  if (!state.inCall) return;
  state.muted = !state.muted;
  if (state.stream) state.stream.getAudioTracks().forEach((tr) => { tr.enabled = !state.muted; });
  $("mute").setAttribute("aria-pressed", String(state.muted));
  $("muteText").textContent = state.muted ? t("unmute") : t("mute");
  renderPhase();
}

function openDrawer(open) {
  const form = $("typed");
  form.hidden = open === undefined ? !form.hidden : !open;
  $("keyboard").setAttribute("aria-expanded", String(!form.hidden));
  if (!form.hidden) $("text").focus();
}

async function sendTyped(e) {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  $("text").value = "";
  try {
    if (!state.ctx && $("speakReply").checked) await ensurePlayer();
    await connect(state.reconnecting ? state.sessionId : undefined);
  } catch (err) { return; }
  stopPlayback();
  if (state.active) send({ type: "response.cancel" });
  send({ type: "conversation.item.create", item: { type: "message", role: "user", content: [{ type: "input_text", text }] } });
  send({ type: "response.create", response: { output_modalities: [$("speakReply").checked ? "audio" : "text"] } });
  state.speechStoppedAt = performance.now();
  state.waitingFirstAudio = true;
  state.thinking = true;
  renderPhase();
}

async function loadOptions() {
  try {
    const o = await (await fetch("/v1/tingshuo/options")).json();
    state.personas = o.personas.map((p) => ({ ...p }));
    const labels = o.voice_labels || {};
    state.voiceLabels = labels;
    for (const v of o.voices) $("voice").add(new Option(labels[v] || v, v, v === o.default_voice, v === o.default_voice));
    if (o.auth) { $("keybox").hidden = false; $("key").value = localStorage.getItem("tingshuo.key") || ""; }
    state.store = o.store || null;
    renderPersonas();
    renderKept();
  } catch (e) {
    banner("error", { e: e.message }, { error: true });
  }
}

$("call").addEventListener("click", toggleCall);
$("mute").addEventListener("click", toggleMute);
$("keyboard").addEventListener("click", () => openDrawer());
$("typed").addEventListener("submit", sendTyped);
$("erase").addEventListener("click", eraseCall);
$("copy").addEventListener("click", copyTranscript);
$("download").addEventListener("click", downloadTranscript);
$("voice").addEventListener("change", () => { if (state.ws) send({ type: "session.update", session: sessionConfig() }); });
$("detailsToggle").addEventListener("click", () => {
  const show = $("details").hidden;
  $("details").hidden = !show;
  $("detailsToggle").setAttribute("aria-pressed", String(show));
});
$("lang").addEventListener("click", () => {
  state.lang = state.lang === "zh" ? "en" : "zh";
  localStorage.setItem("tingshuo.lang", state.lang);
  renderI18n();
});
// arrow keys move between the character cards (a radio group)
$("personas").addEventListener("keydown", (e) => {
  if (!["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown"].includes(e.key)) return;
  const cards = [...$("personas").querySelectorAll(".card")];
  const i = cards.indexOf(document.activeElement);
  if (i < 0) return;
  const next = cards[(i + (e.key === "ArrowLeft" || e.key === "ArrowUp" ? cards.length - 1 : 1)) % cards.length];
  next.focus();
  e.preventDefault();
});
renderI18n();
loadOptions();
requestAnimationFrame(drawPresence);
