"""One SSH session to one device: connect, check the pinned host key, authenticate, run commands.

``linux`` targets run each command on its own exec channel (exit status kept). Network platforms are
driven the way an operator's terminal is: an interactive shell on a PTY, the prompt found, paging turned
off where the platform allows it without changing the configuration, ``--More--`` answered with a space
where it does not (FortiOS), enable mode entered with the credential's secret on Cisco and Arista, and
each command's output read up to the next prompt. The raw text is returned; ``checks.device`` parsers
strip echo, prompts, ANSI codes and pager remnants.

Three deadlines bound every session: ``connect`` (TCP, SSH handshake, authentication), ``command``
(each command's output) and ``session`` (all of it). Nothing waits without one.
"""

from __future__ import annotations

import codecs
import functools
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import paramiko

from agent.sensor import AuthFailed, ConnectFailed, DeviceTimeout, SensorError, SessionError
from agent.sensor.credentials import Credential
from agent.sensor.hostkeys import HostKeyStore, host_entry, open_transport

MAX_OUTPUT = 32 * 2**20  # one command's output; a running configuration is far smaller

# Turning paging off for the session only (never a configuration change). FortiOS can only do that by
# changing the console's configuration, so its pager is answered instead.
PAGING_OFF: dict[str, tuple[str, ...]] = {
    "cisco_ios": ("terminal length 0", "terminal width 511"),
    "cisco_xe": ("terminal length 0", "terminal width 511"),
    "cisco_nxos": ("terminal length 0", "terminal width 511"),
    "cisco_asa": ("terminal pager 0",),
    "arista_eos": ("terminal length 0", "terminal width 32767"),
    "juniper_junos": ("set cli screen-length 0", "set cli screen-width 0"),
    "paloalto_panos": ("set cli pager off",),
    "fortinet": (),
}
ENABLE_PLATFORMS = frozenset({"cisco_ios", "cisco_xe", "cisco_asa", "arista_eos"})
SHELL_PLATFORMS = frozenset(PAGING_OFF)

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")
# The last line of the buffer is a prompt: "R1#", "R1>", "R1(config)#", "user@mx1>", "FGT60E # ",
# "FGT (root) # ", "admin@PA-220(active)>", "asa/pri/act#", "root@mx1:RE:0%".
_PROMPT = re.compile(r"^[\w.\-@:/~\[\]]{1,80}(?: ?\([\w.\-:/ ]{1,40}\))? ?[#>$%] ?$")
_PAGER = re.compile(r"(?:-- ?More ?--|<-+ More -+>|-+\(more(?: \d+%)?\)-+|--\(more\)--)\s*$", re.IGNORECASE)
_PASSWORD = re.compile(r"password: ?$", re.IGNORECASE)


@dataclass(frozen=True)
class Timeouts:
    connect: float = 15.0
    command: float = 60.0
    session: float = 300.0


@dataclass(frozen=True)
class Target:
    """A device as the baseline gives it: address, port, platform (Netmiko's name), credential name."""

    host: str
    platform: str
    credential: str
    port: int = 22
    name: str = ""

    @property
    def where(self) -> str:
        """How messages name the device: "sw2 (10.0.0.2)", "[10.0.0.2]:2222" without a name."""
        entry = host_entry(self.host, self.port)
        return f"{self.name} ({entry})" if self.name else entry


@dataclass(frozen=True)
class Output:
    command: str
    text: str
    exit_status: int | None = None  # linux exec channels only
    elapsed_s: float = 0.0


@dataclass
class _Clock:
    session_deadline: float
    timeouts: Timeouts

    def command_deadline(self) -> float:
        return min(time.monotonic() + self.timeouts.command, self.session_deadline)

    def left(self, deadline: float) -> float:
        return deadline - time.monotonic()


