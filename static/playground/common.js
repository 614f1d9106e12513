// Shared by the playground pages: the websocket, and how errors, run facts and code are shown.
// No framework: small DOM helpers; every text goes in through textContent.

export const CHAT_STORE_KEY = "infrai.playground.chat";

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return node;
}

export function csrfToken() {
  const input = document.querySelector("input[name=csrfmiddlewaretoken]");
  if (input) return input.value;
  try {
    return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
  } catch {
    return "";
  }
}

export function newRunId() {
  if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
  return `run-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
}

// A number field as the server should see it: a number, nothing when empty, or the raw text
// (so the server's error names the field instead of the page guessing).
export function numberField(input) {
  const raw = input.value.trim();
  if (raw === "") return undefined;
  const value = Number(raw);
  return Number.isFinite(value) ? value : raw;
}

export async function postJson(url, body, signal) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    body: JSON.stringify(body),
    credentials: "same-origin",
    signal,
  });
  let data = {};
  try {
    data = await response.json();
  } catch {
    data = { error: { code: "BAD_RESPONSE", message: `The server answered ${response.status}.` } };
  }
  return data;
}

// --- Rendering --------------------------------------------------------------------------------

export function errorBox(error) {
  if (error && error.status === 402 && error.topup_url) {
    const shortfall = error.shortfall_usd ? ` (short by $${error.shortfall_usd})` : "";
    return el(
      "div",
      { class: "pg-error pg-402", role: "alert", dataset: { testid: "error" } },
      el("p", {}, el("strong", { text: "Not enough credit for this run." })),
      el(
        "p",
        {},
        "It needs up to ",
        el("strong", { text: `$${error.required_usd}`, dataset: { testid: "required" } }),
        "; ",
        el("strong", { text: `$${error.available_usd}`, dataset: { testid: "available-credit" } }),
        ` is available${shortfall}.`,
      ),
      // One click: post to billing's top-up, which answers with Stripe Checkout and comes back here.
      el(
        "form",
        { method: "post", action: error.topup_action, class: "inline" },
        el("input", { type: "hidden", name: "csrfmiddlewaretoken", value: csrfToken() }),
        el("input", { type: "hidden", name: "amount_usd", value: error.suggested_usd }),
        el("input", { type: "hidden", name: "return_to", value: error.return_to }),
        el("button", { class: "btn btn-primary", type: "submit", text: `Top up $${error.suggested_usd}`, dataset: { testid: "topup" } }),
        el("a", { href: error.topup_url, text: "Another amount", dataset: { testid: "topup-other" } }),
      ),
    );
  }
  const message = (error && error.message) || "Something went wrong.";
  return el(
    "div",
    { class: "pg-error", role: "alert", dataset: { testid: "error" } },
    el(
      "p",
      {},
      el("strong", { text: message }),
      error && error.field ? el("span", { class: "muted small" }, " Field: ", el("code", { text: error.field })) : null,
    ),
  );
}

export function showError(slot, error) {
  slot.replaceChildren(error ? errorBox(error) : "");
}

export function metaLine(final) {
  const usage = final.usage || {};
  const parts = [el("span", { text: `$${final.cost_usd}`, dataset: { testid: "cost" } })];
  if (usage.total_tokens !== undefined) {
    parts.push(
      el("span", {
        text: `${usage.total_tokens} tokens`,
        title: `${usage.prompt_tokens} in, ${usage.completion_tokens} out`,
        dataset: { testid: "tokens" },
      }),
    );
  }
  parts.push(el("span", { text: `${final.latency_ms} ms`, dataset: { testid: "latency" } }));
  if (final.vendor) {
    parts.push(
      el("span", {
        class: final.vendor === "sandbox" ? "pill pill-sandbox" : "pill",
        text: final.vendor,
        dataset: { testid: "vendor" },
      }),
    );
  }
  if (final.finish_reason === "cancelled") parts.push(el("span", { class: "pill", text: "stopped" }));
  parts.push(el("code", { class: "pg-rid", title: "Request id", text: final.request_id, dataset: { testid: "request-id" } }));
  return el("p", { class: "pg-meta", dataset: { testid: "run-meta" } }, parts);
}

const LANGUAGES = [
  ["curl", "curl"],
  ["python", "Python"],
  ["javascript", "JavaScript"],
];

// The same markup as templates/playground/_code.html; console.js switches its tabs and copies.
export function codeBlock(code) {
  if (!code) return null;
  return el(
    "details",
    { class: "pg-code" },
    el("summary", { text: "View code" }),
    el(
      "section",
      { class: "pg-code-body", "aria-label": "The same request as code" },
      el(
        "div",
        { class: "tabs", dataset: { tabs: "" } },
        LANGUAGES.map(([key, label], i) =>
          el("button", { type: "button", "aria-selected": String(i === 0), dataset: { tab: key }, text: label }),
        ),
      ),
      LANGUAGES.map(([key], i) => el("pre", { dataset: { panel: key }, hidden: i > 0 }, el("code", { text: code[key] }))),
      el("button", { type: "button", class: "btn btn-small", dataset: { copyFrom: "pre:not([hidden]) code" }, text: "Copy" }),
    ),
  );
}

// --- The socket -------------------------------------------------------------------------------

const STATUS = {
  connecting: "Connecting…",
  live: "Live: replies stream as they are written.",
  down: "Live connection unavailable: replies arrive whole when they are done.",
};

// A websocket that reconnects with backoff and shows its state in `statusEl`.
// options: path (default the playground's), texts (status texts by state), onOpen, binaryType,
// reconnect (default true). Callers check `live` and fall back to plain HTTP while it is false.
export class PlaygroundSocket {
  constructor(statusEl, onMessage, onLost, options = {}) {
    this.statusEl = statusEl;
    this.onMessage = onMessage;
    this.onLost = onLost;
    this.path = options.path || "/ws/playground/";
    this.texts = { ...STATUS, ...(options.texts || {}) };
    this.onOpen = options.onOpen || null;
    this.binaryType = options.binaryType || "blob";
    this.reconnect = options.reconnect !== false;
    this.ws = null;
    this.retry = 1000;
    this.closed = false;
    this.connect();
  }

  get live() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  status(kind) {
    if (!this.statusEl) return;
    this.statusEl.textContent = this.texts[kind];
    this.statusEl.dataset.state = kind;
  }

  connect() {
    if (!("WebSocket" in window)) {
      this.status("down");
      return;
    }
    this.status("connecting");
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    let ws;
    try {
      ws = new WebSocket(`${scheme}://${window.location.host}${this.path}`);
    } catch {
      this.status("down");
      return;
    }
    ws.binaryType = this.binaryType;
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.retry = 1000;
      this.status("live");
      if (this.onOpen) this.onOpen();
    });
    ws.addEventListener("message", (event) => {
      if (typeof event.data !== "string") {
        this.onMessage(event.data);
        return;
      }
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      this.onMessage(message);
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.status("down");
      if (this.onLost) this.onLost(event);
      if (this.closed || !this.reconnect) return;
      // Come back when the server does; meanwhile the pages post or poll instead.
      setTimeout(() => this.connect(), this.retry);
      this.retry = Math.min(this.retry * 2, 30000);
    });
  }

  send(message) {
    if (!this.live) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  // Binary frames (audio) as they are.
  sendRaw(data) {
    if (!this.live) return false;
    this.ws.send(data);
    return true;
  }

  close() {
    this.closed = true;
    if (this.ws) this.ws.close();
  }
}

// htmx swaps only 2xx answers; the playground's partials answer 200 with their error inside,
// but a proxy's 4xx/5xx page should still show rather than leave the button doing nothing.
document.addEventListener("htmx:beforeSwap", (event) => {
  const status = event.detail.xhr.status;
  if (status >= 400 && status < 600 && !event.detail.shouldSwap) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});

// Esc stops, wherever the focus is on the page.
export function onEscape(handler) {
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") handler(event);
  });
}

// Enter sends, Shift+Enter is a new line (and never while an IME is composing).
export function enterSubmits(textarea, form) {
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
}
