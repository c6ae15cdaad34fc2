"""The shared cleaner on the session remnants it exists for, one at a time."""

from __future__ import annotations

import pytest

from checks.device import clean


@pytest.mark.parametrize(("raw", "command", "want"), [
    ("a\r\nb\r\n", "", "a\nb"),
    ("a\r\r\nb", "", "a\nb"),
    ("a\rb\rc\r", "", "a\nb\nc"),
    ("a\n\rb", "", "a\nb"),
    (" --More-- \b\b\b\b\b\b\b\b\b\b          \b\b\b\b\b\b\b\b\b\bnext line", "", "next line"),
    (" --More-- \r\x1b[Kab", "", "ab"),
    ("\x1b[7m--More--\x1b[m\r        \rHardware", "", "Hardware"),
    ("---(more 42%)---\r                \rJUNOS OS", "", "JUNOS OS"),
    ("<--- More --->\n              \nASA: 4096 MB", "", "ASA: 4096 MB"),
    ("\x1b[1;32mversion\x1b[0m 1", "", "version 1"),
    ("\x1b]0;title\x07text", "", "text"),
    ("banner\nR1#terminal length 0\nR1#sh ver\nCisco IOS\nR1#", "show version", "Cisco IOS"),
    ("FGT (global) # get system status\nVersion: x\n\nFGT (global) # ", "get system status", "Version: x"),
    ("admin@PA-220(active)> show system info\nhostname: a\nadmin@PA-220(active)> ", "show system info", "hostname: a"),
    ("user@mx1> show version | no-more\nHostname: mx1\n\n{master:0}\nuser@mx1> ", "show version", "Hostname: mx1"),
    ("[root@db01 ~]# uname -a\nLinux db01 5.14\n[root@db01 ~]# exit", "uname -a", "Linux db01 5.14"),
    # A line that is not an echo of this command stays.
    ("R1#show clock\n10:00 UTC\nCisco IOS", "show version", "R1#show clock\n10:00 UTC\nCisco IOS"),
])
def test_clean(raw: str, command: str, want: str) -> None:
    assert clean(raw, command) == want
