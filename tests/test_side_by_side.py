"""Probes trained side by side from one loader: each run's weights, optimizer, logs and checkpoints are those it
gets alone, and runs that would not see the same batches are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from safetensors.torch import load_file
from stand_ins import StandInFeaturizer
from stores import builtin_store
from test_training import MEAN, STD, SquaresDataset, tiny_config

from isegprobe.cli import main
from isegprobe.commands.train_runs import planned_runs
from isegprobe.errors import UserError
from isegprobe.training import train
from isegprobe.training import trainer as trainer_module
from isegprobe.training.checkpoint import read_metadata
from isegprobe.training.next_clicks import next_clicks_together
from isegprobe.training.run_loop import train_side_by_side

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCHEDULE = ("schedule.epochs=3", "schedule.milestones=[1]")
VARIANTS = {
    # FeatUp JBU trained with the probe: its dropout draws from torch's generators at every step. Set up first, so
    # that the others' setups run between its own and its steps.
    "jbu": ("model.upsampler.name=featup_jbu", "model.upsampler.fine_tune=true"),
    "narrow": ("optim.lr=1e-3",),
    "wide": ("model.head.width=16", "optim.lr=3e-4", "clicks.max_num_next_clicks=2"),
    "bilinear": ("model.upsampler.name=bilinear", "loss.gamma=1.0", "logging.every_steps=2"),
}


def configs(*extra: str) -> dict:
    return {name: tiny_config(*SCHEDULE, *overrides, *extra) for name, overrides in VARIANTS.items()}


def files_equal(first: Path, second: Path, name: str) -> None:
    one, other = load_file(first / name), load_file(second / name)
    assert one.keys() == other.keys(), name
    for key in one:
        assert torch.equal(one[key], other[key]), f"{name}: {key}"


def split_runs_equal_straight(tmp_path: Path) -> None:
    """Each variant's weights and Adam state in tmp_path/split equal those in tmp_path/straight."""
    for name in VARIANTS:
        for file in ("last.safetensors", "last.optim.safetensors"):
            files_equal(tmp_path / "straight" / name, tmp_path / "split" / name, file)


def train_rows(run: Path) -> list[str]:
    return [row for row in (run / "scalars.csv").read_text().splitlines() if ",train/" in row or ",epoch/" in row]


def test_each_run_side_by_side_is_the_run_alone(tmp_path: Path) -> None:
    dataset = SquaresDataset(count=6)
    chosen = configs("schedule.max_iters=7")
    for name, config in chosen.items():
        train(config, dataset, tmp_path / "alone" / name, device="cpu", progress=False)
    summaries = train_side_by_side(
        list(chosen.values()), dataset, [tmp_path / "together" / name for name in chosen], device="cpu", progress=False
    )
    assert [summary.step for summary in summaries] == [7] * len(chosen)
    for name in chosen:
        alone, together = tmp_path / "alone" / name, tmp_path / "together" / name
        for file in ("last.safetensors", "last.optim.safetensors", "best.safetensors"):
            files_equal(alone, together, file)
        assert train_rows(together) == train_rows(alone)
        assert (together / "config.yaml").read_text() == (alone / "config.yaml").read_text()
    narrow, wide = (load_file(tmp_path / "together" / name / "last.safetensors") for name in ("narrow", "wide"))
    assert narrow.keys() != wide.keys() or any(not torch.equal(narrow[k], wide[k]) for k in narrow)


def test_runs_side_by_side_resume_together(tmp_path: Path) -> None:
    dataset = SquaresDataset(count=6)
    for name, config in configs("schedule.max_iters=5").items():
        train(config, dataset, tmp_path / "straight" / name, device="cpu", progress=False)
    folders = [tmp_path / "split" / name for name in VARIANTS]
    train_side_by_side(list(configs("schedule.max_iters=3").values()), dataset, folders, device="cpu", progress=False)
    summaries = train_side_by_side(
        list(configs("schedule.max_iters=5").values()), dataset, folders, device="cpu", resume=True, progress=False
    )
    assert [summary.step for summary in summaries] == [5] * len(VARIANTS)
    split_runs_equal_straight(tmp_path)


