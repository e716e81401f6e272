"""MaskCLIP in research precision against the iSegProbe research code's own MaskCLIPFeaturizer: the same random
OpenAI-format ViT-B/16 weights, the same images and early-fusion click tokens; the features must be equal to the bit.

On CUDA the research code runs MaskCLIP in float16, as OpenAI's `clip.load` leaves it there; isegprobe's `maskclip`
does so under `model.research_precision` (isegprobe/featurizers/clip_float16.py). On a CPU `clip.load` turns the model
back to float32, and so does isegprobe; `--float16` runs both in float16 there too. Both run under the research
code's deterministic settings (`isegprobe.devices.deterministic_arithmetic`).

The research code is no part of isegprobe: `--research-src` names a checkout of havrylovv/iSegProbe. Only its
`core/model/featurizers/MaskCLIP.py` and `maskclip/` package are imported, the packages above them not run; where
`pkg_resources` or `ftfy` are missing (its tokenizer's imports, never called here) stand-ins take their place.

    python benchmarks/research_maskclip.py --research-src ../iSegProbe --device cuda
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import types
import warnings
from pathlib import Path

import torch
from torch import nn

from isegprobe.devices import deterministic_arithmetic
from isegprobe.featurizers import create_featurizer

WIDTH, LAYERS, PATCH, GRID, EMBED = 768, 12, 16, 14, 512
# (height, width) of the images; the research code's early fusion reads its position table transposed off square
# images (docs/isegprobe-parity.md), so its click tokens are compared on square ones only.
SIZES = ((224, 224), (448, 448), (224, 336), (160, 208))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--research-src", type=Path, required=True, help="checkout of havrylovv/iSegProbe")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--float16", action="store_true", help="on a CPU: both in float16, as on CUDA")
    return parser.parse_args()


def openai_clip_state(path: Path, seed: int = 0) -> None:
    """Random float16 weights under OpenAI CLIP ViT-B/16's names; the text tower one small block, which the
    research code's `build_model` needs to build the model and MaskCLIP never runs."""
    generator = torch.Generator().manual_seed(seed)

    def tensor(*shape: int, scale: float = 0.02, mean: float = 0.0) -> torch.Tensor:
        return (mean + scale * torch.randn(*shape, generator=generator)).half()

    def blocks(prefix: str, width: int, layers: int) -> dict[str, torch.Tensor]:
        state = {}
        for index in range(layers):
            block = f"{prefix}.{index}."
            state |= {
                block + "ln_1.weight": tensor(width, scale=0.05, mean=1.0),
                block + "ln_1.bias": tensor(width),
                block + "attn.in_proj_weight": tensor(3 * width, width),
                block + "attn.in_proj_bias": tensor(3 * width),
                block + "attn.out_proj.weight": tensor(width, width),
                block + "attn.out_proj.bias": tensor(width),
                block + "ln_2.weight": tensor(width, scale=0.05, mean=1.0),
                block + "ln_2.bias": tensor(width),
                block + "mlp.c_fc.weight": tensor(4 * width, width),
                block + "mlp.c_fc.bias": tensor(4 * width),
                block + "mlp.c_proj.weight": tensor(width, 4 * width),
                block + "mlp.c_proj.bias": tensor(width),
            }
        return state

    text_width = 64
    state = {
        "visual.class_embedding": tensor(WIDTH, scale=0.5),
        "visual.positional_embedding": tensor(GRID * GRID + 1, WIDTH, scale=0.5),
        "visual.proj": tensor(WIDTH, EMBED),
        "visual.conv1.weight": tensor(WIDTH, 3, PATCH, PATCH),
        "visual.ln_pre.weight": tensor(WIDTH, scale=0.05, mean=1.0),
        "visual.ln_pre.bias": tensor(WIDTH),
        "visual.ln_post.weight": tensor(WIDTH, scale=0.05, mean=1.0),
        "visual.ln_post.bias": tensor(WIDTH),
        **blocks("visual.transformer.resblocks", WIDTH, LAYERS),
        "positional_embedding": tensor(77, text_width),
        "text_projection": tensor(text_width, EMBED),
        "logit_scale": torch.tensor(4.6052, dtype=torch.float16),
        "token_embedding.weight": tensor(10, text_width),
        "ln_final.weight": tensor(text_width, scale=0.05, mean=1.0),
        "ln_final.bias": tensor(text_width),
        **blocks("transformer.resblocks", text_width, 1),
    }
    torch.save(state, path)


