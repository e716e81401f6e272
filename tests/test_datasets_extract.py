"""`extract-features` over a tiny tree of every dataset family, each in that family's exact on-disk layout."""

import json
import pickle

import cv2
import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from dataset_trees import berkeley_tree, sbd_tree, use_dataset_config, write_image, write_mask
from PIL import Image

from isegprobe.cache import CachedDataset
from isegprobe.commands.extract import extract_features
from isegprobe.data import create_dataset

pytest.importorskip("pycocotools")
H, W = 20, 30
SIZE = 28


def _img_gt(root, stems):
    """DAVIS and COCO_MVal: `img/<stem>.jpg` and `gt/<stem>.png`, one object drawn in a single colour channel."""
    for seed, stem in enumerate(stems):
        write_image(root / "img" / f"{stem}.jpg", H, W, seed)
        mask = np.zeros((H, W, 3), np.uint8)
        mask[2:10, 3:12, seed % 3] = 255
        write_mask(root / "gt" / f"{stem}.png", mask)
    return root


def davis(root):
    return _img_gt(root, ["bear", "camel"])


def coco_mval(root):
    return _img_gt(root, ["airplane00_000000281693", "airplane01_000000281693"])


def pascalvoc(root):
    indices = np.zeros((H, W), np.uint8)
    indices[2:8, 2:8] = 1
    indices[10:16, 12:24] = 2
    indices[1, :] = 255
    for name in ("2007_000032", "2007_000033"):
        write_image(root / "JPEGImages" / f"{name}.jpg", H, W)
        palette = Image.fromarray(indices)
        palette.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
        (root / "SegmentationObject").mkdir(parents=True, exist_ok=True)
        palette.save(root / "SegmentationObject" / f"{name}.png")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000032\n2007_000033\n")
    return root


def cocolvis(root):
    split = root / "val"
    layer0 = np.zeros((H, W), np.uint8)
    layer0[0:10, 0:10] = 1
    layer0[15:20, :] = 2  # a stuff region
    layer1 = np.zeros((H, W), np.uint8)
    layer1[5:15, 5:15] = 1  # on another layer, overlapping the first object
    packed = ([cv2.imencode(".png", layer)[1] for layer in (layer0, layer1)], [(0, 1), (1, 1), (0, 2)])
    hierarchy = {0: {"parent": None, "children": [1]}, 1: {"parent": 0, "children": []}}
    (split / "masks").mkdir(parents=True)
    for image_id in ("42", "43"):
        write_image(split / "images" / f"{image_id}.jpg", H, W)
        (split / "masks" / f"{image_id}.pickle").write_bytes(pickle.dumps(packed))
    annotations = {image_id: {"hierarchy": hierarchy, "num_instance_masks": 2} for image_id in ("42", "43")}
    (split / "hannotation.pickle").write_bytes(pickle.dumps(annotations))
    return root


