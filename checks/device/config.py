"""Running configurations made comparable: secrets redacted first, volatile lines ignored, a digest, a diff.

:func:`normalise` is the only way configuration text leaves a parser. It redacts before anything else
reads the text, so neither the normalised text, nor its digest, nor a diff made from it can carry a
secret. A redacted value becomes :data:`MARKER` and the rest of the line is kept, so that a changed
secret is still seen as a change of *that line's shape*, not of its value (the digest does not move
when only a secret's value changes — a rotated key is not a configuration change to ticket).

Volatile lines — timestamps the device writes into its own output, build banners, crypto checksums,
clock drift numbers — are dropped after redaction, so two captures of an unchanged device give the
same digest. The rules are listed in ``docs/devices.md``.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from checks.device.model import ConfigFacts

MARKER = "<redacted>"

_I = re.IGNORECASE
# (pattern, group to redact): applied to every line whatever the platform, because a secret in the
# wrong vendor's syntax is still a secret.
_LINE_RULES: tuple[tuple[re.Pattern[str], int], ...] = (
    # Junos: "$9$..." reversible secrets and any quoted hash after encrypted-password.
    (re.compile(r'("\$9\$[^"]*")'), 1),
    (re.compile(r'\bencrypted-password\s+("[^"]*"|\S+)', _I), 1),
    # Cisco/Arista/NX-OS/ASA: enable secret 9 $9$.., username u secret 5 $1$.., password 7 0822.., secret sha512 $6$..
    (re.compile(r"\b(?:secret|password|passwd)\s+(?:(?:[0-9]|sha512|sha256|md5|ENC|encrypted)\s+)?"
                r"(\"[^\"]*\"|\S+)", _I), 1),
    # tacacs-server key 7 .., radius-server key .., key-string 7 .., crypto isakmp key K address ..,
    # pre-shared-key [local|remote] .., ip ospf authentication-key ..
    (re.compile(r"\b(?:key|key-string|authentication-key|pre-shared-key|psk|wpa-psk ascii|wpa-psk hex)"
                r"(?!\s+(?:chain|config-key|rsa|dsa|ecdsa|ed25519|generate|exchange|lifetime)\b|\s+\d+\s*$)"
                r"(?:\s+(?:local|remote|ascii-text|hex|md5|sha1?|[0-9]))*\s+(\"[^\"]*\"|\S+)", _I), 1),
    (re.compile(r"\bmessage-digest-key\s+\d+\s+md5\s+(?:[0-9]\s+)?(\S+)", _I), 1),
    (re.compile(r"\bauthentication-key\s+\d+\s+md5\s+(\S+)", _I), 1),
    # snmp-server community X, snmp-server host h community X (ASA), set snmp community X (Junos).
    (re.compile(r"\b(?:snmp-server|snmp)\b.*?\bcommunity\s+(\"[^\"]*\"|\S+)", _I), 1),
    (re.compile(r"\bsnmp-server\s+user\s+.*?\bauth\s+(?:md5|sha\S*)\s+(\S+)", _I), 1),
    (re.compile(r"\bsnmp-server\s+user\s+.*?\bpriv\s+(?:des|3des|aes(?:\s+\d+)?|aes-\d+)?\s*(\S+)", _I), 1),
    # FortiOS: any value the device stores encrypted, and the settings that hold secrets in the clear.
    (re.compile(r"^\s*set\s+\S+\s+(ENC\s+\S+)", _I), 1),
    (re.compile(r"^\s*set\s+(?:[\w-]*(?:password|passwd|secret|psk|passphrase|pwd)[\w-]*|key)\s+(.+)$", _I), 1),
    # PAN-OS XML: <phash>, <key>, <password>, <secret>, <community>, <auth-password> and friends.
    (re.compile(r"<(phash|key|password|passwd|secret|pre-shared-key|authpwd|privpwd|[\w-]*community[\w-]*|"
                r"[\w-]*-password|[\w-]*-secret|private-key)(?:\s[^>]*)?>([^<]+)</\1>", _I), 2),
)
_FORTI_SNMP = re.compile(r"^\s*config system snmp (?:community|user)\b", _I)
_FORTI_SET_NAME = re.compile(r"^\s*set name\s+(\"[^\"]*\"|\S+)", _I)
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY-----")

_VOLATILE = re.compile(
    r"^(?:"
    r"!\s*Last configuration change at"  # IOS, IOS-XE
    r"|!\s*NVRAM config last updated"
    r"|!\s*No configuration change since last restart"
    r"|!\s*Time:"  # NX-OS "!Time: Mon Oct 23 20:53:29 2023"
    r"|!\s*Running configuration last done at"  # NX-OS
    r"|!\s*Command: show running-config"  # NX-OS, EOS
    r"|!\s*device: "  # EOS "! device: leaf1 (DCS-7050TX-64, EOS-4.28.3M)"
    r"|ntp clock-period\b"  # IOS: written by the NTP process as the clock drifts
    r"|Building configuration"
    r"|Current configuration\s*:"
    r"|Load for (?:five )?secs"  # IOS exec prompt timestamp
    r"|Time source is "
    r"|Cryptochecksum:"  # ASA
    r"|:\s*(?:Saved|Written by )"  # ASA
    r"|##\s*Last (?:commit|changed):"  # Junos
    r"|#config-version="  # FortiOS
    r"|#conf_file_ver="
    r"|#buildno="
    r"|#global_vdom="
    r")",
    _I,
)


@dataclass(frozen=True)
class _Redacted:
    lines: list[str]
    count: int


def _redact_line(line: str) -> tuple[str, int]:
    count = 0
    for pattern, group in _LINE_RULES:
        def swap(match: re.Match[str], group: int = group) -> str:
            start, end = match.span(group) if match.group(group) is not None else (0, 0)
            if start == end:
                return match.group(0)
            base = match.start(0)
            value = match.group(group)
            marker = f'"{MARKER}"' if value.startswith('"') and value.endswith('"') else MARKER
            text = match.group(0)
            return text[: start - base] + marker + text[end - base:]

        new, n = pattern.subn(swap, line)
        if new != line:
            count += n
            line = new
    return line, count


def redact(text: str) -> _Redacted:
    """Every secret in ``text`` replaced by :data:`MARKER`; private-key blocks reduced to one marker line."""
    out: list[str] = []
    count = 0
    in_key = False
    # FortiOS names an SNMP community by "set name" inside "config system snmp community": the name is
    # the secret there. The indentation of that "config" line is kept to find its own "end".
    snmp_block: int | None = None
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        if _FORTI_SNMP.match(line):
            snmp_block = indent
        elif snmp_block is not None and line.strip() == "end" and indent == snmp_block:
            snmp_block = None
        elif snmp_block is not None and (m := _FORTI_SET_NAME.match(line)):
            out.append(line[: m.start(1)] + f'"{MARKER}"' + line[m.end(1):])
            count += 1
            continue
        if in_key:
            if end := _PEM_END.search(line):
                in_key = False
                out.append(line[end.start():])
            continue
        if begin := _PEM_BEGIN.search(line):
            out.append(line[: begin.end()])
            out.append(MARKER)
            count += 1
            if end := _PEM_END.search(line, begin.end()):
                out.append(line[end.start():])
            else:
                in_key = True
            continue
        new, n = _redact_line(line)
        out.append(new)
        count += n
    return _Redacted(out, count)


def redact_text(text: str) -> str:
    """:func:`redact` as text, for anything else that must not show a device's secrets."""
    return "\n".join(redact(text).lines)