def import_research(src: Path) -> tuple[type, types.ModuleType]:
    """The research code's MaskCLIPFeaturizer class and its CLIP `model` module, without running the package
    `__init__` files above them (they import the whole research model zoo and its logging's dependencies)."""
    if not (src / "core/model/featurizers/MaskCLIP.py").is_file():
        raise SystemExit(f"--research-src {src}: no core/model/featurizers/MaskCLIP.py (not an iSegProbe checkout)")
    for name in ("pkg_resources", "ftfy"):
        try:
            __import__(name)
        except ImportError:
            stand_in = types.ModuleType(name)
            if name == "pkg_resources":
                import packaging.version

                stand_in.packaging = packaging
            sys.modules[name] = stand_in
    for name in ("core", "core.model", "core.model.featurizers", "core.utils"):
        package = types.ModuleType(name)
        package.__path__ = [str(src / name.replace(".", "/"))]
        sys.modules[name] = package
    log = types.ModuleType("core.utils.log")
    log.logger = logging.getLogger("research")
    sys.modules["core.utils.log"] = log
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from core.model.featurizers import MaskCLIP
        from core.model.featurizers.maskclip import model as clip_model
    return MaskCLIP.MaskCLIPFeaturizer, clip_model


def research_featurizer(
    featurizer_class: type, clip_model: types.ModuleType, state: dict, device: str, float16: bool
) -> nn.Module:
    """Built as its `__init__` builds it through `clip.load`: `build_model` (float16 weights), moved to the device,
    back to float32 unless on CUDA (or `float16`). Its `feats_injection_mode` says whether click tokens go in."""
    featurizer = object.__new__(featurizer_class)
    nn.Module.__init__(featurizer)
    model = clip_model.build_model(state).to(device)
    featurizer.model = model if float16 else model.float()
    featurizer.patch_size = model.visual.patch_size
    return featurizer.requires_grad_(False).eval()


def main() -> None:
    args = parse_args()
    float16 = args.device.startswith("cuda") or args.float16
    featurizer_class, clip_model = import_research(args.research_src)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip_vit_b16_random.pt"
        openai_clip_state(path)
        state = torch.load(path)
        ours = create_featurizer("maskclip", weights=str(path)).to(args.device).eval()
    research = research_featurizer(featurizer_class, clip_model, state, args.device, float16)
    ours.research_precision = True
    generator = torch.Generator().manual_seed(123)
    print(f"torch {torch.__version__}, {args.device}, {'float16' if float16 else 'float32'} on both sides")
    print("| image | click tokens | largest difference | values equal |")
    print("|---|---|---|---|")
    identical = True
    for height, width in SIZES:
        images = torch.randn(2, 3, height, width, generator=generator).to(args.device)
        rows, cols = height // PATCH, width // PATCH
        tokens = 0.5 * torch.randn(2, rows * cols, WIDTH, generator=generator).to(args.device)
        for fusion in (False, True) if height == width else (False,):
            research.feats_injection_mode = "before_backbone" if fusion else "no_injection"
            bias = tokens.transpose(1, 2).reshape(2, WIDTH, rows, cols) if fusion else None
            with torch.no_grad(), deterministic_arithmetic():
                expected = research(images, tokens.clone() if fusion else None).float()
                got = ours.forward_float16(images, bias) if args.float16 else ours(images, bias)
            difference = (got - expected).abs()
            identical &= torch.equal(got, expected)
            equal = (difference == 0).float().mean().item()
            print(f"| {height}x{width} | {'yes' if fusion else 'no'} | {difference.max().item():.3g} | {equal:.4f} |")
    print("PASS  bit-identical to the research code's features" if identical else "FAIL  not bit-identical")
    sys.exit(0 if identical else 1)


if __name__ == "__main__":
    main()
