// Image: the vision form's drop zone (drop a file or choose one), with a preview.
import "./common.js";

const form = document.querySelector("[data-vision]");
if (form) init(form);

function init(form) {
  const zone = form.querySelector("[data-drop]");
  const input = form.elements.image;
  const label = zone.querySelector("[data-drop-label]");
  const preview = zone.querySelector("[data-drop-preview]");
  let previewUrl = null;

  function show(file) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    if (!file) {
      preview.hidden = true;
      label.textContent = "Drop an image here, or choose a file";
      return;
    }
    label.textContent = file.name;
    if (file.type.startsWith("image/")) {
      previewUrl = URL.createObjectURL(file);
      preview.src = previewUrl;
      preview.hidden = false;
    }
  }

  input.addEventListener("change", () => show(input.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("pg-drop-over");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("pg-drop-over"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const files = event.dataTransfer && event.dataTransfer.files;
    if (!files || !files.length) return;
    const transfer = new DataTransfer();
    transfer.items.add(files[0]);
    input.files = transfer.files;
    show(files[0]);
  });
}
