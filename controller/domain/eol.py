"""End-of-life use cases: which EOL dataset a controller judges with, importing an operator's dataset,
and building one from the endoflife.date API.

The dataset model, version matching and the judgement itself are pure and live in
:mod:`controller.eoldata`; this module adds what needs files, clocks and the network:

* :class:`EolData` — held by the ``Controller`` as ``ctl.eol``: the dataset to judge with now
  (``<data dir>/eol/products.json`` when an operator imported one, else the packaged one; re-read
  when the file changes) and :meth:`EolData.replace` to store a new one atomically.
* :func:`fetch_product`, :func:`convert_api`, :func:`merge`, :func:`dataset_from_file`,
  :func:`dataset_from_api` — endoflife.date downloads converted into Vigil's format.

It imports only the standard library, ``common`` and ``controller.eoldata``, because the stdlib-only
``vigil`` CLI imports it too.

Exception tree::

    VigilError
     └── EolError
          ├── DatasetError (ValueError)    a dataset file is invalid; ``problems`` names product/cycle/field
          └── FetchError (OSError)         the endoflife.date API could not be read
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from common import __version__
from common.errors import UsageError
from controller.eoldata import (
    FORMAT,
    MAX_DATASET_BYTES,
    Dataset,
    DatasetError,
    DateOrBool,
    EolError,
    dump_document,
    packaged_dataset,
    parse_date,
    read_dataset,
)
from controller.eoldata.dataset import date_or_bool, from_document

IMPORTED_NAME = Path("eol") / "products.json"
DEFAULT_API = "https://endoflife.date/api/v1"
API_ENV = "VIGIL_EOL_API"
# Cycles whose support ended more than this many years ago are left out of converted datasets.
KEEP_YEARS = 8
CONVERTED_TITLE = "endoflife.date"

# Products whose endoflife.date "extended support" (eoes) is free and reaches a stock install (Debian
# LTS reuses the security archive). Elsewhere it is paid or opt-in (Ubuntu Pro ESM, RHEL ELS, SUSE
# LTSS, OpenSSL premium, HeroDevs for Node.js, MariaDB Enterprise): kept as commercial_support, shown
# as evidence, never counted as "supported".
FREE_EXTENDED_SUPPORT = frozenset({"debian"})
# Products judged by their major release only: endoflife.date also lists minor/EUS rows for RHEL, but
# `dnf update` moves a host to the newest minor release, so "9.3" means "RHEL 9, not yet updated".
MAJOR_ONLY = frozenset({"rhel"})

__all__ = [
    "API_ENV", "DEFAULT_API", "FREE_EXTENDED_SUPPORT", "IMPORTED_NAME", "KEEP_YEARS", "MAJOR_ONLY", "Dataset",
    "DatasetError", "EolData", "EolError", "FetchError", "convert_api", "convert_product", "dataset_from_api",
    "dataset_from_file", "fetch_product", "load_for", "merge", "store_dataset",
]


class FetchError(EolError, OSError):
    pass


def load_for(data_dir: Path | str | None) -> Dataset:
    """``<data_dir>/eol/products.json`` when an operator imported one, else the packaged dataset."""
    if data_dir is not None and (Path(data_dir) / IMPORTED_NAME).is_file():
        return read_dataset(Path(data_dir) / IMPORTED_NAME, "imported")
    return packaged_dataset()


class EolData:
    """The EOL dataset one controller judges with; ``Controller.eol``.

    :meth:`dataset` re-reads the imported file when it changed (mtime, size, inode), so an import
    made by another process takes effect at the next report. A broken imported file never replaces a
    good dataset: the last good one (or the packaged one) stays, and :attr:`problem` says why.
    """

    def __init__(self, data_dir: Path | str | None = None) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self._lock = threading.Lock()
        self._stamp: tuple[str, int, int, int] | None = None
        self._dataset: Dataset | None = None
        self.problem = ""

    @property
    def imported_path(self) -> Path | None:
        return self.data_dir / IMPORTED_NAME if self.data_dir is not None else None

    def _current_stamp(self) -> tuple[str, int, int, int]:
        file = self.imported_path
        try:
            st = file.stat() if file else None
        except OSError:
            st = None
        return (str(file), st.st_mtime_ns, st.st_size, st.st_ino) if file and st else ("packaged", 0, 0, 0)

    def dataset(self) -> Dataset:
        """The dataset to judge with now."""
        stamp = self._current_stamp()
        with self._lock:
            if self._dataset is None or stamp != self._stamp:
                try:
                    self._dataset = load_for(self.data_dir)
                    self.problem = ""
                except DatasetError as exc:
                    self.problem = f"the imported EOL dataset is not used: {exc}"
                    if self._dataset is None:
                        self._dataset = packaged_dataset()
                self._stamp = stamp
            return self._dataset

    def stored(self) -> Dataset | None:
        """What is on disk now (imported or packaged), or ``None`` when the imported file is invalid."""
        try:
            return load_for(self.data_dir)
        except DatasetError:
            return None

    def replace(self, dataset: Dataset, before_write: Any = None) -> Path:
        """Store ``dataset`` as ``<data dir>/eol/products.json`` and judge with it from now on.

        ``before_write``, when given, is called first inside the lock (the REST route records the audit
        entry there, in a transaction that the write ends, so a failed write leaves no audit entry).
        """
        if self.data_dir is None:
            raise EolError("this controller has no data directory to store an EOL dataset in")
        with self._lock:
            path = store_dataset(self.data_dir, dataset)
            self._dataset = read_dataset(path, "imported")
            self._stamp = None
            self.problem = ""
        return path


# -- writing ----------------------------------------------------------------------------------------
def write_atomic(path: Path, text: str) -> None:
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
        write_atomic(target.with_suffix(".prev.json"), target.read_text(encoding="utf-8"))
    write_atomic(target, dump_document(dataset.document))
    return target


# -- endoflife.date API -> dataset --------------------------------------------------------------
def _api_value(value: Any, where: str) -> DateOrBool | None:
    if value is None:
        return None
    parsed = date_or_bool(value)
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
    ends = [date_or_bool(cycle.get(k)) for k in ("eol", "extended_support")]
    if any(e is False for e in ends):
        return True
    dates = [e for e in ends if isinstance(e, dt.date)]
    if dates:
        return max(dates) >= cutoff
    released = parse_date(cycle.get("release_date"))
    return released is not None and released >= cutoff  # ended on an unknown date: keep only if recent


_CYCLE_NAME = re.compile(r"^\d{1,9}(\.\d{1,9})*$")


def _numbered(product: str, cycle: dict[str, Any]) -> dict[str, Any]:
    """``cos-105`` -> cycle ``105`` (codename ``cos-105``): the number is what os-release reports."""
    name = str(cycle["cycle"])
    prefix = f"{product}-"
    if name.startswith(prefix) and _CYCLE_NAME.match(name[len(prefix):]):
        return {**cycle, "cycle": name[len(prefix):], "codename": cycle.get("codename") or name}
    return cycle


def convert_product(product: str, response: Any, today: dt.date, years: int = KEEP_YEARS) -> list[dict[str, Any]]:
    """The cycles of one endoflife.date product response (v1 ``ProductResponse`` or legacy list)."""
    if isinstance(response, Mapping) and isinstance(response.get("result"), Mapping):
        releases = response["result"].get("releases")
    else:
        releases = response
    if not isinstance(releases, list):
        raise DatasetError(f"endoflife.date {product}", [("releases", "the response has no list of releases")])
    cycles = [_numbered(product, _convert_release(product, r)) for r in releases if isinstance(r, Mapping)]
    # A cycle with no version number (slackware "current") cannot match an installed version: left out,
    # rather than making the whole converted dataset invalid.
    cycles = [c for c in cycles if _CYCLE_NAME.match(c["cycle"])]
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
    rolling = {k: v for k, v in (base.rolling if base else {}).items() if k not in doc_products}
    doc: dict[str, Any] = {"format": FORMAT, "generated": today.isoformat(),
                           "title": (base.title if base and base.title else CONVERTED_TITLE), "source": source,
                           "notes": {k: all_notes[k] for k in sorted(all_notes) if k in doc_products},
                           "rolling": {k: rolling[k] for k in sorted(rolling)},
                           "products": {k: doc_products[k] for k in sorted(doc_products)}}
    return from_document(doc, "converted dataset")


def read_input(path: Path) -> Any:
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


def is_vigil_format(doc: Any) -> bool:
    return isinstance(doc, Mapping) and "format" in doc


def dataset_from_file(path: Path, base: Dataset | None, wanted: Sequence[str] | None, today: dt.date,
                      doc: Any = None) -> Dataset:
    """Our dataset format as is, or an endoflife.date API download converted (the air-gapped path)."""
    if doc is None:
        doc = read_input(path)
    if is_vigil_format(doc):
        ds = from_document(doc, str(path))
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

