"""Capture real ``chronyc``, ``ntpq`` and ``timedatectl`` output as fixtures for ``test_parse.py``.

Linux, as root::

    python tests/checks/ntp/capture_fixtures.py --out tests/checks/ntp/fixtures

It downloads Debian's ``chrony``, ``ntpsec`` and ``python3-ntp`` packages with ``apt-get download``
and unpacks them into a scratch directory (never installing them: the two conflict with each other
and with ``systemd-timesyncd``, and the host must keep whatever it has), then builds two network
namespaces joined by one veth pair, addresses only inside 10.201.1.0/24::

    vigil-ntp-srv                                   vigil-ntp-cli
      10.201.1.1  chronyd, "local stratum 8"          10.201.1.2  the daemon under test
      10.201.1.3  SNTP responder, clock +5 s
      10.201.1.4  SNTP responder, clock -5 s
      10.201.1.5  SNTP responder, clock +0 s (stopped mid-run)
      10.201.1.99 nobody (an unreachable server)

Every daemon runs without the power to change the host's clock, because network namespaces share
it: ``chronyd -x`` with CAP_SYS_TIME dropped, ``ntpd`` with CAP_SYS_TIME dropped, and
``systemd-timesyncd`` inside a user namespace (whose capabilities do not reach the clock) with a
private mount namespace for its config, state directory and a private D-Bus system bus.

The client therefore never corrects anything: a server 5 s ahead keeps the host 5 s "slow" as far
as the daemon can tell, which is exactly the state the check must report.

Scenarios (``<name>.<command>.txt``):

====================================  ========================================================
chrony_synced                         client -> 10.201.1.1; leap Normal, source ``*``
chrony_slow_5s                        client -> +5 s responder; tracking System time +5.0
chrony_fast_5s                        client -> -5 s responder; tracking System time -5.0
chrony_no_majority                    client -> 10.201.1.1 and +5 s responder: both ``x``
chrony_unreachable                    client -> 10.201.1.99; never synchronised
chrony_lost_source                    synced to 10.201.1.5, then the responder is stopped
chrony_local_server                   the server's own view (``local stratum 8``)
ntpsec_synced                         ntpd -> 10.201.1.1; system peer ``*``
ntpsec_step_refused_fast_5s           ntpd -> -5 s responder; wants to step, may not
ntpsec_unreachable                    ntpd -> 10.201.1.99; ``.INIT.``, leap 11
timesyncd_synced                      systemd-timesyncd -> 10.201.1.1
timesyncd_slow_5s                     systemd-timesyncd -> +5 s responder
timesyncd_unreachable                 systemd-timesyncd -> 10.201.1.99
timedatectl_no_systemd                ``timedatectl show`` on a host without systemd as PID 1
====================================  ========================================================
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
SRV, CLI = "vigil-ntp-srv", "vigil-ntp-cli"
CHRONY_SERVER, SLOW_5S, FAST_5S, VANISHING, NOBODY = (
    "10.201.1.1",
    "10.201.1.3",
    "10.201.1.4",
    "10.201.1.5",
    "10.201.1.99",
)
CLIENT = "10.201.1.2"


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, timeout=30)


def in_ns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def wait_for(what: str, probe: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)


@contextmanager
def namespaces() -> Iterator[None]:
    for ns in (SRV, CLI):
        if ns in sh("ip", "netns", "list").stdout.split():
            raise SystemExit(f"namespace {ns} exists: another capture running? remove it with ip netns del {ns}")
    try:
        for ns in (SRV, CLI):
            sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", "vntp-srv", "type", "veth", "peer", "name", "vntp-cli")
        sh("ip", "link", "set", "vntp-srv", "netns", SRV)
        sh("ip", "link", "set", "vntp-cli", "netns", CLI)
        for addr in (CHRONY_SERVER, SLOW_5S, FAST_5S, VANISHING):
            sh("ip", "-n", SRV, "addr", "add", f"{addr}/24", "dev", "vntp-srv")
        sh("ip", "-n", CLI, "addr", "add", f"{CLIENT}/24", "dev", "vntp-cli")
        for ns, dev in ((SRV, "vntp-srv"), (CLI, "vntp-cli")):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        yield
    finally:
        for ns in (SRV, CLI):
            sh("ip", "netns", "del", ns, check=False)


class Procs:
    """Processes started by the capture, each in its own process group so its children stop too."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, cmd: list[str], **kw: Any) -> subprocess.Popen[str]:
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        proc: subprocess.Popen[str] = subprocess.Popen(cmd, text=True, start_new_session=True, cwd=REPO, **kw)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.stdin:
            proc.stdin.close()
        if proc.stdout:
            proc.stdout.close()

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


