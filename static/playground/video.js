// Video: the form's choices follow the chosen model, and the rows of unfinished jobs follow
// their jobs, live over /ws/events/ ("video.updated") or, when that cannot reach this page,
// by polling the jobs endpoint every few seconds. A row whose state changes is fetched whole.
import { PlaygroundSocket } from "./common.js";

const section = document.querySelector("[data-video-jobs]");
const list = document.getElementById("pg-video-jobs");
const limitsScript = document.getElementById("pg-video-limits");
const LIMITS = limitsScript ? JSON.parse(limitsScript.textContent) : {};

// --- The form ---------------------------------------------------------------------------------

// Only what the chosen model makes can be picked ("Best available": what any usable model makes).
function constrain(form) {
  const model = form.querySelector("[data-limits-by-model]");
  if (!model) return;
  const limits = LIMITS[model.value] || LIMITS[""];
  if (!limits) return;
  for (const select of form.querySelectorAll("select[data-limit]")) {
    const allowed = (limits[select.dataset.limit] || []).map(String);
    for (const option of select.options) option.disabled = !allowed.includes(option.value);
    if (select.selectedOptions[0] && select.selectedOptions[0].disabled) {
      const first = [...select.options].find((option) => !option.disabled);
      if (first) select.value = first.value;
    }
  }
}

// Capture phase: the choices are fixed before htmx reads the form for the estimate.
document.addEventListener(
  "change",
  (event) => {
    if (event.target.matches && event.target.matches("[data-limits-by-model]")) constrain(event.target.form);
  },
  true,
);
document.addEventListener("htmx:afterSwap", () => {
  const form = document.getElementById("pg-video-form");
  if (form) constrain(form);
});
const initialForm = document.getElementById("pg-video-form");
if (initialForm) constrain(initialForm);

// --- The rows ---------------------------------------------------------------------------------

if (section && list) follow();

function follow() {
  const status = section.querySelector("[data-live-status]");
  const pollMs = Number(section.dataset.pollSeconds || 2) * 1000;
  const pollUrl = section.dataset.pollUrl;
  const pollingText = `Checking every ${pollMs / 1000} s while a video is being made.`;
  const noLiveText = `${pollingText} (This server's live updates do not reach pages.)`;
  const refreshing = new Set();
  let socket = null;

  function rowOf(jobId) {
    return list.querySelector(`[data-job-id="${CSS.escape(jobId)}"]`);
  }

  function unfinishedIds() {
    return [...list.querySelectorAll('[data-finished="false"]')].map((row) => row.dataset.jobId);
  }

  async function refresh(row) {
    const jobId = row.dataset.jobId;
    if (refreshing.has(jobId)) return;
    refreshing.add(jobId);
    try {
      const response = await fetch(row.dataset.rowUrl, { credentials: "same-origin", headers: { "HX-Request": "true" } });
      const current = rowOf(jobId);
      if (!current) return;
      if (response.status === 404) {
        current.remove(); // deleted meanwhile (e.g. through the API)
        return;
      }
      if (!response.ok) return;
      const template = document.createElement("template");
      template.innerHTML = (await response.text()).trim();
      const fresh = template.content.firstElementChild;
      if (!fresh) return;
      current.replaceWith(fresh);
      if (window.htmx) window.htmx.process(fresh);
    } catch {
      // The next update or poll tries again.
    } finally {
      refreshing.delete(jobId);
    }
  }

  // A job made elsewhere (the API, another tab) while this page is open joins the list.
  async function add(jobId) {
    if (refreshing.has(jobId) || !section.dataset.rowUrl) return;
    refreshing.add(jobId);
    try {
      const response = await fetch(section.dataset.rowUrl.replace("JOB_ID", encodeURIComponent(jobId)), {
        credentials: "same-origin",
      });
      if (!response.ok || rowOf(jobId)) return;
      const template = document.createElement("template");
      template.innerHTML = (await response.text()).trim();
      const fresh = template.content.firstElementChild;
      if (!fresh) return;
      list.prepend(fresh);
      if (window.htmx) window.htmx.process(fresh);
    } catch {
      // Shown on the next page load.
    } finally {
      refreshing.delete(jobId);
    }
  }

  function apply(update) {
    const row = rowOf(update.job_id);
    if (!row) {
      if (update.state === "queued") add(update.job_id);
      return;
    }
    if (update.state !== row.dataset.state) {
      refresh(row);
      return;
    }
    const progress = Number(update.progress);
    if (!(progress > Number(row.dataset.progress))) return;
    row.dataset.progress = String(progress);
    const bar = row.querySelector("progress");
    if (bar) {
      bar.value = progress;
      bar.textContent = `${progress} %`;
    }
    const text = row.querySelector("[data-progress-text]");
    if (text) text.textContent = `${progress} %`;
  }

  async function poll() {
    const ids = unfinishedIds();
    if (!ids.length || !pollUrl) return;
    try {
      const response = await fetch(`${pollUrl}?ids=${encodeURIComponent(ids.join(","))}`, { credentials: "same-origin" });
      if (!response.ok) return;
      const data = await response.json();
      const seen = new Set();
      for (const job of data.jobs || []) {
        seen.add(job.job_id);
        apply(job);
      }
      for (const id of ids) {
        const row = rowOf(id);
        if (!seen.has(id) && row) refresh(row); // gone: the row endpoint says 404
      }
    } catch {
      // The server may be restarting; the next tick tries again.
    }
  }

  // The socket may announce a job just submitted here before htmx adds its row: keep one.
  document.addEventListener("htmx:afterSettle", () => {
    const seen = new Set();
    for (const row of list.querySelectorAll("[data-job-id]")) {
      if (seen.has(row.dataset.jobId)) row.remove();
      else seen.add(row.dataset.jobId);
    }
  });

  function polling() {
    return !(socket && socket.live);
  }

  async function tick() {
    if (polling()) await poll();
    setTimeout(tick, pollMs);
  }

  if (section.dataset.liveUpdates === "on" && "WebSocket" in window) {
    socket = new PlaygroundSocket(
      status,
      (message) => {
        if (message && message.event === "video.updated" && message.payload) apply(message.payload);
      },
      null,
      {
        path: "/ws/events/",
        texts: {
          connecting: "Connecting for live updates…",
          live: "Live: progress arrives as the video renders.",
          down: `Live updates unavailable: ${pollingText.charAt(0).toLowerCase()}${pollingText.slice(1)}`,
        },
        // Catch up with whatever changed before the socket (re)connected.
        onOpen: () => poll(),
      },
    );
  } else if (status) {
    status.textContent = noLiveText;
    status.dataset.state = "polling";
  }
  setTimeout(tick, pollMs);
}
