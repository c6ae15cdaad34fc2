"""End-of-life judgement: the controller's offline EOL dataset, cycle matching and enrichment.

The agent reports *what is installed* (``EolItem`` fields 1-8: kind, name, product, version, source,
lifecycle); the controller maps every item to its release cycle with its own dataset (fields 9-18)
before the baselines judge it, so refreshing the dataset on the controller (``vigil eol update``)
changes the verdict for the whole fleet without touching a host.

The dataset mirrors endoflife.date's model (product -> cycle -> release date, eol, support, lts,
extended support; ``eol`` and the support fields are a date or a boolean). Its file format is
documented in ``docs/eol-dataset.md``. The packaged copy lives in ``controller/eol_data/``; an
operator-imported one in ``<data dir>/eol/products.json`` takes precedence.

Public: :class:`Dataset`, :class:`Cycle`, :func:`normalize_version`, :func:`enrich`,
:func:`validate_facts`, :func:`active_dataset`, :func:`use_data_dir`, :func:`store_dataset`,
:func:`convert_api`, :func:`register_routes`, :func:`add_cli`, :func:`run_cli`.

Exception tree::

    VigilError
     └── EolError
          ├── DatasetError (ValueError)    a dataset file is invalid; ``problems`` names product/cycle/field
          └── FetchError (OSError)         the endoflife.date API could not be read

This module deliberately has no ``from __future__ import annotations``: it defines FastAPI routes,
and FastAPI must evaluate the ``Annotated`` dependency aliases (see ``controller/api.py``). It imports
only the standard library at module level, because the stdlib-only ``vigil`` CLI imports it too.
"""

import argparse
import datetime as dt
import json
import os
import re
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Self

from common import __version__
from common.cli import add_common
from common.errors import UsageError, VigilError

if TYPE_CHECKING:
    from fastapi import APIRouter

    from controller.core import Controller

FORMAT = 1
PACKAGED = Path(__file__).parent / "eol_data" / "products.json"
IMPORTED_NAME = Path("eol") / "products.json"
DEFAULT_API = "https://endoflife.date/api/v1"
API_ENV = "VIGIL_EOL_API"
# days_to_eol / days_to_end_of_support when no end date is set and the cycle has not ended.
NO_DATE_DAYS = 36500
# Cycles whose support ended more than this many years ago are left out of converted datasets.
KEEP_YEARS = 8
MAX_DATASET_BYTES = 8 * 1024 * 1024

# Products whose endoflife.date "extended support" (eoes) is free and reaches a stock install (Debian
# LTS reuses the security archive). Elsewhere it is paid or opt-in (Ubuntu Pro ESM, RHEL ELS, SUSE
# LTSS, OpenSSL premium, HeroDevs for Node.js, MariaDB Enterprise): kept as commercial_support, shown
# as evidence, never counted as "supported".
FREE_EXTENDED_SUPPORT = frozenset({"debian"})
# Products judged by their major release only: endoflife.date also lists minor/EUS rows for RHEL, but
# `dnf update` moves a host to the newest minor release, so "9.3" means "RHEL 9, not yet updated".
MAJOR_ONLY = frozenset({"rhel"})

_SLUG = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,63}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CYCLE_FIELDS = {
    "cycle", "codename", "release_date", "eol", "support", "extended_support", "commercial_support", "lts",
    "latest", "latest_release_date",
}
_HINTS = {
    "releaseCycle": "cycle", "releaseDate": "release_date", "extendedSupport": "extended_support",
    "eoes": "extended_support", "eoas": "support", "latestReleaseDate": "latest_release_date",
    "release": "release_date",
}
_TOP_FIELDS = {"format", "generated", "source", "products", "notes"}
_KINDS = {"os", "package", "runtime"}
_LIFECYCLES = {"os", "upstream", ""}


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


class FetchError(EolError, OSError):
    pass


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

    @property
    def key(self) -> tuple[int, ...]:
        return _numbers(self.cycle)

    def label(self) -> str:
        return f"{self.product} {self.cycle}"


