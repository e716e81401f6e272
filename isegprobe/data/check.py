"""Reading a whole dataset once to count it and find bad files before a long extraction does.

The default is to stop at the first bad item with a message naming its file; `skip` records it and goes on, for
`datasets check` (which lists every problem) and for any job that prefers to leave bad items out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tqdm import tqdm

from isegprobe.data.base import parse_split
from isegprobe.data.catalog import CATALOG
from isegprobe.data.registry import SampleSource
from isegprobe.data.sample import Sample
from isegprobe.errors import UserError

ON_ERROR_CHOICES = ("stop", "skip")


@dataclass(frozen=True)
class Finding:
    item: str
    message: str


@dataclass
class CheckReport:
    name: str
    split: str
    root: str
    items: int = 0
    images: int = 0
    instances: int = 0
    problems: list[Finding] = field(default_factory=list)  # unreadable or inconsistent items (skipped)
    warnings: list[Finding] = field(default_factory=list)  # readable items without any object

    @property
    def published(self) -> tuple[int, int] | None:
        facts = CATALOG.get(self.name)
        return facts.published.get(parse_split(self.split)[0]) if facts else None


def read_item(source: SampleSource, index: int, on_error: str, problems: list[Finding]) -> Sample | None:
    """`source[index]`; a bad item raises a `UserError` naming its file, or with `skip` is recorded and gives None."""
    if on_error not in ON_ERROR_CHOICES:
        raise UserError(f"--on-error: expected one of {ON_ERROR_CHOICES}, got {on_error!r}")
    item = source.ids()[index]
    try:
        return source[index]
    except UserError as error:
        message = str(error)
    except Exception as error:  # a loader bug or a library failing on a file: still name the item
        message = f"item {item} of {source.name}: {type(error).__name__}: {error}"
    if on_error == "stop":
        raise UserError(message)
    problems.append(Finding(item, message))
    return None


def check_source(source: SampleSource, on_error: str = "stop") -> CheckReport:
    """Read every item: count images (distinct image files) and instances, collect problems and empty items."""
    report = CheckReport(source.name, source.split, str(source.root), items=len(source))
    image_of = getattr(source, "image_id", None)
    ids = source.ids()
    images: set[str] = set()
    for index in tqdm(range(len(source)), desc=f"checking {source.name}/{source.split}", unit="item", disable=None):
        sample = read_item(source, index, on_error, report.problems)
        if sample is None:
            continue
        images.add(image_of(index) if image_of else ids[index])
        report.instances += sample.num_instances
        if sample.num_instances == 0:
            report.warnings.append(
                Finding(ids[index], "no object pixels (an empty mask, or every object hidden or filtered out)")
            )
    report.images = len(images)
    return report
