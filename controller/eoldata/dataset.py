"""The dataset model: products, their release cycles, rolling releases; parsing, validation, matching.

Pure: parsing takes bytes or text (or reads one given path); nothing here holds state between calls.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from common.errors import VigilError
from controller.eoldata.versions import normalize_version, numbers

FORMAT = 1
PACKAGED = Path(__file__).parent / "products.json"
MAX_DATASET_BYTES = 8 * 1024 * 1024

_SLUG = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,63}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CYCLE_NAME = re.compile(r"^\d{1,9}(\.\d{1,9})*$")
_CYCLE_FIELDS = {
    "cycle", "codename", "release_date", "eol", "support", "extended_support", "commercial_support", "lts",
    "latest", "latest_release_date",
}
_HINTS = {
    "releaseCycle": "cycle", "releaseDate": "release_date", "extendedSupport": "extended_support",
    "eoes": "extended_support", "eoas": "support", "latestReleaseDate": "latest_release_date",
    "release": "release_date",
}
_TOP_FIELDS = {"format", "generated", "source", "title", "products", "rolling", "notes"}


class EolError(VigilError):
    pass


class DatasetError(EolError, ValueError):
    """An invalid dataset. ``problems`` lists (where, reason), e.g. ("products.debian[12].eol", "...")."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        first = "; ".join(f"{where}: {why}" for where, why in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"{source}: invalid EOL dataset: {first}{more}")


DateOrBool = dt.date | bool


@dataclass(frozen=True)
class Cycle:
    """One release cycle of a product, e.g. debian 12 or python 3.11."""

    product: str
    cycle: str
    eol: DateOrBool
    release_date: dt.date | None = None
    codename: str = ""
    support: DateOrBool | None = None
    extended_support: DateOrBool | None = None
    commercial_support: DateOrBool | None = None
    lts: bool = False
    latest: str = ""
    latest_release_date: dt.date | None = None

    @cached_property
    def key(self) -> tuple[int, ...]:
        """The cycle's numbers, computed once: matching compares them for every cycle of a product."""
        return numbers(self.cycle)

    def label(self) -> str:
        return f"{self.product} {self.cycle}"

    def ended(self, today: dt.date) -> bool:
        """Regular security support is over (``eol`` passed, or ``true``)."""
        return today >= self.eol if isinstance(self.eol, dt.date) else bool(self.eol)


@dataclass(frozen=True)
class Match:
    """What a version of a product matched: a cycle, or ``None`` with ``reason`` naming what was missing.

    ``reason`` is also set for a synthetic ended cycle ("older than 3.4, which reached end of life on ...").
    """

    cycle: Cycle | None
    reason: str = ""


