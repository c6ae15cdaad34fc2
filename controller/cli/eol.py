"""The operator's ``vigil eol update|export|fetch|show`` verbs.

Standard library only (the ``vigil`` CLI must run without the controller's libraries): the controller
is reached through the operator client's ``call``; ``fetch`` needs no controller at all.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.cli import add_common
from common.errors import UsageError
from controller.domain.eol import (
    API_ENV,
    DEFAULT_API,
    dataset_from_api,
    dataset_from_file,
    is_vigil_format,
    read_input,
    write_atomic,
)
from controller.eoldata import Dataset, dump_document, is_product_id, packaged_dataset, read_dataset
from controller.eoldata.dataset import from_document


def add_cli(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    bad = [p for p in names if not is_product_id(p)]
    if bad:
        raise UsageError(f"--products: {', '.join(bad)} is not an endoflife.date product id")
    return names or None


def _describe_dataset(doc: Mapping[str, Any]) -> str:
    return f"EOL dataset {doc.get('version')} ({doc.get('products')} products, {doc.get('cycles')} cycles)"


def _controller_dataset(client: Any) -> Dataset:
    return from_document(client.call("GET", "/eol/dataset/document"), "the controller's dataset")


def run_cli(args: argparse.Namespace, client: Any, today: dt.date | None = None) -> tuple[Any, str]:
    """Run one ``vigil eol`` verb; returns (JSON document, human text). ``client`` is an opcli.Client
    (``call(method, path, body=None, raw=None, headers=None)``); ``None`` only for ``fetch``.
    """
    day = today or dt.date.today()
    verb = args.verb
    if verb == "fetch":
        base = read_dataset(args.base) if args.base else packaged_dataset()
        ds, updated, kept = dataset_from_api(args.api_url, base, _products_arg(args.products), day)
        write_atomic(args.out, dump_document(ds.document))
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
        write_atomic(args.out, dump_document(ds.document))
        out = {**ds.summary(), "origin": "file", "loaded_from": str(args.out)}
        return out, f"wrote {_describe_dataset(out)} to {args.out}"
    # update: a file is read and validated before the controller is contacted
    wanted = _products_arg(args.products)
    if args.from_file is not None:
        doc = read_input(args.from_file)
        if is_vigil_format(doc):
            from_document(doc, str(args.from_file))
        whole = is_vigil_format(doc) and not wanted  # replaces the dataset: no need for the current one
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
