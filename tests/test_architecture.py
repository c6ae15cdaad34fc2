"""The boundaries the design depends on, checked on the source and on what really gets imported."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from checks.registry import REGISTRY as ENTRIES
from proto.vigil.v1 import report_pb2

ROOT = Path(__file__).resolve().parents[1]


def _imports(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def test_controller_never_imports_agent_or_checks() -> None:
    bad = {f: sorted(n for n in names if n.split(".")[0] in ("agent", "checks"))
           for f, names in _imports("controller").items()}
    assert {f: n for f, n in bad.items() if n} == {}


def test_checks_and_agent_never_import_controller() -> None:
    for package in ("checks", "agent"):
        bad = {f: sorted(n for n in names if n.split(".")[0] == "controller")
               for f, names in _imports(package).items()}
        assert {f: n for f, n in bad.items() if n} == {}, package


def test_host_agent_loads_neither_scapy_nor_paramiko_nor_controller_libraries() -> None:
    # A fresh interpreter, so what the test process imported does not count.
    code = (
        "import sys, json, agent.main, agent.cli, agent.client, checks.registry\n"
        "agent.cli.build_parser()\n"  # the sensor's subcommands are listed without loading it
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    loaded = set(json.loads(out.stdout))
    assert loaded.isdisjoint({"scapy", "paramiko", "fastapi", "sqlalchemy", "uvicorn", "alembic", "controller"})


REGISTRY = tuple(e.load() for e in ENTRIES)


def test_registry_entries_match_the_classes_they_name() -> None:
    from agent.watchers import has_continuous_work

    for entry, cls in zip(ENTRIES, REGISTRY, strict=True):
        assert (entry.id, entry.version) == (cls.id, cls.version), entry
        assert entry.continuous == has_continuous_work(cls()), entry


def test_the_agent_imports_a_check_only_when_a_task_needs_it() -> None:
    code = (
        "import sys, json, agent.main\n"
        "from checks.registry import Checks\n"
        "c = Checks(); before = sorted(m for m in sys.modules if m.startswith('checks.'))\n"
        "c['ports']; after = sorted(m for m in sys.modules if m.startswith('checks.'))\n"
        "print(json.dumps([before, after, c.capabilities]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    before, after, caps = json.loads(out.stdout)
    lazy = ("checks.fim", "checks.ntp", "checks.eol", "checks.av", "checks.ports")
    assert not any(m.startswith(lazy) for m in before)
    assert "checks.ports" in after and not any(m.startswith("checks.fim") for m in after)
    assert [tuple(c) for c in caps] == [(e.id, e.version) for e in ENTRIES]


def test_registry_ids_unique_and_each_has_its_proto_message() -> None:
    ids = [c.id for c in REGISTRY]
    assert len(ids) == len(set(ids))
    oneof = {f.name for f in report_pb2.Report.DESCRIPTOR.oneofs_by_name["result"].fields}
    for check in REGISTRY:
        assert check.report_field in oneof, check.id
        assert check.report_field == check.id, "one name for one thing: module, proto field, registry key"
        assert check.version >= 1 and check.platforms


def test_every_check_module_is_registered() -> None:
    registered = {c.__module__.split(".")[1] for c in REGISTRY}
    # checks/device holds the sensor's pure parsers of device output, used by no host check.
    infrastructure = ("__init__", "base", "registry", "device")
    modules = {p.stem if p.is_file() else p.name for p in (ROOT / "checks").iterdir()
               if (p.suffix == ".py" or (p / "__init__.py").exists()) and p.stem not in infrastructure}
    assert modules == registered


def test_controller_judges_every_registered_check() -> None:
    from controller.domain.ingest import KNOWN_RESULTS
    assert {c.id: c.report_field for c in REGISTRY} == KNOWN_RESULTS


def test_check_module_names_are_their_ids() -> None:
    assert {c.__module__.split(".")[1] for c in REGISTRY} == {c.id for c in REGISTRY}


def test_one_judge_per_registered_check_reading_its_version() -> None:
    from controller.judges import JUDGES

    assert set(JUDGES) == {c.id for c in REGISTRY}
    for check in REGISTRY:
        assert check.version in JUDGES[check.id].versions, check.id
        assert JUDGES[check.id].report_field == check.report_field, check.id


def test_one_judge_module_per_check_named_by_its_id() -> None:
    from controller.judges import JUDGES

    infrastructure = {"__init__", "base", "registry", "items"}
    modules = {p.stem for p in (ROOT / "controller" / "judges").glob("*.py")} - infrastructure
    assert modules == set(JUDGES)
    assert {cid: j.__class__.__module__.rsplit(".", 1)[1] for cid, j in JUDGES.items()} == {c: c for c in JUDGES}


def test_ingest_tickets_and_transports_hold_no_check_id() -> None:
    # What the controller knows about a check lives in its judge; these modules ask the judge.
    ids = {c.id for c in REGISTRY} - {"agent"}  # "agent" is also the word for an enrolled agent
    # Every module outside the judges, except the EOL dataset's own use case and doors ("eol" names the
    # dataset resource there: `vigil eol update`, /api/v1/eol/dataset), and the baseline language.
    owners = {"controller/domain/eol.py", "controller/rest/eol.py", "controller/cli/eol.py",
              "controller/cli/operator.py"}
    files = sorted(str(p.relative_to(ROOT)) for pkg in ("domain", "rpc", "rest", "web", "cli", "notify", "storage")
                   for p in (ROOT / "controller" / pkg).rglob("*.py")
                   if "migrations" not in p.parts and str(p.relative_to(ROOT)) not in owners)
    files += ["controller/core.py", "controller/server.py", "controller/baselines.py"]
    found = {}
    for rel in files:
        tree = ast.parse((ROOT / rel).read_text())
        consts = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        found[rel] = sorted(consts & ids)
    assert found == {f: [] for f in files}


# -- the controller's layers ------------------------------------------------------------------------------
# A module may import modules of its own layer or of lower layers, never higher ones; the transports
# (gRPC, REST, web, CLI) never import one another; and no import cycle exists. Imports under
# ``if TYPE_CHECKING:`` do not count (they never run). docs/architecture.md has the same table.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("vocabulary", ("controller.vocabulary", "controller.errors")),
    ("baseline language", ("controller.baselines",)),
    ("judges", ("controller.judges", "controller.eoldata")),
    ("storage", ("controller.storage",)),
    ("notify", ("controller.notify",)),
    ("domain", ("controller.domain",)),
    ("controller object", ("controller.core",)),
    ("transports", ("controller.rpc", "controller.rest", "controller.web")),
    ("composition root", ("controller.server",)),
    ("command lines", ("controller.cli",)),
)
TRANSPORTS = ("controller.rpc", "controller.rest", "controller.web", "controller.cli")
# Known breaches still to remove; the test fails when one is fixed and not struck off, or a new one appears.
KNOWN_BREACHES: set[tuple[str, str]] = set()


def _controller_modules() -> dict[str, Path]:
    mods = {}
    for path in (ROOT / "controller").rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _runtime_imports(source: str, me: str, mods: Mapping[str, Path]) -> set[str]:
    """The controller modules that module ``me`` (dotted, ``pkg.__init__`` for a package) imports when it
    runs: function-level imports included, ``if TYPE_CHECKING:`` blocks left out; ``from pkg import sub``
    counts as importing ``pkg.sub``."""
    tree = ast.parse(source, me)
    typing_only = {id(n) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
    package = me.split(".")[:-1]
    named: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            named.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods}
            named.update(subs)
            if len(subs) < len(node.names):
                named.add(base)
    found = set()
    for name in named:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        if name.startswith("controller") and name != me.removesuffix(".__init__"):
            found.add(name)
    return found


def _controller_graph() -> dict[str, set[str]]:
    mods = _controller_modules()
    return {m: _runtime_imports(p.read_text(), ".".join(p.relative_to(ROOT).with_suffix("").parts), mods)
            for m, p in mods.items()}


def _layer_of(module: str) -> int | None:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def test_every_controller_module_has_a_layer() -> None:
    unplaced = sorted(m for m in _controller_graph() if m != "controller" and _layer_of(m) is None)
    assert unplaced == [], "give each new package a row in LAYERS (and in docs/architecture.md)"


def test_controller_layers_import_only_downwards_and_transports_never_each_other() -> None:
    breaches = set()
    for module, imported in _controller_graph().items():
        mine = _layer_of(module)
        for other in imported:
            theirs = _layer_of(other)
            if mine is None or theirs is None:
                continue
            if theirs > mine:
                breaches.add((module, other))
            door = next((t for t in TRANSPORTS if module.startswith(t)), None)
            if door and any(other.startswith(t) for t in TRANSPORTS if t != door):
                breaches.add((module, other))
    assert breaches - KNOWN_BREACHES == set(), "a layer imports upwards or a transport imports another"
    assert KNOWN_BREACHES - breaches == set(), "fixed: strike it off KNOWN_BREACHES"


def test_controller_has_no_import_cycle() -> None:
    graph = _controller_graph()
    # Tarjan's strongly connected components: any component of two or more modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_import_reader_sees_lazy_imports_and_ignores_type_checking_ones() -> None:
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from controller.core import Controller\n"
              "def release() -> None:\n    from controller.domain import tickets\n")
    found = _runtime_imports(source, "controller.domain.exceptions", _controller_modules())
    assert found == {"controller.domain.tickets"}


def test_every_check_is_complete_from_the_wire_to_its_docs() -> None:
    # docs/adding-a-check.md lists these parts; a forgotten one is a red test, not a silent fallback.
    from controller.judges import JUDGES

    report_fields = {f.name: f.message_type.name for f in report_pb2.Report.DESCRIPTOR.oneofs_by_name["result"].fields}
    baselines_doc = (ROOT / "docs" / "baselines.md").read_text()
    missing = []
    for check in REGISTRY:
        cid = check.id
        parts = {
            "a Report.result field named by the id": cid in report_fields,
            "a judge module": (ROOT / "controller" / "judges" / f"{cid}.py").is_file(),
            "a strict params model": JUDGES[cid].params_model is not None,
            "judge cases": any((ROOT / "tests" / "judges" / "cases" / cid).glob("*.yaml")),
            "a params contract": (ROOT / "tests" / "contract" / "params" / f"{cid}.yaml").is_file(),
            "tests of the collector": (ROOT / "tests" / "checks" / cid).is_dir(),
            "a section in docs/baselines.md": f"`{cid}`" in baselines_doc,
        }
        missing += [f"{cid}: {what}" for what, ok in parts.items() if not ok]
    assert missing == []
