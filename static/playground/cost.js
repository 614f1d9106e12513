// Cost: reuse the last Chat conversation, and sort the estimate table by any column.
import { CHAT_STORE_KEY } from "./common.js";

const form = document.querySelector("[data-cost]");
if (form) init(form);

function lastConversation() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(CHAT_STORE_KEY) || "null");
    if (!saved || !Array.isArray(saved.messages) || !saved.messages.length) return null;
    const system = saved.system && saved.system.trim() ? [{ role: "system", content: saved.system }] : [];
    return [...system, ...saved.messages.map((turn) => ({ role: turn.role, content: turn.content }))];
  } catch {
    return null;
  }
}

function init(form) {
  const hidden = form.querySelector("[data-messages-json]");
  const useButton = form.querySelector("[data-use-conversation]");
  const note = form.querySelector("[data-conversation-note]");
  const promptBox = form.elements.prompt;
  const conversation = lastConversation();

  function using(messages) {
    hidden.value = messages ? JSON.stringify(messages) : "";
    note.hidden = !messages;
    useButton.hidden = Boolean(messages) || !conversation;
    promptBox.disabled = Boolean(messages);
    form.querySelector("[data-prompt-box]").hidden = Boolean(messages);
    if (messages) {
      const turns = messages.filter((m) => m.role !== "system").length;
      note.querySelector("[data-turns]").textContent = `${turns} message${turns === 1 ? "" : "s"}`;
    }
  }

  useButton.addEventListener("click", () => using(conversation));
  form.querySelector("[data-forget-conversation]").addEventListener("click", () => {
    using(null);
    promptBox.focus();
  });
  using(hidden.value ? JSON.parse(hidden.value) : null);
}

// Sorting works on tables that htmx swaps in later, so it listens on the document.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-sortable] [data-sort-key]");
  if (!button) return;
  const table = button.closest("table");
  const th = button.closest("th");
  const key = button.dataset.sortKey;
  const numeric = "numeric" in button.dataset;
  const ascending = th.getAttribute("aria-sort") !== "ascending";
  table.querySelectorAll("th[aria-sort]").forEach((cell) => cell.setAttribute("aria-sort", "none"));
  th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const body = table.tBodies[0];
  const rows = [...body.rows];
  const value = (row) => {
    const raw = row.dataset[key];
    if (!numeric) return (raw || "").toLowerCase();
    return raw === undefined || raw === "" ? Number.POSITIVE_INFINITY : Number(raw);
  };
  rows.sort((a, b) => {
    const x = value(a);
    const y = value(b);
    const order = x < y ? -1 : x > y ? 1 : 0;
    return ascending ? order : -order;
  });
  body.append(...rows);
});