@dataclass
class Dataset:
    """A validated dataset. ``version`` is its ``generated`` date; ``origin`` says where it came from."""

    version: str
    source: str
    products: dict[str, tuple[Cycle, ...]]
    document: dict[str, Any]
    path: Path | None = None
    origin: str = "document"  # "packaged" | "imported" | "file" | "document"
    notes: dict[str, str] = field(default_factory=dict)

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path | str | None = None, data_dir: Path | str | None = None) -> Self:
        """``path`` if given; else ``<data_dir>/eol/products.json`` when an operator imported one; else packaged."""
        if path is not None:
            origin, file = "file", Path(path)
        elif data_dir is not None and (Path(data_dir) / IMPORTED_NAME).is_file():
            origin, file = "imported", Path(data_dir) / IMPORTED_NAME
        else:
            origin, file = "packaged", PACKAGED
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise DatasetError(str(file), [("file", f"cannot be read: {exc.strerror}")]) from None
        ds = cls.from_bytes(raw, str(file))
        ds.path, ds.origin = file, origin
        return ds

    @classmethod
    def from_bytes(cls, raw: bytes, source: str = "dataset") -> Self:
        try:
            doc = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise DatasetError(source, [("file", "is not UTF-8 text")]) from None
        except json.JSONDecodeError as exc:
            raise DatasetError(source, [(f"line {exc.lineno}", f"not valid JSON: {exc.msg}")]) from None
        return cls.from_document(doc, source)

    @classmethod
    def from_document(cls, doc: Any, source: str = "dataset") -> Self:
        """Validate ``doc`` as a whole; every problem is collected and reported at once."""
        problems: list[tuple[str, str]] = []
        products: dict[str, tuple[Cycle, ...]] = {}
        if not isinstance(doc, Mapping):
            raise DatasetError(source, [("document", "must be a JSON object with format, generated, source, products")])
        for key in doc:
            if key not in _TOP_FIELDS:
                problems.append((str(key), f"unknown top-level field; expected {', '.join(sorted(_TOP_FIELDS))}"))
        if doc.get("format") != FORMAT:
            problems.append(("format", f"must be {FORMAT}, got {doc.get('format')!r}"))
        generated = doc.get("generated")
        if _parse_date(generated) is None:
            problems.append(("generated", f"must be a date YYYY-MM-DD, got {generated!r}"))
        if not isinstance(doc.get("source"), str) or not doc.get("source"):
            problems.append(("source", "must be a non-empty string saying where the dates come from"))
        notes = doc.get("notes", {})
        if not isinstance(notes, Mapping) or not all(isinstance(v, str) for v in notes.values()):
            problems.append(("notes", "must map product names to strings"))
            notes = {}
        raw_products = doc.get("products")
        if not isinstance(raw_products, Mapping) or not raw_products:
            problems.append(("products", "must be a non-empty object of product -> list of cycles"))
            raw_products = {}
        for name, cycles in raw_products.items():
            where = f"products.{name}"
            if not isinstance(name, str) or not _SLUG.match(name):
                problems.append((where, "product name must be an endoflife.date id such as 'debian' or "
                                        "'apache-http-server'"))
                continue
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
        return cls(version=str(generated), source=str(doc["source"]), products=products,
                   document=json.loads(json.dumps(doc)), notes=dict(notes))

    # -- queries -------------------------------------------------------------------------------
    @property
    def cycle_count(self) -> int:
        return sum(len(c) for c in self.products.values())

    def cycle_for(self, product: str, version: str) -> Cycle | None:
        """endoflife.date's matching: the longest cycle whose dotted numbers prefix the version.

        ``3.11`` for python ``3.11.7``, ``12`` for debian ``12.8``, ``3.0`` for openssl
        ``1:3.0.11-1~deb12u2``. A cycle that has sub-cycles in the dataset (sles ``15`` next to
        ``15.1``...) matches only its exact version, so sles ``15.7`` is unknown rather than judged
        by 15 GA. A version that matches no cycle but is older than a tracked one (apache ``2.2``,
        nodejs ``9``) gets a synthetic ended cycle ("before 2.4"): the dataset lists every supported
        cycle, so an unlisted older one is not supported. A version newer than every cycle is unknown.
        """
        cycles = self.products.get(product)
        want = normalize_version(product, version)
        if not cycles or want is None:
            return None
        matches = [c for c in cycles if c.key and want[: len(c.key)] == c.key]
        if matches:
            best = max(matches, key=lambda c: len(c.key))
            has_children = any(len(c.key) > len(best.key) and c.key[: len(best.key)] == best.key for c in cycles)
            if has_children and len(want) > len(best.key):
                return None  # a sub-cycle we do not know (sles 15.7 next to 15.1..15.6)
            return best
        if any(c.key[: len(want)] == want for c in cycles):
            return None  # "15" when only 15.0 ... 15.6 are tracked: ambiguous
        newer = [c for c in cycles if c.key and c.key > want]
        if newer:
            following = min(newer, key=lambda c: c.key)
            return Cycle(product=product, cycle=f"before {following.cycle}", eol=True, lts=False)
        return None

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "source": self.source,
            "products": len(self.products),
            "cycles": self.cycle_count,
            "product_names": sorted(self.products),
            "origin": self.origin,
            "loaded_from": str(self.path) if self.path else None,
        }


def _parse_date(value: Any) -> dt.date | None:
    if not isinstance(value, str) or not _DATE.match(value):
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None


def _date_or_bool(value: Any) -> DateOrBool | None:
    if isinstance(value, bool):
        return value
    return _parse_date(value)


