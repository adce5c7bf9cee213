// Dattavani ASR web page: jobs (upload, progress, list, downloads, player with a highlighted
// transcript) and live captions over the /v1/stream WebSocket. Plain browser JavaScript: no build
// step, nothing loaded from other hosts. All text from the server is set with textContent.
"use strict";

(() => {
  const FORMATS = ["txt", "srt", "vtt", "json", "tsv"];
  const KEY_STORE = "dattavani-asr.api-key";
  const POLL_MS = 700;
  const LIST_POLL_MS = 3000;
  const ACTIVE = new Set(["queued", "running"]);

  const $ = (id) => document.getElementById(id);
  const state = {
    uploads: new Map(), // job id -> {url, name}: files uploaded from this page, playable here
    tracked: null, // the job whose progress the progress bar shows
    listTimer: null,
    segments: [], // [{start, end, el, words: [{start, end, el}]}]
    current: { segment: null, word: null },
    live: null,
  };

  // ---------------------------------------------------------------- helpers

  function apiKey() {
    return $("api-key").value.trim();
  }

  function authHeaders() {
    const key = apiKey();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return `${response.status}: ${body.error.message}`;
    } catch (ignored) {
      // not JSON
    }
    return `${response.status} ${response.statusText}`;
  }

  async function api(path, options = {}) {
    const headers = { ...authHeaders(), ...(options.headers || {}) };
    const response = await fetch(path, { ...options, headers });
    if (!response.ok) throw new Error(await errorMessage(response));
    return response;
  }

  function showError(message) {
    const alert = $("alert");
    alert.textContent = message;
    alert.hidden = false;
  }

  function clearError() {
    const alert = $("alert");
    alert.textContent = "";
    alert.hidden = true;
  }

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function clock(seconds) {
    const total = Math.max(0, seconds);
    const minutes = Math.floor(total / 60);
    const rest = (total - minutes * 60).toFixed(1).padStart(4, "0");
    return `${minutes}:${rest}`;
  }

  function stem(name) {
    const base = (name || "transcript").split(/[\\/]/).pop();
    const dot = base.lastIndexOf(".");
    return dot > 0 ? base.slice(0, dot) : base;
  }

  function jobName(job) {
    const source = job.source || {};
    return source.filename || source.url || job.id;
  }

  // ---------------------------------------------------------------- settings

  function loadSettings() {
    try {
      $("api-key").value = localStorage.getItem(KEY_STORE) || "";
    } catch (ignored) {
      // storage disabled: the key lives in the field only
    }
    $("api-key").addEventListener("change", () => {
      try {
        localStorage.setItem(KEY_STORE, apiKey());
      } catch (ignored) {
        // storage disabled
      }
      clearError();
      loadModels();
      refreshJobs();
    });
    $("settings").addEventListener("submit", (event) => event.preventDefault());
  }

  async function loadModels() {
    const select = $("model");
    try {
      const body = await (await api("/v1/models")).json();
      const chosen = select.value;
      while (select.options.length > 1) select.remove(1);
      for (const model of body.data || []) {
        const option = element("option", model.loaded ? `${model.id} (loaded)` : model.id);
        option.value = model.id;
        select.append(option);
      }
      select.value = chosen;
      if (select.selectedIndex < 0) select.value = "";
    } catch (error) {
      showError(`Could not list models (${error.message}). Enter the API key if the server needs one.`);
    }
  }

  // ---------------------------------------------------------------- upload and progress

  async function upload(event) {
    event.preventDefault();
    const file = $("file").files[0];
    if (!file) return;
    const form = new FormData();
    form.append("file", file, file.name);
    if ($("model").value) form.append("model", $("model").value);
    if ($("language").value.trim()) form.append("language", $("language").value.trim());
    if ($("word-timestamps").checked) form.append("word_timestamps", "true");
    const button = $("upload-button");
    button.disabled = true;
    setProgress(0, `Uploading ${file.name}…`);
    try {
      const job = await (await api("/v1/jobs", { method: "POST", body: form })).json();
      clearError();
      state.uploads.set(job.id, { url: URL.createObjectURL(file), name: file.name });
      track(job.id);
      refreshJobs();
    } catch (error) {
      setProgress(0, `Upload failed: ${error.message}`);
      showError(`Upload failed: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  }

  function setProgress(value, text) {
    const bar = $("job-progress");
    bar.value = value;
    bar.setAttribute("aria-valuetext", `${Math.round(value * 100)} percent`);
    $("job-status").textContent = text;
  }

  function track(jobId) {
    state.tracked = jobId;
    poll(jobId);
  }

  async function poll(jobId) {
    if (state.tracked !== jobId) return;
    let job;
    try {
      job = await (await api(`/v1/jobs/${encodeURIComponent(jobId)}`)).json();
    } catch (error) {
      setProgress(0, `Lost track of the job: ${error.message}`);
      return;
    }
    const name = jobName(job);
    if (ACTIVE.has(job.status)) {
      const percent = Math.round((job.progress || 0) * 100);
      setProgress(job.progress || 0, `${name}: ${job.status}${job.status === "running" ? ` ${percent}%` : ""}`);
      setTimeout(() => poll(jobId), POLL_MS);
      return;
    }
    state.tracked = null;
    refreshJobs();
    if (job.status === "succeeded") {
      setProgress(1, `${name}: done`);
      openJob(job.id, name);
    } else {
      const reason = job.error ? `: ${job.error.message}` : "";
      setProgress(0, `${name}: ${job.status}${reason}`);
    }
  }

  // ---------------------------------------------------------------- jobs list

  async function refreshJobs() {
    clearTimeout(state.listTimer);
    let body;
    try {
      body = await (await api("/v1/jobs?limit=50")).json();
    } catch (error) {
      $("jobs-empty").textContent = `Jobs unavailable: ${error.message}`;
      $("jobs-empty").hidden = false;
      return;
    }
    const jobs = body.data || [];
    $("jobs-body").replaceChildren(...jobs.map(jobRow));
    $("jobs-empty").textContent = "No jobs yet.";
    $("jobs-empty").hidden = jobs.length > 0;
    if (jobs.some((job) => ACTIVE.has(job.status))) {
      state.listTimer = setTimeout(refreshJobs, LIST_POLL_MS);
    }
  }

  function jobRow(job) {
    const name = jobName(job);
    const row = element("tr");
    row.dataset.jobId = job.id;
    row.append(element("td", name));
    const running = job.status === "running" ? ` ${Math.round((job.progress || 0) * 100)}%` : "";
    const status = element("td", `${job.status}${running}`, `status status-${job.status}`);
    if (job.error) status.title = job.error.message;
    row.append(status);
    const created = job.created_at ? new Date(job.created_at * 1000).toLocaleString() : "";
    row.append(element("td", created));
    const actions = element("td");
    const buttons = element("div", null, "buttons");
    if (job.status === "succeeded") {
      buttons.append(actionButton("Show transcript", `Show the transcript of ${name}`, "open", job.id, name));
      for (const format of FORMATS) {
        const button = actionButton(format, `Download ${name} as ${format}`, "download", job.id, name);
        button.dataset.format = format;
        button.classList.add("secondary");
        buttons.append(button);
      }
    } else if (ACTIVE.has(job.status)) {
      buttons.append(actionButton("Cancel", `Cancel the job for ${name}`, "cancel", job.id, name));
    }
    actions.append(buttons);
    row.append(actions);
    return row;
  }

  function actionButton(text, label, action, jobId, name) {
    const button = element("button", text);
    button.type = "button";
    button.setAttribute("aria-label", label);
    button.dataset.action = action;
    button.dataset.jobId = jobId;
    button.dataset.name = name;
    return button;
  }

  async function onJobAction(event) {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const { action, jobId, name, format } = button.dataset;
    try {
      if (action === "open") await openJob(jobId, name);
      else if (action === "download") await download(jobId, format, name);
      else if (action === "cancel") {
        await api(`/v1/jobs/${encodeURIComponent(jobId)}`, { method: "DELETE" });
        await refreshJobs();
      }
    } catch (error) {
      showError(`${button.textContent} failed: ${error.message}`);
    }
  }

  async function download(jobId, format, name) {
    const response = await api(`/v1/jobs/${encodeURIComponent(jobId)}/result?format=${format}`);
    const url = URL.createObjectURL(await response.blob());
    const link = element("a");
    link.href = url;
    link.download = `${stem(name)}.${format}`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  // ---------------------------------------------------------------- player and transcript

  async function openJob(jobId, name) {
    const response = await api(`/v1/jobs/${encodeURIComponent(jobId)}/result?format=json`);
    const result = await response.json();
    const audio = $("audio");
    const uploaded = state.uploads.get(jobId);
    if (uploaded) {
      if (audio.getAttribute("src") !== uploaded.url) audio.src = uploaded.url;
      $("player-name").textContent = uploaded.name;
    } else {
      audio.pause();
      audio.removeAttribute("src");
      audio.load();
      $("player-name").textContent = `${name} (its audio was uploaded elsewhere, so only the transcript is shown)`;
    }
    renderTranscript(result.segments || []);
  }

  function renderTranscript(segments) {
    state.segments = [];
    state.current = { segment: null, word: null };
    const items = segments.map((segment, index) => {
      const button = element("button", null, "segment");
      button.type = "button";
      button.dataset.index = String(index);
      button.dataset.start = String(segment.start);
      button.append(element("span", clock(segment.start), "time"));
      const text = element("span", null, "text");
      const words = (segment.words || []).map((word, position) => {
        const span = element("span", word.word.trim(), "word");
        span.dataset.start = String(word.start);
        const space = word.word.match(/^\s*/)[0]; // Whisper's words carry their leading space
        if (position > 0 && space) text.append(space);
        text.append(span);
        return { start: word.start, end: word.end, el: span };
      });
      if (words.length === 0) text.textContent = segment.text;
      button.append(text);
      state.segments.push({ start: segment.start, end: segment.end, el: button, words });
      const item = element("li");
      item.append(button);
      return item;
    });
    if (items.length === 0) items.push(element("li", "(no speech found)", "muted"));
    $("transcript").replaceChildren(...items);
    highlight();
  }

  function lastStarted(items, time) {
    let found = null;
    for (const item of items) {
      if (item.start <= time + 0.01) found = item;
      else break;
    }
    return found;
  }

  function highlight() {
    const time = $("audio").currentTime || 0;
    let segment = lastStarted(state.segments, time);
    if (segment && time > segment.end + 0.25) segment = null;
    const word = segment ? lastStarted(segment.words, time) : null;
    mark("segment", segment);
    mark("word", word);
  }

  function mark(kind, item) {
    const previous = state.current[kind];
    if (previous === item) return;
    if (previous) {
      previous.el.classList.remove("current");
      previous.el.removeAttribute("aria-current");
    }
    state.current[kind] = item;
    if (!item) return;
    item.el.classList.add("current");
    if (kind === "segment") {
      item.el.setAttribute("aria-current", "true");
      if (!$("audio").paused) item.el.scrollIntoView({ block: "nearest" });
    }
  }

  function followPlayback() {
    highlight();
    if (!$("audio").paused) requestAnimationFrame(followPlayback);
  }

  function onSegmentClick(event) {
    const button = event.target.closest("button.segment");
    if (!button) return;
    const audio = $("audio");
    const start = Number(button.dataset.start);
    if (audio.getAttribute("src")) audio.currentTime = start;
    else mark("segment", state.segments[Number(button.dataset.index)]);
  }

  // ---------------------------------------------------------------- live captions

  function streamUrl() {
    const params = new URLSearchParams({ sample_rate: "16000", encoding: "pcm_s16le" });
    if ($("model").value) params.set("model", $("model").value);
    if ($("language").value.trim()) params.set("language", $("language").value.trim());
    if (apiKey()) params.set("api_key", apiKey());
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.host}/v1/stream?${params}`;
  }

  function liveStatus(text) {
    $("live-status").textContent = text;
  }

  async function openAudio(stream) {
    let context;
    let source;
    try {
      context = new AudioContext({ sampleRate: 16000, latencyHint: "interactive" });
      source = context.createMediaStreamSource(stream);
    } catch (ignored) {
      // this browser cannot resample the microphone into a 16-kHz context: the worklet does it
      if (context) context.close();
      context = new AudioContext({ latencyHint: "interactive" });
      source = context.createMediaStreamSource(stream);
    }
    await context.audioWorklet.addModule("/static/pcm-worklet.js");
    const node = new AudioWorkletNode(context, "pcm-downsampler", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { targetRate: 16000, chunkMs: 100 },
    });
    const mute = context.createGain();
    mute.gain.value = 0;
    source.connect(node).connect(mute).connect(context.destination);
    await context.resume();
    return { context, node };
  }

  async function startLive() {
    if (state.live) return;
    clearError();
    $("captions-final").replaceChildren();
    $("captions-partial").textContent = "";
    $("live-done").textContent = "";
    $("live-start").disabled = true;
    liveStatus("Starting the microphone…");
    const live = { stream: null, audio: null, socket: null, ready: false, ended: false, done: false };
    state.live = live;
    try {
      live.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: true },
      });
      live.audio = await openAudio(live.stream);
    } catch (error) {
      showError(`The microphone is not available: ${error.message}`);
      stopAudio(live);
      resetLive();
      return;
    }
    live.audio.node.port.onmessage = (event) => {
      const message = event.data;
      if (message.type === "pcm" && live.ready && !live.ended && live.socket.readyState === WebSocket.OPEN) {
        live.socket.send(message.pcm);
      }
    };
    openSocket(live);
  }

  function openSocket(live) {
    liveStatus("Connecting…");
    const socket = new WebSocket(streamUrl());
    socket.binaryType = "arraybuffer";
    live.socket = socket;
    socket.onmessage = (event) => onLiveEvent(live, JSON.parse(event.data));
    socket.onerror = () => {
      if (!live.done) showError("The live-captions connection failed.");
    };
    socket.onclose = (event) => {
      stopAudio(live);
      if (!live.done) liveStatus(`Disconnected${event.code ? ` (code ${event.code})` : ""}.`);
      resetLive();
    };
  }

  function onLiveEvent(live, message) {
    if (message.type === "ready") {
      live.ready = true;
      $("live-stop").disabled = false;
      liveStatus(`Listening (model ${message.model}, language ${message.language || "auto"}).`);
    } else if (message.type === "partial") {
      $("captions-partial").textContent = message.text;
    } else if (message.type === "final") {
      const text = message.text.trim();
      if (text) $("captions-final").append(element("span", `${text} `, "final"));
      $("captions-partial").textContent = "";
    } else if (message.type === "lag") {
      liveStatus(`The server is ${message.behind.toFixed(1)} s behind; updating every ${message.step.toFixed(1)} s.`);
    } else if (message.type === "error") {
      showError(`Live captions: ${message.message}`);
    } else if (message.type === "done") {
      live.done = true;
      $("captions-partial").textContent = "";
      $("live-done").textContent = message.text || "(nothing was said)";
      liveStatus(`Finished: ${Number(message.audio_received || 0).toFixed(1)} s of audio.`);
    }
  }

  async function stopLive() {
    const live = state.live;
    if (!live || live.ended) return;
    $("live-stop").disabled = true;
    liveStatus("Finishing the last words…");
    if (live.audio) await flushAudio(live.audio.node);
    live.ended = true;
    stopAudio(live);
    if (live.socket && live.socket.readyState === WebSocket.OPEN) {
      live.socket.send(JSON.stringify({ type: "end" }));
    } else if (live.socket) {
      live.socket.close();
    }
  }

  function flushAudio(node) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, 500);
      node.port.addEventListener("message", (event) => {
        if (event.data.type === "flushed") {
          clearTimeout(timer);
          resolve();
        }
      });
      node.port.postMessage({ type: "flush" });
    });
  }

  function stopAudio(live) {
    if (live.stream) live.stream.getTracks().forEach((track) => track.stop());
    live.stream = null;
    if (live.audio) {
      live.audio.node.port.postMessage({ type: "stop" });
      live.audio.context.close();
    }
    live.audio = null;
  }

  function resetLive() {
    state.live = null;
    $("live-start").disabled = false;
    $("live-stop").disabled = true;
  }

  // ---------------------------------------------------------------- start

  function init() {
    loadSettings();
    $("upload-form").addEventListener("submit", upload);
    $("refresh-jobs").addEventListener("click", () => refreshJobs());
    $("jobs-body").addEventListener("click", onJobAction);
    $("transcript").addEventListener("click", onSegmentClick);
    const audio = $("audio");
    for (const name of ["timeupdate", "seeked", "loadedmetadata"]) audio.addEventListener(name, highlight);
    audio.addEventListener("play", () => requestAnimationFrame(followPlayback));
    $("live-start").addEventListener("click", startLive);
    $("live-stop").addEventListener("click", stopLive);
    if (!window.AudioWorkletNode || !navigator.mediaDevices) {
      $("live-start").disabled = true;
      liveStatus("Live captions need a browser with AudioWorklet and microphone access (https or localhost).");
    }
    loadModels();
    refreshJobs();
  }

  init();
})();
