"""Typed result of the ``eol`` check and its conversion to ``vigil.v1.EolResult``.

The agent fills the fields that describe *what is installed and whose lifecycle applies* (proto fields
1-8). Release cycle and dates (fields 9-18) are the controller's: it maps each item onto its own EOL
dataset, so refreshing that dataset changes the verdict for the whole fleet without touching agents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from checks.base import Result
from proto.vigil.v1 import eol_pb2

KIND_OS: Final = "os"
KIND_PACKAGE: Final = "package"
KIND_RUNTIME: Final = "runtime"

# Whose support calendar applies to an item.
LIFECYCLE_OS: Final = "os"  # the OS vendor ships it and backports fixes: the OS release's dates apply
LIFECYCLE_UPSTREAM: Final = "upstream"  # nobody backports for us: the upstream project's dates apply


@dataclass(frozen=True)
class EolItem:
    """One thing with a lifecycle: the OS, an installed package or a runtime binary.

    ``name`` is the finding subject and is unique within one result ("debian 12",
    "nodejs 20.20.2 (dpkg:nodejs)", "python 3.7.16 (/root/.pyenv/versions/3.7.16/bin/python3)").
    ``product`` is the endoflife.date product id; ``version`` the installed upstream version.
    ``cycle`` stays "" on the agent: the controller derives it from product and version.
    """

    kind: str
    name: str
    product: str
    version: str
    source: str
    lifecycle: str
    lifecycle_reason: str
    cycle: str = ""
    # OS item only: ID_LIKE parents as product ids, tried in order by the controller (see osrelease.py).
    product_like: tuple[str, ...] = ()

    def to_proto(self) -> eol_pb2.EolItem:
        return eol_pb2.EolItem(
            kind=self.kind,
            name=self.name,
            product=self.product,
            version=self.version,
            cycle=self.cycle,
            source=self.source,
            lifecycle=self.lifecycle,
            lifecycle_reason=self.lifecycle_reason,
            product_like=list(self.product_like),
        )

    @classmethod
    def from_proto(cls, msg: eol_pb2.EolItem) -> EolItem:
        return cls(
            kind=msg.kind,
            name=msg.name,
            product=msg.product,
            version=msg.version,
            source=msg.source,
            lifecycle=msg.lifecycle,
            lifecycle_reason=msg.lifecycle_reason,
            cycle=msg.cycle,
            product_like=tuple(msg.product_like),
        )


@dataclass
class EolResult(Result):
    """Everything the check found, OS item first, then packages, then runtimes."""

    items: list[EolItem] = field(default_factory=list)
    # The agent carries no EOL dataset (the controller owns it), so this stays "" when sent.
    dataset_version: str = ""

    def to_proto(self) -> eol_pb2.EolResult:
        return eol_pb2.EolResult(items=[i.to_proto() for i in self.items], dataset_version=self.dataset_version)

    @classmethod
    def from_proto(cls, msg: eol_pb2.EolResult) -> EolResult:
        return cls(items=[EolItem.from_proto(i) for i in msg.items], dataset_version=msg.dataset_version)

    def by_name(self) -> dict[str, EolItem]:
        return {i.name: i for i in self.items}