def responder(procs: Procs, host: str, offset: float) -> subprocess.Popen[str]:
    proc = procs.start(
        in_ns(
            SRV,
            sys.executable,
            "-m",
            "tests.checks.ntp.responder",
            "--offset",
            str(offset),
            "--host",
            host,
            "--port",
            "123",
        ),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    if not proc.stdout.readline().startswith("ready"):
        raise SystemExit(f"responder on {host} did not start")
    return proc


def no_clock(*cmd: str) -> list[str]:
    # The namespaces share the host's clock: no daemon started here may change it.
    return ["capsh", "--drop=cap_sys_time", "--", "-c", 'exec "$@"', "capture", *cmd]


class Capture:
    def __init__(self, debs: Path, scratch: Path, out: Path) -> None:
        self.root = debs
        self.scratch = scratch
        self.out = out
        self.pythonpath = str(debs / "usr/lib/python3/dist-packages")

    def save(self, name: str, command: str, text: str) -> None:
        path = self.out / f"{name}.{command}.txt"
        path.write_text(text)
        print(f"wrote {path.relative_to(self.out.parent)} ({len(text.splitlines())} lines)")

    # chrony -------------------------------------------------------------------------------------

    def chronyd(self, procs: Procs, ns: str, name: str, lines: list[str]) -> subprocess.Popen[str]:
        work = self.scratch / name
        work.mkdir(mode=0o700)
        conf = work / "chrony.conf"
        conf.write_text(
            "\n".join(
                [
                    *lines,
                    f"bindcmdaddress {work}/chronyd.sock",
                    "cmdport 0",
                    f"pidfile {work}/chronyd.pid",
                    f"driftfile {work}/drift",
                    "",
                ]
            )
        )
        proc = procs.start(
            in_ns(ns, *no_clock(str(self.root / "usr/sbin/chronyd"), "-d", "-x", "-u", "root", "-f", str(conf)))
        )
        wait_for(f"{name} chronyd socket", (work / "chronyd.sock").exists, 10)
        return proc

    def chronyc(self, ns: str, name: str, *args: str) -> str:
        sock = self.scratch / name / "chronyd.sock"
        return sh(*in_ns(ns, str(self.root / "usr/bin/chronyc"), "-h", str(sock), *args)).stdout

    def save_chrony(self, ns: str, name: str) -> None:
        for command, args in (
            ("chronyc_c_tracking", ("-c", "tracking")),
            ("chronyc_c_sources", ("-c", "sources")),
            ("chronyc_tracking", ("tracking",)),
            ("chronyc_sources", ("sources",)),
        ):
            self.save(name, command, self.chronyc(ns, name, *args))

    def chrony_scenario(self, procs: Procs, name: str, servers: list[str], until: Callable[[str, str], bool]) -> None:
        proc = self.chronyd(procs, CLI, name, [f"server {s} iburst minpoll 0 maxpoll 1" for s in servers])

        def ready() -> bool:
            return until(self.chronyc(CLI, name, "-c", "tracking"), self.chronyc(CLI, name, "-c", "sources"))

        wait_for(name, ready)
        self.save_chrony(CLI, name)
        procs.stop(proc)

    def chrony(self, procs: Procs) -> None:
        self.chronyd(
            procs,
            SRV,
            "chrony_local_server",
            ["local stratum 8", "allow 10.201.1.0/24", f"bindaddress {CHRONY_SERVER}"],
        )

        def synced(tracking: str, sources: str) -> bool:
            return tracking.strip().endswith(",Normal") and ",*," in sources

        self.chrony_scenario(procs, "chrony_synced", [CHRONY_SERVER], synced)
        self.chrony_scenario(procs, "chrony_slow_5s", [SLOW_5S], synced)
        self.chrony_scenario(procs, "chrony_fast_5s", [FAST_5S], synced)
        self.chrony_scenario(
            procs,
            "chrony_no_majority",
            [CHRONY_SERVER, SLOW_5S],
            lambda tracking, sources: sources.count("^,x,") == 2,
        )
        started = time.monotonic()
        self.chrony_scenario(
            procs,
            "chrony_unreachable",
            [NOBODY],
            # Several requests have gone unanswered by then (poll interval 1 s).
            lambda tracking, sources: time.monotonic() - started > 4,
        )
        vanishing = responder(procs, VANISHING, 0.0)
        name = "chrony_lost_source"
        proc = self.chronyd(procs, CLI, name, [f"server {VANISHING} iburst minpoll 0 maxpoll 1"])
        wait_for(
            name, lambda: synced(self.chronyc(CLI, name, "-c", "tracking"), self.chronyc(CLI, name, "-c", "sources"))
        )
        procs.stop(vanishing)
        # chronyd keeps "Normal" after losing its only source; wait until it marks the source unreachable.
        wait_for(f"{name} unreachable", lambda: "^,?," in self.chronyc(CLI, name, "-c", "sources"))
        self.save_chrony(CLI, name)
        procs.stop(proc)
        self.save_chrony(SRV, "chrony_local_server")

    # ntpsec -------------------------------------------------------------------------------------

    def ntpq(self, *args: str) -> str:
        return sh(
            *in_ns(
                CLI, "env", f"PYTHONPATH={self.pythonpath}", "/usr/bin/python3", str(self.root / "usr/bin/ntpq"), *args
            )
        ).stdout

    def ntpsec_scenario(self, procs: Procs, name: str, server: str, until: Callable[[str, str], bool]) -> None:
        work = self.scratch / name
        work.mkdir(mode=0o700)
        conf = work / "ntp.conf"
        # Debian's restrict lines: without them ntpsec 1.2.2 does not answer ntpq at all.
        conf.write_text(
            f"driftfile {work}/drift\ntos minsane 1\nserver {server} iburst minpoll 3 maxpoll 4\n"
            "restrict default kod nomodify nopeer noquery limited\nrestrict 127.0.0.1\nrestrict ::1\n"
        )
        proc = procs.start(
            in_ns(CLI, *no_clock(str(self.root / "usr/sbin/ntpd"), "-n", "-c", str(conf), "-l", str(work / "log")))
        )
        wait_for(name, lambda: until(self.ntpq("-pn"), self.ntpq("-c", "rv")), 90)
        self.save(name, "ntpq_pn", self.ntpq("-pn"))
        self.save(name, "ntpq_c_rv", self.ntpq("-c", "rv"))
        procs.stop(proc)

    def ntpsec(self, procs: Procs) -> None:
        self.ntpsec_scenario(
            procs, "ntpsec_synced", CHRONY_SERVER, lambda peers, rv: "\n*" in peers and "leap=00" in rv
        )
        self.ntpsec_scenario(procs, "ntpsec_step_refused_fast_5s", FAST_5S, lambda peers, rv: "refid=STEP" in rv)
        started = time.monotonic()
        self.ntpsec_scenario(procs, "ntpsec_unreachable", NOBODY, lambda peers, rv: time.monotonic() - started > 10)

    # systemd-timesyncd --------------------------------------------------------------------------

    def timesyncd_scenario(self, procs: Procs, name: str, server: str, until: Callable[[str], bool]) -> None:
        work = self.scratch / name
        work.mkdir(mode=0o755)
        bus = work / "bus"
        (work / "timesyncd.conf").write_text(
            f"[Time]\nNTP={server}\nFallbackNTP=\nPollIntervalMinSec=16\nPollIntervalMaxSec=32\n"
        )
        dbus_conf = Path("/usr/share/dbus-1/system.conf").read_text()
        dbus_conf = dbus_conf.replace(
            "<listen>unix:path=/run/dbus/system_bus_socket</listen>", f"<listen>unix:path={bus}</listen>"
        )
        for drop in ("<user>messagebus</user>", "<pidfile>/run/dbus/pid</pidfile>", "<standard_system_servicedirs/>"):
            dbus_conf = dbus_conf.replace(drop, "")
        dbus_conf = dbus_conf.replace(
            "<includedir>system.d</includedir>", "<includedir>/usr/share/dbus-1/system.d</includedir>"
        )
        (work / "dbus.conf").write_text(dbus_conf)
        # Private mounts hide the host's timesyncd.conf, /run/systemd and /var/lib/systemd from the
        # daemon; /run/systemd/system makes timedatectl believe systemd is PID 1.
        inner = f"""
set -e
mount --make-rprivate /
mount -t tmpfs tmpfs /var/lib/systemd
mkdir /var/lib/systemd/timesync && chown systemd-timesync: /var/lib/systemd/timesync
mount --bind {work}/timesyncd.conf /etc/systemd/timesyncd.conf
mount -t tmpfs tmpfs /run/systemd
mkdir /run/systemd/system /run/systemd/timesync
export DBUS_SYSTEM_BUS_ADDRESS=unix:path={bus}
dbus-daemon --config-file={work}/dbus.conf --nofork --nopidfile 2>/dev/null &
while [ ! -S {bus} ]; do sleep 0.1; done
/lib/systemd/systemd-timesyncd > {work}/timesyncd.log 2>&1 &
echo ready $$
wait
"""
        proc = procs.start(
            in_ns(CLI, sys.executable, str(Path(__file__).resolve()), "userns-exec", "sh", "-c", inner),
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if line[:1] != ["ready"]:
            raise SystemExit(f"{name}: timesyncd did not start")
        enter = [
            "nsenter",
            "-t",
            line[1],
            "-U",
            "-m",
            "-n",
            "--preserve-credentials",
            "env",
            f"DBUS_SYSTEM_BUS_ADDRESS=unix:path={bus}",
            "timedatectl",
        ]

        def timedatectl(*args: str) -> str:
            return sh(*enter, *args, check=False).stdout

        wait_for(name, lambda: until(timedatectl("show-timesync", "--all")), 60)
        self.save(name, "timedatectl_show_timesync_all", timedatectl("show-timesync", "--all"))
        self.save(name, "timedatectl_timesync_status", timedatectl("timesync-status"))
        procs.stop(proc)

    def timesyncd(self, procs: Procs) -> None:
        def answered(show: str) -> bool:
            return "NTPMessage={ Leap" in show

        self.timesyncd_scenario(procs, "timesyncd_synced", CHRONY_SERVER, answered)
        self.timesyncd_scenario(procs, "timesyncd_slow_5s", SLOW_5S, answered)
        started = time.monotonic()
        self.timesyncd_scenario(
            procs,
            "timesyncd_unreachable",
            NOBODY,
            lambda show: "ServerAddress=" in show and time.monotonic() - started > 5,
        )
        # The host runs no systemd: this is what every timedatectl command says then.
        result = sh("timedatectl", "show", check=False)
        assert result.returncode == 1, result
        self.save("timedatectl_no_systemd", "timedatectl_show.stderr", result.stderr)


def userns_exec(argv: list[str]) -> None:
    """Exec ``argv`` in a new user + mount namespace mapping uids 0-65535 to themselves.

    Capabilities held inside a user namespace do not extend to the clock (CAP_SYS_TIME is checked
    against the initial namespace), so systemd-timesyncd can run as root-in-namespace and still
    cannot touch the host's time.
    """
    clone_newns, clone_newuser = 0x00020000, 0x10000000
    libc = ctypes.CDLL(None, use_errno=True)
    unshared_r, unshared_w = os.pipe()
    mapped_r, mapped_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(unshared_r)
        os.close(mapped_w)
        if libc.unshare(clone_newuser | clone_newns) != 0:
            os._exit(90)
        os.write(unshared_w, b"u")
        os.read(mapped_r, 1)
        os.execvp(argv[0], argv)
    os.close(unshared_w)
    os.close(mapped_r)
    if os.read(unshared_r, 1) != b"u":
        sys.exit("unshare(CLONE_NEWUSER | CLONE_NEWNS) failed")
    for name in ("uid_map", "gid_map"):
        Path(f"/proc/{pid}/{name}").write_text("0 0 65536\n")
    os.write(mapped_w, b"m")
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


def unpack_debs(scratch: Path) -> Path:
    debs = scratch / "debs"
    debs.mkdir()
    subprocess.run(
        ["apt-get", "download", "chrony", "ntpsec", "python3-ntp"], cwd=debs, check=True, capture_output=True
    )
    root = scratch / "root"
    for deb in debs.glob("*.deb"):
        sh("dpkg-deb", "-x", str(deb), str(root))
    return root


def prepare_root(root: Path) -> None:
    # ntpq looks for libntpc next to its Python package first; the unpacked copy is elsewhere.
    lib = next((root / "usr/lib").glob("*/ntp/libntpc.so.1.*"))
    link = root / "usr/lib/python3/dist-packages/ntp/libntpc.so"
    if not link.exists():
        link.symlink_to(lib)


def main() -> None:
    if sys.argv[1:2] == ["userns-exec"]:  # internal: how timesyncd_scenario starts its namespace
        userns_exec(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "fixtures")
    parser.add_argument("--debs", type=Path, help="already unpacked chrony/ntpsec/python3-ntp (dpkg-deb -x) root")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("must run as root: it creates network namespaces and starts time daemons")
    for tool in ("ip", "capsh", "nsenter", "dbus-daemon", "timedatectl", "dpkg-deb"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing")
    args.out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vigil-ntp-capture-")))
        scratch.chmod(0o755)
        root = args.debs if args.debs else unpack_debs(scratch)
        prepare_root(root)
        stack.enter_context(namespaces())
        procs = Procs()
        stack.callback(procs.stop_all)
        responder(procs, SLOW_5S, 5.0)
        responder(procs, FAST_5S, -5.0)
        capture = Capture(root, scratch, args.out)
        capture.chrony(procs)
        capture.ntpsec(procs)
        capture.timesyncd(procs)


if __name__ == "__main__":
    main()