def normalise(text: str, is_volatile: Callable[[str], bool] | None = None) -> ConfigFacts:
    """Redact, drop volatile lines and trailing spaces, and digest what is left (sha256 of the text)."""
    redacted = redact(text)
    kept: list[str] = []
    ignored = 0
    for line in redacted.lines:
        stripped = line.strip()
        if _VOLATILE.match(stripped) or (is_volatile is not None and is_volatile(stripped)):
            ignored += 1
            continue
        kept.append(line.rstrip())
    while kept and not kept[0].strip():
        kept.pop(0)
    while kept and not kept[-1].strip():
        kept.pop()
    body = "\n".join(kept) + "\n" if kept else ""
    return ConfigFacts(
        digest=hashlib.sha256(body.encode()).hexdigest(),
        text=body,
        lines=len(kept),
        redacted=redacted.count,
        ignored=ignored,
    )


def config_diff(before: ConfigFacts | str, after: ConfigFacts | str, before_label: str = "before",
                after_label: str = "after", context: int = 3) -> str:
    """A unified diff of two normalised configurations, for a ticket's evidence ("" when equal).

    Given plain text, the text is normalised first, so a diff never shows a secret either way.
    """
    old = before.text if isinstance(before, ConfigFacts) else normalise(before).text
    new = after.text if isinstance(after, ConfigFacts) else normalise(after).text
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        before_label, after_label, n=context))
