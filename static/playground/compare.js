// Compare: one prompt to 2-4 models at once, a column each, all streaming together.
import {
  PlaygroundSocket,
  codeBlock,
  el,
  enterSubmits,
  errorBox,
  metaLine,
  newRunId,
  numberField,
  onEscape,
  postJson,
  showError,
} from "./common.js";

const FINISHED = { stop: "done", length: "max tokens", cancelled: "stopped", error: "cut off" };

const form = document.querySelector("[data-compare]");
if (form) init(form);

function init(form) {
  const columnsEl = form.querySelector("[data-columns]");
  const prompt = form.querySelector("[data-prompt]");
  const sendButton = form.querySelector("[data-send]");
  const stopButton = form.querySelector("[data-stop]");
  const errorSlot = form.querySelector("[data-error-slot]");
  let run = null; // {id, columns: [{article, textEl, text, code, done}], abort}

  const socket = new PlaygroundSocket(form.querySelector("[data-socket-status]"), onMessage, () => {
    if (run && run.viaSocket) {
      for (const column of run.columns) if (!column.done) finishColumn(column, { finish_reason: "error" });
    }
  });

  function busy(running) {
    sendButton.disabled = running;
    stopButton.disabled = !running;
    form.setAttribute("aria-busy", String(running));
  }

  function column(model) {
    const textEl = el("div", { class: "pg-text" });
    const status = el("span", { class: "pill", text: "waiting" });
    const article = el(
      "article",
      { class: "card pg-column pg-streaming", dataset: { testid: "compare-column" } },
      el("div", { class: "pg-column-head" }, el("h3", { text: model }), status),
      textEl,
    );
    columnsEl.append(article);
    return { model, article, textEl, status, text: "", code: null, done: false };
  }

  function finishColumn(col, final) {
    if (col.done) return;
    col.done = true;
    col.article.classList.remove("pg-streaming");
    col.status.textContent = FINISHED[final.finish_reason] || final.finish_reason || "done";
    if (!col.text && !col.article.querySelector(".pg-error")) col.textEl.textContent = "(no text)";
    if (final.request_id) col.article.append(metaLine(final));
    const code = codeBlock(col.code);
    if (code) col.article.append(code);
    if (run && run.columns.every((c) => c.done)) {
      run = null;
      busy(false);
    }
  }

  function failColumn(col, error) {
    col.article.append(errorBox(error));
    if (!col.text) finishColumn(col, { finish_reason: "error" });
  }

  function onMessage(message) {
    if (!run || message.run !== run.id) return;
    if (message.lane === null || message.lane === undefined) {
      // Refused before any model started (a field of the form).
      showError(errorSlot, message.error);
      columnsEl.replaceChildren();
      run = null;
      busy(false);
      return;
    }
    const col = run.columns[message.lane];
    if (!col) return;
    if (message.type === "start") {
      col.code = message.code;
      col.status.textContent = "streaming";
    } else if (message.type === "delta") {
      col.text += message.text;
      col.textEl.textContent = col.text;
    } else if (message.type === "final") {
      finishColumn(col, message);
    } else if (message.type === "error") {
      failColumn(col, message.error);
    }
  }

  async function byPost(message) {
    const abort = new AbortController();
    run.abort = abort;
    let data;
    try {
      data = await postJson(form.action, message, abort.signal);
    } catch {
      if (run) for (const col of run.columns) finishColumn(col, { finish_reason: abort.signal.aborted ? "cancelled" : "error" });
      return;
    }
    if (!run) return;
    if (data.error) {
      onMessage({ type: "error", run: run.id, lane: null, error: data.error });
      return;
    }
    data.columns.forEach((result, i) => {
      const col = run.columns[i];
      if (result.error) {
        failColumn(col, result.error);
        return;
      }
      col.text = result.content;
      col.textEl.textContent = result.content;
      col.code = result.code;
      finishColumn(col, { ...result._metadata, usage: result.usage, finish_reason: result.finish_reason });
    });
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (run) return;
    const models = [...form.querySelectorAll("input[name=models]:checked")].map((input) => input.value);
    const text = prompt.value.trim();
    showError(errorSlot, null);
    if (!text) {
      showError(errorSlot, { message: "Type a prompt first.", field: "prompt" });
      return;
    }
    columnsEl.replaceChildren();
    run = { id: newRunId(), columns: models.length >= 2 && models.length <= 4 ? models.map(column) : [] };
    busy(true);
    const message = {
      type: "compare",
      run: run.id,
      models,
      messages: [{ role: "user", content: text }],
      system: form.elements.system.value,
      temperature: numberField(form.elements.temperature),
      max_tokens: numberField(form.elements.max_tokens),
    };
    if (socket.send(message)) run.viaSocket = true;
    else byPost(message);
  });

  function stop() {
    if (!run) return;
    if (run.abort) run.abort.abort();
    else socket.send({ type: "stop", run: run.id });
  }
  stopButton.addEventListener("click", stop);
  onEscape(stop);
  enterSubmits(prompt, form);
}
