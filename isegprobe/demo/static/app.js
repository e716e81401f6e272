// The demo page: it shows the server's picture and sends clicks in image pixels; all state lives on the server.
"use strict";

const picture = document.getElementById("picture");
const imageList = document.getElementById("images");
const statusLine = document.getElementById("status");
const errorLine = document.getElementById("error");
const truthLine = document.getElementById("truth");
const view = document.getElementById("view");
let state = null;
let zoom = 1;

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
  state = next;
  if (imageList.options.length !== state.images.length) {
    imageList.replaceChildren(...state.images.map((name) => new Option(name, name)));
  }
  if (state.image === null) {
    return;
  }
  imageList.value = state.image;
  picture.src = state.picture;
  picture.style.width = `${state.width * zoom}px`;
  const clicks = state.clicks.length;
  statusLine.textContent =
    `${state.image} (${state.width} x ${state.height})\n` +
    `${clicks} click${clicks === 1 ? "" : "s"}, ${state.objects} object${state.objects === 1 ? "" : "s"} done\n` +
    `last request took ${state.seconds.toFixed(2)} s`;
  truthLine.textContent = truthText(state);
}

function truthText(shown) {
  if (!shown.ground_truth) {
    return "";
  }
  if (shown.truth_object === 0) {
    return "Ground truth: the first positive click picks the object.";
  }
  return `IoU with ground-truth object ${shown.truth_object}: ${(100 * shown.iou).toFixed(1)} %`;
}

function imagePixel(event) {
  const box = picture.getBoundingClientRect();
  const x = Math.floor(((event.clientX - box.left) / box.width) * state.width);
  const y = Math.floor(((event.clientY - box.top) / box.height) * state.height);
  return { x: Math.min(Math.max(x, 0), state.width - 1), y: Math.min(Math.max(y, 0), state.height - 1) };
}

// Panning: drag with the middle button, or with the left button while shift is held.
let drag = null;
picture.addEventListener("mousedown", (event) => {
  if (state === null || state.image === null) {
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
picture.addEventListener("contextmenu", (event) => event.preventDefault());

view.addEventListener(
  "wheel",
  (event) => {
    if (state === null || state.image === null) {
      return;
    }
    event.preventDefault();
    zoom = Math.min(Math.max(zoom * (event.deltaY < 0 ? 1.25 : 0.8), 0.1), 16);
    picture.style.width = `${state.width * zoom}px`;
  },
  { passive: false },
);

// Keys act on the page, not on whatever control was used last: a focused list or button would take them.
imageList.addEventListener("change", () => {
  imageList.blur();
  post("/api/open", { name: imageList.value });
});
document.getElementById("upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (file) {
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
