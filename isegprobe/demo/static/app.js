// The demo page: it shows the server's pictures (one per probe, all on the same clicks) and sends clicks in image
// pixels; all state lives on the server.
"use strict";

const panels = document.getElementById("panels");
const imageList = document.getElementById("images");
const statusLine = document.getElementById("status");
const errorLine = document.getElementById("error");
const truthLine = document.getElementById("truth");
const view = document.getElementById("view");
let state = null;
let zoom = 1;
let savedObjects = 0; // finished objects of the open image that Save has downloaded

async function call(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json();
  if (!response.ok) {
    errorLine.textContent = body.detail || response.statusText;
    return;
  }
  errorLine.textContent = "";
  show(body);
}

function post(path, payload) {
  return call(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: payload === undefined ? undefined : JSON.stringify(payload),
  });
}

function show(next) {
  if (state === null || next.image !== state.image) {
    savedObjects = 0;
  }
  state = next;
  if (imageList.options.length !== state.images.length) {
    imageList.replaceChildren(...state.images.map((name) => new Option(name, name)));
  }
  if (state.image === null) {
    return;
  }
  imageList.value = state.image;
  showPanels(state.panels);
  const clicks = state.clicks.length;
  statusLine.textContent =
    `${state.image} (${state.width} x ${state.height})\n` +
    `${clicks} click${clicks === 1 ? "" : "s"}, ${state.objects} object${state.objects === 1 ? "" : "s"} done\n` +
    `last request took ${state.seconds.toFixed(2)} s`;
  truthLine.textContent = truthText(state, state.panels[0]);
}

// One figure per probe: its label and IoU above its picture.
function showPanels(shown) {
  if (panels.children.length !== shown.length) {
    panels.replaceChildren(
      ...shown.map(() => {
        const figure = document.createElement("figure");
        const picture = document.createElement("img");
        picture.className = "picture";
        picture.alt = "";
        figure.append(document.createElement("figcaption"), picture);
        return figure;
      }),
    );
  }
  shown.forEach((panel, index) => {
    const [caption, picture] = panels.children[index].children;
    caption.textContent = panel.label + (panel.iou === null ? "" : `: IoU ${(100 * panel.iou).toFixed(1)} %`);
    picture.src = panel.picture;
    picture.style.width = `${state.width * zoom}px`;
  });
}

function truthText(shown, first) {
  if (!shown.ground_truth) {
    return "";
  }
  if (shown.truth_object === 0) {
    return "Ground truth: the first positive click picks the object.";
  }
  return `IoU with ground-truth object ${shown.truth_object}: ${(100 * first.iou).toFixed(1)} %`;
}

function imagePixel(event) {
  const box = event.target.getBoundingClientRect();
  const x = Math.floor(((event.clientX - box.left) / box.width) * state.width);
  const y = Math.floor(((event.clientY - box.top) / box.height) * state.height);
  return { x: Math.min(Math.max(x, 0), state.width - 1), y: Math.min(Math.max(y, 0), state.height - 1) };
}

// Panning: drag with the middle button, or with the left button while shift is held.
let drag = null;
panels.addEventListener("mousedown", (event) => {
  if (state === null || state.image === null || !event.target.classList.contains("picture")) {
    return;
  }
  event.preventDefault();
  if (event.button === 1 || (event.button === 0 && event.shiftKey)) {
    drag = { x: event.clientX, y: event.clientY, left: view.scrollLeft, top: view.scrollTop };
  } else if (event.button === 0 || event.button === 2) {
    post("/api/click", { ...imagePixel(event), positive: event.button === 0 });
  }
});
window.addEventListener("mousemove", (event) => {
  if (drag !== null) {
    view.scrollLeft = drag.left - (event.clientX - drag.x);
    view.scrollTop = drag.top - (event.clientY - drag.y);
  }
});
window.addEventListener("mouseup", () => {
  drag = null;
});
panels.addEventListener("contextmenu", (event) => event.preventDefault());

view.addEventListener(
  "wheel",
  (event) => {
    if (state === null || state.image === null) {
      return;
    }
    event.preventDefault();
    zoom = Math.min(Math.max(zoom * (event.deltaY < 0 ? 1.25 : 0.8), 0.1), 16);
    for (const picture of panels.querySelectorAll(".picture")) {
      picture.style.width = `${state.width * zoom}px`;
    }
  },
  { passive: false },
);

// Opening or uploading another image drops the open one's finished objects: ask first where some are not saved.
function mayLeave() {
  const unsaved = state === null || state.image === null ? 0 : state.objects - savedObjects;
  if (unsaved <= 0) {
    return true;
  }
  const objects = `${unsaved} finished object${unsaved === 1 ? "" : "s"}`;
  return window.confirm(`${objects} of ${state.image} not saved (Save downloads them): open another image anyway?`);
}

// Keys act on the page, not on whatever control was used last: a focused list or button would take them.
imageList.addEventListener("change", () => {
  imageList.blur();
  if (!mayLeave()) {
    imageList.value = state.image;
    return;
  }
  post("/api/open", { name: imageList.value });
});
document.getElementById("upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (file && mayLeave()) {
    await call(`/api/upload?name=${encodeURIComponent(file.name)}`, { method: "POST", body: file });
  }
});
for (const [id, path] of [["undo", "/api/undo"], ["reset", "/api/reset"], ["finish", "/api/finish"]]) {
  document.getElementById(id).addEventListener("click", (event) => {
    event.currentTarget.blur();
    post(path);
  });
}
document.getElementById("save").addEventListener("click", (event) => {
  event.currentTarget.blur();
  if (state !== null && state.image !== null) {
    savedObjects = state.objects;
    window.location.href = "/api/instances.png";
  }
});
document.addEventListener("keydown", (event) => {
  const actions = { z: "/api/undo", Backspace: "/api/undo", r: "/api/reset", " ": "/api/finish" };
  if (event.key in actions) {
    event.preventDefault();
    post(actions[event.key]);
  }
});

call("/api/state");
