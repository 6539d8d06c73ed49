"""A validation protocol run's report, typed: what `convert.crossval` writes to crossval.json
and the trainer, the package report and the comparison read back. Read through the one
validating loader (`edge.loader.build`), so a report from another version of the code fails
with the key path that no longer fits, not with a KeyError deep in the trainer."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from edge.loader import ValidationError, build

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Scores:
    """A group of events as some model decided them: the ICBHI 4-class score, normal vs
    adventitious, and each finding's recall."""

    events: int
    sp: float
    se: float
    score: float
    binary: float  # normal vs adventitious, SPRSound's Task 1-1 score
    auc: float | None  # None: one class only
    crackle_recall: float | None
    wheeze_recall: float | None
    both_recall: float | None
    crackle_heard: float | None  # a crackle called crackle or both


@dataclass(frozen=True, kw_only=True)
class PooledScores(Scores):
    """The cross-validation folds pooled out of fold, with each fold's own ICBHI score."""

    fold_scores: list[float]
    fold_mean: float
    fold_sd: float


@dataclass(frozen=True, kw_only=True)
class HeardOtherwise(Scores):
    """Validation events heard otherwise (quieter, uncalibrated, through another channel),
    beside themselves as the protocol heard them ("at its level")."""

    adventitious_called: float
    adventitious_called_at_its_level: float
    adventitious_truth: float

    @property
    def ratio(self) -> float | None:
        """How much more often they are called adventitious heard otherwise (None where
        almost nothing was, as heard)."""
        at_level = self.adventitious_called_at_its_level
        return None if at_level < 0.02 else round(self.adventitious_called / at_level, 3)


@dataclass(frozen=True, kw_only=True)
class CrossValidated:
    icbhi: PooledScores | None = None
    sprsound: PooledScores | None = None
    sites: dict[str, Scores] = field(default_factory=dict)  # a site's judged recordings
    icbhi_by_stethoscope: dict[str, Scores] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Result:
    """A model (or the floor) through the protocol: cross-validated, and each stethoscope
    held out (`loso`, by stethoscope)."""

    cv: CrossValidated
    loso: dict[str, Scores]


@dataclass(frozen=True, kw_only=True)
class Objective:
    """The three scores recipes are ranked by and their mean (`objective`). Not what the
    choice maximises: that is `convert.choice.objective`, its value in the choices table."""

    icbhi_cv: float | None
    loso_mean: float | None
    sprsound_cv: float | None
    objective: float | None


@dataclass(frozen=True, kw_only=True)
class ShippedResult(Result, Objective):
    pass


@dataclass(frozen=True, kw_only=True)
class CurvePoint(Objective):
    epoch: int


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """The protocol's guess for the official ICBHI test."""

    official_test: float | None
    why: str = ""  # where there is none
    parts: dict[str, float] = field(default_factory=dict)  # by stethoscope
    mix: dict[str, float] = field(default_factory=dict)  # the official test's, by cycles
    assumed: dict[str, str] = field(default_factory=dict)  # stethoscopes never held out


@dataclass(frozen=True, kw_only=True)
class SameFolds:
    """0.5.0's protocol: one float network, its threshold chosen on what it is scored on."""

    argmax: Result
    thresholds: Result
    choice: dict[str, Any]  # convert.choice.Choice.to_dict()
    prediction: Prediction


@dataclass(frozen=True, kw_only=True)
class Quiet:
    db: float
    held_out: dict[str, HeardOtherwise]


@dataclass(frozen=True, kw_only=True)
class ChannelChange:
    """One change of channel (`convert.channels`): each held-out stethoscope and SPRSound's
    cross-validated events heard through it."""

    name: str
    what: str
    keeps_breath_band: bool  # gated: the model must not change its mind
    held_out: dict[str, HeardOtherwise]  # by stethoscope
    sprsound_cv: HeardOtherwise | None


@dataclass(frozen=True, kw_only=True)
class ChannelStress:
    """The channel stress test and the bars a change that keeps the breath band must meet."""

    min_sp: float
    ratio_range: tuple[float, float]  # called adventitious, heard through it / as heard
    changes: list[ChannelChange]


@dataclass(frozen=True, kw_only=True)
class GateRow:
    where: str  # "cv AKGC417L", "held out Meditron", "quiet LittC2SE"
    recipe: float | None
    floor: float | None  # the better floor variant there
    margin: float | None
    spread: float | None
    passed: bool


@dataclass(frozen=True, kw_only=True)
class Gate:
    passed: bool
    rows: list[GateRow]

    def failures(self) -> str:
        return ", ".join(f"{r.where} (margin {r.margin}, spread {r.spread})"
                         for r in self.rows if not r.passed)


@dataclass(frozen=True, kw_only=True)
class Int8Agreement:
    """Each fold member in int8 against its own float network at the fold's chosen epoch: the
    share of the fold's validation windows given the same top label. The trainer refuses a
    package with a member under `bar` on its training windows (`convert.verify`); this shows
    before the package is trained whether the recipe's members tend to pass (shown, not
    gated: new patients' windows are not the trainer's)."""

    bar: float
    members: dict[str, float]  # by "FOLD sSEED"

    @property
    def mean(self) -> float:
        return sum(self.members.values()) / len(self.members)

    @property
    def lowest(self) -> float:
        return min(self.members.values())

    @property
    def at_bar(self) -> int:
        """Members at or above the bar."""
        return sum(v >= self.bar for v in self.members.values())


@dataclass(frozen=True, kw_only=True)
class ProtocolReport:
    recipe: dict[str, Any]  # Recipe.to_dict()
    seeds: list[int]
    folds: list[str]
    int8: bool  # every member scored in int8 at its fold's chosen epoch
    shipped: ShippedResult  # the members' int8 outputs averaged, nested choices
    float_ensemble: Result
    members: dict[str, dict[str, float | None]]  # by seed: per_stethoscope()
    members_mean_sd: dict[str, list[float] | None]  # per_stethoscope() over the seeds
    same_folds: SameFolds
    floor: dict[str, Result]  # by variant
    choices: dict[str, dict[str, Any]]  # by fold: Choice.to_dict()
    shipping_choice: dict[str, Any]
    prediction: Prediction
    quiet: Quiet
    uncalibrated: dict[str, HeardOtherwise]
    curve: list[CurvePoint]
    floor_prediction: dict[str, Prediction]
    gate: Gate
    int8_agreement: Int8Agreement | None = None  # None: no int8 step yet, or an older report
    channels: ChannelStress | None = None  # None: a run before the channel stress test
    floor_channels: dict[str, ChannelStress] = field(default_factory=dict)  # by variant


def save(report: DataclassInstance, path: Path) -> None:
    """A report (this one, or the trainer's) as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(report), indent=1) + "\n")


def read(cls: type[T], path: Path, remedy: str) -> T:
    """A report of type `cls` from its JSON; one of another version stops the command, saying
    where it no longer fits and `remedy`."""
    try:
        report: T = build(cls, json.loads(path.read_text()), source=str(path))
        return report
    except ValidationError as exc:
        raise SystemExit(f"{exc}: a report of another version; {remedy}") from None


def load(path: Path) -> ProtocolReport:
    return read(ProtocolReport, path, "score the run again (python -m convert.protocol RUN)")
