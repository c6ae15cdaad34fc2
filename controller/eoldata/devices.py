"""Network devices: a version as the vendor prints it, mapped to the EOL dataset's product and cycle.

Pure, standard library only. The sensor's parsers (``checks/device/``) report ``platform`` (Netmiko's
names) and ``version`` exactly as the device prints it (``15.2(4)E10``, ``17.9.4a``, ``7.0(3)I4(3)``,
``19.4R3-S1.3``, ``v7.0.13,build0566``, ``10.1.6-h6``, ``4.28.3M``). :func:`device_product` reads that
into a :class:`DeviceRelease`: the dataset product id and the cycle key (dotted numbers) to look up;
:func:`device_match` finds the cycle in a loaded :class:`~controller.eoldata.dataset.Dataset` with the
dataset's own matching (:meth:`Dataset.match`). Anything this module cannot read is ``None`` or an
unknown :class:`~controller.eoldata.dataset.Match`: the judge says "cannot judge", never passes.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from controller.eoldata.dataset import Dataset, Match
from controller.eoldata.versions import numbers

_Reader = Callable[[str], "DeviceRelease | None"]

# A vendor version is never longer; anything longer is not read at all.
MAX_VERSION_CHARS: Final = 128

# Products whose release trains come out in order, so that a version older than every listed cycle
# can be judged "before <oldest>" when that cycle has ended (Dataset.match's rule). Not so for
# cisco-ios (15.2(7)E outlives 15.8(3)M), cisco-ios-xe (3.x E and S trains), cisco-nx-os (Nexus 7000's
# 8.4 outlives 9.2), cisco-asa and junos (X trains outlive mainline releases): those are unknown.
ORDERED_PRODUCTS: Final = frozenset({"fortios", "panos", "arista-eos"})


@dataclass(frozen=True)
class DeviceRelease:
    """What a device runs, as the EOL dataset names it.

    ``product`` is the dataset's product id, ``cycle`` the release cycle key to match (dotted numbers,
    e.g. ``15.2``, ``17.3``, ``12.1.44`` for Junos 12.1X44), ``train`` the vendor's own name of the
    release train for messages (``15.2(x)E``, ``17.3``, ``12.1X44``, ``7.0(3)I7``).
    """

    product: str
    cycle: str
    train: str


# Vendors print ASCII digits only: every pattern is re.ASCII, so that \d is never another script's digit.
# IOS: 15.2(4)E10, 12.2(55)SE12, 12.4(24)T8, 12.4(25f), 15.1(4)M12a; not 15.2(20200924:215240).
_IOS = re.compile(r"(\d{1,2})\.(\d{1,2})\((\d{1,4})([a-z]?)\)([A-Z]{0,6})(\d{0,4})([a-z]?)", re.ASCII)
# IOS-XE: 17.3.4a, 16.9.5, 17.09.04a, 03.16.05.S, 03.06.06E, 16.12.1s.
_IOS_XE = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{1,2})([a-z]?)(?:\.?([A-Z]{1,3}))?", re.ASCII)
# NX-OS: 9.3(8), 10.2(5), 10.4(1)F, 7.0(3)I4(3), 6.0(2)N2(7), 5.2(1)N1(9a).
_NXOS = re.compile(r"(\d{1,2})\.(\d{1,2})\((\d{1,4})([a-z]?)\)"
                   r"(?:([A-Z]{1,2})(\d{1,3})(?:\((\d{1,4})([a-z]?)\))?|([FM]))?", re.ASCII)
# ASA: 9.8(4)10, 9.16(3)19, 8.4(7)30, 9.18(2).
_ASA = re.compile(r"(\d{1,2})\.(\d{1,2})\((\d{1,4})\)(\d{0,4})", re.ASCII)
# Junos: 19.4R3-S1.3, 21.4R3-S5, 12.3R12.4, 12.3X48-D105, 15.1X49-D170.4, 15.1F6, 21.4R3-S5.11-EVO.
_JUNOS = re.compile(r"(\d{1,2})\.(\d{1,2})([RFX])(\d{1,3})(?:[-.][A-Z]?\d{1,6}){0,4}(?:-EVO)?", re.ASCII)
# FortiOS: 7.0.13, v6.4.9, v7.2.5,build1517 (GA.F), 7.0.13 build0566, v6.4.9-build1966.
_FORTIOS = re.compile(r"[vV]?(\d{1,2})\.(\d{1,2})\.(\d{1,3})"
                      r"(?:[,\s-]*build\s?\d{1,5})?(?:\s*\([A-Za-z0-9.\s]{0,20}\))?", re.ASCII)
# PAN-OS: 10.1.6-h6, 9.1.0, 11.0.2-h2, 10.2.10-h14.
_PANOS = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{1,3})(?:-h\d{1,3})?", re.ASCII)
# EOS: 4.28.3M, 4.24.2.1F, 4.30.1F, 4.30.1F-32308478.4301F (engineering build).
_EOS = re.compile(r"(\d{1,2})\.(\d{1,3})\.(\d{1,3})(?:\.\d{1,3})?[FM]?(?:-[A-Za-z0-9.]{1,40})?", re.ASCII)


def _n(text: str) -> str:
    """A version component as its number: ``03`` -> ``3``, ``09`` -> ``9``."""
    return str(int(text))


def _ios(text: str) -> DeviceRelease | None:
    m = _IOS.fullmatch(text)
    if not m:
        return None
    major, minor, letters = _n(m.group(1)), _n(m.group(2)), m.group(5)
    return DeviceRelease("cisco-ios", f"{major}.{minor}", f"{major}.{minor}(x){letters}")


def _ios_xe(text: str) -> DeviceRelease | None:
    m = _IOS_XE.fullmatch(text)
    if not m:
        return None
    major, minor = _n(m.group(1)), _n(m.group(2))
    # 3.x releases carry their train letter (03.16.05.S, 03.06.06E): keep it in the train's name.
    suffix = m.group(5) or ""
    return DeviceRelease("cisco-ios-xe", f"{major}.{minor}", f"{major}.{minor}{suffix}")


def _cisco(text: str) -> DeviceRelease | None:
    """``cisco_ios`` and ``cisco_xe`` share their parsers: IOS's ``15.2(4)E`` form is IOS, a dotted one
    IOS-XE (on 3.x the parser reports the XE release, not the IOSd one)."""
    return _ios(text) if "(" in text else _ios_xe(text)


def _nxos(text: str) -> DeviceRelease | None:
    m = _NXOS.fullmatch(text)
    if not m:
        return None
    major, minor = _n(m.group(1)), _n(m.group(2))
    train = f"{major}.{minor}"
    if m.group(5):  # 7.0(3)I7(9): the I7 train of 7.0(3)
        train = f"{major}.{minor}({int(m.group(3))}){m.group(5)}{int(m.group(6))}"
    return DeviceRelease("cisco-nx-os", f"{major}.{minor}", train)


def _asa(text: str) -> DeviceRelease | None:
    m = _ASA.fullmatch(text)
    if not m:
        return None
    major, minor = _n(m.group(1)), _n(m.group(2))
    return DeviceRelease("cisco-asa", f"{major}.{minor}", f"{major}.{minor}")


def _junos(text: str) -> DeviceRelease | None:
    m = _JUNOS.fullmatch(text)
    if not m:
        return None
    major, minor, kind, number = _n(m.group(1)), _n(m.group(2)), m.group(3), m.group(4)
    if kind == "X":  # 12.3X48: its own train (SRX, EX), never the mainline 12.3
        return DeviceRelease("junos", f"{major}.{minor}.{int(number)}", f"{major}.{minor}X{int(number)}")
    return DeviceRelease("junos", f"{major}.{minor}", f"{major}.{minor}")


def _dotted(product: str, pattern: re.Pattern[str]) -> _Reader:
    def read(text: str) -> DeviceRelease | None:
        m = pattern.fullmatch(text)
        if not m:
            return None
        cycle = f"{_n(m.group(1))}.{_n(m.group(2))}"
        return DeviceRelease(product, cycle, cycle)
    return read


_READERS: Final[dict[str, _Reader]] = {
    "cisco_ios": _cisco,
    "cisco_xe": _cisco,
    "cisco_nxos": _nxos,
    "cisco_asa": _asa,
    "juniper_junos": _junos,
    "fortinet": _dotted("fortios", _FORTIOS),
    "paloalto_panos": _dotted("panos", _PANOS),
    "arista_eos": _dotted("arista-eos", _EOS),
}

# The dataset products a device can map to, by platform (``linux`` is a host: os-release judges it).
DEVICE_PRODUCTS: Final = {
    "cisco_ios": ("cisco-ios", "cisco-ios-xe"),
    "cisco_xe": ("cisco-ios", "cisco-ios-xe"),
    "cisco_nxos": ("cisco-nx-os",),
    "cisco_asa": ("cisco-asa",),
    "juniper_junos": ("junos",),
    "fortinet": ("fortios",),
    "paloalto_panos": ("panos",),
    "arista_eos": ("arista-eos",),
}


def device_product(platform: str, version: str) -> DeviceRelease | None:
    """The dataset product and cycle key of a device's ``version`` as its ``platform`` prints it.

    ``("cisco_ios", "15.2(4)E10")`` -> ``cisco-ios`` ``15.2``; ``("cisco_xe", "17.3.4a")`` ->
    ``cisco-ios-xe`` ``17.3``; ``("cisco_nxos", "7.0(3)I4(3)")`` -> ``cisco-nx-os`` ``7.0`` (train
    ``7.0(3)I4``); ``("juniper_junos", "19.4R3-S1.3")`` -> ``junos`` ``19.4``, ``12.3X48-D105`` ->
    ``12.3.48``; ``("fortinet", "v7.0.13")`` -> ``fortios`` ``7.0``; ``("paloalto_panos", "10.1.6-h6")``
    -> ``panos`` ``10.1``; ``("arista_eos", "4.28.3M")`` -> ``arista-eos`` ``4.28``.

    ``None`` for an unknown platform, for ``linux`` (a host, judged by os-release), and for a version
    this cannot read (an experimental build, a beta, an empty or over-long string); never raises.
    """
    if not isinstance(platform, str) or not isinstance(version, str):
        return None
    reader = _READERS.get(platform.strip().lower())
    text = version.strip()
    if reader is None or not text or len(text) > MAX_VERSION_CHARS:
        return None
    return reader(text)


def device_match(dataset: Dataset, platform: str, version: str, today: dt.date) -> Match:
    """The cycle of ``dataset`` a device runs, or an unknown :class:`Match` with the reason.

    The lookup is :meth:`Dataset.match` on the release's cycle key, with two restrictions: the cycle
    found must be exactly that key (Junos 15.1X49, key ``15.1.49``, is never judged by mainline 15.1),
    and the synthetic "before <oldest>" verdict is kept only for :data:`ORDERED_PRODUCTS`.
    """
    release = device_product(platform, version)
    if release is None:
        if platform == "linux":
            return Match(None, "a linux host is judged by its os-release, not as a network device")
        if platform in _READERS:
            return Match(None, f"{platform} version {str(version)[:MAX_VERSION_CHARS]!r} cannot be mapped to a "
                               "release cycle")
        return Match(None, f"{str(platform)[:64] or 'the platform'} is not a known network-device platform")
    found = dataset.match(release.product, release.cycle, today)
    cycle = found.cycle
    if cycle is None:
        return found
    if cycle.key == numbers(release.cycle):
        return found
    if cycle.cycle.startswith("before ") and release.product in ORDERED_PRODUCTS:
        return found
    return Match(None, f"no {release.product} cycle in the EOL dataset for {release.train} (version {version})")
