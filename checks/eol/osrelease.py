"""The operating system item: ``/etc/os-release`` parsed and mapped to an endoflife.date product.

Pure: :func:`parse_os_release` takes the file's text, :func:`os_item` turns it into an
:class:`~checks.eol.model.EolItem`. Both are tested on os-release files as distributions ship them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from checks.eol.model import KIND_OS, LIFECYCLE_OS, EolItem

# os-release ID -> dataset product id: endoflife.date's id (checked against endoflife.date's
# products/*.md permalinks) where it has one, else the os-release ID itself (the rolling releases).
_PRODUCTS: dict[str, str] = {
    "debian": "debian",
    "ubuntu": "ubuntu",
    "rhel": "rhel",
    "rocky": "rocky-linux",
    "almalinux": "almalinux",
    "centos": "centos",
    "ol": "oracle-linux",
    "fedora": "fedora",
    "sles": "sles",
    "sles_sap": "sles",
    "opensuse-leap": "opensuse",
    "opensuse": "opensuse",  # Leap 42.x said ID=opensuse
    "alpine": "alpine-linux",
    "amzn": "amazon-linux",
    "linuxmint": "linuxmint",
    "cloudlinux": "cloudlinux",
    "mageia": "mageia",
    "slackware": "slackware",
    "cos": "cos",
}

# Derivatives that number their releases differently from the parents their ID_LIKE names: Linux Mint
# 21 is not Ubuntu 21, Mageia 9 is not Fedora 9, Amazon Linux 2 is not RHEL 2, RHEL 9 is not Fedora 9.
# Their os-release parents are not reported as product_like, so a dataset without their own product
# leaves them unknown instead of judging them by a release of the parent that shares only the number.
_OWN_NUMBERING = frozenset({
    "linuxmint", "elementary", "zorin", "mageia", "openmandriva", "amzn", "rhel", "ol", "kali", "cos", "flatcar",
    "neon", "deepin",
})
# Enterprise Linux rebuilds name Fedora after RHEL/CentOS in ID_LIKE, but their majors are RHEL's.
_EL_PARENTS = frozenset({"rhel", "centos"})

# How reasons name the vendor of an OS: "shipped and patched by Debian".
_VENDORS: dict[str, str] = {
    "debian": "Debian",
    "ubuntu": "Ubuntu",
    "rhel": "Red Hat",
    "rocky": "Rocky Linux",
    "almalinux": "AlmaLinux",
    "centos": "CentOS",
    "ol": "Oracle Linux",
    "fedora": "Fedora",
    "sles": "SUSE",
    "sles_sap": "SUSE",
    "opensuse-leap": "openSUSE",
    "opensuse-tumbleweed": "openSUSE",
    "alpine": "Alpine",
    "amzn": "Amazon Linux",
}

# How reasons name a release: "Debian 12", "Rocky Linux 9.3".
_LABELS: dict[str, str] = {
    **_VENDORS,
    "rhel": "RHEL",
    "sles": "SLES",
    "sles_sap": "SLES for SAP",
    "opensuse-leap": "openSUSE Leap",
    "opensuse-tumbleweed": "openSUSE Tumbleweed",
}

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class OsRelease:
    """The os-release fields the check uses ("" when the file does not set them)."""

    id: str = ""
    version_id: str = ""
    id_like: tuple[str, ...] = ()
    pretty_name: str = ""
    version_codename: str = ""
    name: str = ""

    @property
    def major(self) -> str:
        """First component of VERSION_ID: "9" for "9.3", "15" for SLES "15.5", "2023" for Amazon Linux."""
        return self.version_id.split(".", 1)[0]

    def is_like(self, family: str) -> bool:
        return self.id == family or family in self.id_like

    @property
    def vendor(self) -> str:
        """Who patches this OS's packages, as reasons name it ("Debian", "Red Hat")."""
        return _VENDORS.get(self.id, self.name or self.id or "the OS vendor")

    @property
    def label(self) -> str:
        """The release as reasons name it: "Debian 12", "Rocky Linux 9.3", "Alpine 3.19.1"."""
        base = _LABELS.get(self.id, self.name or self.id)
        return f"{base} {self.version_id}".strip() if base else "this OS"