@dataclass
class Dataset:
    """A validated dataset. ``version`` is its ``generated`` date; ``origin`` says where it came from."""

    version: str
    source: str
    products: dict[str, tuple[Cycle, ...]]
    document: dict[str, Any]
    rolling: dict[str, str] = field(default_factory=dict)
    title: str = ""
    path: Path | None = None
    origin: str = "document"  # "packaged" | "imported" | "file" | "document"
    notes: dict[str, str] = field(default_factory=dict)

    # -- queries -------------------------------------------------------------------------------
    @property
    def cycle_count(self) -> int:
        return sum(len(c) for c in self.products.values())

    @property
    def label(self) -> str:
        """How findings name this dataset: "endoflife.date as of 2026-11-21"."""
        return f"{self.title or 'EOL dataset'} as of {self.version}"

    def knows(self, product: str) -> bool:
        """The product has cycles here or is a rolling release here."""
        return product in self.products or product in self.rolling

    def cycle_for(self, product: str, version: str) -> Cycle | None:
        """The cycle ``version`` belongs to, or ``None``: endoflife.date's matching, the longest cycle
        whose dotted numbers prefix the version.

        ``3.11`` for python ``3.11.7``, ``12`` for debian ``12.8``, ``3.0`` for openssl
        ``1:3.0.11-1~deb12u2``. A cycle that has sub-cycles in the dataset (sles ``15`` next to
        ``15.1``...) matches only its exact version, so sles ``15.7`` is unknown rather than judged
        by 15 GA. No synthetic cycles here: see :meth:`match`.
        """
        cycles = self.products.get(product)
        want = normalize_version(product, version)
        if not cycles or want is None:
            return None
        matches = [c for c in cycles if c.key and want[: len(c.key)] == c.key]
        if not matches:
            return None
        best = max(matches, key=lambda c: len(c.key))
        has_children = any(len(c.key) > len(best.key) and c.key[: len(best.key)] == best.key for c in cycles)
        if has_children and len(want) > len(best.key):
            return None  # a sub-cycle we do not know (sles 15.7 next to 15.1..15.6)
        return best

    def match(self, product: str, version: str, today: dt.date) -> Match:
        """:meth:`cycle_for`, and when nothing matches, why; or a synthetic ended cycle ("before 3.4")
        for a version older than a listed cycle that has ended, when every listed cycle older than the
        version has ended too (always so for a version older than every cycle whose oldest has ended).

        Keeping old cycles out of the dataset must never turn an end-of-life host into an unknown one;
        but a version newer than every cycle, or older than one still supported, is unknown: the
        dataset cannot say.
        """
        cycles = self.products.get(product)
        if not cycles:
            return Match(None, f"{product or 'the product'} is not in the EOL dataset")
        want = normalize_version(product, version)
        if want is None:
            return Match(None, f"{product} version {version!r} has no version number to match a cycle by"
                         if version else f"no {product} version was reported")
        found = self.cycle_for(product, version)
        if found is not None:
            return Match(found)
        if any(c.key[: len(want)] == want or want[: len(c.key)] == c.key for c in cycles):
            return Match(None, f"{product} {version} matches more than one cycle or a sub-cycle the EOL dataset "
                               "does not list")
        newest = max(cycles, key=lambda c: c.key)
        if want > newest.key:
            return Match(None, f"{product} {version} is newer than every {product} cycle in the EOL dataset "
                               f"(newest: {newest.cycle}); refresh the dataset")
        following = min((c for c in cycles if c.key > want), key=lambda c: c.key)
        older = [c for c in cycles if c.key < want]
        if following.ended(today) and all(c.ended(today) for c in older):
            # Releases come in order: one older than an ended cycle, with every older cycle ended too,
            # has ended. This is what keeps a trimmed dataset from turning an old host into an unknown.
            when = f"on {following.eol.isoformat()}" if isinstance(following.eol, dt.date) else "(date not recorded)"
            synthetic = Cycle(product=product, cycle=f"before {following.cycle}", eol=True)
            return Match(synthetic, f"{product} {version} is older than {following.cycle}, which reached end of "
                                    f"life {when}")
        if not older:
            return Match(None, f"{product} {version} is older than every {product} cycle in the EOL dataset, and "
                               f"the oldest listed ({following.cycle}) is still supported")
        return Match(None, f"no {product} cycle in the EOL dataset matches version {version}")

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "source": self.source,
            "title": self.title,
            "label": self.label,
            "products": len(self.products),
            "cycles": self.cycle_count,
            "product_names": sorted(self.products),
            "rolling": sorted(self.rolling),
            "origin": self.origin,
            "loaded_from": str(self.path) if self.path else None,
        }


def is_product_id(name: str) -> bool:
    """An endoflife.date-style product id: lowercase letters, digits and ``._+-``, at most 64."""
    return bool(_SLUG.match(name))


def parse_date(value: Any) -> dt.date | None:
    if not isinstance(value, str) or not _DATE.match(value):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def date_or_bool(value: Any) -> DateOrBool | None:
    if isinstance(value, bool):
        return value
    return parse_date(value)


# -- parsing ----------------------------------------------------------------------------------------
def read_dataset(path: Path | str, origin: str = "file") -> Dataset:
    """Parse the dataset file at ``path``; a missing or unreadable file is a :class:`DatasetError` too."""
    file = Path(path)
    try:
        with file.open("rb") as f:
            raw = f.read(MAX_DATASET_BYTES + 1)
    except OSError as exc:
        raise DatasetError(str(file), [("file", f"cannot be read: {exc.strerror}")]) from None
    ds = parse_dataset(raw, str(file))
    ds.path, ds.origin = file, origin
    return ds


@functools.cache
def packaged_dataset() -> Dataset:
    """The dataset shipped with Vigil (``controller/eoldata/products.json``), read and validated once per
    process: it is part of the package and never changes under a running controller."""
    return read_dataset(PACKAGED, "packaged")