def collect(target: Target, commands: Sequence[str], *, credential: Credential, hostkeys: HostKeyStore,
            timeouts: Timeouts = Timeouts()) -> list[Output]:
    """Run ``commands`` on ``target`` and return their outputs, in order. Raises a SensorError naming the
    device on any failure; nothing is retried here (the caller's schedule does that)."""
    if target.platform != "linux" and target.platform not in SHELL_PLATFORMS:
        raise SessionError(f"{target.where}: no SSH driver for platform {target.platform!r} "
                           f"(known: linux, {', '.join(sorted(SHELL_PLATFORMS))})")
    clock = _Clock(time.monotonic() + timeouts.session, timeouts)
    transport = _connect(target, credential, hostkeys, timeouts)
    try:
        if target.platform == "linux":
            return [_exec(transport, target, c, clock) for c in commands]
        return _Shell(transport, target, credential, clock).run(commands)
    finally:
        transport.close()


@dataclass(frozen=True)
class Collected:
    """One device's outcome in :func:`collect_many`: its outputs, or the error that stopped it."""

    target: Target
    outputs: tuple[Output, ...] = ()
    error: SensorError | None = None
    elapsed_s: float = 0.0


def collect_many(jobs: Sequence[tuple[Target, Sequence[str], Credential]], *, hostkeys: HostKeyStore,
                 timeouts: Timeouts = Timeouts(), workers: int = 16) -> list[Collected]:
    """Collect from many devices with at most ``workers`` sessions at once; one outcome per job, in order.

    A device that fails (refused key, timeout, ...) never stops the others: its error is its outcome.
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(job: tuple[Target, Sequence[str], Credential]) -> Collected:
        target, commands, credential = job
        start = time.monotonic()
        try:
            outs = collect(target, commands, credential=credential, hostkeys=hostkeys, timeouts=timeouts)
        except SensorError as exc:
            return Collected(target, (), exc, time.monotonic() - start)
        return Collected(target, tuple(outs), None, time.monotonic() - start)

    if not jobs:
        return []
    with ThreadPoolExecutor(max(1, min(workers, len(jobs))), thread_name_prefix="vigil-ssh") as pool:
        return list(pool.map(one, jobs))


def _connect(target: Target, credential: Credential, hostkeys: HostKeyStore, timeouts: Timeouts) -> paramiko.Transport:
    transport = open_transport(target.host, target.port, timeouts.connect, target.where)
    try:
        transport.banner_timeout = transport.handshake_timeout = transport.auth_timeout = timeouts.connect
        pinned = hostkeys.pinned(target.host, target.port)
        if pinned:  # ask for the pinned key's type first, so a device with several keys shows that one
            options = transport.get_security_options()
            options.key_types = tuple(t for t in options.key_types if t in pinned) + tuple(
                t for t in options.key_types if t not in pinned)
        try:
            transport.start_client(timeout=timeouts.connect)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectFailed(f"{target.where}: SSH handshake failed: {exc or type(exc).__name__}") from exc
        hostkeys.check(target.host, target.port, transport.get_remote_server_key(), target.where)
        _authenticate(transport, target, credential)
        return transport
    except BaseException:
        transport.close()
        raise


def _authenticate(transport: paramiko.Transport, target: Target, credential: Credential) -> None:
    """The credential's keys in order, then its password (as "password", or as keyboard-interactive where
    the device offers only that, as many network devices do)."""
    tried: list[str] = []
    for key in credential.private_keys():
        if _try_auth(target, functools.partial(transport.auth_publickey, credential.username, key)):
            return
        tried.append(key.get_name())
    password = credential.password
    if password is not None:
        def answers(_title: str, _instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
            return [password for _ in prompts]

        if _try_auth(target, lambda: transport.auth_password(credential.username, password)):
            return
        if _try_auth(target, lambda: transport.auth_interactive(credential.username, answers)):
            return
        tried.append("password")
    raise AuthFailed(f"{target.where}: user {credential.username!r} refused with every key and password of "
                     f"credential {credential.name!r} ({len(tried)} tried: {', '.join(tried) or 'none'})")


def _try_auth(target: Target, attempt: Callable[[], object]) -> bool:
    try:
        attempt()
    except paramiko.AuthenticationException:  # BadAuthenticationType included: the method is not offered
        return False
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise ConnectFailed(f"{target.where}: authentication broke off: {exc or type(exc).__name__}") from exc
    return True


def _exec(transport: paramiko.Transport, target: Target, command: str, clock: _Clock) -> Output:
    start = time.monotonic()
    deadline = clock.command_deadline()
    try:
        chan = transport.open_session(timeout=max(clock.left(deadline), 0.1))
        chan.exec_command(command)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise SessionError(f"{target.where}: cannot run {command!r}: {exc or type(exc).__name__}") from exc
    out = bytearray()
    try:
        while True:
            left = clock.left(deadline)
            if left <= 0:
                _timeout(target, command, clock, deadline)
            chan.settimeout(min(left, 1.0))
            try:
                data = chan.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            out += data
            if len(out) > MAX_OUTPUT:
                raise SessionError(f"{target.where}: {command!r} printed more than {MAX_OUTPUT // 2**20} MiB")
        while chan.recv_stderr_ready():
            chan.recv_stderr(65536)
        # The exit status may arrive just after the end of the output; a server may send none (-1).
        chan.status_event.wait(max(min(clock.left(deadline), 5.0), 0.0))
        status = chan.exit_status if chan.exit_status_ready() and chan.exit_status >= 0 else None
    finally:
        chan.close()
    return Output(command, out.decode("utf-8", "replace"), status, time.monotonic() - start)


def _timeout(target: Target, command: str, clock: _Clock, deadline: float) -> None:
    if deadline >= clock.session_deadline:
        raise DeviceTimeout(f"{target.where}: the session ran out of its {clock.timeouts.session:g}s "
                            f"while running {command!r}")
    raise DeviceTimeout(f"{target.where}: {command!r} gave no complete output within {clock.timeouts.command:g}s")


def _without_echo(text: str, command: str) -> str:
    """The output without the device's echo of the command (its first line, as typed)."""
    first, sep, rest = text.partition("\n")
    shown = _ANSI.sub("", first).replace("\r", "").rstrip()
    return rest if sep and shown.endswith(command.strip()) else text