def test_runs_resumed_from_different_steps_catch_up_with_each_other(tmp_path: Path) -> None:
    """A kill between two runs' checkpoints leaves them at different steps; resumed together, each ends where it
    would have alone."""
    dataset = SquaresDataset(count=6)
    for name, config in configs("schedule.max_iters=7").items():
        train(config, dataset, tmp_path / "straight" / name, device="cpu", progress=False)
    folders = [tmp_path / "split" / name for name in VARIANTS]
    train_side_by_side(list(configs("schedule.max_iters=2").values()), dataset, folders, device="cpu", progress=False)
    ahead = configs("schedule.max_iters=5")["wide"]
    train(ahead, dataset, tmp_path / "split" / "wide", device="cpu", resume=True, progress=False)
    summaries = train_side_by_side(
        list(configs("schedule.max_iters=7").values()), dataset, folders, device="cpu", resume=True, progress=False
    )
    assert [summary.step for summary in summaries] == [7] * len(VARIANTS)
    split_runs_equal_straight(tmp_path)


def test_runs_that_would_see_other_batches_are_refused(tmp_path: Path) -> None:
    dataset = SquaresDataset(count=6)
    same = tiny_config(*SCHEDULE, "schedule.max_iters=2")
    for other, words in (
        ("data.batch_size=3", "data.batch_size 2 there, 3 here"),
        ("sampler.max_points=5", "sampler.max_points 24 there, 5 here"),
        ("seed=7", "seed"),
        ("schedule.max_iters=1", "steps in all 2 there, 1 here"),
    ):
        folders = [tmp_path / other / "a", tmp_path / other / "b"]
        with pytest.raises(UserError, match=words):
            train_side_by_side(
                [same, tiny_config(*SCHEDULE, "schedule.max_iters=2", other)],
                dataset,
                folders,
                device="cpu",
                progress=False,
            )
        assert not [path for folder in folders for path in folder.rglob("*")], "nothing written before the check"
    with pytest.raises(UserError, match="need a folder each"):
        train_side_by_side([same, same], dataset, [tmp_path / "x", tmp_path / "x"], device="cpu", progress=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return builtin_store(tmp_path_factory.mktemp("side_by_side"), split="train", views="identity")


def cli(*arguments: object) -> Result:
    return CliRunner().invoke(main, [str(argument) for argument in arguments], catch_exceptions=False)


def test_train_variants_from_the_command_line_and_resume_them(store: Path, tmp_path: Path) -> None:
    common = ("train", "--config", "quickstart", "--store", store, "--set", "logging.tensorboard=false")
    variants = ("--variant", "w8 model.head.width=8", "--variant", "w16 model.head.width=16 optim.lr=1e-3")
    result = cli(*common, "--out", tmp_path / "runs", "--max-iters", 2, *variants)
    assert result.exit_code == 0, result.output
    assert "checkpoints in " + str(tmp_path / "runs" / "w8") in result.output
    assert cli(*common, "--set", "model.head.width=8", "--out", tmp_path / "w8", "--max-iters", 4).exit_code == 0
    resumed = cli("train", "--resume", "--out", tmp_path / "runs", "--max-iters", 4)
    assert resumed.exit_code == 0, resumed.output
    assert resumed.output.count("trained to step 4") == 2
    files_equal(tmp_path / "w8", tmp_path / "runs" / "w8", "last.safetensors")
    assert load_file(tmp_path / "runs" / "w16" / "last.safetensors")["head.reduce.weight"].shape[0] == 16


def test_max_iters_wins_over_a_variants_own_as_over_set(store: Path, tmp_path: Path) -> None:
    """--max-iters is the last word on schedule.max_iters, a variant's included: a variant's value won before."""
    common = ("train", "--config", "quickstart", "--store", store, "--set", "logging.tensorboard=false")
    result = cli(*common, "--out", tmp_path / "runs", "--max-iters", 1, "--variant", "a schedule.max_iters=3")
    assert result.exit_code == 0, result.output
    assert "trained to step 1; best train_iou" in result.output
    assert read_metadata(tmp_path / "runs" / "a" / "last.json")["config"]["schedule"]["max_iters"] == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--variant", "model.head.width=8"), "expected a name"),
        (("--variant", "a model.head.width"), "'model.head.width' is not KEY=VALUE"),
        (("--variant", "a 'optim.lr=1e-4"), '--variant "a \'optim.lr=1e-4": no closing quotation'),
        (("--variant", "a seed=1", "--variant", "a seed=2"), "each name once"),
        (("--variant", "a", "--variant", "b data.batch_size=1"), "data.batch_size 4 there, 1 here"),
        (("--variant", "a", "--variant", "b optim.lrr=1"), "--variant 'b': unknown config key 'optim.lrr'"),
        (("--variant", "a", "--set", "optim.lrr=1"), "Error: unknown config key 'optim.lrr'"),
        (
            ("--variant", "a model.head.width=32 model.head.width=16"),
            "--variant 'a model.head.width=32 model.head.width=16': model.head.width is given twice; give each key",
        ),
    ],
)
def test_variants_that_cannot_train_together_are_refused(
    store: Path, tmp_path: Path, options: tuple[str, ...], message: str
) -> None:
    result = cli("train", "--config", "quickstart", "--store", store, "--out", tmp_path / "runs", *options)
    assert result.exit_code != 0 and message in result.output, result.output
    assert not list(tmp_path.glob("runs/*/last.json"))


