"""`isegprobe demo`: click on images in the browser and watch a trained probe segment them."""

from __future__ import annotations

import click
import uvicorn

from isegprobe.commands.errors import reports_user_errors
from isegprobe.commands.options import checkpoint_option
from isegprobe.demo.app import build_app
from isegprobe.devices import default_device


@click.command("demo")
@checkpoint_option
@click.option("--images", type=click.Path(exists=True, file_okay=False), help="A folder of images to list.")
@click.option("--image", type=click.Path(exists=True, dir_okay=False), help="One image to list.")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to bind; 0.0.0.0 exposes the demo to the network."
)
@click.option("--port", default=8765, show_default=True, type=int, help="Port of the page.")
@click.option("--device", default=default_device(), show_default=True, help="cpu or cuda.")
@click.option("--zoom-in", is_flag=True, help="RITM's zoom-in from the second click on (the backbone runs per click).")
@click.option("--threshold", default=0.5, show_default=True, type=float, help="Probability threshold of the mask.")
@reports_user_errors
def demo(
    checkpoint: str,
    images: str | None,
    image: str | None,
    host: str,
    port: int,
    device: str,
    zoom_in: bool,
    threshold: float,
) -> None:
    """Serve a local web page on which left clicks are positive and right clicks negative, scroll zooms, z undoes,
    r resets and space finishes an object; finished objects download as one instance-id PNG.

    \b
    On a remote GPU server, forward the port and open http://127.0.0.1:8765 locally:
        ssh -L 8765:127.0.0.1:8765 server
    The backbone the probe was trained on is rebuilt from the checkpoint and runs once per image.
    """
    app = build_app(checkpoint, images, image, device, zoom_in, threshold)
    click.echo(f"isegprobe demo on http://{host}:{port} (Ctrl-C stops it)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
