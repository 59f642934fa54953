"""The stage contract: config as fields, declared inputs/outputs/resources and the sample members it writes, models
loaded once in setup().

Stages never import Ray; `posetalk_data.runner` decides where they run.
"""
from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from typing import ClassVar

from ..config import PipelineConfig
from ..schema import ClipRecord, Member

log = logging.getLogger(__name__)


class ClipFailure(Exception):
    """Raised inside a stage for a clip that cannot be kept; the message is the reason a person reads."""


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.cpus < 0 or self.gpus < 0:
            raise ValueError(f"resources must be >= 0, got cpus={self.cpus} gpus={self.gpus}")


class Stage:
    """A step applied to clip records. Constructors are cheap and picklable; weights load in setup()."""

    name: ClassVar[str]
    resources: ClassVar[Resources] = Resources()
    members: ClassVar[tuple[Member, ...]] = ()   # the sample members it writes whatever the config (the schema)

    @classmethod
    def from_config(cls, cfg: PipelineConfig, before: list[Stage]) -> Stage:
        """The stage as the pipeline config sets it up; `before`: the stages that run before it."""
        return cls()

    def writes(self) -> tuple[Member, ...]:
        """The members it writes in this configuration: `members`, and those named after a model (feature layers)."""
        return self.members

    def inputs(self) -> list[str]:
        """Record fields (or arrays) this stage reads."""
        return []

    def outputs(self) -> list[str]:
        """Record fields (or arrays) this stage writes."""
        return []

    def setup(self) -> None:
        """Load models; called once per worker before the first batch."""

    def versions(self) -> dict[str, str]:
        """Model and tool versions that determine this stage's output (recorded in the manifest)."""
        return {}

    def process(self, record: ClipRecord) -> ClipRecord | list[ClipRecord]:
        raise NotImplementedError

    def process_batch(self, records: list[ClipRecord]) -> list[ClipRecord]:
        """Apply the stage to each live record; a clip's failure is recorded on it, never raised."""
        out: list[ClipRecord] = []
        for record in records:
            if not record.ok:
                out.append(record)
                continue
            try:
                result = self.process(record)
            except ClipFailure as err:
                record.errors[self.name] = str(err)
                result = record
            except Exception as err:  # a bug or a library error on one clip must not stop the build
                log.debug("stage %s failed on %s\n%s", self.name, record.spec.path, traceback.format_exc())
                record.errors[self.name] = f"unexpected {type(err).__name__}: {err}"
                result = record
            out.extend(result if isinstance(result, list) else [result])
        return out
