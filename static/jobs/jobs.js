// Jobs pages: keep the job region fresh, live over /ws/events/ when the server says worker
// events reach this socket, else by fetching the region every few seconds; and ask before a row
// action in a <dialog>. Without this script the pages still work: a <noscript> refresh while
// jobs run, and a confirmation page per action.
(() => {
  const status = document.querySelector("[data-live-status]");
  if (!status) return;
  const text = status.querySelector("[data-live-text]");
  const crossProcess = status.dataset.crossProcess === "true";
  const seconds = Number(status.dataset.refreshSeconds) || 5;
  const dialog = document.getElementById("job-dialog");
  const dialogBody = dialog && dialog.querySelector("[data-dialog-body]");
  let pollTimer = null;
  let refreshTimer = null;
  let busy = false;
  let again = false;
  let opener = null;

  const region = () => document.querySelector("[data-refresh-region]");

  // Live mode still looks once a minute, in case an event was missed while the socket reconnected.
  const LIVE_BACKUP_SECONDS = 60;

  function setMode(mode) {
    status.dataset.mode = mode;
    text.textContent = mode === "live" ? "Live" : `Refreshing every ${seconds} s`;
    clearInterval(pollTimer);
    pollTimer = setInterval(poll, (mode === "live" ? LIVE_BACKUP_SECONDS : seconds) * 1000);
  }

  function poll() {
    const current = region();
    if (document.hidden || !current) return;
    if (current.dataset.poll === "always" || current.dataset.active === "true") refresh();
  }

  function refreshSoon() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, 250);
  }

  async function refresh() {
    const current = region();
    if (!current) return;
    if (busy || (dialog && dialog.open)) {
      again = true;
      return;
    }
    busy = true;
    again = false;
    try {
      const response = await fetch(window.location.href, { headers: { "HX-Request": "true" }, credentials: "same-origin" });
      if (!response.ok || response.redirected) return; // signed out or gone: leave the page as it is
      const template = document.createElement("template");
      template.innerHTML = await response.text();
      const fresh = template.content.querySelector("[data-refresh-region]");
      if (!fresh) return;
      const focusedId = current.contains(document.activeElement) ? document.activeElement.id : "";
      current.replaceWith(fresh);
      if (focusedId) {
        const focusTarget = document.getElementById(focusedId);
        if (focusTarget) focusTarget.focus();
      }
    } catch {
      // A failed refresh is retried at the next tick or event.
    } finally {
      busy = false;
      if (again) refreshSoon();
    }
  }

  // Show an event's progress at once; the refresh that follows brings counts, cost and actions.
  function patch(payload) {
    const id = payload.batch_id || payload.job_id;
    if (!id) return;
    document.querySelectorAll(`[data-job-id="${CSS.escape(id)}"]`).forEach((holder) => {
      const percent = payload.batch_id ? Math.round((payload.progress || 0) * 100) : payload.progress || 0;
      const bar = holder.querySelector("progress");
      const label = holder.querySelector("[data-percent]");
      const state = holder.querySelector("[data-state]");
      if (bar) bar.value = percent;
      if (label) label.textContent = `${percent}%`;
      if (state && payload.state) state.textContent = payload.state;
    });
  }

  function onEvent(message) {
    if (message.event !== "batch.updated" && message.event !== "video.updated") return;
    const payload = message.payload || {};
    patch(payload);
    const current = region();
    if (!current) return;
    const id = payload.batch_id || payload.job_id;
    if (current.dataset.poll === "always" || current.dataset.jobId === id) refreshSoon();
  }

  let retryDelay = 1000;
  function connect() {
    if (!("WebSocket" in window)) return;
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(`${scheme}${window.location.host}/ws/events/`);
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.event === "hello") {
        retryDelay = 1000;
        // With the in-memory channel layer the job worker (another process) cannot reach this
        // socket, so the page keeps polling; events from this process still refresh it sooner.
        if (crossProcess) {
          setMode("live");
          refresh(); // whatever changed before the socket opened
        }
        return;
      }
      onEvent(message);
    });
    socket.addEventListener("close", () => {
      setMode("polling");
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    });
  }

  // --- Confirmation dialog ------------------------------------------------------------------

  async function openDialog(link) {
    const response = await fetch(link.href, { headers: { "HX-Request": "true" }, credentials: "same-origin" });
    if (!response.ok || response.redirected) throw new Error(`confirmation answered ${response.status}`);
    dialogBody.innerHTML = await response.text();
    opener = link;
    dialog.showModal();
    // A destructive action starts on "Go back": Enter alone must not delete or cancel anything.
    const body = dialog.querySelector("[data-confirm-body]");
    const danger = body && body.dataset.danger === "true";
    const first = danger ? dialog.querySelector("[data-close]") : dialog.querySelector("input:not([type=hidden]), button, a");
    if (first) first.focus();
  }

  document.addEventListener("click", (event) => {
    const close = event.target.closest("[data-close]");
    if (close && dialog && dialog.contains(close)) {
      event.preventDefault();
      dialog.close();
      return;
    }
    const link = event.target.closest("a[data-confirm]");
    if (!link || !dialog || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    openDialog(link).catch(() => {
      window.location.href = link.href; // the confirmation page does the same without a dialog
    });
  });

  if (dialog) {
    dialog.addEventListener("close", () => {
      dialogBody.replaceChildren();
      const target = opener && document.getElementById(opener.id);
      if (target) target.focus();
      opener = null;
      if (again) refreshSoon();
    });
  }

  setMode("polling");
  connect();
})();
