"""The EOL dataset and the judgement it allows: pure, standard library only, no state.

A :class:`Dataset` is parsed and validated from text or a given file (:func:`parse_dataset`,
:func:`read_dataset`, :func:`packaged_dataset`); :func:`enrich` fills ``EolItem`` fields 9-18 of an
``eol`` result from one, as of a given day; :func:`validate_facts` checks the shape of what an agent
sent; :func:`device_product` and :func:`device_match` place a network device's version (as its vendor
prints it) in the dataset. Which dataset a controller uses, importing and fetching one are use cases of
``controller.domain.eol``; the file format is documented in ``docs/eol-dataset.md``.
"""

from __future__ import annotations

from controller.eoldata.dataset import (
    FORMAT,
    MAX_DATASET_BYTES,
    PACKAGED,
    Cycle,
    Dataset,
    DatasetError,
    DateOrBool,
    EolError,
    Match,
    dump_document,
    is_product_id,
    packaged_dataset,
    parse_dataset,
    parse_date,
    read_dataset,
)
from controller.eoldata.devices import DEVICE_PRODUCTS, DeviceRelease, device_match, device_product
from controller.eoldata.enrich import NO_DATE_DAYS, ROLLING_REASON, enrich, validate_facts
from controller.eoldata.versions import normalize_version, numbers

__all__ = [
    "DEVICE_PRODUCTS",
    "FORMAT",
    "MAX_DATASET_BYTES",
    "NO_DATE_DAYS",
    "PACKAGED",
    "ROLLING_REASON",
    "Cycle",
    "Dataset",
    "DatasetError",
    "DateOrBool",
    "DeviceRelease",
    "EolError",
    "Match",
    "device_match",
    "device_product",
    "dump_document",
    "enrich",
    "is_product_id",
    "normalize_version",
    "numbers",
    "packaged_dataset",
    "parse_dataset",
    "parse_date",
    "read_dataset",
    "validate_facts",
]