def _parse_cycle(product: str, index: int, raw: Any, problems: list[tuple[str, str]]) -> Cycle | None:
    if not isinstance(raw, Mapping):
        problems.append((f"products.{product}[{index}]", "each cycle must be an object"))
        return None
    name = raw.get("cycle")
    label = name if isinstance(name, str) and name else f"#{index}"
    where = f"products.{product}[{label}]"
    before = len(problems)
    for key in raw:
        if key not in _CYCLE_FIELDS:
            hint = f" (did you mean {_HINTS[key]!r}?)" if key in _HINTS else ""
            problems.append((f"{where}.{key}", f"unknown field{hint}"))
    if not isinstance(name, str) or not name.strip() or not _numbers(name):
        problems.append((f"{where}.cycle", f"must be a version-like string such as '12' or '3.11', got {name!r}"))
    if "eol" not in raw:
        problems.append((f"{where}.eol", "is required: a date YYYY-MM-DD, or true (ended, date unknown) / false"))
    elif _date_or_bool(raw["eol"]) is None:
        problems.append((f"{where}.eol", f"must be a date YYYY-MM-DD or true/false, got {raw['eol']!r}"))
    for key in ("support", "extended_support", "commercial_support"):
        if key in raw and raw[key] is not None and _date_or_bool(raw[key]) is None:
            problems.append((f"{where}.{key}", f"must be a date YYYY-MM-DD or true/false, got {raw[key]!r}"))
    for key in ("release_date", "latest_release_date"):
        if raw.get(key) is not None and _parse_date(raw[key]) is None:
            problems.append((f"{where}.{key}", f"must be a date YYYY-MM-DD, got {raw[key]!r}"))
    for key in ("codename", "latest"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            problems.append((f"{where}.{key}", f"must be a string, got {raw[key]!r}"))
    if "lts" in raw and not isinstance(raw["lts"], bool):
        problems.append((f"{where}.lts", f"must be true or false, got {raw['lts']!r}"))
    if len(problems) > before:
        return None
    eol = _date_or_bool(raw["eol"])
    assert eol is not None
    return Cycle(
        product=product,
        cycle=str(name).strip(),
        eol=eol,
        release_date=_parse_date(raw.get("release_date")),
        codename=str(raw.get("codename") or ""),
        support=_date_or_bool(raw.get("support")),
        extended_support=_date_or_bool(raw.get("extended_support")),
        commercial_support=_date_or_bool(raw.get("commercial_support")),
        lts=bool(raw.get("lts", False)),
        latest=str(raw.get("latest") or ""),
        latest_release_date=_parse_date(raw.get("latest_release_date")),
    )


# -- versions ------------------------------------------------------------------------------------
_EPOCH = re.compile(r"^\d+:")
_LEADING = re.compile(r"^(\d+(?:\.\d+)*)")
_JAVA_LEGACY = re.compile(r"^1\.(\d+)(.*)$")
_JAVA_PRODUCTS = frozenset({"eclipse-temurin", "java", "openjdk", "amazon-corretto", "azul-zulu"})


def normalize_version(product: str, version: str) -> tuple[int, ...] | None:
    """The upstream version as numbers: ``1:3.0.11-1~deb12u2`` -> (3, 0, 11), ``v18.19.0`` -> (18, 19, 0).

    Strips a Debian epoch (``1:``), a leading ``v``, and everything after the dotted numbers (Debian
    revision ``-1~deb12u2``, RPM release ``-27.el9``, ``+dfsg``, ``p1``, letters as in ``1.1.1w``).
    Java's legacy ``1.8.0_392`` is read as 8.
    """
    text = (version or "").strip()
    if text[:1] in ("v", "V"):
        text = text[1:]
    text = _EPOCH.sub("", text)
    if product in _JAVA_PRODUCTS:
        legacy = _JAVA_LEGACY.match(text)
        if legacy:  # 1.8.0_392 is Java 8 update 392
            text = legacy.group(1) + legacy.group(2).replace("_", ".")
    m = _LEADING.match(text)
    if not m:
        return None
    return _numbers(m.group(1))


def _numbers(text: str) -> tuple[int, ...]:
    m = _LEADING.match(text.strip())
    if not m:
        return ()
    return tuple(int(p) for p in m.group(1).split("."))


# -- judging ------------------------------------------------------------------------------------
_RESULT_FIELDS = (
    "cycle", "release_date", "eol_date", "extended_support_date", "eol", "days_to_eol", "in_extended_support",
    "supported", "days_to_end_of_support", "lts", "known",
)


def _judge(c: Cycle, today: dt.date) -> dict[str, Any]:
    eol_date = c.eol if isinstance(c.eol, dt.date) else None
    eol = today >= eol_date if eol_date else bool(c.eol)
    ext = c.extended_support
    ext_date = ext if isinstance(ext, dt.date) else None
    ext_running = (today < ext_date) if ext_date else (ext is False)
    in_ext = eol and ext_running
    # Ended on an unknown date counts as 0 days left; no date and not ended as NO_DATE_DAYS.
    days_to_eol = (eol_date - today).days if eol_date else (0 if eol else NO_DATE_DAYS)
    if ext_date:
        days_to_end = (ext_date - today).days
    elif ext is False:  # extended support with no end date set
        days_to_end = NO_DATE_DAYS
    else:
        days_to_end = days_to_eol
    return {
        "cycle": c.cycle,
        "release_date": c.release_date.isoformat() if c.release_date else "",
        "eol_date": eol_date.isoformat() if eol_date else "",
        "extended_support_date": ext_date.isoformat() if ext_date else "",
        "eol": eol,
        "days_to_eol": _int32(days_to_eol),
        "in_extended_support": in_ext,
        "supported": (not eol) or in_ext,
        "days_to_end_of_support": _int32(days_to_end),
        "lts": c.lts,
        "known": True,
    }


def _unknown() -> dict[str, Any]:
    return {"cycle": "", "release_date": "", "eol_date": "", "extended_support_date": "", "eol": False,
            "days_to_eol": 0, "in_extended_support": False, "supported": False, "days_to_end_of_support": 0,
            "lts": False, "known": False}


def _int32(n: int) -> int:
    return max(-(2**31), min(2**31 - 1, n))


def _describe(c: Cycle) -> str:
    if isinstance(c.eol, dt.date):
        return f"{c.label()} ends {c.eol.isoformat()}"
    return f"{c.label()} {'has ended' if c.eol else 'has no end date'}"


def _append_reason(item: dict[str, Any], text: str) -> None:
    prev = str(item.get("lifecycle_reason") or "").strip()
    item["lifecycle_reason"] = f"{prev}; {text}" if prev else text


def enrich(facts: Mapping[str, Any], dataset: Dataset, today: dt.date) -> dict[str, Any]:
    """Fill EolItem fields 9-18 of every item from ``dataset`` as of ``today``; returns a new dict.

    Whatever the agent sent in those fields is overwritten: the controller judges with its own data.
    An item with lifecycle ``os`` (the OS vendor patches it, e.g. Debian's openssl) takes the dates of
    the OS item's cycle and keeps its own product and version; ``lifecycle_reason`` says so. Unknown
    product or cycle: ``known`` false and empty dates (the evaluator passes such items with a note).
    """
    out = dict(facts)
    items = [dict(i) for i in facts.get("items", []) if isinstance(i, Mapping)]
    os_item = next((i for i in items if i.get("kind") == "os"), None)
    os_cycle = dataset.cycle_for(str(os_item.get("product", "")), str(os_item.get("version", ""))) if os_item else None
    for item in items:
        product, version = str(item.get("product", "")), str(item.get("version", ""))
        own = dataset.cycle_for(product, version)
        if item.get("lifecycle") == "os" and item is not os_item:
            if os_cycle is None:
                item.update(_unknown())
                _append_reason(item, "the OS lifecycle applies, but the OS is not in the EOL dataset"
                               if os_item else "the OS lifecycle applies, but no OS item was reported")
                continue
            item.update(_judge(os_cycle, today))
            item["cycle"] = os_cycle.label()
            upstream = f" (upstream: {_describe(own)})" if own is not None else ""
            _append_reason(item, f"judged by {os_cycle.label()}'s lifecycle{upstream}")
            continue
        if own is None:
            item.update(_unknown())
            why = "product not in the EOL dataset" if product not in dataset.products else (
                f"no {product} cycle matches version {version!r}")
            _append_reason(item, why)
            continue
        item.update(_judge(own, today))
        if own.cycle.startswith("before "):
            _append_reason(item, f"no {product} cycle in the EOL dataset matches {version}, which is older than "
                           f"cycle {own.cycle[7:]}; the dataset lists every supported cycle, so this one has ended")
        commercial = own.commercial_support
        if item["eol"] and not item["in_extended_support"] and commercial is not None and commercial is not True:
            if commercial is False:
                _append_reason(item, "paid extended support exists (no end date set); not counted as supported")
            elif today < commercial:
                _append_reason(item, f"paid extended support exists until {commercial.isoformat()}; "
                                     "not counted as supported")
    out["items"] = items
    sent = str(facts.get("dataset_version", "") or "")
    if sent and sent != dataset.version:
        out["agent_dataset_version"] = sent
    out["dataset_version"] = dataset.version
    return out


def validate_facts(facts: Mapping[str, Any]) -> list[str]:
    """Shape problems of an ``eol`` result as the agent sent it (the controller re-validates input)."""
    problems: list[str] = []
    items = facts.get("items", [])
    if not isinstance(items, list):
        return ["items must be a list"]
    if len(items) > 20000:
        problems.append(f"items: {len(items)} items is more than the 20000 allowed")
    for i, item in enumerate(items[:20000]):
        if not isinstance(item, Mapping):
            problems.append(f"items[{i}] must be an object")
            continue
        if item.get("kind") not in _KINDS:
            problems.append(f"items[{i}].kind {item.get('kind')!r} is not one of {sorted(_KINDS)}")
        if item.get("lifecycle", "") not in _LIFECYCLES:
            problems.append(f"items[{i}].lifecycle {item.get('lifecycle')!r} is not 'os' or 'upstream'")
        for key, limit in (("name", 512), ("product", 128), ("version", 256), ("source", 1024),
                           ("lifecycle_reason", 2048)):
            value = item.get(key, "")
            if not isinstance(value, str):
                problems.append(f"items[{i}].{key} must be a string")
            elif len(value) > limit:
                problems.append(f"items[{i}].{key} is longer than {limit} characters")
        if not str(item.get("name", "")).strip():
            problems.append(f"items[{i}].name must not be empty (it is the finding subject)")
    return problems


# -- the active dataset (reloaded when an import replaces the file) ---------------------------------
class _Active:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data_dir: Path | None = None
        self.stamp: tuple[str, int, int, int] | None = None
        self.dataset: Dataset | None = None

    def get(self) -> Dataset:
        file = self.data_dir / IMPORTED_NAME if self.data_dir else None
        try:
            st = file.stat() if file else None
        except OSError:
            st = None
        stamp = (str(file), st.st_mtime_ns, st.st_size, st.st_ino) if file and st else ("packaged", 0, 0, 0)
        with self.lock:
            if self.dataset is None or stamp != self.stamp:
                try:
                    self.dataset = Dataset.load(data_dir=self.data_dir)
                except DatasetError:
                    if self.dataset is None:  # a broken import never replaces a good dataset
                        self.dataset = Dataset.load()
                self.stamp = stamp
            return self.dataset


_ACTIVE = _Active()


def use_data_dir(data_dir: Path | str | None) -> None:
    """Make :func:`active_dataset` prefer ``<data_dir>/eol/products.json`` (set when the controller starts)."""
    with _ACTIVE.lock:
        _ACTIVE.data_dir = Path(data_dir) if data_dir is not None else None
        _ACTIVE.dataset, _ACTIVE.stamp = None, None


def active_dataset() -> Dataset:
    """The dataset to judge with now: the imported one if present (re-read when it changes), else packaged."""
    return _ACTIVE.get()


# -- writing ------------------------------------------------------------------------------------
def dump_document(doc: Mapping[str, Any]) -> str:
    """JSON with one cycle per line, so that a dataset diff reads as one line per changed cycle."""
    lines = ["{"]
    head = [k for k in ("format", "generated", "source") if k in doc]
    for key in head:
        lines.append(f"  {json.dumps(key)}: {json.dumps(doc[key], ensure_ascii=False)},")
    if "notes" in doc:
        lines.append('  "notes": {')
        notes = list(doc["notes"].items())
        for j, (name, text) in enumerate(notes):
            lines.append(f"    {json.dumps(name)}: {json.dumps(text, ensure_ascii=False)}"
                         + ("," if j < len(notes) - 1 else ""))
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


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".products-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def store_dataset(data_dir: Path | str, dataset: Dataset) -> Path:
    """Write ``dataset`` as ``<data_dir>/eol/products.json`` atomically; the previous one is kept as .prev."""
    target = Path(data_dir) / IMPORTED_NAME
    if target.exists():
        _write_atomic(target.with_suffix(".prev.json"), target.read_text(encoding="utf-8"))
    _write_atomic(target, dump_document(dataset.document))
    return target


# -- endoflife.date API -> dataset --------------------------------------------------------------
def _api_value(value: Any, where: str) -> DateOrBool | None:
    if value is None:
        return None
    parsed = _date_or_bool(value)
    if parsed is None:
        raise DatasetError("endoflife.date response", [(where, f"{value!r} is not a date or true/false")])
    return parsed


def _json_value(value: DateOrBool) -> str | bool:
    return value.isoformat() if isinstance(value, dt.date) else value


def _convert_release(product: str, rel: Mapping[str, Any]) -> dict[str, Any]:
    """One release of either API flavour (v1 ``releases[]`` or legacy ``/api/<product>.json``) in our format."""
    v1 = "name" in rel and "isEol" in rel
    name = str(rel.get("name") if v1 else rel.get("cycle", "")).strip()
    where = f"{product}[{name}]"
    out: dict[str, Any] = {"cycle": name}
    if rel.get("codename"):
        out["codename"] = str(rel["codename"])
    if rel.get("releaseDate"):
        out["release_date"] = str(rel["releaseDate"])
    if v1:
        eol = _api_value(rel.get("eolFrom"), f"{where}.eolFrom")
        out["eol"] = _json_value(eol) if eol is not None else bool(rel.get("isEol"))
        if "isEoas" in rel or "eoasFrom" in rel:
            eoas = _api_value(rel.get("eoasFrom"), f"{where}.eoasFrom")
            out["support"] = _json_value(eoas) if eoas is not None else bool(rel.get("isEoas"))
        extended: DateOrBool | None = None
        if "isEoes" in rel or "eoesFrom" in rel:
            extended = _api_value(rel.get("eoesFrom"), f"{where}.eoesFrom")
            if extended is None and isinstance(rel.get("isEoes"), bool):
                extended = rel["isEoes"]
        out["lts"] = bool(rel.get("isLts"))
        latest = rel.get("latest")
        if isinstance(latest, Mapping):
            if latest.get("name"):
                out["latest"] = str(latest["name"])
            if latest.get("date"):
                out["latest_release_date"] = str(latest["date"])
    else:
        eol = _api_value(rel.get("eol"), f"{where}.eol")
        out["eol"] = _json_value(eol) if eol is not None else False
        support = _api_value(rel.get("support"), f"{where}.support")
        if support is not None:
            out["support"] = _json_value(support)
        extended = _api_value(rel.get("extendedSupport"), f"{where}.extendedSupport")
        out["lts"] = bool(rel.get("lts"))  # a date means "LTS from": still an LTS cycle
        if rel.get("latest"):
            out["latest"] = str(rel["latest"])
        if rel.get("latestReleaseDate"):
            out["latest_release_date"] = str(rel["latestReleaseDate"])
    if extended is not None:
        out["extended_support" if product in FREE_EXTENDED_SUPPORT else "commercial_support"] = _json_value(extended)
    return out


def _keep(cycle: Mapping[str, Any], today: dt.date, years: int) -> bool:
    """Supported cycles, and those that ended in the last ``years`` years (counting free extended support)."""
    cutoff = today.replace(year=today.year - years) if not (today.month == 2 and today.day == 29) else (
        today - dt.timedelta(days=365 * years))
    ends = [_date_or_bool(cycle.get(k)) for k in ("eol", "extended_support")]
    if any(e is False for e in ends):
        return True
    dates = [e for e in ends if isinstance(e, dt.date)]
    if dates:
        return max(dates) >= cutoff
    released = _parse_date(cycle.get("release_date"))
    return released is not None and released >= cutoff  # ended on an unknown date: keep only if recent


def convert_product(product: str, response: Any, today: dt.date, years: int = KEEP_YEARS) -> list[dict[str, Any]]:
    """The cycles of one endoflife.date product response (v1 ``ProductResponse`` or legacy list)."""
    if isinstance(response, Mapping) and isinstance(response.get("result"), Mapping):
        releases = response["result"].get("releases")
    else:
        releases = response
    if not isinstance(releases, list):
        raise DatasetError(f"endoflife.date {product}", [("releases", "the response has no list of releases")])
    cycles = [_convert_release(product, r) for r in releases if isinstance(r, Mapping)]
    if product in MAJOR_ONLY:
        cycles = [c for c in cycles if "." not in c["cycle"]]
    return [c for c in cycles if _keep(c, today, years)]


def convert_api(document: Any, wanted: Iterable[str] | None, today: dt.date, product: str | None = None,
                years: int = KEEP_YEARS) -> dict[str, list[dict[str, Any]]]:
    """Cycles per product from an endoflife.date download: ``/api/v1/products/full`` (all products),
    ``/api/v1/products/<p>`` or ``/api/<p>.json`` (one product, named by ``product`` or the response).
    """
    want = set(wanted) if wanted is not None else None
    out: dict[str, list[dict[str, Any]]] = {}
    if isinstance(document, Mapping) and isinstance(document.get("result"), list):  # products/full
        for entry in document["result"]:
            if not isinstance(entry, Mapping):
                continue
            names = {str(entry.get("name", ""))} | {str(a) for a in entry.get("aliases", []) or []}
            hit = next((n for n in sorted(names) if want is None or n in want), None)
            if hit and isinstance(entry.get("releases"), list):
                out[hit] = convert_product(hit, entry["releases"], today, years)
        return out
    name = product
    if name is None and isinstance(document, Mapping) and isinstance(document.get("result"), Mapping):
        name = str(document["result"].get("name", ""))
    if not name:
        raise UsageError("this looks like a legacy /api/<product>.json file: name the product with --products")
    if want is None or name in want:
        out[name] = convert_product(name, document, today, years)
    return out


def fetch_product(api_url: str, product: str, timeout: float = 30.0) -> Any | None:
    """One product from the endoflife.date API; ``None`` when the API has no such product (HTTP 404).

    ``api_url`` ending in ``/v1`` uses ``<api>/products/<p>``; otherwise the legacy ``<api>/<p>.json``.
    """
    base = api_url.rstrip("/")
    quoted = urllib.parse.quote(product, safe="")
    url = f"{base}/products/{quoted}" if base.endswith("/v1") else f"{base}/{quoted}.json"
    req = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": f"vigil/{__version__}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = resp.read(MAX_DATASET_BYTES + 1)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise FetchError(f"GET {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise FetchError(f"cannot reach {base} ({exc.reason}); on an air-gapped network, download the data "
                         f"elsewhere and use --from-file") from None
    except TimeoutError:
        raise FetchError(f"GET {url}: timed out after {timeout:g}s") from None
    try:
        return json.loads(payload)
    except ValueError:
        raise FetchError(f"GET {url}: the answer is not JSON") from None


def merge(base: Dataset | None, products: Mapping[str, list[dict[str, Any]]], source: str, today: dt.date,
          notes: Mapping[str, str] | None = None) -> Dataset:
    """A new dataset: ``base``'s products, with ``products`` replacing theirs; validated as a whole.

    A replaced product's note becomes ``notes[product]``, or says where and when it was converted.
    """
    doc_products: dict[str, Any] = dict(base.document["products"]) if base else {}
    all_notes = dict(base.notes) if base else {}
    for name, cycles in products.items():
        if cycles:
            doc_products[name] = cycles
            all_notes[name] = (notes or {}).get(name, f"{source} ({len(cycles)} cycles)")
    doc = {"format": FORMAT, "generated": today.isoformat(), "source": source,
           "notes": {k: all_notes[k] for k in sorted(all_notes) if k in doc_products},
           "products": {k: doc_products[k] for k in sorted(doc_products)}}
    return Dataset.from_document(doc, "converted dataset")


def _read_input(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > 64 * 1024 * 1024:
        raise UsageError(f"{path}: larger than 64 MiB; is this an endoflife.date download?")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"{path}: not JSON ({exc})") from None


def _is_vigil_format(doc: Any) -> bool:
    return isinstance(doc, Mapping) and "format" in doc


def dataset_from_file(path: Path, base: Dataset | None, wanted: Sequence[str] | None, today: dt.date,
                      doc: Any = None) -> Dataset:
    """Our dataset format as is, or an endoflife.date API download converted (the air-gapped path)."""
    if doc is None:
        doc = _read_input(path)
    if _is_vigil_format(doc):
        ds = Dataset.from_document(doc, str(path))
        if not wanted:
            return ds
        missing = [p for p in wanted if p not in ds.products]
        if missing:
            raise UsageError(f"{path} has no product {', '.join(missing)}")
        picked = {p: ds.document["products"][p] for p in wanted}
        return merge(base, picked, f"{ds.source} (products {', '.join(wanted)} imported {today.isoformat()})", today,
                     {p: ds.notes[p] for p in wanted if p in ds.notes})
    products = list(wanted) if wanted else (sorted(base.products) if base else None)
    single = products[0] if products and len(products) == 1 else None
    converted = convert_api(doc, products, today, product=single)
    if not converted:
        raise UsageError(f"{path}: none of the products {', '.join(products or [])} is in this file")
    return merge(base, converted, f"endoflife.date API data from {path.name}, converted {today.isoformat()} by "
                 f"vigil eol update", today)


def dataset_from_api(api_url: str, base: Dataset, wanted: Sequence[str] | None, today: dt.date
                     ) -> tuple[Dataset, list[str], list[str]]:
    """Fetch every wanted product (default: every product of ``base``); returns (dataset, updated, kept)."""
    names = list(wanted) if wanted else sorted(base.products)
    converted: dict[str, list[dict[str, Any]]] = {}
    kept: list[str] = []
    for name in names:
        response = fetch_product(api_url, name)
        cycles = convert_product(name, response, today) if response is not None else []
        if cycles:
            converted[name] = cycles
        elif name in base.products:
            kept.append(name)
        else:
            raise UsageError(f"endoflife.date has no product {name!r} (see {api_url.rstrip('/')}/products)")
    ds = merge(base, converted, f"endoflife.date API ({api_url}) fetched {today.isoformat()} by vigil eol update; "
               f"kept from the previous dataset: {', '.join(kept) or 'none'}", today)
    return ds, sorted(converted), kept


# -- REST API -------------------------------------------------------------------------------------
def register_routes(router: "APIRouter", ctl: "Controller", need: Callable[[str], Callable[..., Any]]) -> None:
    """``GET /eol/dataset`` (viewer), ``GET /eol/dataset/document`` (viewer), ``PUT /eol/dataset`` (admin).

    Call from ``controller.rest.app.create_app`` with its router and ``need``. Also points
    :func:`active_dataset` at the controller's data dir.
    """
    from fastapi import Depends, HTTPException, Request
    from fastapi.responses import JSONResponse

    from controller.domain import audit
    from controller.storage.models import User
    use_data_dir(ctl.config.data_dir)
    data_dir = ctl.config.data_dir

    def current() -> Dataset:
        try:
            return Dataset.load(data_dir=data_dir)
        except DatasetError as exc:
            raise HTTPException(500, f"the stored EOL dataset is invalid: {exc}") from exc

    @router.get("/eol/dataset")
    def get_eol_dataset(_: Annotated[User, Depends(need("viewer"))]) -> dict[str, Any]:
        return current().summary()

    @router.get("/eol/dataset/document")
    def get_eol_document(_: Annotated[User, Depends(need("viewer"))]) -> dict[str, Any]:
        return current().document

    @router.put("/eol/dataset")
    async def put_eol_dataset(request: Request, user: Annotated[User, Depends(need("admin"))]) -> JSONResponse:
        raw = await request.body()
        if len(raw) > MAX_DATASET_BYTES:
            raise HTTPException(413, f"an EOL dataset may be at most {MAX_DATASET_BYTES} bytes")
        try:
            ds = Dataset.from_bytes(raw, request.headers.get("x-vigil-filename", "request body"))
        except DatasetError as exc:
            return JSONResponse({"detail": str(exc), "problems": [
                {"where": where, "reason": why} for where, why in exc.problems]}, status_code=422)

        def work() -> dict[str, Any]:
            try:
                previous: Dataset | None = Dataset.load(data_dir=data_dir)
            except DatasetError:  # an import is also how a broken stored dataset gets replaced
                previous = None
            with ctl.sessions.begin() as s:
                audit.record(s, user.username, "eol.dataset.import", "eol", ds.version, {
                    "previous_version": previous.version if previous else None,
                    "previous_origin": previous.origin if previous else "invalid",
                    "products": len(ds.products), "cycles": ds.cycle_count, "source": ds.source,
                })
                # Last inside the transaction: if the write fails, the audit entry is rolled back too.
                path = store_dataset(data_dir, ds)
            stored = Dataset.load(data_dir=data_dir)
            return {**stored.summary(), "path": str(path),
                    "previous_version": previous.version if previous else None}

        import asyncio

        return JSONResponse(await asyncio.get_running_loop().run_in_executor(None, work))


# -- operator CLI (`vigil eol ...`) -----------------------------------------------------------------
def add_cli(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``vigil eol update|export|fetch|show`` to the ``vigil`` parser's noun subparsers."""
    eol = sub.add_parser("eol", help="the controller's end-of-life dataset")
    verbs = eol.add_subparsers(dest="verb", required=True, metavar="VERB")

    def leaf(name: str, help_: str) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help_)
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
        add_common(p)
        return p

    def api_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument("--api-url", default=os.environ.get(API_ENV, DEFAULT_API),
                       help=f"endoflife.date API base (or {API_ENV}; default {DEFAULT_API})")
        p.add_argument("--products", default="", help="comma-separated endoflife.date product ids (default: all "
                       "products of the current dataset)")

    up = leaf("update", "refresh the controller's dataset from endoflife.date, or from a file (admin)")
    up.add_argument("--from-file", type=Path, default=None, metavar="FILE",
                    help="a Vigil dataset, or an endoflife.date API download (/api/v1/products/full, "
                         "/api/v1/products/<p>, /api/<p>.json) carried into an air-gapped network")
    api_opt(up)
    ex = leaf("export", "write the controller's current dataset to a file")
    ex.add_argument("--out", type=Path, required=True, metavar="FILE")
    fe = leaf("fetch", "build a dataset file from endoflife.date without a controller (run where there is internet)")
    fe.add_argument("--out", type=Path, required=True, metavar="FILE")
    fe.add_argument("--base", type=Path, default=None, metavar="FILE",
                    help="dataset whose products to fetch and keep (default: the packaged dataset)")
    api_opt(fe)
    leaf("show", "show the controller's dataset version and where it was loaded from")


def needs_controller(args: argparse.Namespace) -> bool:
    return getattr(args, "verb", "") != "fetch"


def _products_arg(text: str) -> list[str] | None:
    names = [p.strip() for p in (text or "").split(",") if p.strip()]
    bad = [p for p in names if not _SLUG.match(p)]
    if bad:
        raise UsageError(f"--products: {', '.join(bad)} is not an endoflife.date product id")
    return names or None


def _describe_dataset(doc: Mapping[str, Any]) -> str:
    return f"EOL dataset {doc.get('version')} ({doc.get('products')} products, {doc.get('cycles')} cycles)"


def _controller_dataset(client: Any) -> Dataset:
    return Dataset.from_document(client.call("GET", "/eol/dataset/document"), "the controller's dataset")


def run_cli(args: argparse.Namespace, client: Any, today: dt.date | None = None) -> tuple[Any, str]:
    """Run one ``vigil eol`` verb; returns (JSON document, human text). ``client`` is an opcli.Client
    (``call(method, path, body=None, raw=None, headers=None)``); ``None`` only for ``fetch``.
    """
    day = today or dt.date.today()
    verb = args.verb
    if verb == "fetch":
        base = Dataset.load(args.base) if args.base else Dataset.load()
        ds, updated, kept = dataset_from_api(args.api_url, base, _products_arg(args.products), day)
        _write_atomic(args.out, dump_document(ds.document))
        out = {**ds.summary(), "origin": "file", "loaded_from": str(args.out), "updated": updated, "kept": kept}
        return out, (f"wrote {_describe_dataset(out)} to {args.out}; carry it to the controller's network and run "
                     f"'vigil eol update --from-file {args.out}'" + (f"; kept unchanged: {', '.join(kept)}" if kept
                                                                      else ""))
    if client is None:
        raise UsageError(f"'vigil eol {verb}' needs a controller: pass --url and --api-key")
    if verb == "show":
        out = client.call("GET", "/eol/dataset")
        return out, (f"{_describe_dataset(out)}, {out.get('origin')} ({out.get('loaded_from')})\n"
                     f"source: {out.get('source')}")
    if verb == "export":
        ds = _controller_dataset(client)
        _write_atomic(args.out, dump_document(ds.document))
        out = {**ds.summary(), "origin": "file", "loaded_from": str(args.out)}
        return out, f"wrote {_describe_dataset(out)} to {args.out}"
    # update: a file is read and validated before the controller is contacted
    wanted = _products_arg(args.products)
    if args.from_file is not None:
        doc = _read_input(args.from_file)
        if _is_vigil_format(doc):
            Dataset.from_document(doc, str(args.from_file))
        whole = _is_vigil_format(doc) and not wanted  # replaces the dataset: no need for the current one
        current = None if whole else _controller_dataset(client)
        ds = dataset_from_file(args.from_file, current, wanted, day, doc)
        updated, kept = sorted(wanted or ds.products), []
    else:
        ds, updated, kept = dataset_from_api(args.api_url, _controller_dataset(client), wanted, day)
    out = client.call("PUT", "/eol/dataset", raw=dump_document(ds.document).encode(),
                      headers={"Content-Type": "application/json",
                               "X-Vigil-Filename": args.from_file.name if args.from_file else "endoflife.date"})
    out = {**out, "updated": updated, "kept": kept}
    human = f"imported {_describe_dataset(out)} (was {out.get('previous_version')})"
    if kept:
        human += f"; kept unchanged (not on endoflife.date): {', '.join(kept)}"
    return out, human