def parse_dataset(raw: bytes | str, source: str = "dataset") -> Dataset:
    """Parse and validate a dataset document; every problem of the document is reported at once."""
    if len(raw) > MAX_DATASET_BYTES:
        raise DatasetError(source, [("file", f"is larger than {MAX_DATASET_BYTES} bytes")])
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise DatasetError(source, [("file", "is not UTF-8 text")]) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(source, [(f"line {exc.lineno}", f"not valid JSON: {exc.msg}")]) from None
    except (ValueError, RecursionError) as exc:  # a number too long to convert, nesting too deep
        raise DatasetError(source, [("file", f"not usable JSON: {str(exc)[:120] or 'nested too deeply'}")]) from None
    return from_document(doc, source)


def from_document(doc: Any, source: str = "dataset") -> Dataset:
    """Validate a parsed JSON document as a dataset."""
    problems: list[tuple[str, str]] = []
    products: dict[str, tuple[Cycle, ...]] = {}
    if not isinstance(doc, Mapping):
        raise DatasetError(source, [("document", "must be a JSON object with format, generated, source, products")])
    try:
        copy = json.loads(json.dumps(doc, ensure_ascii=False, allow_nan=False).encode("utf-8"))
    except (ValueError, UnicodeEncodeError, RecursionError):
        raise DatasetError(source, [("document", "holds a value JSON text cannot carry (NaN, Infinity, an unpaired "
                                                 "surrogate or nesting too deep)")]) from None
    for key in doc:
        if key not in _TOP_FIELDS:
            problems.append((str(key), f"unknown top-level field; expected {', '.join(sorted(_TOP_FIELDS))}"))
    fmt = doc.get("format")
    if isinstance(fmt, bool) or fmt != FORMAT:
        problems.append(("format", f"must be {FORMAT}, got {fmt!r}"))
    generated = doc.get("generated")
    if parse_date(generated) is None:
        problems.append(("generated", f"must be a date YYYY-MM-DD, got {generated!r}"))
    if not isinstance(doc.get("source"), str) or not doc.get("source"):
        problems.append(("source", "must be a non-empty string saying where the dates come from"))
    title = doc.get("title", "")
    if not isinstance(title, str) or len(title) > 80:
        problems.append(("title", "must be a short string naming the source, e.g. 'endoflife.date'"))
        title = ""
    notes = doc.get("notes", {})
    if not isinstance(notes, Mapping) or not all(isinstance(v, str) for v in notes.values()):
        problems.append(("notes", "must map product names to strings"))
        notes = {}
    rolling = doc.get("rolling", {})
    if not isinstance(rolling, Mapping):
        problems.append(("rolling", "must map product ids of rolling releases to a text saying what they are"))
        rolling = {}
    for name, what in rolling.items():
        if not _SLUG.match(name):
            problems.append((f"rolling.{name}", "product name must be an id such as 'arch' or 'opensuse-tumbleweed'"))
        elif not isinstance(what, str) or not what.strip():
            problems.append((f"rolling.{name}", "must be a non-empty text saying what the rolling release is"))
    raw_products = doc.get("products")
    if not isinstance(raw_products, Mapping) or not raw_products:
        problems.append(("products", "must be a non-empty object of product -> list of cycles"))
        raw_products = {}
    for name, cycles in raw_products.items():
        where = f"products.{name}"
        if not _SLUG.match(name):
            problems.append((where, "product name must be an endoflife.date id such as 'debian' or "
                                    "'apache-http-server'"))
            continue
        if name in rolling:
            problems.append((where, "is also listed under rolling; a product has cycles or is rolling, not both"))
        if not isinstance(cycles, list) or not cycles:
            problems.append((where, "must be a non-empty list of cycles"))
            continue
        seen: set[str] = set()
        parsed: list[Cycle] = []
        for i, raw in enumerate(cycles):
            cyc = _parse_cycle(name, i, raw, problems)
            if cyc is None:
                continue
            if cyc.cycle in seen:
                problems.append((f"{where}[{cyc.cycle}]", "cycle is listed twice"))
            seen.add(cyc.cycle)
            parsed.append(cyc)
        products[name] = tuple(sorted(parsed, key=lambda c: c.key, reverse=True))
    if problems:
        raise DatasetError(source, problems)
    return Dataset(version=str(generated), source=str(doc["source"]), products=products, document=copy,
                   rolling={str(k): str(v) for k, v in rolling.items()}, title=title, notes=dict(notes))


