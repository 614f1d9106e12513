// Small progressive enhancements: copy buttons, tabs, confirmations. Pages work without it.
document.addEventListener("click", (event) => {
  const copy = event.target.closest("[data-copy-from]");
  if (copy) {
    const scope = copy.closest("section") || document;
    const source = scope.querySelector(copy.dataset.copyFrom) || document.querySelector(copy.dataset.copyFrom);
    if (source && navigator.clipboard) {
      navigator.clipboard.writeText(source.textContent.trim()).then(() => {
        const label = copy.textContent;
        copy.textContent = "Copied";
        setTimeout(() => { copy.textContent = label; }, 1500);
      });
    }
  }
  const tab = event.target.closest("[data-tabs] [data-tab]");
  if (tab) {
    const section = tab.closest("section");
    section.querySelectorAll("[data-tab]").forEach((b) => b.setAttribute("aria-selected", String(b === tab)));
    section.querySelectorAll("[data-panel]").forEach((p) => { p.hidden = p.dataset.panel !== tab.dataset.tab; });
  }
});
document.addEventListener("submit", (event) => {
  const message = event.target.dataset && event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});
