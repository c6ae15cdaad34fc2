"""Collect from every device a rule names, one SSH session each (a bounded pool), one result per device.

Each device's result goes out through ``Context.emit`` as soon as it is known; the run's own report
(the last) carries no device and stands for the run. A device's configuration is remembered on the
sensor (redacted, in the task's state directory) only once the result that reported it is queued, so a
change is never lost to a full spool: it is reported again on the next run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from checks.base import Check, CheckError, Context, Undelivered
from checks.ssh_device.args import DeviceSpec, SshDeviceArgs
from checks.ssh_device.result import DeviceConfig, DeviceNtp, DeviceSignature, SshDeviceResult

if TYPE_CHECKING:
    from agent.sensor import SensorError
    from agent.sensor.device import Snapshot
    from checks.eol.model import EolItem

MAX_DIFF = 64 * 1024


class SshDevice(Check[SshDeviceArgs, SshDeviceResult]):
    """Network devices over SSH.  Example result: SshDeviceResult(device="core-sw-01", reached=True,
    version="15.2(4)E10", ntp=DeviceNtp(synchronized=True, offset_ms=0.4), config=DeviceConfig(...))"""

    id = "ssh_device"
    version = 1
    platforms = ("linux",)
    args_type = SshDeviceArgs
    report_field = "ssh_device"
    default_interval_s = 3600
    timeout_s = 1800.0  # many devices, each with its own deadlines

    def collect(self, args: SshDeviceArgs, ctx: Context) -> Iterator[SshDeviceResult]:
        if ctx.data_dir is None:
            raise CheckError("ssh_device needs the agent's data directory (pinned host keys, credentials)")
        from agent.sensor import CredentialError, SensorError
        from agent.sensor.credentials import Credential, Credentials
        from agent.sensor.device import snapshots
        from agent.sensor.hostkeys import HostKeyStore
        from agent.sensor.scan import Scope
        from agent.sensor.ssh import Target, Timeouts

        scope = Scope(args.ranges)
        early: dict[str, SshDeviceResult] = {}
        jobs: list[tuple[Target, Credential]] = []
        try:
            creds: Credentials | None = Credentials.load(ctx.data_dir)
            problem = ""
        except CredentialError as exc:
            creds, problem = None, str(exc)
        for d in args.devices:
            try:
                scope.check(d.address)
                if creds is None:
                    raise CredentialError(problem)
                credential = creds.get(d.credential)
            except SensorError as exc:
                early[d.name] = _unreached(d, exc)
                continue
            jobs.append((Target(d.address, d.platform, d.credential, d.port, name=d.name), credential))
        timeouts = Timeouts(command=args.command_timeout_s, session=args.command_timeout_s * 8)
        snaps = {s.target.name: s for s in snapshots(jobs, hostkeys=HostKeyStore(ctx.data_dir), timeouts=timeouts,
                                                     workers=args.workers)}
        state = Path(ctx.state_dir) / "configs" if ctx.state_dir is not None else None
        for d in args.devices:
            result, remember = early.get(d.name), None
            if result is None:
                result, remember = _result(d, snaps[d.name], state)
            if ctx.emit is None:
                _remember(state, remember)
                yield result
                continue
            try:
                ctx.emit(result)
            except Undelivered:
                continue  # not queued: its configuration stays unknown here, and the next run reports it
            _remember(state, remember)
        # The run's own report names no device: a report must carry a result, and this one stands for the run.
        yield SshDeviceResult(device="", address="", port=0, platform="", reached=True)


def _unreached(d: DeviceSpec, exc: SensorError) -> SshDeviceResult:
    kind = exc.kind  # each SensorError says what kept the sensor from the device
    return SshDeviceResult(device=d.name, address=d.address, port=d.port, platform=d.platform, purpose=d.purpose,
                           reached=False, error_kind=kind, error=str(exc))


def _config_file(state: Path, device: str) -> Path:
    return state / (hashlib.sha256(device.encode()).hexdigest()[:32] + ".txt")


def _result(d: DeviceSpec, snap: Snapshot, state: Path | None) -> tuple[SshDeviceResult, tuple[Path, str] | None]:
    if snap.error is not None or snap.facts is None:
        from agent.sensor import SessionError

        err = snap.error or SessionError(f"{d.name}: the session gave no facts")
        return _unreached(d, err), None
    f = snap.facts
    now = dt.datetime.now(dt.UTC)
    ntp = None
    if f.ntp is not None:
        ntp = DeviceNtp(f.ntp.synchronized, f.ntp.offset_ms if f.ntp.synchronized else None, f.ntp.stratum or 0,
                        f.ntp.reference or "")
    config, remember = None, None
    if f.config is not None:
        from checks.device import config_diff

        previous = None
        if state is not None and _config_file(state, d.name).exists():
            previous = _config_file(state, d.name).read_text()
        prev_digest = hashlib.sha256(previous.encode()).hexdigest() if previous is not None else ""
        changed = previous is not None and prev_digest != f.config.digest
        diff = config_diff(previous, f.config.text, "previous", "now") if changed and previous is not None else ""
        config = DeviceConfig(f.config.digest, f.config.lines, f.config.redacted, f.config.ignored,
                              first=previous is None, changed=changed, previous_digest=prev_digest,
                              diff=diff[:MAX_DIFF], detected_at=now if changed else None)
        if state is not None:
            remember = (_config_file(state, d.name), f.config.text)
    from checks.av.result import age_hours

    sigs = tuple(DeviceSignature(s.name, s.version, s.released or "", s.released_at, s.zone_assumed,
                                 age_hours(s.released_at, now) if s.released_at is not None else 0.0)
                 for s in f.signatures)
    os_item = _linux_os(snap) if d.platform == "linux" else None
    return SshDeviceResult(
        device=d.name, address=d.address, port=d.port, platform=d.platform, purpose=d.purpose, reached=True,
        vendor=f.vendor or "", os_name=f.os_name or "", version=f.version or "", model=f.model or "",
        serial=f.serial or "", hostname=f.hostname or "", ntp=ntp, config=config, signatures=sigs,
        problems=dict(snap.problems), elapsed_s=snap.elapsed_s, os=os_item), remember


def _linux_os(snap: Snapshot) -> EolItem | None:
    """A Linux target's OS as the eol check reports a host's, from its /etc/os-release."""
    from checks.device.clean import clean_lines
    from checks.eol.osrelease import os_item, parse_os_release

    out = next((o for o in snap.outputs if o.command == "cat /etc/os-release"), None)
    if out is None:
        return None
    osr = parse_os_release("\n".join(clean_lines(out.text, out.command)))
    return os_item(osr, source="ssh:/etc/os-release") if osr.id else None


def _remember(state: Path | None, remember: tuple[Path, str] | None) -> None:
    if state is None or remember is None:
        return
    path, text = remember
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
