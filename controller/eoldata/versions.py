"""Version maths: an installed version string as the numbers a release cycle is matched on."""

from __future__ import annotations

import re

_EPOCH = re.compile(r"^\d+:")
# At most 9 digits a component: a version is never longer, and int() of a huge digit string is refused.
_LEADING = re.compile(r"^(\d{1,9}(?:\.\d{1,9})*)")
_JAVA_LEGACY = re.compile(r"^1\.(\d+)(.*)$")
_JAVA_PRODUCTS = frozenset({"eclipse-temurin", "java", "openjdk", "amazon-corretto", "azul-zulu"})


def normalize_version(product: str, version: str) -> tuple[int, ...] | None:
    """The upstream version as numbers: ``1:3.0.11-1~deb12u2`` -> (3, 0, 11), ``v18.19.0`` -> (18, 19, 0).

    Strips a Debian epoch (``1:``), a leading ``v``, and everything after the dotted numbers (Debian
    revision ``-1~deb12u2``, RPM release ``-27.el9``, ``+dfsg``, ``p1``, letters as in ``1.1.1w``).
    Java's legacy ``1.8.0_392`` is read as 8. ``None`` when the version starts with no number.
    """
    text = (version or "").strip()
    if text[:1] in ("v", "V"):
        text = text[1:]
    text = _EPOCH.sub("", text)
    if product in _JAVA_PRODUCTS:
        legacy = _JAVA_LEGACY.match(text)
        if legacy:  # 1.8.0_392 is Java 8 update 392
            text = legacy.group(1) + legacy.group(2).replace("_", ".")
    found = numbers(text)
    return found or None


def numbers(text: str) -> tuple[int, ...]:
    """The leading dotted numbers of ``text``: "3.11" -> (3, 11), "22.04 LTS" -> (22, 4), "sid" -> ()."""
    m = _LEADING.match(text.strip())
    if not m:
        return ()
    return tuple(int(p) for p in m.group(1).split("."))