def test_online_probes_side_by_side_run_the_featurizer_once_a_step(tmp_path: Path) -> None:
    featurizer = StandInFeaturizer(mean=MEAN, std=STD)
    calls = []
    featurizer.register_forward_hook(lambda *_: calls.append(1))
    dataset = SquaresDataset(count=6, featurizer=featurizer)
    chosen = configs("schedule.max_iters=4")
    alone = tmp_path / "alone" / "wide"
    train(chosen["wide"], dataset, alone, featurizer=featurizer, online=True, device="cpu", progress=False)
    calls.clear()
    folders = [tmp_path / "together" / name for name in chosen]
    train_side_by_side(
        list(chosen.values()), dataset, folders, featurizer=featurizer, online=True, device="cpu", progress=False
    )
    assert len(calls) == 4, "three probes, one featurizer forward a step"
    files_equal(alone, tmp_path / "together" / "wide", "last.safetensors")


def test_probes_side_by_side_click_together_round_by_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every round of iterative clicks is made for all the probes that take it at once (on a GPU, one wait for the
    device per round): 'wide' takes at most two rounds a step, the others three."""
    rounds_clicked = []

    def clicked_together(rounds: list) -> list:
        rounds_clicked.append(len(rounds))
        return next_clicks_together(rounds)

    monkeypatch.setattr(trainer_module, "next_clicks_together", clicked_together)
    chosen = configs("schedule.max_iters=6")
    train_side_by_side(
        list(chosen.values()),
        SquaresDataset(count=6),
        [tmp_path / name for name in chosen],
        device="cpu",
        progress=False,
    )
    assert set(rounds_clicked) >= {len(chosen), len(chosen) - 1}
    assert len(rounds_clicked) <= 3 * 6, "at most max_num_next_clicks rounds a step"


def test_online_probes_side_by_side_share_their_featurizers_precision(tmp_path: Path) -> None:
    """One featurizer computes every online run's features, so the runs must agree on how it runs."""
    featurizer = StandInFeaturizer(mean=MEAN, std=STD)
    dataset = SquaresDataset(count=6, featurizer=featurizer)
    chosen = [tiny_config(*SCHEDULE), tiny_config(*SCHEDULE, "model.research_precision=true")]
    folders = [tmp_path / "float32", tmp_path / "research"]
    with pytest.raises(UserError, match="model.research_precision False there, True here"):
        train_side_by_side(chosen, dataset, folders, featurizer=featurizer, online=True, device="cpu", progress=False)
    train(chosen[1], dataset, folders[1], featurizer=featurizer, online=True, device="cpu", progress=False)
    assert featurizer.research_precision


