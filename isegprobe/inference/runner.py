"""One evaluation run: a checkpoint, some datasets (from stores or online), results on disk.

Both `isegprobe evaluate` and the quickstart call `run_evaluation`. From the cache without zoom-in the featurizer is
never built; zoom-in crops, --online and early-fusion probes need it, and it must be the featurizer the probe was
trained on.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Collection, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
from tqdm import tqdm

from isegprobe import featurizers
from isegprobe.cache.schema import check_same_featurizer
from isegprobe.devices import deterministic_arithmetic
from isegprobe.errors import UserError
from isegprobe.hashing import file_sha256
from isegprobe.home_paths import expand_home
from isegprobe.inference.evaluation import EvaluationRun, Framing, ObjectResult, ObjectTask, evaluate_objects
from isegprobe.inference.evaluation_jobs import (
    EvaluationJob,
    FirstObjects,
    evaluation_jobs,
    refuse_two_jobs_of_one_dataset,
    root_text,
)
from isegprobe.inference.predictor import Predictor
from isegprobe.inference.protocols import DEFAULT_PROTOCOL, get_protocol
from isegprobe.inference.replaced_outputs import replacing_earlier_pictures_and_features
from isegprobe.inference.results import ResultsWriter, probe_identity
from isegprobe.inference.saved_features import SAVED_FEATURES_ENDING, save_features, saving_features
from isegprobe.inference.tasks import image_ids_of
from isegprobe.inference.visuals import file_name, has_overlay, save_overlay, strip_clicks
from isegprobe.inference.zoom_in import ZoomIn
from isegprobe.locks import exclusive_lock
from isegprobe.model import runs_featurizer_online
from isegprobe.output_files import OVERLAY_FOLDER
from isegprobe.training.checkpoint import checkpoint_description, load_probe, resolve_checkpoint
from isegprobe.weights_files import require_recorded_weights_file


@dataclass
class EvaluationRequest:
    checkpoint: str
    out_dir: str
    datasets: list[str] = field(default_factory=lambda: ["grabcut"])
    split: str = "test"
    store_root: str | None = None
    stores: list[str] = field(default_factory=list)
    online: bool = False
    root: str | None = None
    featurizer_weights: str | None = None  # where the checkpoint's featurizer weights file is now, if it moved
    max_clicks: int = 20
    max_objects: int | None = None  # stop each dataset after this many objects, as an interrupted run stops
    flip: bool = False
    zoom_in: bool = False
    threshold: float = 0.5
    batch_size: int = 8
    device: str = "cpu"
    clicker: str = "auto"
    vis_preds: int = 0
    save_feats: int = 0
    overwrite: bool = False
    protocol: str = DEFAULT_PROTOCOL


def under_protocol(request: EvaluationRequest) -> EvaluationRequest:
    """`request` with the settings its protocol fixes (see isegprobe.inference.protocols)."""
    protocol = get_protocol(request.protocol)
    read = "--store" if request.stores else f"--store-root {request.store_root}"
    if protocol.fixed.get("online") and (request.stores or request.store_root):
        raise UserError(
            f"--protocol {protocol.name} runs the featurizer on every zoom-in crop, online: give --datasets (and "
            f"--root), not {read}"
        )
    if request.online and (request.stores or request.store_root):  # the stores were ignored without a word
        raise UserError(
            f"--online and {read}: --online runs the featurizer on the images of --datasets, read from --root or "
            "their folders, and reads no store; give one or the other"
        )
    return dataclasses.replace(request, protocol=protocol.name, **protocol.fixed)


def run_evaluation(
    request: EvaluationRequest, on_result: Callable[[str, ObjectResult], None] | None = None
) -> dict[str, dict[str, Any]]:
    """Evaluate every requested dataset; returns the per-dataset summaries also written to `out_dir`.

    `on_result(dataset, result)` sees each object once its curve is recorded (the files are rewritten after each
    batch and when the run stops, Ctrl-C included).
    """
    request = under_protocol(request)
    with deterministic_arithmetic(get_protocol(request.protocol).exact):
        return _evaluate(request, on_result)


def _evaluate(
    request: EvaluationRequest, on_result: Callable[[str, ObjectResult], None] | None
) -> dict[str, dict[str, Any]]:
    with ExitStack() as reading:  # the stores it reads stay locked against extraction until it ends
        setup = _set_up(request, reading)
        tqdm.write(checkpoint_description(setup.weights, setup.metadata), file=sys.stderr)
        run_info = {
            "protocol": request.protocol,
            "checkpoint": str(setup.weights),
            "checkpoint_sha256": file_sha256(setup.weights),
            "checkpoint_step": setup.metadata.get("step"),
            **probe_identity(setup.metadata),
            "flip": request.flip,
            "zoom_in": request.zoom_in,
            "online": request.online,
            "threshold": request.threshold,
            "sources": {job.name: job.source for job in setup.jobs},
            "source_fingerprints": {job.name: job.fingerprint for job in setup.jobs if job.fingerprint},
            "image_roots": {job.name: job.images_root for job in setup.jobs},
        }
        if request.featurizer_weights is not None:
            # Where the featurizer's file was found, away from the place the checkpoint records: `plot predictions`
            # reads it from there again.
            run_info["featurizer_weights"] = str(expand_home(request.featurizer_weights).resolve())
        if request.online:
            # What `plot predictions` needs to read the same images again.
            run_info["online_sources"] = {
                job.name: {"split": request.split, "root": root_text(job.online_root)} for job in setup.jobs
            }
        # one evaluation writes a results folder at a time
        with exclusive_lock(Path(request.out_dir)), ExitStack() as replacing:
            writer = ResultsWriter(request.out_dir, request.max_clicks, run_info)
            if request.overwrite:
                replacing.enter_context(replacing_earlier_pictures_and_features(Path(request.out_dir), writer))
            else:
                writer.resume()
            for job in setup.jobs:
                finished = list(writer.curves.get(job.name, {}))
                pictures, feats = (Path(request.out_dir) / kind / job.name for kind in (OVERLAY_FOLDER, "feats"))
                _draw_objects_finished_undrawn(request, job.name, finished[: request.vis_preds], pictures)
                _save_features_of_objects_finished_unsaved(request, job.name, finished[: request.save_feats], feats)
                if writer.complete.get(job.name):
                    continue
                done = set(writer.curves.get(job.name, ()))
                tasks: Iterator[ObjectTask] = (task for task in job.tasks if task.id not in done)
                limited = None if request.max_objects is None else FirstObjects(tasks, request.max_objects - len(done))
                if limited is not None:
                    tasks = iter(limited)
                if request.save_feats:  # after the limit: no features saved of an object left for later
                    tasks = saving_features(tasks, setup.predictor, feats, request.save_feats - len(done))
                _evaluate_dataset(
                    setup.predictor, request, writer, job.name, tasks, job.count(), setup.framing, on_result, limited
                )
            return writer.write()


class EvaluationSetUp(NamedTuple):
    """What a run evaluates with: the predictor, the checkpoint's metadata and weights file, the jobs, and the
    framing (zoom-in crops, or None for the whole image)."""

    predictor: Predictor
    metadata: dict[str, Any]
    weights: Path
    jobs: list[EvaluationJob]
    framing: Callable[[ObjectTask], Framing] | None


def _set_up(
    request: EvaluationRequest, reading: ExitStack, only_items: Collection[str] | None = None
) -> EvaluationSetUp:
    """Everything a run of `request` needs. The checkpoint is resolved once, so that the results name the file that
    was loaded, even when a training run writes its first `best` into the folder meanwhile. The stores it reads are
    locked against extraction until `reading` closes."""
    device = torch.device(request.device)
    protocol = get_protocol(request.protocol)
    weights = resolve_checkpoint(request.checkpoint, prefer=protocol.checkpoint)[0].resolve()
    probe, metadata = load_probe(weights, device=device)
    jobs = list(evaluation_jobs(request, metadata, reading, only_items))
    refuse_two_jobs_of_one_dataset(jobs)
    featurizer_needed = runs_featurizer_online(probe.config, request.online) or request.zoom_in
    if request.featurizer_weights is not None and not featurizer_needed:
        raise UserError(
            f"--weights {request.featurizer_weights}: no featurizer runs in this evaluation (it reads the stores' "
            "features), so it would not be read"
        )
    featurizer = checkpoint_featurizer(metadata, request.featurizer_weights) if featurizer_needed else None
    if featurizer is not None and probe.needs_featurizer:
        probe.attach_featurizer(featurizer.to(device))
    preprocessing = metadata["preprocessing"]
    predictor = Predictor(probe, preprocessing["mean"], preprocessing["std"], device, featurizer, protocol.exact)
    framing = None
    if request.zoom_in:
        resize = preprocessing.get("resize", "stretch")
        if protocol.ritm_geometry and resize != "stretch":
            raise UserError(
                f"--protocol {protocol.name} stretches its crops to the working size, as the probe must have been "
                f"trained; this probe was trained on --resize {resize} views"
            )
        framing = partial(
            _zoom_in,
            size=int(preprocessing["size"]),
            resize=resize,
            flip=request.flip,
            threshold=request.threshold,
            device=device,
            align_corners=protocol.ritm_geometry,
        )
    return EvaluationSetUp(predictor, metadata, weights, jobs, framing)


def replay_objects(request: EvaluationRequest, dataset: str, object_ids: Collection[str]) -> list[ObjectResult]:
    """The objects `object_ids` of `dataset` evaluated again exactly as `request` evaluates them, keeping the masks
    after the clicks a strip shows (1, 3, 5, 10 and the last): what `plot predictions` draws. Only their images are
    read."""
    request = under_protocol(request)
    with deterministic_arithmetic(get_protocol(request.protocol).exact):
        return _replay(request, dataset, object_ids)


@contextmanager
def _objects_again(
    request: EvaluationRequest, dataset: str, object_ids: Collection[str]
) -> Iterator[tuple[EvaluationSetUp, list[ObjectTask]]]:
    """A set-up of `request` reading only the images of `object_ids`, with those objects' tasks, for the `with`
    body: what a replay, or the features of objects an earlier run finished, are made from."""
    with ExitStack() as reading:
        setup = _set_up(request, reading, image_ids_of(object_ids))
        job = next((job for job in setup.jobs if job.name == dataset), None)
        if job is None:
            raise UserError(
                f"the evaluation has no dataset {dataset!r}; it has {', '.join(j.name for j in setup.jobs)}"
            )
        wanted = [task for task in job.tasks if task.id in object_ids]
        missing = sorted(set(object_ids) - {task.id for task in wanted})
        if missing:
            raise UserError(
                f"{job.source}: no object {', '.join(missing)} of {dataset} there; the store or dataset folder "
                "changed since the evaluation (extracted again, or another --root)"
            )
        yield setup, wanted


def _replay(request: EvaluationRequest, dataset: str, object_ids: Collection[str]) -> list[ObjectResult]:
    with _objects_again(request, dataset, object_ids) as (setup, wanted):
        results: list[ObjectResult] = []
        clicks = len(wanted) * request.max_clicks
        with tqdm(desc=f"replaying {dataset}", unit="click", total=clicks, file=sys.stderr) as progress:
            evaluate_objects(
                setup.predictor,
                iter(wanted),
                request.max_clicks,
                request.threshold,
                request.batch_size,
                on_result=results.append,
                framing=setup.framing,
                keep_masks_at=strip_clicks(request.max_clicks),
                on_click=lambda click, objects: progress.update(objects),
                clicker=request.clicker,
            )
        return results


def _zoom_in(task: ObjectTask, **settings: Any) -> ZoomIn:
    return ZoomIn(task.image, **settings)


def _evaluate_dataset(
    predictor: Predictor,
    request: EvaluationRequest,
    writer: ResultsWriter,
    name: str,
    tasks: Iterator[ObjectTask],
    total: int,
    framing: Callable[[ObjectTask], Framing] | None,
    on_result: Callable[[str, ObjectResult], None] | None,
    limited: FirstObjects | None = None,
) -> None:
    """Evaluate one dataset's `tasks` (of `total` objects, those done before included). The bar counts clicks,
    every object's `max_clicks` of them, so that its rate and ETA hold while a batch of objects is still clicking
    (counted in objects, it stood still for a batch's 20 clicks and then jumped); the objects done follow it.
    `limited`: the --max-objects cut `tasks` come through; a dataset it cut stays unfinished."""
    clicks = request.max_clicks
    done = len(writer.curves.get(name, {}))
    progress = tqdm(desc=name, unit="click", total=total * clicks, initial=done * clicks, smoothing=0, file=sys.stderr)
    pictures = Path(request.out_dir) / OVERLAY_FOLDER / name
    postfix = {"objects": f"{done}/{total}"}

    def clicked(click: int, objects: int) -> None:
        progress.update(objects)

    def finished(result: ObjectResult) -> None:
        nonlocal total
        if len(writer.curves.get(name, {})) < request.vis_preds:
            save_overlay(pictures, result)
        writer.add(name, result.id, result.ious)
        finished_objects = len(writer.curves[name])
        if finished_objects > total:  # an object the count up front missed (too small at the working size)
            total = finished_objects
            progress.total = total * clicks
        postfix["objects"] = f"{finished_objects}/{total}"
        progress.set_postfix(postfix)
        if on_result is not None:
            on_result(name, result)

    def batch_done(run: EvaluationRun) -> None:
        writer.set_speed(name, run.predict_seconds, run.loop_seconds, run.clicks_made)
        writer.write()
        postfix["sec_per_click"] = f"{run.seconds_per_click:.3f}"
        progress.set_postfix(postfix)

    try:
        evaluate_objects(
            predictor,
            tasks,
            request.max_clicks,
            request.threshold,
            request.batch_size,
            on_result=finished,
            on_batch=batch_done,
            framing=framing,
            keep_masks_at=strip_clicks(request.max_clicks) if request.vis_preds else (),
            on_click=clicked,
            clicker=request.clicker,
        )
        if limited is not None and limited.cut:
            progress.write(
                f"{name}: stopped at {len(writer.curves.get(name, {}))} of {total} objects (--max-objects); the same "
                "command without it evaluates the rest",
                file=sys.stderr,
            )
            return
        if not writer.curves.get(name):
            raise UserError(
                f"{name}: not one object to evaluate, every mask of its items being empty; `isegprobe datasets check "
                f"{name}` says which"
            )
        writer.finish(name)
        progress.total = progress.n  # the clicks made, where the count of objects up front was off
    finally:
        if writer.unwritten:  # the objects of the batch it stopped in; none: what out_dir holds stays as it is
            writer.write()
        progress.close()


def _draw_objects_finished_undrawn(request: EvaluationRequest, name: str, first: list[str], pictures: Path) -> None:
    """--vis-preds N draws the first N objects of a dataset. Those of `first` that an earlier run of this evaluation
    finished without drawing (it ran without --vis-preds, or with a smaller N) are evaluated again, as `plot
    predictions` does, and drawn; their recorded curves stay as they are."""
    undrawn = [object_id for object_id in first if not has_overlay(pictures, object_id)]
    if not undrawn:
        return
    tqdm.write(f"{name}: drawing {len(undrawn)} object(s) an earlier run finished (--vis-preds)", file=sys.stderr)
    for result in replay_objects(request, name, undrawn):
        save_overlay(pictures, result)


def _save_features_of_objects_finished_unsaved(
    request: EvaluationRequest, name: str, first: list[str], folder: Path
) -> None:
    """--save-feats N keeps the features of a dataset's first N objects: those of `first` that an earlier run of this
    evaluation finished without saving them get theirs now (no click is made for them)."""
    unsaved = [object_id for object_id in first if not (folder / file_name(object_id, SAVED_FEATURES_ENDING)).is_file()]
    if not unsaved:
        return
    tqdm.write(f"{name}: saving the features of {len(unsaved)} object(s) an earlier run finished", file=sys.stderr)
    with _objects_again(request, name, unsaved) as (setup, tasks):
        for task in tasks:
            save_features(folder, task, setup.predictor)


def checkpoint_featurizer(metadata: dict[str, Any], weights: str | None = None) -> torch.nn.Module:
    """The probe's featurizer, rebuilt from the checkpoint's provenance and checked against it; `weights`: where the
    weights file it records is now (a checkpoint moved to another machine records a path of the first), which the
    check of the file's sha256 against the recorded one keeps to the same file. Every command that rebuilds it
    (evaluate, plot predictions, demo) takes that place as `--weights`."""
    provenance = metadata.get("featurizer_provenance") or {}
    if "name" not in provenance or "weights" not in provenance:
        raise UserError("the checkpoint records no featurizer provenance, so the probe's featurizer cannot be rebuilt")
    recorded = provenance["weights"]
    if weights is None:
        require_recorded_weights_file(recorded, "the probe was trained with (its checkpoint records it)")
    featurizer = featurizers.recreate_featurizer(provenance, weights)
    check_same_featurizer(provenance, featurizer.provenance, f"featurizer {provenance['name']}")
    return featurizer
