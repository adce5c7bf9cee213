// AudioWorklet: mixes the microphone to mono, downsamples it to `targetRate` (16 kHz) and posts
// Int16 little-endian PCM chunks of about `chunkMs` to the page, which sends them over the WebSocket.
//
// Downsampling averages the input samples that fall into each output sample's interval (a box
// filter: cheap, and enough anti-aliasing for speech); it handles any ratio, e.g. 44.1 kHz → 16 kHz.
// When the AudioContext already runs at the target rate, samples pass through unchanged.

class PcmDownsampler extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const settings = (options && options.processorOptions) || {};
    this.targetRate = settings.targetRate || 16000;
    this.ratio = sampleRate / this.targetRate; // input samples per output sample (global `sampleRate`)
    this.chunk = new Int16Array(Math.round((this.targetRate * (settings.chunkMs || 100)) / 1000));
    this.filled = 0;
    this.sum = 0; // weighted input summed for the output sample being built
    this.weight = 0; // input samples (possibly fractional) in that sum
    this.stopped = false;
    this.port.onmessage = (event) => {
      if (event.data && event.data.type === "flush") {
        this.flush();
        this.port.postMessage({ type: "flushed" });
      } else if (event.data && event.data.type === "stop") {
        this.flush();
        this.stopped = true;
      }
    };
  }

  emit(value) {
    const clipped = Math.max(-1, Math.min(1, value));
    this.chunk[this.filled++] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
    if (this.filled === this.chunk.length) this.flush();
  }

  flush() {
    if (this.filled === 0) return;
    const out = this.chunk.slice(0, this.filled);
    this.port.postMessage({ type: "pcm", pcm: out.buffer }, [out.buffer]);
    this.filled = 0;
  }

  push(sample) {
    if (this.ratio <= 1.0001) {
      this.emit(sample);
      return;
    }
    // each input sample covers one unit of input time; an output sample covers `ratio` units
    let left = 1;
    while (left > 0) {
      const take = Math.min(left, this.ratio - this.weight);
      this.sum += sample * take;
      this.weight += take;
      left -= take;
      if (this.weight >= this.ratio - 1e-9) {
        this.emit(this.sum / this.weight);
        this.sum = 0;
        this.weight = 0;
      }
    }
  }

  process(inputs) {
    if (this.stopped) return false;
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const frames = input[0].length;
    const channels = input.length;
    for (let i = 0; i < frames; i++) {
      let mixed = 0;
      for (let c = 0; c < channels; c++) mixed += input[c][i];
      this.push(mixed / channels);
    }
    return true;
  }
}

registerProcessor("pcm-downsampler", PcmDownsampler);