def _last_line(text: str) -> str:
    tail = text.rsplit("\n", 1)[-1]
    return _ANSI.sub("", tail).rsplit("\r", 1)[-1]


class _Shell:
    """An interactive CLI session on a PTY."""

    def __init__(self, transport: paramiko.Transport, target: Target, credential: Credential, clock: _Clock) -> None:
        self.target, self.credential, self.clock = target, credential, clock
        try:
            self.chan = transport.open_session(timeout=max(clock.left(clock.session_deadline), 0.1))
            self.chan.get_pty(term="vt100", width=511, height=1000)
            self.chan.invoke_shell()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise SessionError(f"{target.where}: cannot open an interactive shell: "
                               f"{exc or type(exc).__name__}") from exc
        self.prompt = ""
        # One decoder for the session: a character split between two reads is decoded whole.
        self._decode = codecs.getincrementaldecoder("utf-8")("replace").decode

    def run(self, commands: Sequence[str]) -> list[Output]:
        try:
            self.prompt = self._find_prompt()
            if self.target.platform == "juniper_junos" and self.prompt.rstrip().endswith("%"):
                self._send_line("cli")  # root logs in to the shell; the CLI is one command away
                self.prompt = self._read_until_prompt("cli", self.clock.command_deadline(), any_prompt=True)[1]
            if self.target.platform in ENABLE_PLATFORMS and self.prompt.rstrip().endswith(">"):
                self._enable()
            for setting in PAGING_OFF[self.target.platform]:
                self._command(setting)
            return [self._command(c) for c in commands]
        finally:
            self.chan.close()

    def _send_line(self, text: str) -> None:
        try:
            self.chan.sendall((text + "\n").encode())
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise SessionError(f"{self.target.where}: the session closed: {exc or type(exc).__name__}") from exc

    def _recv(self, deadline: float) -> bytes:
        """What the device printed next (b"" when nothing within a moment); raises at the deadline."""
        left = self.clock.left(deadline)
        if left <= 0:
            raise TimeoutError
        self.chan.settimeout(min(left, 0.5))
        try:
            data = self.chan.recv(65536)
        except TimeoutError:
            return b""
        if not data:
            raise SessionError(f"{self.target.where}: the device closed the session")
        return data

    def _find_prompt(self) -> str:
        """Read the banner up to a prompt, then press Enter and see the same prompt again."""
        deadline = self.clock.command_deadline()
        buf = ""
        try:
            while not _PROMPT.match(_last_line(buf)):
                buf += self._decode(self._recv(deadline))
            first = _last_line(buf).strip()
            self._send_line("")
            buf = ""
            while _last_line(buf).strip() != first:
                buf += self._decode(self._recv(deadline))
        except TimeoutError:
            lines = [_ANSI.sub("", line).strip() for line in buf.replace("\r", "\n").split("\n")]
            seen = next((line for line in reversed(lines) if line), "")[-60:]
            raise DeviceTimeout(f"{self.target.where}: no CLI prompt within {self.clock.timeouts.command:g}s "
                                f"(last line: {seen!r})") from None
        return first

    def _read_until_prompt(self, command: str, deadline: float, any_prompt: bool = False) -> tuple[str, str]:
        """The text up to the next prompt, answering pagers; (text without the prompt, the prompt).

        Only the current line (what follows the last newline) is looked at for a pager or a prompt, so a
        large output costs its length once."""
        done: list[str] = []  # whole lines received
        tail = ""  # the line being received
        size = 0
        try:
            while True:
                data = self._recv(deadline)
                if not data:
                    continue  # nothing new: a pager already answered is not answered again
                size += len(data)
                if size > MAX_OUTPUT:
                    raise SessionError(f"{self.target.where}: {command!r} printed more than "
                                       f"{MAX_OUTPUT // 2**20} MiB")
                head, newline, rest = (tail + self._decode(data)).rpartition("\n")
                if newline:
                    done.append(head + newline)
                    tail = rest
                else:
                    tail = rest
                last = _ANSI.sub("", tail).rsplit("\r", 1)[-1]
                if _PAGER.search(last):
                    self.chan.sendall(b" ")
                    continue
                stripped = last.strip()
                if stripped and ((any_prompt and _PROMPT.match(last)) or stripped == self.prompt):
                    return "".join(done), stripped
        except TimeoutError:
            _timeout(self.target, command, self.clock, deadline)
            raise  # not reached: _timeout raises

    def _command(self, command: str) -> Output:
        start = time.monotonic()
        self._send_line(command)
        text, _ = self._read_until_prompt(command, self.clock.command_deadline())
        return Output(command, _without_echo(text, command), None, time.monotonic() - start)

    def _enable(self) -> None:
        """From ``R1>`` to ``R1#``. A second password prompt, or the same prompt back, is a refusal."""
        secret = self.credential.enable_secret()
        deadline = self.clock.command_deadline()
        self._send_line("enable")
        buf, sent = "", False
        try:
            while True:
                buf += self._decode(self._recv(deadline))
                last = _last_line(buf)
                line = last.strip()
                if _PASSWORD.search(line):
                    if secret is None or sent:
                        self.chan.sendall(b"\x03\n")  # leave the prompt; the session ends next anyway
                        if secret is None:
                            raise SessionError(f"{self.target.where}: enable mode asks for a secret and credential "
                                               f"{self.credential.name!r} has none (add enable_secret_env)")
                        break
                    self.chan.sendall((secret + "\n").encode())
                    buf, sent = "", True
                elif _PROMPT.match(last):
                    if line.endswith("#"):
                        self.prompt = line
                        return
                    if line == self.prompt and (sent or "\n" in buf):
                        break
        except TimeoutError:
            raise DeviceTimeout(f"{self.target.where}: enable mode did not answer within "
                                f"{self.clock.timeouts.command:g}s") from None
        raise SessionError(f"{self.target.where}: enable mode refused the secret of credential "
                           f"{self.credential.name!r}")


__all__ = ["Collected", "Output", "SensorError", "Target", "Timeouts", "collect", "collect_many"]
