"""The one cleaner every parser runs first: what a terminal session leaves around a command's output.

Captured output arrives with CRLF or CR line ends, ANSI colour and cursor codes, pager remnants
(``--More--`` and the backspaces or carriage returns that erase it, Junos ``---(more 45%)---``, ASA
``<--- More --->``), a login banner and the echoed command before the output, and the next prompt
after it. :func:`clean` removes those and nothing else; it is idempotent.
"""

from __future__ import annotations

import re

_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, erase line
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: window titles
    r"|\x1b[()][0-9A-Za-z]"  # character set selection
    r"|\x1b[=>78DEHMNOZc]"  # keypad modes, save/restore cursor, index
)
# Control characters left once the escapes are read, a stray ESC included.
_CONTROL = re.compile(r"[\x00-\x07\x0b\x0c\x0e-\x1f\x7f]")
_PAGER = re.compile(
    r"\s*(?:-- ?More ?--|<-+ More -+>|-+\(more(?: \d+%)?\)-+|--\(more\)--|\(END\))\s*",
    re.IGNORECASE,
)
_LESS_STATUS = re.compile(r"^lines \d+-\d+(?:/\d+)?(?: \(END\))?\s*")
# A prompt: "R1#", "R1>", "R1(config)#", "asa/pri/act#", "user@mx1>", "user@mx1:fpc0>", "FGT60E # ",
# "FGT (root) #", "admin@PA-220(active)>", "leaf1(s1)#", "[root@host ~]#", "ops@host:~$".
_PROMPT = re.compile(
    r"^(?:\[[^\]\n]{1,80}\]|[\w.\-@:/~]{1,80})(?:\s?\([\w.\-:/ ]{1,40}\))?\s?[#>$%]"
)
_JUNOS_CONTEXT = re.compile(r"^\{[\w:\-]+\}$")


# "Erase to end of line" (CSI K, CSI 0K) is what pagers send after a CR; it is kept, as this one
# character, until :func:`_terminal` has applied it. CSI 2K erases the whole line.
_ERASE_EOL = "\ue000"
_ERASE_LINE = "\ue001"
_ERASES = re.compile(r"\x1b\[(0?|2)K")


def _terminal(line: str) -> str:
    """One line as a terminal would show it: a backspace moves left, a CR returns, text overwrites."""
    if "\b" not in line and "\r" not in line and _ERASE_EOL not in line and _ERASE_LINE not in line:
        return line
    cells: list[str] = []
    cursor = 0
    for ch in line:
        if ch == "\b":
            cursor = max(0, cursor - 1)
        elif ch == "\r":
            cursor = 0
        elif ch == _ERASE_EOL:
            del cells[cursor:]
        elif ch == _ERASE_LINE:
            cells = [" "] * cursor
        else:
            if cursor < len(cells):
                cells[cursor] = ch
            else:
                cells.append(ch)
            cursor += 1
    return "".join(cells)


def _is_echo(line: str, command: str) -> bool:
    """``line`` is a prompt followed by ``command``, possibly abbreviated ("R1#sh ver")."""
    match = _PROMPT.match(line)
    if match is None:
        return False
    typed = line[match.end():].split()
    wanted = command.split()
    if not typed or len(typed) > len(wanted) + 3:
        return False
    # Each typed word abbreviates the command's word at the same place (IOS accepts "sh ver").
    return all(
        (len(t) >= 2 and w.lower().startswith(t.lower())) or t == w for t, w in zip(typed, wanted, strict=False)
    ) and len(typed) >= min(len(wanted), 2)


def _is_trailing_prompt(line: str) -> bool:
    """The prompt after the output, alone or with what was typed next ("SW1#", "SW1#exit", "{master:0}")."""
    match = _PROMPT.match(line)
    return (match is not None and len(line[match.end():].split()) <= 3) or bool(_JUNOS_CONTEXT.match(line.strip()))


def clean_lines(text: str, command: str = "") -> list[str]:
    """The output's lines, cleaned (see the module docstring); trailing spaces removed."""
    text = text.replace("\ufeff", "")
    text = re.sub(r"\r+\n", "\n", text)
    if "\n" not in text.rstrip("\r"):
        # CR alone ends lines (no LF anywhere): it is not a carriage return over the same line.
        text = text.replace("\r", "\n")
    text = _ERASES.sub(lambda m: _ERASE_LINE if m.group(1) == "2" else _ERASE_EOL, text)
    text = _ANSI.sub("", text)
    lines: list[str] = []
    for raw in text.split("\n"):
        line = _CONTROL.sub("", _terminal(raw))
        if _PAGER.search(line):
            line = _PAGER.sub(" ", line).strip()
            if not line:
                continue
        line = _LESS_STATUS.sub("", line)
        lines.append(line.rstrip())
    if command:
        echoes = [i for i, line in enumerate(lines) if _is_echo(line, command)]
        if echoes:
            lines = lines[echoes[-1] + 1:]
    while lines and (not lines[-1].strip() or _is_trailing_prompt(lines[-1])):
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    return lines


def clean(text: str, command: str = "") -> str:
    """:func:`clean_lines` joined with ``\\n``."""
    return "\n".join(clean_lines(text, command))