def test_a_late_fusion_probe_beside_an_early_fusion_one_reads_the_store(tmp_path: Path) -> None:
    """Only the probe that needs the featurizer in the loop runs it: the late-fusion probe beside it trained online
    too (a featurizer forward a step for features the store holds) and recorded `online: true`."""
    featurizer = StandInFeaturizer(mean=MEAN, std=STD)
    plain_forwards = []
    featurizer.register_forward_hook(
        lambda _, args, kwargs, __: (
            plain_forwards.append(1) if len(args) < 2 and kwargs.get("token_bias") is None else None
        ),
        with_kwargs=True,
    )
    dataset = SquaresDataset(count=6, featurizer=featurizer)
    late = tiny_config(*SCHEDULE, "schedule.max_iters=4")
    early = tiny_config(*SCHEDULE, "schedule.max_iters=4", "model.fusion=before_backbone")
    train(late, dataset, tmp_path / "alone", device="cpu", progress=False)
    plain_forwards.clear()
    folders = [tmp_path / "together" / "late", tmp_path / "together" / "early"]
    train_side_by_side([late, early], dataset, folders, featurizer=featurizer, device="cpu", progress=False)
    assert plain_forwards == [], "the late-fusion probe reads the store's features"
    files_equal(tmp_path / "alone", folders[0], "last.safetensors")
    files_equal(tmp_path / "alone", folders[0], "last.optim.safetensors")
    assert [read_metadata(folder / "last.json")["online"] for folder in folders] == [False, True]


def test_a_run_that_diverges_beside_others_stops_alone(store: Path, tmp_path: Path) -> None:
    """The first run's loss becomes NaN (optim.lr 1e30): it stops with its message, and the other run ends as it
    does alone; the command then exits with status 1, naming the run that stopped."""
    common = ("train", "--config", "quickstart", "--store", store, "--set", "logging.tensorboard=false")
    common += ("--set", "logging.every_steps=3", "--max-iters", 4)
    assert cli(*common, "--set", "optim.lr=1e-3", "--out", tmp_path / "alone").exit_code == 0
    variants = ("--variant", "bad optim.lr=1e30", "--variant", "good optim.lr=1e-3")
    result = CliRunner().invoke(main, [str(argument) for argument in (*common, "--out", tmp_path / "runs", *variants)])
    assert result.exit_code == 1, result.output
    assert (
        "1 of 2 runs stopped early, the others trained to the end: " + str(tmp_path / "runs" / "bad") in result.output
    )
    assert "the training loss became NaN or infinite at step 2" in result.output
    # checked where the run logs, after step 3, the run stopped there, its loss not finite since its first update
    assert (
        "stopped at step 3, its loss no longer finite from step 2: " + str(tmp_path / "runs" / "bad") in result.output
    )
    assert result.output.count("trained to step 4") == 1
    for name in ("last.safetensors", "last.optim.safetensors"):
        files_equal(tmp_path / "alone", tmp_path / "runs" / "good", name)
    assert not (tmp_path / "runs" / "bad" / "last.json").exists(), "its loss was not finite before its first save"
    resumed = CliRunner().invoke(main, ["train", "--resume", "--out", str(tmp_path / "runs"), "--max-iters", "5"])
    assert resumed.exit_code == 0, resumed.output
    assert f"{tmp_path / 'runs' / 'bad'} holds no checkpoint (its run stopped before its first): not resumed" in (
        resumed.output
    )


