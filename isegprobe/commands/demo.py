"""`isegprobe demo`: click on images in the browser and watch a trained probe segment them."""

from __future__ import annotations

import contextlib
import socket

import click

from isegprobe.commands.errors import reports_user_errors
from isegprobe.commands.limits import max_pixels_option, threshold_option
from isegprobe.commands.options import allow_torchscript_option, checkpoint_option, device_option
from isegprobe.data import list_datasets
from isegprobe.demo.catalog import Catalog, DatasetCatalog, ImageCatalog
from isegprobe.errors import UserError
from isegprobe.weights_files import require_weights_file

DEFAULT_SPLIT = "test"  # a dataset's evaluation split, as every catalog entry's `test` resolves it


@click.command("demo")
@checkpoint_option
@click.option(
    "--compare",
    multiple=True,
    type=click.Path(exists=True),
    help="Another probe (RUN_DIR or one checkpoint of it), shown beside the first on the same clicks; repeatable.",
)
@click.option("--images", type=click.Path(exists=True, file_okay=False), help="A folder of images to list.")
@click.option("--image", type=click.Path(exists=True, dir_okay=False), help="One image to list.")
@click.option(
    "--dataset",
    default=None,
    help=f"List a dataset's images with their ground truth, and show the IoU; one of: {', '.join(list_datasets())}.",
)
@click.option(
    "--root",
    default=None,
    help="Folder of --dataset in its usual layout; default: its configured root (see `datasets list`); builtin "
    "has none.",
)
@click.option("--split", default=None, help=f"Split of --dataset.  [default: {DEFAULT_SPLIT}]")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to bind; 0.0.0.0 exposes the demo to the network."
)
@click.option("--port", default=8765, show_default=True, type=click.IntRange(1, 65535), help="Port of the page.")
@click.option(
    "--weights",
    "featurizer_weights",
    multiple=True,
    help="A featurizer's weights file, when the one a checkpoint records moved (another machine): the same file, "
    "found by the sha256 the checkpoint records, which also says which probes it belongs to; repeatable (probes on "
    "several featurizers).",
)
@device_option
@click.option(
    "--zoom-in", is_flag=True, help="RITM's zoom-in from the second click on (the featurizer runs per click)."
)
@threshold_option
@max_pixels_option
@allow_torchscript_option
@reports_user_errors
def demo(
    checkpoint: str,
    compare: tuple[str, ...],
    images: str | None,
    image: str | None,
    dataset: str | None,
    root: str | None,
    split: str | None,
    host: str,
    port: int,
    featurizer_weights: tuple[str, ...],
    device: str,
    zoom_in: bool,
    threshold: float,
) -> None:
    """Serve a local web page on which a probe segments what you click.

    Images come from --images, --image or --dataset, or are uploaded on the page. Left clicks are positive and
    right clicks negative, scroll zooms, middle or shift drag moves, z (or ctrl-z, backspace) undoes, r resets and
    space finishes an object; finished objects download as one instance-id PNG. With --dataset, the object under the
    first positive click is compared with the ground truth and its IoU shown. With --compare, other probes segment
    beside the first on the same clicks (finish keeps the first one's mask).

    \b
    On a remote GPU server, forward the port and open http://127.0.0.1:8765 locally:
        ssh -L 8765:127.0.0.1:8765 server
    The featurizer the probe was trained on is rebuilt from the checkpoint and runs once per image; on another
    machine than the one it was trained on, --weights says where its weights file is now.
    """
    # The web stack is imported here, not with the CLI: every other command starts without it.
    import uvicorn

    from isegprobe.demo.app import build_app
    from isegprobe.demo.guard import DemoAddress

    for path in featurizer_weights:
        require_weights_file(path, "--weights")
    catalog = _catalog(images, image, dataset, root, split)
    app = build_app([checkpoint, *compare], catalog, device, zoom_in, threshold, host, port, featurizer_weights)
    listening = _listening_socket(host, port)
    click.echo(f"isegprobe demo on {DemoAddress(host, port).url()} (Ctrl-C stops it)")
    if not (images or image or dataset):
        click.echo("no --images, --image or --dataset given: upload images with the page's upload button")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C, which the server passes on once it has shut down
        server.run(sockets=[listening])


def _listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the page is announced: a port in use (another demo) or a host this
    machine does not have is said naming the options, where the server would log it after the announcement and
    exit with status 3."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listening = socket.socket(family, socket.SOCK_STREAM)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
    except OSError as error:
        raise UserError(
            f"--host {host} --port {port}: cannot serve there ({error.strerror or error}); pass another --port "
            "(or --host)"
        ) from None
    return listening


def _catalog(
    images: str | None, image: str | None, dataset: str | None, root: str | None, split: str | None
) -> Catalog:
    """The images the page lists; `split` is None where --split was not given (DEFAULT_SPLIT of a dataset)."""
    given = [option for option, value in (("--images", images), ("--image", image), ("--dataset", dataset)) if value]
    if len(given) > 1:
        raise UserError(f"{' and '.join(given)}: give one of them (or none, and upload images on the page)")
    if dataset is not None:
        return DatasetCatalog.from_options(dataset, root, split or DEFAULT_SPLIT)
    unread = [f"{option} {value}" for option, value in (("--root", root), ("--split", split)) if value is not None]
    if unread:
        raise UserError(f"{' and '.join(unread)}: options of --dataset, which was not given; add --dataset NAME")
    return ImageCatalog.from_options(images, image)
