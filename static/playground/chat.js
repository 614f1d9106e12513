// Chat: one conversation kept in the page (and sessionStorage), each reply streamed over the
// playground socket; a plain POST answers the whole reply when the socket is down.
import {
  CHAT_STORE_KEY,
  PlaygroundSocket,
  codeBlock,
  el,
  enterSubmits,
  metaLine,
  newRunId,
  numberField,
  onEscape,
  postJson,
  showError,
} from "./common.js";

const form = document.querySelector("[data-chat]");
if (form) init(form);

function init(form) {
  const log = form.querySelector("[data-log]");
  const prompt = form.querySelector("[data-prompt]");
  const sendButton = form.querySelector("[data-send]");
  const stopButton = form.querySelector("[data-stop]");
  const errorSlot = form.querySelector("[data-error-slot]");
  const modelSelect = form.elements.model;
  const autoOnly = form.querySelector("[data-auto-only]");
  let history = []; // turns: {role, content}, and for replies what they cost ({final, code})
  let current = null; // {run, li, textEl, text, code, sent, abort}

  const socket = new PlaygroundSocket(form.querySelector("[data-socket-status]"), onMessage, () => {
    if (current && current.viaSocket) finish({ finish_reason: "error" }, "The connection dropped; the reply was cut.");
  });

  function save() {
    sessionStorage.setItem(
      CHAT_STORE_KEY,
      JSON.stringify({ system: form.elements.system.value, messages: history }),
    );
  }

  function clearEmpty() {
    const empty = log.querySelector("[data-empty]");
    if (empty) empty.remove();
  }

  function addTurn(role, text, final, code) {
    clearEmpty();
    const textEl = el("div", { class: "pg-text", text });
    const li = el(
      "li",
      { class: `pg-turn pg-${role}` },
      el("div", { class: "pg-role", text: role === "user" ? "You" : "Assistant" }),
      textEl,
      final && final.request_id ? metaLine(final) : null,
      codeBlock(code),
    );
    log.append(li);
    li.scrollIntoView({ block: "nearest" });
    return { li, textEl };
  }

  function restore() {
    let saved = null;
    try {
      saved = JSON.parse(sessionStorage.getItem(CHAT_STORE_KEY) || "null");
    } catch {
      saved = null;
    }
    const rendered = JSON.parse(form.elements.history.value || "[]");
    if (rendered.length) {
      history = rendered; // a reply the server rendered (a plain form post)
      save();
      return;
    }
    if (!saved || !Array.isArray(saved.messages)) return;
    history = saved.messages.filter((m) => m && (m.role === "user" || m.role === "assistant"));
    if (saved.system && !form.elements.system.value) form.elements.system.value = saved.system;
    for (const turn of history) addTurn(turn.role, turn.content, turn.final, turn.code);
  }

  function busy(running) {
    sendButton.disabled = running;
    stopButton.disabled = !running;
    form.setAttribute("aria-busy", String(running));
  }

  function settings() {
    const body = {
      system: form.elements.system.value,
      model: modelSelect.value || undefined,
      temperature: numberField(form.elements.temperature),
      max_tokens: numberField(form.elements.max_tokens),
    };
    if (!body.model) {
      body.task = form.elements.task.value;
      body.prefer = form.elements.prefer.value;
    }
    return body;
  }

  function start(text) {
    const user = addTurn("user", text);
    const reply = addTurn("assistant", "");
    reply.li.classList.add("pg-streaming");
    current = { run: newRunId(), user, li: reply.li, textEl: reply.textEl, text: "", code: null, prompt: text };
    history.push({ role: "user", content: text });
    showError(errorSlot, null);
    busy(true);
    const messages = history.map((turn) => ({ role: turn.role, content: turn.content }));
    return { type: "chat", run: current.run, messages, ...settings() };
  }

  // Undo a turn that never got a reply, and give the prompt back to the user.
  function unwind(error) {
    if (!current) return;
    current.user.li.remove();
    current.li.remove();
    history.pop();
    prompt.value = current.prompt;
    current = null;
    busy(false);
    showError(errorSlot, error);
    if (!log.children.length) log.append(el("li", { class: "pg-empty muted", dataset: { empty: "" }, text: "No messages yet." }));
  }

  function finish(final, note) {
    if (!current) return;
    const turn = current;
    current = null;
    turn.li.classList.remove("pg-streaming");
    if (turn.text) history.push({ role: "assistant", content: turn.text, final, code: turn.code });
    else turn.textEl.textContent = note || "(no text)";
    if (final.request_id) turn.li.append(metaLine(final));
    const code = codeBlock(turn.code);
    if (code) turn.li.append(code);
    save();
    busy(false);
    prompt.focus();
  }

  function onMessage(message) {
    if (!current || (message.run && message.run !== current.run)) {
      if (message.type === "error" && !message.run) showError(errorSlot, message.error);
      return;
    }
    if (message.type === "start") {
      current.code = message.code;
      current.viaSocket = true;
    } else if (message.type === "delta") {
      current.text += message.text;
      current.textEl.textContent = current.text;
      current.li.scrollIntoView({ block: "nearest" });
    } else if (message.type === "final") {
      finish(message);
    } else if (message.type === "error") {
      if (current.text) {
        showError(errorSlot, message.error); // cut mid-reply: the final that follows says what it cost
      } else {
        unwind(message.error);
      }
    }
  }

  async function sendByPost(message) {
    const abort = new AbortController();
    current.abort = abort;
    let data;
    try {
      data = await postJson(form.action, message, abort.signal);
    } catch {
      if (current && abort.signal.aborted) finish({ finish_reason: "cancelled" }, "Stopped before the reply arrived.");
      else unwind({ message: "The server could not be reached." });
      return;
    }
    if (!current) return;
    if (data.error) {
      unwind(data.error);
      return;
    }
    current.text = data.content;
    current.textEl.textContent = data.content;
    current.code = data.code;
    finish({ ...data._metadata, usage: data.usage, finish_reason: data.finish_reason });
  }

  function stop() {
    if (!current) return;
    if (current.abort) current.abort.abort();
    else socket.send({ type: "stop", run: current.run });
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text || current) return;
    prompt.value = "";
    const message = start(text);
    if (!socket.send(message)) sendByPost(message);
  });

  stopButton.addEventListener("click", stop);
  onEscape(stop);
  enterSubmits(prompt, form);

  form.querySelector("[data-new-chat]").addEventListener("click", () => {
    stop();
    current = null; // whatever the stopped run still sends belongs to the old conversation
    busy(false);
    history = [];
    sessionStorage.removeItem(CHAT_STORE_KEY);
    log.replaceChildren(el("li", { class: "pg-empty muted", dataset: { empty: "" }, text: "New conversation." }));
    showError(errorSlot, null);
    prompt.focus();
  });

  function syncAuto() {
    autoOnly.hidden = Boolean(modelSelect.value);
  }
  modelSelect.addEventListener("change", syncAuto);
  syncAuto();
  restore();
}