def _square(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def lvis(root):
    write_image(root / "train" / "images" / "000000000009.jpg", H, W)
    write_image(root / "val" / "images" / "000000000139.jpg", H, W)
    urls = [
        "http://images.cocodataset.org/train2017/000000000009.jpg",
        "http://images.cocodataset.org/val2017/000000000139.jpg",
    ]
    squares = [
        (1, _square(0, 0, 10, 10)),
        (1, _square(1, 1, 9, 9)),
        (1, _square(20, 10, 28, 18)),
        (2, _square(5, 5, 15, 15)),
    ]
    labels = {
        "images": [{"id": i + 1, "coco_url": url, "height": H, "width": W} for i, url in enumerate(urls)],
        "annotations": [{"id": i, "image_id": image, "segmentation": s} for i, (image, s) in enumerate(squares)],
    }
    (root / "val" / "lvis_val.json").write_text(json.dumps(labels))
    return root


def _coco_json(file_names):
    return {
        "images": [{"id": i + 1, "file_name": name, "height": H, "width": W} for i, name in enumerate(file_names)],
        "annotations": [
            {"id": 10, "image_id": 1, "segmentation": _square(2, 2, 12, 12), "iscrowd": 0},
            {"id": 11, "image_id": 1, "segmentation": _square(8, 8, 20, 16), "iscrowd": 0},
            {"id": 12, "image_id": 2, "segmentation": _square(15, 0, 29, 19), "iscrowd": 0},
            {"id": 13, "image_id": 2, "segmentation": _square(0, 0, 14, 19), "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }


def coco(root):
    names = ["000000000001.jpg", "000000000002.jpg", "000000000003.jpg"]  # the third has no annotation
    for seed, name in enumerate(names):
        write_image(root / "val2017" / name, H, W, seed)
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(_coco_json(names)))
    return root


def custom_json(root):
    write_image(root / "images" / "a.png", H, W)
    write_image(root / "b.png", H, W)
    (root / "labels.json").write_text(json.dumps(_coco_json(["a.png", "b.png"])))
    return root / "labels.json"


def ade20k(root):
    scene = root / "images" / "validation" / "a" / "abbey"
    seg = np.zeros((H, W, 3), np.uint8)  # RGB: R and G encode the class, B the instance
    seg[2:8, 2:8] = (10, 5, 7)
    seg[10:16, 12:24] = (20, 3, 9)
    for name, values in (("ADE_val_00000001", seg), ("ADE_val_00000002", np.zeros_like(seg))):
        write_image(scene / f"{name}.jpg", H, W)
        write_mask(scene / f"{name}_seg.png", values)
    return root


def openimages(root):
    split = root / "validation"
    half = np.zeros((H // 2, W // 2), np.uint8)
    half[0:4, 0:5] = 255  # masks come at their own resolution
    full = np.zeros((H, W), np.uint8)
    full[8:16, 10:25] = 255
    write_image(split / "images" / "0001eeaf4aed83f9.jpg", H, W)
    write_image(split / "images" / "000a1249af2bc5f0.jpg", H, W)
    write_mask(split / "masks" / "0001eeaf4aed83f9_m0cmf2_a.png", half)
    write_mask(split / "masks" / "0001eeaf4aed83f9_m0k4j_b.png", full)
    write_mask(split / "masks" / "000a1249af2bc5f0_m01g317_c.png", full)
    (split / "validation-annotations-object-segmentation.csv").write_text(
        "MaskPath,ImageID,LabelName,BoxID,BoxXMin,BoxXMax,BoxYMin,BoxYMax,PredictedIoU,Clicks\n"
        "0001eeaf4aed83f9_m0cmf2_a.png,0001eeaf4aed83f9,/m/0cmf2,a,0,0.5,0,0.5,0.9,\n"
        "0001eeaf4aed83f9_m0k4j_b.png,0001eeaf4aed83f9,/m/0k4j,b,0.3,0.8,0.4,0.8,0.8,\n"
        "000a1249af2bc5f0_m01g317_c.png,000a1249af2bc5f0,/m/01g317,c,0.3,0.8,0.4,0.8,0.7,\n"
    )
    return root


# dataset, tree, split, items the loader yields, instances in item 0
CASES = [
    pytest.param("berkeley", lambda root: berkeley_tree(root, images=2, extra_masks=1), "test", 2, 2, id="berkeley"),
    pytest.param("davis", davis, "test", 2, 1, id="davis"),
    pytest.param("coco_mval", coco_mval, "test", 2, 1, id="coco_mval"),
    pytest.param("sbd", sbd_tree, "val", 2, 2, id="sbd"),
    pytest.param("sbd", sbd_tree, "val-instances", 5, 1, id="sbd-instances"),
    pytest.param("pascalvoc", pascalvoc, "val", 2, 2, id="pascalvoc"),
    pytest.param("cocolvis", cocolvis, "val", 2, 2, id="cocolvis"),
    pytest.param("lvis", lvis, "val", 2, 2, id="lvis"),  # 3 objects, one dropped by the configured overlap filter
    pytest.param("coco", coco, "val", 2, 2, id="coco"),
    pytest.param("ade20k", ade20k, "val", 2, 2, id="ade20k"),
    pytest.param("openimages", openimages, "val", 2, 2, id="openimages"),
    pytest.param("custom", lambda root: berkeley_tree(root, images=3, extra_masks=0), "mine", 3, 1, id="custom"),
    pytest.param("custom", custom_json, "test", 2, 2, id="custom-json"),
]


@pytest.mark.filterwarnings("ignore::isegprobe.featurizers.RandomWeightsWarning")
@pytest.mark.parametrize(("name", "build", "split", "items", "instances"), CASES)
def test_extract_features_reads_every_family(name, build, split, items, instances, tmp_path, monkeypatch):
    use_dataset_config(monkeypatch, tmp_path, options={"lvis": {"val": {"max_overlap_ratio": 0.5}}})
    root, out = build(tmp_path / "data"), tmp_path / "out"
    args = ["--featurizer", "vit_small_patch14_dinov2", "--weights", "random", "--dataset", name, "--root", str(root)]
    args += ["--split", split, "--size", str(SIZE), "--views", "identity,hflip", "--workers", "0", "--device", "cpu"]
    result = CliRunner().invoke(extract_features, [*args, "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    dataset = create_dataset(name, root, split)
    assert len(dataset) == items
    (path,) = out.iterdir()
    store = zarr.open(str(path), mode="r")
    assert store.attrs["item_ids"] == list(dataset.ids())
    features = store["features"][:]
    assert features.dtype == np.float16 and features.shape == (items, 2, 384, 2, 2)
    assert np.isfinite(features).all() and features.any()
    assert store["done"][:].tolist() == [1] * items
    (labels,) = store["labels"][0]  # the hflip view keeps no pixels: it reads the identity view's, mirrored
    assert set(np.unique(labels).tolist()) == set(range(instances + 1))
    sample = dataset[0]
    np.testing.assert_array_equal(labels, cv2.resize(sample.labels, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST))
    np.testing.assert_array_equal(CachedDataset(path)[1]["labels"].numpy(), labels[:, ::-1])
    np.testing.assert_array_equal(store["images"][0, 0], cv2.resize(sample.image, (SIZE, SIZE)))


@pytest.mark.filterwarnings("ignore::isegprobe.featurizers.RandomWeightsWarning")
def test_a_per_instance_split_whose_annotation_cannot_be_counted_is_refused_before_its_store(tmp_path):
    """The unreadable .mat counted one instance, so the store listed 2008_000002_1 alone; once the file was fixed as
    the message said, its three instances made other items than the store's, and the same command was refused."""
    root, out = sbd_tree(tmp_path / "SBD"), tmp_path / "out"
    mat = root / "inst" / "2008_000002.mat"
    kept = mat.read_bytes()
    mat.write_bytes(kept[: len(kept) // 2])
    args = ["--featurizer", "vit_small_patch14_dinov2", "--weights", "random", "--dataset", "sbd", "--root", str(root)]
    args += ["--split", "val-instances", "--size", str(SIZE), "--views", "identity", "--workers", "0"]
    args += ["--items-per-shard", "1", "--out", str(out)]
    refused = CliRunner().invoke(extract_features, args)
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert f"{mat}: cannot read GTinst.Segmentation" in refused.output
    assert "--split val-instances gives one item per instance, and this file's instances cannot be counted" in (
        refused.output
    )
    assert not out.exists() or not any(out.iterdir()), "nothing was written"
    mat.write_bytes(kept)
    done = CliRunner().invoke(extract_features, args)
    assert done.exit_code == 0, done.output
    (path,) = out.iterdir()
    assert zarr.open(str(path), mode="r").attrs["item_ids"] == create_dataset("sbd", root, "val-instances").ids()
