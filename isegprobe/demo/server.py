"""The demo's web server: one page and a small JSON API around a `DemoSession`.

One session per server: the demo is for one person at a time, on their own machine or through an SSH tunnel
(`ssh -L 8765:127.0.0.1:8765 server`), so it binds to 127.0.0.1 unless told otherwise. Requests are served one at a
time (a lock), since they all act on that one session.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from isegprobe.data.image_io import decode_bytes
from isegprobe.demo.catalog import Catalog
from isegprobe.demo.picture import compose, encode
from isegprobe.demo.session import DemoSession
from isegprobe.errors import UserError

STATIC = Path(__file__).parent / "static"
# Pictures are sent at most this many pixels on a side (a phone photo would be megabytes per click through an SSH
# tunnel); the page maps clicks through the image's own width and height, so they stay in original pixels.
DISPLAY_MAX_SIDE = 1600
# Uploads larger than this are refused before decoding (a 100-megapixel JPEG is about 30 MiB).
MAX_UPLOAD_BYTES = 64 * 1024 * 1024


class ClickRequest(BaseModel):
    x: int
    y: int
    positive: bool


class OpenImage(BaseModel):
    name: str


def create_app(session: DemoSession, catalog: Catalog) -> FastAPI:
    """The page at /, its script under /static, and /api: state, open, upload, click, undo, reset, finish, and the
    instance map as a 16-bit PNG. Every answer is the whole state the page shows; bad input answers 400 with why."""
    app = FastAPI(title="isegprobe demo", docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    lock = threading.Lock()
    timing = {"seconds": 0.0}

    def act(action: Callable[[], Any]) -> dict[str, Any]:
        """Run one session action under the lock; bad input becomes a 400 with the message."""
        with lock:
            started = time.perf_counter()
            try:
                action()
            except UserError as error:
                raise HTTPException(status_code=400, detail=str(error)) from None
            timing["seconds"] = time.perf_counter() - started
            return _state(session, catalog, timing["seconds"])

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return (STATIC / "index.html").read_text()

    @app.get("/api/state")
    def state() -> dict[str, Any]:
        with lock:
            return _state(session, catalog, timing["seconds"])

    @app.post("/api/open")
    def open_image(request: OpenImage) -> dict[str, Any]:
        return act(lambda: session.open(request.name, *catalog.read(request.name)))

    @app.post("/api/upload")
    async def upload(request: Request, name: str = "upload") -> dict[str, Any]:
        declared = int(request.headers.get("content-length") or 0)
        if declared > MAX_UPLOAD_BYTES:
            raise HTTPException(status_code=413, detail=_too_large(name, declared))
        data = await request.body()
        if len(data) > MAX_UPLOAD_BYTES:
            raise HTTPException(status_code=413, detail=_too_large(name, len(data)))

        def open_upload() -> None:
            """Truncated or undecodable bytes are refused as a file on disk would be (data/image_io.py)."""
            image = decode_bytes(data, cv2.IMREAD_COLOR, name, "image")
            session.open(name, cv2.cvtColor(image, cv2.COLOR_BGR2RGB))

        return act(open_upload)

    @app.post("/api/click")
    def click(request: ClickRequest) -> dict[str, Any]:
        return act(lambda: session.click(request.y, request.x, request.positive))

    @app.post("/api/undo")
    def undo() -> dict[str, Any]:
        return act(session.undo)

    @app.post("/api/reset")
    def reset() -> dict[str, Any]:
        return act(session.reset)

    @app.post("/api/finish")
    def finish() -> dict[str, Any]:
        return act(session.finish)

    @app.get("/api/instances.png")
    def instances() -> Response:
        with lock:
            if session.image is None:
                raise HTTPException(status_code=400, detail="no image is open")
            data = encode(session.image.instances)
            stem = Path(session.image.name).stem
        headers = {"Content-Disposition": f'attachment; filename="{stem}_instances.png"'}
        return Response(data, media_type="image/png", headers=headers)

    return app


def _too_large(name: str, size: int) -> str:
    return f"{name}: {size / 2**20:.0f} MiB, more than the {MAX_UPLOAD_BYTES // 2**20} MiB an upload may have"


def _state(session: DemoSession, catalog: Catalog, seconds: float) -> dict[str, Any]:
    """Everything the page shows: per probe its label, its picture (a JPEG data URL: small enough for an SSH tunnel)
    and its IoU against the ground truth."""
    image = session.image
    state: dict[str, Any] = {"images": catalog.names(), "image": None, "seconds": round(seconds, 3)}
    if image is None:
        return state
    height, width = image.pixels.shape[:2]
    scale = min(1.0, DISPLAY_MAX_SIDE / max(height, width))
    display = (max(1, round(width * scale)), max(1, round(height * scale)))
    panels = []
    for index, probe in enumerate(session.probes):
        picture = compose(image.pixels, image.instances, session.mask(index), session.clicks)
        if scale < 1:
            picture = cv2.resize(picture, display, interpolation=cv2.INTER_AREA)
        data_url = "data:image/jpeg;base64," + base64.b64encode(encode(picture, ".jpg")).decode()
        panels.append({"label": probe.label, "picture": data_url, "iou": session.truth_iou(index)})
    state.update(
        image=image.name,
        width=width,
        height=height,
        clicks=[{"x": click.x, "y": click.y, "positive": click.is_positive} for click in session.clicks],
        objects=int(image.instances.max()),
        ground_truth=image.truth is not None,
        truth_object=session.truth_object(),
        panels=panels,
    )
    return state
