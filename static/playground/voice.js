// Voice: a realtime session on /ws/voice/. Start mints a session token (the API's, for the
// signed-in user's current project), opens the microphone through an AudioWorklet that sends
// 16 kHz PCM16 frames, and shows each turn: what was heard, the reply (spoken back) and its cost.
import { PlaygroundSocket, el, onEscape, postJson, showError } from "./common.js";

const SOCKET_TEXTS = {
  connecting: "Connecting…",
  live: "Live: speak, then pause.",
  down: "Not connected.",
};
const PHASES = {
  idle: "Not started",
  starting: "Starting…",
  listening: "Listening",
  thinking: "Answering…",
  ending: "Hanging up…",
  ended: "Ended",
};

function clock(seconds) {
  const whole = Math.floor(seconds);
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
}

// Display only: the server's `ended` event carries the exact, settled amounts.
function usd(value) {
  if (value === 0) return "$0.00";
  return value < 0.01 ? `$${value.toFixed(6)}` : `$${value.toFixed(4)}`;
}

function init(root) {
  const startButton = root.querySelector("[data-start]");
  const talkButton = root.querySelector("[data-talk]");
  const hangupButton = root.querySelector("[data-hangup]");
  const ttlSelect = root.querySelector("[data-ttl]");
  const voiceSelect = root.querySelector("[data-voice-choice]");
  const meter = root.querySelector("[data-level]");
  const statusEl = root.querySelector("[data-voice-status]");
  const elapsedEl = root.querySelector("[data-elapsed]");
  const costEl = root.querySelector("[data-session-cost]");
  const phaseEl = root.querySelector("[data-phase]");
  const summarySlot = root.querySelector("[data-summary]");
  const errorSlot = root.querySelector("[data-error-slot]");
  const log = root.querySelector("[data-log]");

  let session = null; // {socket, ready, startedAt, perMinute, callsUsd, mic, context, node, timer, ended, assistant}

  function phase(name) {
    root.dataset.phase = name;
    phaseEl.textContent = PHASES[name];
  }

  function controls() {
    const live = Boolean(session && session.ready && !session.ended);
    startButton.disabled = Boolean(session && !session.ended);
    ttlSelect.disabled = startButton.disabled;
    voiceSelect.disabled = startButton.disabled;
    talkButton.disabled = !live;
    hangupButton.disabled = !live;
  }

  function addTurn(role, text) {
    const empty = log.querySelector("[data-empty]");
    if (empty) empty.remove();
    const li = el(
      "li",
      { class: `pg-turn pg-${role}`, dataset: { testid: `${role}-turn` } },
      el("div", { class: "pg-role", text: role === "user" ? "You" : "Assistant" }),
      el("div", { class: "pg-text", text }),
    );
    log.append(li);
    li.scrollIntoView({ block: "nearest" });
    return li;
  }

  function tick() {
    if (!session || !session.ready) return;
    const seconds = (performance.now() - session.startedAt) / 1000;
    elapsedEl.textContent = clock(seconds);
    costEl.textContent = `≈ ${usd((session.perMinute * seconds) / 60 + session.callsUsd)}`;
  }

  async function start() {
    showError(errorSlot, null);
    summarySlot.replaceChildren();
    if (!navigator.mediaDevices || !window.AudioWorkletNode) {
      showError(errorSlot, { message: "This browser cannot capture audio here (it needs a secure page and AudioWorklet)." });
      return;
    }
    session = { ready: false, ended: false, callsUsd: 0, assistant: null, playing: null };
    phase("starting");
    controls();
    const issued = await postJson(root.dataset.tokenUrl, {
      ttl_seconds: Number(ttlSelect.value),
      voice: voiceSelect.value || undefined,
    });
    if (issued.error) return fail(issued.error);
    try {
      await openMicrophone();
    } catch (error) {
      return fail({ message: `The microphone is unavailable: ${error.message || error.name}.` });
    }
    // The token goes in the first message, not the URL: URLs end up in access logs.
    const socket = new PlaygroundSocket(statusEl, onMessage, onLost, {
      path: "/ws/voice/",
      texts: SOCKET_TEXTS,
      binaryType: "arraybuffer",
      reconnect: false,
      onOpen: () => socket.send({ type: "start", token: issued.token }),
    });
    session.socket = socket;
  }

  async function openMicrophone() {
    const mic = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    session.mic = mic;
    const context = new AudioContext();
    session.context = context;
    await context.audioWorklet.addModule(root.dataset.workletUrl);
    const node = new AudioWorkletNode(context, "pcm16-downsampler");
    node.port.onmessage = (event) => {
      meter.value = Math.min(1, event.data.level * 5);
      if (session && session.ready && !session.ended) session.socket.sendRaw(event.data.pcm);
    };
    // A silent route to the output keeps the graph pulling audio through the worklet.
    const mute = new GainNode(context, { gain: 0 });
    context.createMediaStreamSource(mic).connect(node).connect(mute).connect(context.destination);
    session.node = node;
  }

  function closeMicrophone() {
    if (!session) return;
    if (session.mic) session.mic.getTracks().forEach((track) => track.stop());
    if (session.node) session.node.port.onmessage = null;
    if (session.context && session.context.state !== "closed") session.context.close().catch(() => {});
    if (session.timer) clearInterval(session.timer);
    meter.value = 0;
  }

  function fail(error) {
    closeMicrophone();
    if (session && session.socket) session.socket.close();
    if (session) session.ended = true;
    showError(errorSlot, error);
    phase("idle");
    controls();
  }

  function onMessage(message) {
    if (!session) return;
    if (message instanceof ArrayBuffer) return playReply(message);
    switch (message.type) {
      case "ready":
        session.ready = true;
        session.startedAt = performance.now();
        session.perMinute = Number(message.per_minute_usd);
        session.timer = setInterval(tick, 250);
        controls();
        talkButton.focus();
        break;
      case "listening":
        phase("listening");
        break;
      case "thinking":
        phase("thinking");
        break;
      case "transcript":
        addTurn("user", message.text || "(nothing recognised)");
        break;
      case "reply":
        session.assistant = addTurn("assistant", message.text);
        break;
      case "turn.cost":
        session.callsUsd = Number(message.calls_usd);
        if (session.assistant) {
          session.assistant.append(
            el(
              "p",
              { class: "pg-meta", dataset: { testid: "turn-cost" } },
              el("span", { text: `$${message.turn_usd}`, dataset: { testid: "cost" } }),
              el("span", { text: `recognition $${message.asr_usd}` }),
              el("span", { text: `reply $${message.chat_usd}` }),
              el("span", { text: `speech $${message.tts_usd}` }),
            ),
          );
        }
        session.assistant = null;
        tick();
        break;
      case "error":
        showError(errorSlot, message.error);
        break;
      case "ended":
        ended(message);
        break;
      default:
        break;
    }
  }

  // Replies play one after another, never over each other; hanging up silences them.
  function playReply(buffer) {
    const url = URL.createObjectURL(new Blob([buffer], { type: "audio/wav" }));
    const audio = el("audio", { controls: true, src: url, "aria-label": "The assistant's spoken reply" });
    const turn = session.assistant || log.lastElementChild;
    if (turn) turn.append(audio);
    const current = session;
    const previous = current.playing || Promise.resolve();
    current.playing = previous.then(
      () =>
        new Promise((done) => {
          if (current.ended) return done();
          audio.addEventListener("ended", done, { once: true });
          audio.addEventListener("error", done, { once: true });
          // Autoplay refused: the controls stay there to play it by hand.
          audio.play().catch(done);
        }),
    );
  }

  function silence() {
    for (const audio of log.querySelectorAll("audio")) audio.pause();
  }

  function ended(message) {
    session.ended = true;
    closeMicrophone();
    silence();
    phase("ended");
    elapsedEl.textContent = clock(message.seconds);
    costEl.textContent = `$${message.session_cost_usd}`;
    const reasons = {
      hangup: "You hung up.",
      expired: "The session's time ran out.",
      insufficient_credit: "The credit ran out.",
      disconnected: "The connection was lost.",
    };
    summarySlot.replaceChildren(
      el(
        "div",
        { class: "pg-voice-summary", role: "status", dataset: { testid: "session-summary" } },
        el("p", {}, el("strong", { text: reasons[message.reason] || "The session ended." })),
        el(
          "p",
          {},
          `${message.seconds.toFixed(1)} s: time $${message.time_cost_usd} + calls $${message.calls_cost_usd} = `,
          el("strong", { text: `$${message.session_cost_usd}`, dataset: { testid: "session-cost" } }),
        ),
      ),
    );
    controls();
    startButton.focus();
  }

  function onLost(event) {
    if (!session || session.ended) return;
    session.ended = true;
    closeMicrophone();
    phase("ended");
    if (!errorSlot.childElementCount) {
      showError(errorSlot, { message: `The connection closed (${event.code}). Start again for a new session.` });
    }
    controls();
  }

  function hangUp() {
    if (!session || !session.ready || session.ended) return;
    phase("ending");
    silence();
    if (!session.socket.send({ type: "hangup" })) onLost({ code: 1006 });
  }

  // Push-to-talk: the microphone streams all along; letting go ends the turn at once.
  function talk(down) {
    if (!session || !session.ready || session.ended) return;
    talkButton.setAttribute("aria-pressed", String(down));
    if (!down) session.socket.send({ type: "end_turn" });
  }

  startButton.addEventListener("click", start);
  hangupButton.addEventListener("click", hangUp);
  talkButton.addEventListener("pointerdown", () => talk(true));
  talkButton.addEventListener("pointerup", () => talk(false));
  talkButton.addEventListener("keydown", (event) => {
    if ((event.key === "Enter" || event.key === " ") && !event.repeat) talk(true);
  });
  talkButton.addEventListener("keyup", (event) => {
    if (event.key === "Enter" || event.key === " ") talk(false);
  });
  // Space anywhere else on the page talks too; on a control it keeps its usual meaning.
  const ownsSpace = (target) => target.closest("input, textarea, select, button, a, summary, [contenteditable]");
  document.addEventListener("keydown", (event) => {
    if (event.key !== " " || event.repeat || ownsSpace(event.target)) return;
    if (!session || !session.ready || session.ended) return;
    event.preventDefault(); // not a page scroll
    talk(true);
  });
  document.addEventListener("keyup", (event) => {
    if (event.key !== " " || ownsSpace(event.target)) return;
    if (!session || !session.ready || session.ended) return;
    event.preventDefault();
    talk(false);
  });
  onEscape(hangUp);
  window.addEventListener("pagehide", () => {
    if (session && session.socket) session.socket.close();
    closeMicrophone();
  });
  phase("idle");
  controls();
}

const voiceRoot = document.querySelector("[data-voice]");
if (voiceRoot) init(voiceRoot);