def parse_os_release(text: str) -> OsRelease:
    """Parse os-release(5): ``KEY=value`` lines, values optionally shell-quoted, ``#`` comments.

    Invalid lines are skipped rather than refused: a hand-edited os-release must not blind the check.
    """
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if not _KEY.match(key):
            continue
        values[key] = _unquote(value)
    return OsRelease(
        id=values.get("ID", "").lower(),
        version_id=values.get("VERSION_ID", ""),
        id_like=tuple(values.get("ID_LIKE", "").lower().split()),
        pretty_name=values.get("PRETTY_NAME", ""),
        version_codename=values.get("VERSION_CODENAME", ""),
        name=values.get("NAME", ""),
    )


def _unquote(value: str) -> str:
    """Undo os-release(5) quoting: '...' is literal; inside "..." a backslash escapes $ ` " and \\.

    An unbalanced quote ends the value where the line ends rather than dropping it.
    """
    out: list[str] = []
    quote = ""
    i = 0
    value = value.strip()
    while i < len(value):
        c = value[i]
        nxt = value[i + 1] if i + 1 < len(value) else ""
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and quote == '"' and nxt and nxt in '$`"\\':
                out.append(nxt)
                i += 1
            else:
                out.append(c)
        elif c in "\"'":
            quote = c
        elif c == "\\" and nxt:
            out.append(nxt)
            i += 1
        else:
            out.append(c)
        i += 1
    return "".join(out)


def os_product(osr: OsRelease) -> str:
    """The endoflife.date product id for this OS.

    CentOS Stream shares ``ID=centos`` with CentOS Linux but has its own lifecycle, so NAME decides.
    An ID endoflife.date does not know (``opensuse-tumbleweed``, ``arch``: rolling releases the
    controller's dataset lists as such; ``raspbian``) is reported as is: the controller, not the agent,
    decides whether to judge it through :func:`os_product_like`.
    """
    if osr.id == "centos" and "stream" in osr.name.lower():
        return "centos-stream"
    if osr.id == "linuxmint" and osr.name.upper().startswith("LMDE"):
        return "lmde"  # Linux Mint Debian Edition 6 shares ID=linuxmint but not Mint's numbering
    if osr.id == "debian" and not osr.version_id:
        return "debian-testing"  # testing and unstable (sid) set no VERSION_ID: rolling
    return _PRODUCTS.get(osr.id, osr.id)


def os_product_like(osr: OsRelease) -> tuple[str, ...]:
    """The ID_LIKE parents as product ids, in the file's order, for the controller to fall back on.

    Empty for derivatives in ``_OWN_NUMBERING``; ``fedora`` is left out after ``rhel``/``centos`` (an
    Enterprise Linux rebuild, whose majors are RHEL's); the OS's own product is never repeated.
    """
    if osr.id in _OWN_NUMBERING:
        return ()
    own = os_product(osr)
    out: list[str] = []
    for parent in osr.id_like:
        if parent == "fedora" and _EL_PARENTS & set(osr.id_like):
            continue
        product = _PRODUCTS.get(parent, parent)
        if product != own and product not in out:
            out.append(product)
    return tuple(out)


def os_item(osr: OsRelease, source: str = "os-release") -> EolItem:
    """The OS itself: ``EolItem(kind="os", name="debian 12", product="debian", version="12", ...)``."""
    name = f"{osr.id} {osr.version_id}".strip() if osr.version_id else (f"{osr.id} {osr.version_codename}".strip())
    return EolItem(
        kind=KIND_OS,
        name=name or "unknown os",
        product=os_product(osr),
        version=osr.version_id,
        source=source,
        lifecycle=LIFECYCLE_OS,
        lifecycle_reason="the operating system itself",
        product_like=os_product_like(osr),
    )
