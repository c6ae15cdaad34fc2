"""A network device's CLI behind a real sshd, for the sensor's tests: run by sshd as the forced command.

It behaves as the CLIs the sensor drives do, from what their documentation shows: a banner, a prompt
(``R1>``; ``R1#`` after ``enable`` and its secret, three tries, then ``% Bad secrets``), the typed
command echoed by the device itself (the terminal is in raw mode, as on a device), output paged with a
pager prompt erased by backspaces after each page until paging is turned off for the session, ``%
Invalid input`` for what it does not know. The outputs are captured or documented outputs from
``tests/checks/device/fixtures``; the configuration is one JSON file given as the only argument::

    {"prompt": "R1", "enable_secret": "s3cret", "banner": "...", "page_lines": 20, "pager": " --More-- ",
     "outputs": {"show version": "/path/to/capture.txt"}, "needs_enable": ["show running-config"],
     "hang_on": ["show tech-support"], "start_enabled": false, "suffix": [">", "#"],
     "mute": false, "hang_up_on": ["reload"]}

``mute``: the banner and then nothing (a console server's line with nothing behind it); ``hang_up_on``:
commands after which the device closes the session at once.

Standard library only: sshd runs it with the system's Python.
"""

from __future__ import annotations

import json
import os
import sys
import termios
import time
import tty
from pathlib import Path

PAGING_OFF = ("terminal length 0", "terminal pager 0", "set cli screen-length 0", "set cli pager off")
SETTINGS = ("terminal width", "set cli screen-width")


def write(text: str) -> None:
    os.write(1, text.encode())


def read_char() -> str:
    data = os.read(0, 1)
    if not data:
        raise EOFError
    return data.decode("latin-1")


def read_line(echo: bool = True) -> str:
    line = ""
    while True:
        ch = read_char()
        if ch in "\r\n":
            write("\r\n")
            return line
        if ch == "\x03":
            write("^C\r\n")
            return ""
        if ch in "\x7f\b":
            if line:
                line = line[:-1]
                if echo:
                    write("\b \b")
            continue
        line += ch
        if echo:
            write(ch)


def main() -> int:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    outputs: dict[str, str] = {k: Path(v).read_text() for k, v in cfg.get("outputs", {}).items()}
    original = os.environ.get("SSH_ORIGINAL_COMMAND")
    if original:  # "ssh R1 show version": one command, no prompt
        write(outputs.get(original.strip(), "% Invalid input detected at '^' marker.\n"))
        return 0
    if sys.stdin.isatty():
        tty.setraw(0, termios.TCSANOW)
    user, enabled_suffix = cfg.get("suffix", [">", "#"])
    enabled = bool(cfg.get("start_enabled", False))
    page = int(cfg.get("page_lines", 0))
    pager = str(cfg.get("pager", " --More-- "))

    def prompt() -> str:
        return cfg["prompt"] + (enabled_suffix if enabled else user)

    if cfg.get("mute"):
        write(cfg.get("banner", "").replace("\n", "\r\n") + "\r\n")
        time.sleep(3600)
        return 0
    write(cfg.get("banner", "").replace("\n", "\r\n") + "\r\n" + prompt())
    while True:
        try:
            line = read_line().strip()
        except EOFError:
            return 0
        command = " ".join(line.split())
        if command in ("exit", "quit", "logout") or command in cfg.get("hang_up_on", []):
            return 0
        if command == "enable" and not enabled:
            for _ in range(3):
                write("Password: ")
                if read_line(echo=False) == cfg.get("enable_secret"):
                    enabled = True
                    break
            else:
                write("% Bad secrets\r\n\r\n")
        elif command in PAGING_OFF:
            page = 0
        elif command.startswith(SETTINGS) or command == "":
            pass
        elif command in cfg.get("hang_on", []):
            time.sleep(3600)
        elif command in outputs and (enabled or command not in cfg.get("needs_enable", [])):
            lines = outputs[command].replace("\r\n", "\n").split("\n")
            for n, text in enumerate(lines, start=1):
                write(text + "\r\n")
                if page and n % page == 0 and n < len(lines):
                    write(pager)
                    key = read_char()
                    write("\b" * len(pager) + " " * len(pager) + "\b" * len(pager))
                    if key == "q":
                        break
        else:
            write("                 ^\r\n% Invalid input detected at '^' marker.\r\n\r\n")
        write(prompt())


if __name__ == "__main__":
    sys.exit(main())