def _parse_cycle(product: str, index: int, raw: Any, problems: list[tuple[str, str]]) -> Cycle | None:
    if not isinstance(raw, Mapping):
        problems.append((f"products.{product}[{index}]", "each cycle must be an object"))
        return None
    name = raw.get("cycle")
    label = name if isinstance(name, str) and name and len(name) <= 40 else f"#{index}"
    where = f"products.{product}[{label}]"
    before = len(problems)
    for key in raw:
        if key not in _CYCLE_FIELDS:
            hint = f" (did you mean {_HINTS[key]!r}?)" if key in _HINTS else ""
            problems.append((f"{where}.{key}", f"unknown field{hint}"))
    if not isinstance(name, str) or not _CYCLE_NAME.match(name.strip()):
        shown = name if not isinstance(name, str) or len(name) <= 40 else name[:40] + "..."
        problems.append((f"{where}.cycle", f"must be dotted numbers such as '12' or '3.11', got {shown!r}"))
    if "eol" not in raw:
        problems.append((f"{where}.eol", "is required: a date YYYY-MM-DD, or true (ended, date unknown) / false"))
    elif date_or_bool(raw["eol"]) is None:
        problems.append((f"{where}.eol", f"must be a date YYYY-MM-DD or true/false, got {_short(raw['eol'])}"))
    for key in ("support", "extended_support", "commercial_support"):
        if key in raw and raw[key] is not None and date_or_bool(raw[key]) is None:
            problems.append((f"{where}.{key}", f"must be a date YYYY-MM-DD or true/false, got {_short(raw[key])}"))
    for key in ("release_date", "latest_release_date"):
        if raw.get(key) is not None and parse_date(raw[key]) is None:
            problems.append((f"{where}.{key}", f"must be a date YYYY-MM-DD, got {_short(raw[key])}"))
    for key in ("codename", "latest"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            problems.append((f"{where}.{key}", f"must be a string, got {_short(raw[key])}"))
    if "lts" in raw and not isinstance(raw["lts"], bool):
        problems.append((f"{where}.lts", f"must be true or false, got {_short(raw['lts'])}"))
    if len(problems) > before:
        return None
    eol = date_or_bool(raw["eol"])
    assert eol is not None
    return Cycle(
        product=product,
        cycle=str(name).strip(),
        eol=eol,
        release_date=parse_date(raw.get("release_date")),
        codename=str(raw.get("codename") or ""),
        support=date_or_bool(raw.get("support")),
        extended_support=date_or_bool(raw.get("extended_support")),
        commercial_support=date_or_bool(raw.get("commercial_support")),
        lts=bool(raw.get("lts", False)),
        latest=str(raw.get("latest") or ""),
        latest_release_date=parse_date(raw.get("latest_release_date")),
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- writing ----------------------------------------------------------------------------------------
def dump_document(doc: Mapping[str, Any]) -> str:
    """JSON with one cycle per line, so that a dataset diff reads as one line per changed cycle."""
    lines = ["{"]
    for key in ("format", "generated", "title", "source"):
        if key in doc:
            lines.append(f"  {json.dumps(key)}: {json.dumps(doc[key], ensure_ascii=False)},")
    for section in ("notes", "rolling"):
        if section in doc:
            lines.append(f'  "{section}": {{')
            entries = list(doc[section].items())
            for j, (name, text) in enumerate(entries):
                lines.append(f"    {json.dumps(name)}: {json.dumps(text, ensure_ascii=False)}"
                             + ("," if j < len(entries) - 1 else ""))
            lines.append("  },")
    lines.append('  "products": {')
    products = list(doc["products"].items())
    for j, (name, cycles) in enumerate(products):
        lines.append(f"    {json.dumps(name)}: [")
        for k, cyc in enumerate(cycles):
            lines.append(f"      {json.dumps(cyc, ensure_ascii=False)}" + ("," if k < len(cycles) - 1 else ""))
        lines.append("    ]" + ("," if j < len(products) - 1 else ""))
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"
