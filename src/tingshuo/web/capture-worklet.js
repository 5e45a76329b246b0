// AudioWorklet processors for the call page (no build step; served as-is).
//
// "capture": microphone → 16-bit PCM frames of 20 ms at the context's rate (the page asks for a 24 kHz context,
// the Realtime API's rate; if the browser runs another rate, frames are linearly resampled to 24 kHz here).
// "player": a queue of PCM chunks played as they arrive; "clear" empties it at once (barge-in), and it reports
// how much of each response was actually played, and the RMS of what it just played (the call screen's presence
// moves with the assistant's real output, measured here on the samples that go to the speaker).

class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / 24000;
    this.frame = new Int16Array(480);
    this.n = 0;
    this.pos = 0; // fractional read position for resampling
    this.level = 0;
  }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (!ch) return true;
    let sum = 0;
    for (let i = 0; i < ch.length; i++) sum += ch[i] * ch[i];
    this.level = Math.sqrt(sum / ch.length);
    if (this.ratio === 1) {
      for (let i = 0; i < ch.length; i++) this.push(ch[i]);
    } else {
      while (this.pos < ch.length - 1) {
        const i = Math.floor(this.pos), f = this.pos - i;
        this.push(ch[i] * (1 - f) + ch[i + 1] * f);
        this.pos += this.ratio;
      }
      this.pos -= ch.length;
    }
    return true;
  }
  push(v) {
    v = Math.max(-1, Math.min(1, v));
    this.frame[this.n++] = v < 0 ? v * 32768 : v * 32767;
    if (this.n === this.frame.length) {
      this.port.postMessage({ pcm: this.frame.buffer, level: this.level }, [this.frame.buffer]);
      this.frame = new Int16Array(480);
      this.n = 0;
    }
  }
}

class Player extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = []; // {samples: Float32Array, id}
    this.offset = 0;
    this.played = {}; // response id → samples played
    this.tick = 0;
    this.sum = 0; // squared samples since the last level report
    this.count = 0;
    this.port.onmessage = (e) => {
      const m = e.data;
      if (m.type === "chunk") this.queue.push({ samples: new Float32Array(m.samples), id: m.id });
      else if (m.type === "clear") { this.queue = []; this.offset = 0; this.port.postMessage({ type: "cleared", played: this.played }); }
    };
  }
  process(_, outputs) {
    const out = outputs[0][0];
    let i = 0, playing = false;
    while (i < out.length && this.queue.length) {
      const head = this.queue[0];
      const n = Math.min(out.length - i, head.samples.length - this.offset);
      out.set(head.samples.subarray(this.offset, this.offset + n), i);
      this.played[head.id] = (this.played[head.id] || 0) + n;
      i += n; this.offset += n; playing = true;
      if (this.offset >= head.samples.length) { this.queue.shift(); this.offset = 0; }
    }
    for (; i < out.length; i++) out[i] = 0;
    for (let k = 0; k < out.length; k++) this.sum += out[k] * out[k];
    this.count += out.length;
    if (++this.tick % 4 === 0) {  // ~21 ms at 24 kHz: an animation frame or so
      this.port.postMessage({ type: "level", rms: Math.sqrt(this.sum / this.count), playing });
      this.sum = 0; this.count = 0;
    }
    if (this.tick % 8 === 0) this.port.postMessage({ type: "played", played: this.played, playing });
    return true;
  }
}

registerProcessor("capture", Capture);
registerProcessor("player", Player);