def test_a_run_and_runs_side_by_side_never_nest(store: Path, tmp_path: Path) -> None:
    """`--resume --out` continues the run in --out where there is one, else the runs in its subfolders: runs side by
    side trained into a run's folder, or a run into theirs, were left behind by it."""
    common = ("train", "--config", "quickstart", "--store", store, "--set", "logging.tensorboard=false")
    common += ("--max-iters", 1)
    variants = ("--variant", "a", "--variant", "b optim.lr=1e-3")
    assert cli(*common, "--out", tmp_path / "single").exit_code == 0
    assert cli(*common, "--out", tmp_path / "sb", *variants).exit_code == 0
    before = sorted(tmp_path.rglob("*"))
    nested = CliRunner().invoke(main, [str(word) for word in (*common, "--out", tmp_path / "single", *variants)])
    assert nested.exit_code == 1
    assert (
        f"--out {tmp_path / 'single'} holds a run (last.safetensors, last.optim.safetensors, last.json, "
        in " ".join(nested.output.split())
    )
    inside = CliRunner().invoke(main, [str(word) for word in (*common, "--out", tmp_path / "sb")])
    assert inside.exit_code == 1
    assert (
        f"--out {tmp_path / 'sb'} holds runs side by side (a, b): a run trained into it would be the only one"
        in " ".join(inside.output.split())
    )
    assert sorted(tmp_path.rglob("*")) == before


def test_a_run_side_by_side_that_lost_its_last_checkpoint_stops_the_resume_of_the_others(
    store: Path, tmp_path: Path
) -> None:
    """It has a best checkpoint, so it did checkpoint: the others resumed without it, and it was said to hold none."""
    common = ("train", "--config", "quickstart", "--store", store, "--set", "logging.tensorboard=false")
    variants = ("--variant", "a", "--variant", "b optim.lr=1e-3")
    assert cli(*common, "--out", tmp_path / "sb", "--max-iters", 1, *variants).exit_code == 0
    for path in (tmp_path / "sb" / "b").glob("last.*"):
        path.unlink()
    resumed = CliRunner().invoke(main, ["train", "--resume", "--out", str(tmp_path / "sb"), "--max-iters", "2"])
    assert resumed.exit_code == 1
    assert (
        f"--resume: {tmp_path / 'sb' / 'b'} has no last checkpoint to resume from (no last.json; it holds "
        "best.safetensors, best.json), and the runs beside it would train on without it"
    ) in " ".join(resumed.output.split())
    assert read_metadata(tmp_path / "sb" / "a" / "last.json")["step"] == 1


def test_a_config_file_names_its_run_by_its_stem_whatever_its_path_and_suffix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--config quickstart --config /abs/cfgs/fast.YAML` trains into OUT/quickstart and OUT/fast: the file's path
    made the folder before (an absolute path pointing outside OUT, or folders nested in it) unless it ended in .yaml."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfgs").mkdir()
    for name in ("fast.YAML", "slow.conf"):
        (tmp_path / "cfgs" / name).write_text("base: quickstart\n")
    sources = ("quickstart", str(tmp_path / "cfgs" / "fast.YAML"), "cfgs/slow.conf")
    runs = planned_runs(str(tmp_path / "out"), sources, (), ())
    assert [run.folder for run in runs] == [tmp_path / "out" / name for name in ("quickstart", "fast", "slow")]


def test_two_config_files_of_one_name_are_refused_for_their_shared_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--config a/fast.yaml --config b/fast.yaml` was refused as "each preset or file once", which they are: what
    they share is the run folder OUT/fast."""
    monkeypatch.chdir(tmp_path)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "fast.yaml").write_text("base: quickstart\n")
    out = str(tmp_path / "out")
    with pytest.raises(
        UserError, match=r"--config a/fast.yaml and --config b/fast.yaml: both would train into .*out/fast"
    ):
        planned_runs(out, ("a/fast.yaml", "b/fast.yaml"), (), ())
    for sources in (("a/fast.yaml", "./a/fast.yaml"), ("quickstart", "quickstart")):
        with pytest.raises(UserError, match="each preset or file once"):
            planned_runs(out, sources, (), ())
