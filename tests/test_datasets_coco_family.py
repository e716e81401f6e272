"""MS COCO and custom COCO-format JSON (pycocotools), LVIS (RITM's layout, polygons) and COCO+LVIS (RITM's pickles)."""

import itertools
import json
import pickle
import warnings

import cv2
import numpy as np
import pytest
from dataset_trees import write_image

from isegprobe.data import create_dataset
from isegprobe.data.coco_format import OrphanAnnotationWarning, UnpaintedAnnotationWarning
from isegprobe.data.lvis import LVISDataset
from isegprobe.errors import UserError

mask_utils = pytest.importorskip("pycocotools.mask")
H, W = 20, 30


def _square(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _coco_json(file_names):
    right_half = np.zeros((H, W), bool)
    right_half[:, 15:] = True
    return {
        "images": [{"id": i + 1, "file_name": name, "height": H, "width": W} for i, name in enumerate(file_names)],
        "annotations": [
            {"id": 10, "image_id": 1, "segmentation": _square(2, 2, 12, 12), "iscrowd": 0},
            {"id": 11, "image_id": 1, "segmentation": _square(8, 8, 20, 16), "iscrowd": 0},
            {"id": 12, "image_id": 2, "segmentation": _rle(right_half), "iscrowd": 0},
            {"id": 13, "image_id": 2, "segmentation": _rle(~right_half), "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }


def test_annotations_that_paint_no_pixel_are_named_once_not_dropped_silently(tmp_path):
    """An annotation wholly under a later one and one of no area were left out of a custom file's objects without a
    word; the first image with such annotations is named, and the objects are what can be clicked on."""
    root = tmp_path / "COCO"
    names = ["000000000001.jpg", "000000000002.jpg"]
    for seed, name in enumerate(names):
        write_image(root / "val2017" / name, H, W, seed)
    data = _coco_json(names)
    for image_id in (1, 2):
        data["annotations"] += [
            {"id": 20 + image_id, "image_id": image_id, "segmentation": [[4, 4, 9, 4, 6, 4]], "iscrowd": 0},
            {"id": 30 + image_id, "image_id": image_id, "segmentation": _square(0, 0, 29, 19), "iscrowd": 0},
        ]
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    dataset = create_dataset("coco", root, "val")
    with pytest.warns(UnpaintedAnnotationWarning, match=r"image '000000000001': 3 of its 4 annotations paint no"):
        assert dataset[0].num_instances == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnpaintedAnnotationWarning)
        dataset[1]  # named for the first image only


def test_coco_instances_paint_later_on_top_and_skip_crowds_and_empty_images(tmp_path):
    root = tmp_path / "COCO"
    names = ["000000000001.jpg", "000000000002.jpg", "000000000003.jpg"]
    for seed, name in enumerate(names):
        write_image(root / "val2017" / name, H, W, seed)
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(_coco_json(names)))
    dataset = create_dataset("coco", root, "val")
    assert dataset.split == "val2017"
    assert dataset.ids() == ["000000000001", "000000000002"], "the image without annotations is left out"
    overlapping = dataset[0]
    assert overlapping.num_instances == 2 and overlapping.labels[10, 10] == 2
    crowd_image = dataset[1]
    assert crowd_image.num_instances == 1 and crowd_image.labels[:, 15:].all() and not crowd_image.labels[:, :15].any()
    per_instance = create_dataset("coco", root, "val-instances")
    assert per_instance.ids() == ["000000000001_1", "000000000001_2", "000000000002_1"]
    first = per_instance[0]
    assert first.labels[10, 10] == 1, "the exact mask keeps the part a later object covers"
    assert first.labels.sum() == (overlapping.labels == 1).sum() + (first.labels & (overlapping.labels == 2)).sum()


def test_custom_coco_json_finds_images_beside_it_and_checks_sizes(tmp_path):
    folder = tmp_path / "mine"
    write_image(folder / "images" / "a.png", H, W)
    write_image(folder / "b.png", H + 2, W)
    (folder / "labels.json").write_text(json.dumps(_coco_json(["a.png", "b.png"])))
    dataset = create_dataset("custom", folder / "labels.json")
    assert dataset.ids() == ["a", "b"]
    assert dataset[0].num_instances == 2
    with pytest.raises(UserError, match=r"labels\.json: mask size \(20, 30\) differs from image b\.png \(22, 30\)"):
        dataset[1]


BAD_SEGMENTATIONS = {
    "a NaN coordinate": ([[2, 2, float("nan"), 2, 20, 18, 2, 18]], "polygon coordinates must be finite, x within"),
    # pycocotools walks every edge pixel by pixel: 1e300 took all memory, and the process with it
    "a coordinate far off the image": ([[2, 2, 1e300, 2, 20, 18]], "x within [-30, 60] and y within [-20, 40]"),
    "coordinates given as text": ([["2", "2", "20", "2", "20", "18"]], "a polygon must be a list of numbers"),
    "an RLE of another size": ({"size": [5, 5], "counts": "05"}, "its RLE's size is [5, 5], the image's [20, 30]"),
    # pycocotools decoded runs that stop short as background to the end, and "" as most of the image object
    "RLE runs that stop short": ({"size": [H, W], "counts": [100, 20]}, "its RLE's runs cover 120 pixels, the"),
    "an empty compressed RLE": ({"size": [H, W], "counts": ""}, "its RLE's runs cover 0 pixels, the image's [20, 30]"),
    "a compressed RLE cut inside a run": ({"size": [H, W], "counts": "o"}, "are not COCO's run-length encoding"),
    "a negative run": ({"size": [H, W], "counts": [100, -20, 520]}, "counts must be whole numbers from 0"),
    # pycocotools dropped the x without its y
    "an odd number of coordinates": ([[2, 2, 20, 2, 20]], "a polygon is pairs of numbers x, y, got 5 numbers"),
    # pycocotools was handed these and said 'int' object is not subscriptable
    "a number": (7, "a segmentation is a list of polygons or an RLE {'size': [h, w], 'counts': ...}, got 7"),
    "text": ("mask.png", "a segmentation is a list of polygons or an RLE"),
    "null": (None, "a segmentation is a list of polygons or an RLE"),
}


@pytest.mark.parametrize("segmentation", [[[4, 4, 20, 15]], [[4, 4]], [[]], []], ids=["2 points", "1", "0", "none"])
def test_polygons_of_fewer_than_three_points_paint_nothing_as_coco_paints_them(tmp_path, segmentation):
    """pycocotools paints no pixel for such a polygon after a whole one, but took a first one of two points for a
    box and failed, and failed on none, with messages of its internals: each is an annotation that paints nothing."""
    write_image(tmp_path / "a.png", H, W)
    document = {
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
        "annotations": [
            {"id": 1, "image_id": 1, "segmentation": segmentation},
            {"id": 2, "image_id": 1, "segmentation": _square(2, 2, 12, 9)},
            {"id": 3, "image_id": 1, "segmentation": [*_square(14, 2, 24, 9), *segmentation]},
        ],
    }
    (tmp_path / "labels.json").write_text(json.dumps(document))
    with pytest.warns(UnpaintedAnnotationWarning, match=r"image 'a': 1 of its 3 annotations paint no pixel"):
        sample = create_dataset("custom", tmp_path / "labels.json")[0]
    assert sample.num_instances == 2 and (sample.labels == 2).sum() == (sample.labels == 1).sum() > 0


def test_a_coco_file_saved_with_a_byte_order_mark_is_read(tmp_path):
    """json refused the mark a Windows editor puts first (Unexpected UTF-8 BOM); the split lists read past it."""
    write_image(tmp_path / "café.png", H, W)
    document = {
        "images": [{"id": 1, "file_name": "café.png", "height": H, "width": W}],
        "annotations": [{"id": 1, "image_id": 1, "segmentation": _square(2, 2, 12, 9)}],
    }
    (tmp_path / "labels.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(document, ensure_ascii=False).encode())
    dataset = create_dataset("custom", tmp_path / "labels.json")
    assert dataset.ids() == ["café"] and dataset[0].num_instances == 1


def test_rle_runs_read_as_pycocotools_encodes_them(tmp_path):
    """Compressed and uncompressed RLE of one mask give that mask, the runs' check passing both."""
    mask = np.zeros((H, W), bool)
    mask[3:11, 5:22] = True
    runs = [len(list(run)) for _, run in itertools.groupby(mask.ravel(order="F"))]  # column-major, background first
    write_image(tmp_path / "a.png", H, W)
    document = {
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
        "annotations": [
            {"id": 1, "image_id": 1, "segmentation": _rle(mask)},
            {"id": 2, "image_id": 1, "segmentation": {"size": [H, W], "counts": runs}},
        ],
    }
    (tmp_path / "labels.json").write_text(json.dumps(document))
    dataset = create_dataset("custom", tmp_path / "labels.json", "test-instances")
    assert (dataset[0].labels == mask).all() and (dataset[1].labels == mask).all()


@pytest.mark.parametrize("case", BAD_SEGMENTATIONS)
def test_a_segmentation_that_cannot_be_the_images_is_refused_by_annotation(tmp_path, case):
    segmentation, message = BAD_SEGMENTATIONS[case]
    write_image(tmp_path / "a.png", H, W)
    document = {
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
        "annotations": [{"id": 7, "image_id": 1, "segmentation": segmentation}],
    }
    (tmp_path / "labels.json").write_text(json.dumps(document))
    with pytest.raises(UserError, match="labels.json: annotation 7 of image a: bad segmentation") as refused:
        create_dataset("custom", tmp_path / "labels.json")[0]
    assert message in str(refused.value)


def test_an_annotation_that_is_not_an_object_is_refused_by_position(tmp_path):
    document = {"images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}], "annotations": [[1, 2, 3]]}
    (tmp_path / "labels.json").write_text(json.dumps(document))
    with pytest.raises(UserError, match=r"labels\.json: annotation 0 \(from 0\): expected an object, got \[1, 2, 3\]"):
        create_dataset("custom", tmp_path / "labels.json")


def test_annotations_of_no_listed_image_are_said_not_dropped_silently(tmp_path):
    """An image_id written as text where the images' ids are numbers (or of an image not listed) made a benchmark of
    fewer objects, exit 0 and not a word."""
    document = _coco_json(["a.png", "b.png"])
    document["annotations"][2]["image_id"] = "2"
    document["annotations"].append({**document["annotations"][0], "id": 14, "image_id": 7})
    (tmp_path / "labels.json").write_text(json.dumps(document))
    with pytest.warns(OrphanAnnotationWarning) as told:
        dataset = create_dataset("custom", tmp_path / "labels.json")
    assert dataset.ids() == ["a"]
    assert str(told[0].message) == (
        f"{tmp_path / 'labels.json'}: 2 annotation(s) name an image_id that no image has (such as '2'; images' ids "
        "such as 1) and are left out; ids must be the same values, of the same type"
    )
    (tmp_path / "whole.json").write_text(json.dumps(_coco_json(["a.png", "b.png"])))
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrphanAnnotationWarning)
        assert create_dataset("custom", tmp_path / "whole.json").ids() == ["a", "b"], "a whole file says nothing"


def test_two_images_of_one_id_are_refused_rather_than_given_each_others_objects(tmp_path):
    document = _coco_json(["a.png", "b.png"])
    document["images"][1]["id"] = 1
    (tmp_path / "labels.json").write_text(json.dumps(document))
    with pytest.raises(UserError, match="labels.json: the images 'a.png' and 'b.png' have one id, 1, and annotations"):
        create_dataset("custom", tmp_path / "labels.json")


def _lvis_json(urls):
    return {
        "images": [{"id": i + 1, "coco_url": url, "height": H, "width": W} for i, url in enumerate(urls)],
        "annotations": [
            {"id": 1, "image_id": 1, "segmentation": _square(0, 0, 10, 10), "category_id": 1},
            {"id": 2, "image_id": 1, "segmentation": _square(1, 1, 9, 9), "category_id": 1},  # mostly inside the first
            {"id": 3, "image_id": 1, "segmentation": _square(20, 10, 28, 18), "category_id": 1},
            {"id": 4, "image_id": 2, "segmentation": _square(5, 5, 15, 15), "category_id": 1},
        ],
    }


def test_lvis_follows_coco_url_and_applies_the_overlap_filter(tmp_path):
    root = tmp_path / "LVIS"
    write_image(root / "train" / "images" / "000000000009.jpg", H, W)
    write_image(root / "val" / "images" / "000000000139.jpg", H, W)
    urls = [
        "http://images.cocodataset.org/train2017/000000000009.jpg",
        "http://images.cocodataset.org/val2017/000000000139.jpg",
    ]
    (root / "val").mkdir(exist_ok=True)
    (root / "val" / "lvis_val.json").write_text(json.dumps(_lvis_json(urls)))
    painted = create_dataset("lvis", root, "val")
    assert painted.ids() == ["000000000009", "000000000139"]
    assert painted[0].num_instances == 3, "without the filter, the nested object is painted over the first"
    filtered = LVISDataset(root, "val", max_overlap_ratio=0.5)
    sample = filtered[0]
    assert sample.num_instances == 2 and sample.labels[5, 5] == 1
    assert (sample.labels == 1).sum() == 121, "OpenCV fills polygons including their border, as in RITM"
    assert len(create_dataset("lvis", root, "val-instances")) == 4


def test_lvis_refuses_a_coco_url_that_is_not_text_and_polygons_off_the_image(tmp_path):
    root = tmp_path / "LVIS"
    write_image(root / "val" / "images" / "000000000139.jpg", H, W)
    document = _lvis_json(["http://images.cocodataset.org/val2017/000000000139.jpg", 5])
    (root / "val" / "lvis_val.json").write_text(json.dumps(document))
    with pytest.raises(UserError, match="lvis_val.json: image 2: coco_url must be a URL, got 5"):
        create_dataset("lvis", root, "val")
    document = _lvis_json(["http://images.cocodataset.org/val2017/000000000139.jpg"])
    document["annotations"][0]["segmentation"] = [[0, 0, float("nan"), 0, 10, 10]]
    (root / "val" / "lvis_val.json").write_text(json.dumps(document))
    with pytest.raises(UserError, match="annotation 1 of image 000000000139: bad segmentation .polygon coordinates"):
        create_dataset("lvis", root, "val")[0]


def _packed_masks(layers, mapping):
    return [cv2.imencode(".png", layer)[1] for layer in layers], mapping


def test_cocolvis_reads_ritm_pickles_layers_and_drops_stuff(tmp_path):
    root = tmp_path / "LVIS"
    split = root / "val"
    write_image(split / "images" / "42.jpg", H, W)
    layer0 = np.zeros((H, W), np.uint8)
    layer0[0:10, 0:10] = 1  # instance 0
    layer0[15:20, :] = 2  # a stuff region
    layer1 = np.zeros((H, W), np.uint8)
    layer1[5:15, 5:15] = 1  # instance 1, overlapping instance 0 on another layer
    (split / "masks").mkdir(parents=True)
    with open(split / "masks" / "42.pickle", "wb") as file:
        pickle.dump(_packed_masks([layer0, layer1], [(0, 1), (1, 1), (0, 2)]), file)
    hierarchy = {
        0: {"parent": None, "children": [1], "node_level": 0},
        1: {"parent": 0, "children": [], "node_level": 1},
    }
    with open(split / "hannotation.pickle", "wb") as file:
        pickle.dump({"42": {"hierarchy": hierarchy, "num_instance_masks": 2}}, file)
    dataset = create_dataset("cocolvis", root, "val")
    sample = dataset[0]
    assert sample.num_instances == 2 and sample.labels[7, 7] == 2
    assert not sample.labels[15:].any(), "stuff is background"
    per_instance = create_dataset("cocolvis", root, "val-instances")
    assert per_instance.ids() == ["42_1", "42_2"] and per_instance[0].labels.sum() == 100
    (split / "masks" / "42.pickle").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match=r"42\.pickle: cannot unpickle"):
        dataset[0]


def test_a_cocolvis_colour_layer_is_refused_naming_its_file(tmp_path):
    # painting the objects failed with an IndexError, which `datasets check` reported without the file
    root = tmp_path / "LVIS"
    split = root / "val"
    write_image(split / "images" / "42.jpg", H, W)
    colour_layer = np.zeros((H, W, 3), np.uint8)
    colour_layer[4:12, 4:12] = 1
    (split / "masks").mkdir(parents=True)
    with open(split / "masks" / "42.pickle", "wb") as file:
        pickle.dump(_packed_masks([colour_layer], [(0, 1)]), file)
    with open(split / "hannotation.pickle", "wb") as file:
        pickle.dump({"42": {"hierarchy": {0: None}, "num_instance_masks": 1}}, file)
    message = (
        f"{split / 'masks' / '42.pickle'}: its mask layer 0 decodes as an image of 3 channels; each layer must be a "
        "single-channel map (a greyscale PNG of object values)"
    )
    for name in ("val", "val-instances"):
        with pytest.raises(UserError) as error:
            create_dataset("cocolvis", root, name)[0]
        assert str(error.value) == message


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({}, "hannotation.pickle: lists no image (RITM's hannotation: image id -> its instances)"),
        ({"../../42": {"hierarchy": {0: None}}}, "hannotation.pickle: image id '../../42' is not a file name"),
    ],
    ids=["no image", "a path"],
)
def test_a_cocolvis_annotation_file_of_no_image_or_of_paths_is_refused(tmp_path, annotations, message):
    """No image was a dataset of no item that `datasets check` passed; an id with a folder in it read images and
    masks from outside the dataset's root."""
    split = tmp_path / "LVIS" / "val"
    split.mkdir(parents=True)
    with open(split / "hannotation.pickle", "wb") as file:
        pickle.dump(annotations, file)
    with pytest.raises(UserError) as error:
        create_dataset("cocolvis", tmp_path / "LVIS", "val")
    assert message in str(error.value)
