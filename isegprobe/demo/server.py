"""The demo's web server: one page and a small JSON API around a `DemoSession`.

One session per server: the demo is for one person at a time, on their own machine or through an SSH tunnel
(`ssh -L 8765:127.0.0.1:8765 server`), so it binds to 127.0.0.1 unless told otherwise, and answers only requests for
that address from its own page (guard.py). Requests are served one at a time (a lock), since they all act on that
one session; an upload is decoded off the event loop and outside that lock, one at a time, so that a large image
neither stalls the other requests nor is decoded many times over at once.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import cv2
import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictBool, StrictStr
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool

from isegprobe.demo.catalog import Catalog
from isegprobe.demo.guard import BodyLimit, DemoAddress, RequestGuard
from isegprobe.demo.picture import compose, encode
from isegprobe.demo.session import DemoSession
from isegprobe.demo.upload import TooManyPixels, read_upload
from isegprobe.errors import UserError

STATIC = Path(__file__).parent / "static"
# Pictures are sent at most this many pixels on a side (a phone photo would be megabytes per click through an SSH
# tunnel); the page maps clicks through the image's own width and height, so they stay in original pixels.
DISPLAY_MAX_SIDE = 1600
# Uploads larger than this are refused before decoding (a 100-megapixel JPEG is about 30 MiB).
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
# Every other request carries a little JSON (a click, an image name) or nothing.
MAX_REQUEST_BYTES = 64 * 1024
UPLOAD_PATH = "/api/upload"


def _not_a_flag_or_text(value: object) -> object:
    """Pydantic's integers take `true` as 1 and `"3"` as 3: a client that sends those has a bug the demo should
    name, not a click it should record. Numbers go on to its integer check, which names a NaN, an infinity or a
    fraction, and takes 3.0 as 3."""
    if isinstance(value, bool | str):
        raise PydanticCustomError("int_type", "Input should be a valid integer: a number, not true, false or text")
    return value


PixelIndex = Annotated[int, BeforeValidator(_not_a_flag_or_text)]


class ClickRequest(BaseModel):
    """A click in the image's own pixels; the page sends whole numbers and `positive` as true or false. A field it
    does not send (`"negative": true`, a misspelled `"postive"`) is refused, not dropped."""

    model_config = ConfigDict(extra="forbid")

    x: PixelIndex
    y: PixelIndex
    positive: StrictBool


class OpenImage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr


def create_app(session: DemoSession, catalog: Catalog, host: str = "127.0.0.1", port: int = 8765) -> FastAPI:
    """The page at /, its script under /static, and /api: state, open, upload, click, undo, reset, finish, and the
    instance map as a 16-bit PNG, for the server bound to `host`:`port`. Every answer is the whole state the page
    shows; bad input answers 400 with why, a body or image over its limit 413, a request from elsewhere than the
    demo's own address and page 403."""
    app = FastAPI(title="isegprobe demo", docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(
        RequestGuard,
        address=DemoAddress(host, port),
        limits={UPLOAD_PATH: BodyLimit(MAX_UPLOAD_BYTES, "an upload", named_by="name")},
        default=BodyLimit(MAX_REQUEST_BYTES, "a request"),
    )
    app.add_exception_handler(RequestValidationError, _bad_request)
    lock, decoding = threading.Lock(), threading.Lock()
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

    def decoded(data: bytes, name: str) -> np.ndarray:
        with decoding:
            return read_upload(data, name)

    @app.post(UPLOAD_PATH)
    async def upload(request: Request, name: str = "upload") -> dict[str, Any]:
        name = name.strip() or "upload"  # `?name=` made an image of no name, listed and downloaded as ""
        data = await request.body()  # the guard stops reading at MAX_UPLOAD_BYTES
        try:
            pixels = await run_in_threadpool(decoded, data, name)
        except TooManyPixels as error:
            raise HTTPException(status_code=413, detail=str(error)) from None
        except UserError as error:
            raise HTTPException(status_code=400, detail=str(error)) from None
        return await run_in_threadpool(act, lambda: session.open(_upload_name(name, catalog.names()), pixels))

    @app.post("/api/click")
    def click(request: ClickRequest) -> dict[str, Any]:
        return act(lambda: session.click(request.y, request.x, request.positive))

    @app.post("/api/undo", dependencies=[Depends(_no_body)])
    def undo() -> dict[str, Any]:
        return act(session.undo)

    @app.post("/api/reset", dependencies=[Depends(_no_body)])
    def reset() -> dict[str, Any]:
        return act(session.reset)

    @app.post("/api/finish", dependencies=[Depends(_no_body)])
    def finish() -> dict[str, Any]:
        return act(session.finish)

    @app.get("/api/instances.png")
    def instances() -> Response:
        with lock:
            if session.image is None:
                raise HTTPException(status_code=400, detail="no image is open")
            data = encode(session.image.instances)
            stem = Path(session.image.name).stem
        headers = {"Content-Disposition": attachment(f"{stem}_instances.png")}
        return Response(data, media_type="image/png", headers=headers)

    return app


def attachment(filename: str) -> str:
    """A Content-Disposition that saves as `filename`, whatever characters it holds (an upload's name is the
    user's): the exact name percent-encoded as UTF-8 (RFC 6266 filename*), and for old clients a fallback in which
    quotes, backslashes, control and non-ASCII characters are `_`."""
    fallback = re.sub(r"[^A-Za-z0-9 !#$%&'()+,.;=@\[\]^_`{}~-]", "_", filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def _bad_request(request: Request, error: RequestValidationError) -> JSONResponse:
    """A body that is not what the endpoint takes: 400 with one line per problem, `field: what was expected`. The
    problems are told without the input they came with: a NaN or Infinity in it cannot be written as JSON at all."""
    problems = []
    for problem in error.errors():
        whole_body = _whole_body_problem(problem, request.headers.get("content-type"))
        if whole_body is not None:
            problems.append(whole_body)
            continue
        where = ".".join(str(part) for part in problem["loc"] if part != "body")
        reason = problem["msg"] + (f" ({problem['ctx']['error']})" if "error" in problem.get("ctx", {}) else "")
        problems.append(f"{where}: {reason}" if where else reason)
    return JSONResponse({"detail": f"{request.url.path}: " + "; ".join(problems)}, status_code=400)


_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true or false"}


async def _no_body(request: Request) -> None:
    """Refuse a body on the actions that take none (undo, reset, finish act on the open image as it stands): a
    client that sends `{"object": 2}` to /api/undo expects something the demo would not do. An empty body, `{}` and
    `null` say nothing and are taken."""
    body = (await request.body()).strip()
    if body and body not in (b"{}", b"null"):
        raise HTTPException(
            status_code=400,
            detail=f"{request.url.path} takes no body: it acts on the open image as it stands ({len(body)} bytes sent)",
        )


def _whole_body_problem(problem: Mapping[str, Any], content_type: str | None) -> str | None:
    """What is wrong with a body that is not a JSON object at all, in words a client's author can act on (pydantic
    says "Field required" of a missing body and "a valid dictionary" of one sent without JSON's Content-Type, which
    FastAPI then does not parse); None for a problem of one field."""
    location, kind = tuple(problem["loc"]), problem["type"]
    if kind == "json_invalid":
        return f"the body is not valid JSON: {problem['ctx']['error']} at character {location[-1]}"
    if location != ("body",):
        return None
    if kind == "missing":
        return "the body must be a JSON object, and none was sent"
    if isinstance(problem.get("input"), bytes):
        return (
            f"the body must be JSON sent with Content-Type: application/json; this request's Content-Type is "
            f"{content_type or 'missing'}"
        )
    value = problem.get("input")
    told = "null" if value is None else _JSON_KINDS.get(type(value), type(value).__name__)
    return f"the body must be a JSON object, not {told}"


def _upload_name(name: str, listed: list[str]) -> str:
    """What an upload is called: its file name, unless an image of the list has it. Then the page would mark that
    image as open while showing the upload, and the upload's objects would download under the listed image's name."""
    taken, candidate, copy = set(listed), name, 1
    while candidate in taken:
        candidate = f"upload-{copy}-{name}" if copy > 1 else f"upload-{name}"
        copy += 1
    return candidate


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
