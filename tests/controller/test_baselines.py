"""Baseline loading: every good example loads, every bad one is refused with exact lines and fields."""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from common.errors import VigilError
from controller.baselines import MAX_BYTES, BaselineDoc, BaselineError, CheckSpec, Rule, StrictModel, load_baseline
from controller.judges.ports import AllowEntry, parse_allow_entry
from controller.judges.registry import CHECK_SPECS

HERE = Path(__file__).parent / "baselines"
DEFAULT = Path(__file__).parents[2] / "controller" / "default_baselines" / "tw-securities-linux.yaml"


def load_file(name: str) -> BaselineDoc:
    return load_baseline((HERE / name).read_text(), name, CHECK_SPECS)


def problems_of(name: str) -> list[tuple[int, str, str]]:
    with pytest.raises(BaselineError) as info:
        load_file(name)
    return list(info.value.problems)


def problems_in(text: str, checks: Mapping[str, CheckSpec] = CHECK_SPECS) -> list[tuple[int, str, str]]:
    with pytest.raises(BaselineError) as info:
        load_baseline(text, "t.yaml", checks)
    return list(info.value.problems)


# -- the example files --------------------------------------------------------------------------------


def test_good_example_loads_with_every_key() -> None:
    doc = load_file("good.yaml")
    assert doc.name == "tw-securities-web"
    assert doc.version == 3
    assert doc.scope_tags == ("linux", "web")
    assert doc.description == "Web front ends of the trading platform."
    assert [r.id for r in doc.rules] == [
        "AV-AGE",
        "PORTS-ALLOWED",
        "WEBROOT-INTEGRITY",
        "NO-EOL",
        "CLOCK",
        "AGENT-CONTACT",
    ]
    av, ports, fim, eol, ntp, agent = doc.rules
    assert av == Rule(
        id="AV-AGE",
        check="av",
        severity="high",
        interval_s=3600,
        params={},
        expect={"signature_age_hours": {"max": 24}, "engine_running": True},
        refs=("TPEx-CPA 3(8)4(2)",),
        description="",
    )
    # Intervals given, and the per-check defaults when absent.
    assert [r.interval_s for r in doc.rules] == [3600, 300, 3600, 2 * 86400, 30, 60]
    assert ports.expect["listening"]["allow"][3] == "tcp/[::1]:5432 postgres"
    assert fim.params == {"paths": ["/var/www/html"], "exclude": ["*.log", "cache/**"]}
    assert fim.severity == "critical"
    assert eol.refs == ("TPEx-CPA 3(8)1(1)", "TWSE-CC CC-17010 a(j)")
    assert ntp.description == "Clocks follow the national time service."
    assert ntp.expect["stratum"] == {"min": 1, "max": 4}
    assert agent.refs == ()


BAD = {
    "bad_severity.yaml": [(10, "rules[1].severity", "must be one of critical, high, medium, low")],
    "bad_yaml_syntax.yaml": [
        (
            7,
            "",
            "invalid YAML: expected <block end>, but found '<block mapping start>' "
            "(while parsing a block collection on line 4)",
        )
    ],
    "bad_allow_entry.yaml": [
        (
            11,
            "rules[0].expect.listening.allow[1]",
            "'tcp/::1:5432 postgres' is not a valid allow entry: put an IPv6 address in brackets: tcp/[::1]:5432",
        ),
        (
            13,
            "rules[0].expect.listening.allow[3]",
            "'sctp/9999' is not a valid allow entry: protocol must be tcp or udp, not 'sctp' (tcp also covers tcp6)",
        ),
        (
            14,
            "rules[0].expect.listening.allow[4]",
            "'tcp/65536' is not a valid allow entry: port must be a number from 1 to 65535, not '65536'",
        ),
    ],
    "duplicate_rule_id.yaml": [
        (9, "rules[1].id", "duplicate rule id 'CLOCK' (also rules[0]); ids are unique within a baseline")
    ],
    "unknown_key.yaml": [
        (3, "owner", "unknown key; allowed keys: baseline, version, scope, description, rules"),
        (
            9,
            "rules[0].expects",
            "unknown key; did you mean 'expect'? allowed keys: id, check, severity, interval, params, expect, refs, "
            "description, on_unknown",
        ),
    ],
    # The missing key is reported where the document starts (after the leading comment).
    "missing_rules.yaml": [(2, "rules", "is required")],
    "bad_expect.yaml": [
        (7, "rules[0].interval", "'5s' is below the 10 s minimum"),
        (9, "rules[0].expect.offset_ms.maximum", "unknown operator; use max, min, max_abs, equals"),
        (10, "rules[0].expect.stratum.max", "must be a number"),
        (11, "rules[0].expect.ref.server", "a fact name is lower_snake_case, without dots"),
        (
            16,
            "rules[1].expect.max_silence",
            "'soon' is not a duration: write a number and a unit s, m, h or d (30s, 5m, 1h, 2d)",
        ),
        (17, "rules[1].expect.dropped_records.max", "must be at least 0"),
        (21, "rules[2].expect", "give max_silence, dropped_records: {max: N}, or both"),
    ],
    "many_problems.yaml": [
        (1, "baseline", "must be lower case letters, digits, '.', '_' or '-', starting with a letter or digit"),
        (2, "version", "must be at least 1"),
        (3, "scope.tags", "must not be empty"),
        (5, "rules[0].id", "must look like NTP-CLOCK: capital letters, digits, '-' and '_'"),
        (6, "rules[0].check",
         "unknown check 'ntpd'; known checks: agent, av, eol, fim, netscan, ntp, ports, ssh_device"),
        (7, "rules[0].severity", "must be one of critical, high, medium, low"),
        (8, "rules[0].expect", "must be a mapping"),
        (9, "rules[0].refs", "must be a list"),
        (10, "rules[1]", "must be a mapping"),
    ],
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_example_is_refused_with_lines_and_fields(name: str) -> None:
    assert problems_of(name) == BAD[name]


def test_every_example_file_is_covered() -> None:
    assert {p.name for p in HERE.glob("*.yaml")} == {"good.yaml", *BAD}


def test_error_message_is_one_line_per_problem() -> None:
    with pytest.raises(BaselineError) as info:
        load_file("unknown_key.yaml")
    err = info.value
    assert isinstance(err, VigilError)
    assert isinstance(err, ValueError)
    lines = str(err).splitlines()
    assert (
        lines[0] == "unknown_key.yaml:3: owner: unknown key; allowed keys: baseline, version, scope, description, rules"
    )
    assert lines[1].startswith("unknown_key.yaml:9: rules[0].expects: unknown key;")
    assert len(lines) == 2
    assert err.problems[0].line == 3 and err.problems[0].field == "owner"


def test_syntax_error_has_no_field_in_its_line() -> None:
    with pytest.raises(BaselineError) as info:
        load_file("bad_yaml_syntax.yaml")
    assert str(info.value).startswith("bad_yaml_syntax.yaml:7: invalid YAML: ")


def test_messages_start_with_the_filename() -> None:
    with pytest.raises(BaselineError, match=r"^empty\.yaml:1: the file is empty"):
        load_baseline("", "empty.yaml", CHECK_SPECS)


# -- the default baseline ------------------------------------------------------------------------------


def test_default_baseline_loads() -> None:
    doc = load_baseline(DEFAULT.read_text(), DEFAULT.name, CHECK_SPECS)
    assert (doc.name, doc.version, doc.scope_tags) == ("tw-securities-linux", 3, None)
    assert doc.applies_to([]) and doc.applies_to(["windows"])
    agent, ports, fim, av, eol, ntp = doc.rules
    assert (fim.id, fim.check, fim.severity, fim.params["paths"]) == ("WEBROOT-INTEGRITY", "fim", "critical",
                                                                      ["/var/www/html"])
    assert fim.expect == {"unexpected_changes": 0} and "TPEx-CPA 3(8)4(3)" in fim.refs
    assert (agent.id, agent.check, agent.severity, agent.interval_s) == ("AGENT-CONTACT", "agent", "high", 60)
    assert agent.expect == {"max_silence": "3m", "dropped_records": {"max": 0}}
    assert agent.refs == ("TPEx-CPA 3(8)4(2)",)
    assert (ports.id, ports.check, ports.severity, ports.interval_s) == ("PORTS-ALLOWED", "ports", "high", 60)
    assert ports.expect == {
        "listening": {"allow": ["tcp/22 sshd", "tcp/127.0.0.1:7443", "tcp/127.0.0.1:7444", "tcp/127.0.0.1:8080"]}
    }
    assert ports.refs == ("TPEx-CPA 3(10)5", "SFA-ETG Art.8")
    assert (av.id, av.check, av.severity, av.interval_s) == ("AV-AGE", "av", "high", 3600)
    assert av.expect == {"signature_age_hours": {"max": 24}, "engine_running": True}
    assert "TPEx-CPA 3(8)4(2)" in av.refs
    assert (eol.id, eol.check, eol.interval_s) == ("EOL-SUPPORTED", "eol", 86400)
    assert eol.expect == {"supported": True, "days_to_end_of_support": {"min": 90}}
    assert {"TPEx-CPA 3(8)1(1)", "TWSE-CC CC-17010 a(j)"} <= set(eol.refs)
    assert (ntp.id, ntp.check, ntp.interval_s, ntp.params) == ("NTP-CLOCK", "ntp", 300, {"servers": []})
    assert ntp.expect == {"synchronized": True, "offset_ms": {"max_abs": 250}}
    assert ntp.refs == ("TWSE-CC CC-17020 b(f)",)


def test_default_baseline_explains_each_rule_to_an_auditor() -> None:
    lines = DEFAULT.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("- id:"):
            assert lines[i - 1].strip().startswith("#"), f"no comment above {line.strip()}"


# -- documents for storage -----------------------------------------------------------------------------


def test_document_round_trip_through_json() -> None:
    for doc in (load_file("good.yaml"), load_baseline(DEFAULT.read_text(), DEFAULT.name, CHECK_SPECS)):
        stored = json.loads(json.dumps(doc.to_document()))
        assert BaselineDoc.from_document(stored) == doc


def test_document_shape() -> None:
    d = load_file("good.yaml").to_document()
    assert d["baseline"] == "tw-securities-web"
    assert d["scope"] == {"tags": ["linux", "web"]}
    assert d["rules"][0]["interval_s"] == 3600
    assert load_baseline(DEFAULT.read_text(), DEFAULT.name, CHECK_SPECS).to_document()["scope"] is None


def test_from_document_does_not_share_mutable_state() -> None:
    d = load_file("good.yaml").to_document()
    doc = BaselineDoc.from_document(d)
    d["rules"][1]["expect"]["listening"]["allow"].append("tcp/1")
    assert "tcp/1" not in doc.rules[1].expect["listening"]["allow"]


# -- scope ---------------------------------------------------------------------------------------------


def test_applies_to() -> None:
    doc = load_file("good.yaml")
    assert doc.applies_to(["web"])
    assert doc.applies_to(iter(["db", "linux"]))
    assert not doc.applies_to(["windows"])
    assert not doc.applies_to([])


def test_scope_needs_tags() -> None:
    text = "baseline: a\nversion: 1\nscope: {}\nrules: [{id: A, check: ntp, severity: low, expect: {x: 1}}]\n"
    assert problems_in(text) == [(3, "scope.tags", "is required")]


# -- individual keys -----------------------------------------------------------------------------------

RULE = (
    "baseline: a\nversion: 1\nrules:\n  - id: A\n    check: ntp\n    severity: low\n    expect: {synchronized: true}\n"
)


def test_minimal_baseline() -> None:
    doc = load_baseline(RULE, "t.yaml", CHECK_SPECS)
    assert doc.rules[0].interval_s == 300
    assert doc.rules[0].params == {} and doc.rules[0].refs == () and doc.description == ""


@pytest.mark.parametrize(("interval", "seconds"), [("10s", 10), ("30s", 30), ("5m", 300), ("1h", 3600), ("2d", 172800)])
def test_interval(interval: str, seconds: int) -> None:
    assert load_baseline(RULE + f"    interval: {interval}\n", "t.yaml", CHECK_SPECS).rules[0].interval_s == seconds


@pytest.mark.parametrize(
    ("interval", "reason"),
    [
        ("9s", "'9s' is below the 10 s minimum"),
        ("0s", "'0s' is below the 10 s minimum"),
        ("400d", "'400d' is above the maximum of 366d"),
        ("9999999999999999999999d", "'9999999999999999999999d' is not a duration: write a number and a unit s, "
                                    "m, h or d (30s, 5m, 1h, 2d)"),
        ("5 minutes", "'5 minutes' is not a duration: write a number and a unit s, m, h or d (30s, 5m, 1h, 2d)"),
        ("300", "must be a string"),
    ],
)
def test_bad_interval(interval: str, reason: str) -> None:
    assert problems_in(RULE + f"    interval: {interval}\n") == [(8, "rules[0].interval", reason)]


def test_version_must_be_an_integer() -> None:
    assert problems_in(RULE.replace("version: 1", 'version: "2"')) == [(2, "version", "must be a whole number")]
    assert problems_in(RULE.replace("version: 1", "version: 1.5")) == [(2, "version", "must be a whole number")]
    assert problems_in(RULE.replace("version: 1", "version: true")) == [(2, "version", "must be a whole number")]


def test_rules_must_not_be_empty() -> None:
    assert problems_in("baseline: a\nversion: 1\nrules: []\n") == [(3, "rules", "must not be empty")]


def test_expect_is_required() -> None:
    text = "baseline: a\nversion: 1\nrules:\n  - id: A\n    check: ntp\n    severity: low\n"
    assert problems_in(text) == [(4, "rules[0].expect", "is required")]


def test_generic_expect_problems() -> None:
    text = RULE.replace(
        "{synchronized: true}", "{a: null, b: [1], c: {}, d: {max_abs: -1}, e: {min: 5, max: 1}, f: {max: true}}"
    )
    reasons = "write a value to compare with, or a mapping of max, min, max_abs, equals"
    assert problems_in(text) == [
        (7, "rules[0].expect.a", reasons),
        (7, "rules[0].expect.b", reasons),
        (7, "rules[0].expect.c", "give at least one of max, min, max_abs, equals"),
        (7, "rules[0].expect.d.max_abs", "must be at least 0"),
        (7, "rules[0].expect.e.min", "min 5 is greater than max 1"),
        (7, "rules[0].expect.f.max", "must be a number"),
    ]
    assert problems_in(RULE.replace("{synchronized: true}", "{}")) == [
        (7, "rules[0].expect", "must state at least one expectation")
    ]


def test_ports_expect_needs_listening() -> None:
    text = RULE.replace("check: ntp", "check: ports")
    assert problems_in(text) == [
        (7, "rules[0].expect.listening", "is required"),
        (7, "rules[0].expect.synchronized", "unknown key; allowed keys: listening"),
    ]


def test_refs_must_be_non_empty_strings() -> None:
    assert problems_in(RULE + '    refs: ["", 5]\n') == [
        (8, "rules[0].refs[0]", "must not be empty; write a control ID such as 'TPEx-CPA 3(8)4(2)'"),
        (8, "rules[0].refs[1]", "must be a string"),
    ]


class _NoParams(StrictModel):
    pass


def test_checks_are_passed_in_with_what_the_language_needs() -> None:
    text = RULE.replace("check: ntp", "check: sshd_config")
    checks = {"sshd_config": CheckSpec(_NoParams, None, 120), "ports": CHECK_SPECS["ports"]}
    doc = load_baseline(text, "t.yaml", checks)
    # The interval of a rule that sets none is the check's own default.
    assert doc.rules[0].check == "sshd_config" and doc.rules[0].interval_s == 120
    assert problems_in(RULE, {"ports": CHECK_SPECS["ports"]}) == [
        (5, "rules[0].check", "unknown check 'ntp'; known checks: ports")
    ]
    assert problems_in(text + "    params: {port: 22}\n", checks) == [
        (8, "rules[0].params.port", "unknown key; none are allowed here")
    ]
    assert "sshd_config" not in CHECK_SPECS


def test_the_language_holds_no_check_id() -> None:
    # Per-check knowledge (models, intervals) lives in the judges and is passed in as CheckSpecs.
    tree = ast.parse((Path(__file__).parents[2] / "controller" / "baselines.py").read_text())
    consts = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert consts & set(CHECK_SPECS) == set()


def test_problems_across_rules_are_all_reported_sorted_by_line() -> None:
    text = (
        "baseline: a\nversion: 0\nrules:\n"
        "  - {id: A, check: ntp, severity: low, expect: {x: {maxx: 1}}}\n"
        "  - {id: A, check: nope, severity: huge, expect: {}}\n"
    )
    assert problems_in(text) == [
        (2, "version", "must be at least 1"),
        (4, "rules[0].expect.x.maxx", "unknown operator; use max, min, max_abs, equals"),
        (5, "rules[1].check",
         "unknown check 'nope'; known checks: agent, av, eol, fim, netscan, ntp, ports, ssh_device"),
        (5, "rules[1].severity", "must be one of critical, high, medium, low"),
        (5, "rules[1].id", "duplicate rule id 'A' (also rules[0]); ids are unique within a baseline"),
    ]


# -- YAML corner cases ---------------------------------------------------------------------------------


def test_empty_file() -> None:
    assert problems_in("# only a comment\n") == [
        (1, "", "the file is empty; a baseline needs baseline, version, rules")
    ]


def test_not_a_mapping() -> None:
    assert problems_in("- a\n- b\n") == [
        (1, "", "a baseline is a mapping with keys baseline, version, rules (and optionally scope, description)")
    ]


def test_two_documents() -> None:
    assert problems_in(RULE + "---\nbaseline: b\n") == [
        (8, "", "invalid YAML: a baseline file holds one document; remove this '---' and what follows")
    ]


def test_duplicate_key() -> None:
    assert problems_in(RULE + "version: 2\n") == [(8, "version", "duplicate key (first given on line 2)")]


def test_unsupported_tag_and_non_finite_number() -> None:
    text = RULE.replace("baseline: a", "baseline: !!binary aGVsbG8=").replace("true}", ".inf}")
    assert problems_in(text) == [
        (1, "baseline", "unsupported YAML tag !!binary; write a plain value"),
        (7, "rules[0].expect.synchronized", "must be a finite number"),
    ]


def test_recursive_alias() -> None:
    assert problems_in(RULE + "    params: &p {x: *p}\n") == [
        (8, "rules[0].params.x", "an alias refers to itself; write the value out"),
    ]


def test_aliases_and_merge_keys() -> None:
    text = (
        "baseline: a\nversion: 1\nrules:\n"
        "  - &base {id: A, check: ntp, severity: low, expect: {synchronized: true}}\n"
        "  - {<<: *base, id: B}\n"
    )
    doc = load_baseline(text, "t.yaml", CHECK_SPECS)
    assert [(r.id, r.expect) for r in doc.rules] == [("A", {"synchronized": True}), ("B", {"synchronized": True})]


def test_keys_are_taken_as_written_and_dates_stay_text() -> None:
    # YAML 1.1 reads `on:` as true and `2024-01-31` as a date; neither survives JSON storage.
    doc = load_baseline(RULE.replace("{synchronized: true}", "{on: 0, since: 2024-01-31}"), "t.yaml", CHECK_SPECS)
    assert doc.rules[0].expect == {"on": 0, "since": "2024-01-31"}


def test_bad_character() -> None:
    assert problems_in("baseline: a\nversion: 1\x07\n") == [(2, "", "invalid YAML: unacceptable character #x0007")]


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]
    problems = problems_in("\n".join(lines) + "\n")
    assert len(problems) == 1 and problems[0][2] == "too many values (aliases expanding?)"


# -- allow entries ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "entry"),
    [
        ("tcp/22", AllowEntry("tcp", None, 22, None)),
        ("tcp/22 sshd", AllowEntry("tcp", None, 22, "sshd")),
        ("udp/127.0.0.1:53", AllowEntry("udp", "127.0.0.1", 53, None)),
        ("tcp/[::1]:5432 postgres", AllowEntry("tcp", "::1", 5432, "postgres")),
        ("tcp/*:443 nginx", AllowEntry("tcp", "*", 443, "nginx")),
        ("tcp/0.0.0.0:80", AllowEntry("tcp", "0.0.0.0", 80, None)),
        ("tcp/[::]:80", AllowEntry("tcp", "::", 80, None)),
        ("  tcp/22   sshd  ", AllowEntry("tcp", None, 22, "sshd")),
        ("tcp/3389 Remote Desktop", AllowEntry("tcp", None, 3389, "Remote Desktop")),
    ],
)
def test_parse_allow_entry(text: str, entry: AllowEntry) -> None:
    assert parse_allow_entry(text) == entry
    assert parse_allow_entry(str(entry)) == entry


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("tcp", "write PROTO/PORT"),
        ("tcp/", "write PROTO/PORT"),
        ("TCP/22", "protocol must be tcp or udp"),
        ("tcp6/22", "protocol must be tcp or udp"),
        ("tcp/0", "port must be a number from 1 to 65535"),
        ("tcp/http", "port must be a number from 1 to 65535"),
        ("tcp/22sshd", "port must be a number from 1 to 65535"),
        ("tcp/::1:22", "put an IPv6 address in brackets"),
        ("tcp/[127.0.0.1]:22", "in brackets must be an IPv6 address"),
        ("tcp/localhost:22", "address must be an IP address or *"),
        ("tcp/:22", "address must be an IP address or *"),
        ("tcp/10.0.0.256:22", "address must be an IP address or *"),
    ],
)
def test_parse_allow_entry_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("*", r"\*").replace("[", r"\[")):
        parse_allow_entry(text)


def test_allow_entry_matching() -> None:
    any_22 = parse_allow_entry("tcp/22")
    assert any_22.matches("tcp", "10.0.0.5", 22, "sshd")
    assert any_22.matches("tcp6", "::", 22, "")
    assert not any_22.matches("udp", "0.0.0.0", 22, "sshd")
    assert not any_22.matches("tcp", "0.0.0.0", 2222, "sshd")

    loopback = parse_allow_entry("tcp/127.0.0.1:8080")
    assert loopback.matches("tcp", "127.0.0.1", 8080, "python3")
    assert not loopback.matches("tcp", "0.0.0.0", 8080, "python3")

    wildcard = parse_allow_entry("tcp/0.0.0.0:80")
    assert wildcard.matches("tcp", "0.0.0.0", 80, "nginx")
    assert not wildcard.matches("tcp", "10.0.0.5", 80, "nginx")
    assert not wildcard.matches("tcp6", "::", 80, "nginx")
    assert parse_allow_entry("tcp/[::]:80").matches("tcp6", "::", 80, "nginx")
    assert parse_allow_entry("tcp/*:80").matches("tcp6", "fe80::1", 80, "nginx")

    v6 = parse_allow_entry("tcp/[::1]:5432")
    assert v6.matches("tcp6", "0:0:0:0:0:0:0:1", 5432, "postgres")
    assert not v6.matches("tcp6", "::", 5432, "postgres")

    named = parse_allow_entry("udp/123 chronyd")
    assert named.matches("udp6", "::1", 123, "chronyd")
    assert not named.matches("udp", "127.0.0.1", 123, "ntpd")
    assert not named.matches("udp", "127.0.0.1", 123, "")


# -- input limits: the same cases go through `vigil-controller baseline apply` and PUT /baselines --------

# Would replace the running default baseline, were it accepted.
LIMITS_BASE = (
    "baseline: tw-securities-linux\nversion: 999\nrules:\n  - id: A\n    check: ntp\n    severity: low\n"
    "    expect: {synchronized: true}\n"
)


def _alias_chain(levels: int) -> str:
    # Every anchor nests the one before it: shallow as written, deep once the aliases are expanded.
    lines = ["x0: &x0 [1]"] + [f"x{i}: &x{i} [*x{i - 1}]" for i in range(1, levels)]
    return LIMITS_BASE + "\n".join(lines) + "\n"


_NOT_UTF8 = LIMITS_BASE.encode().replace(b"rules:", b"rules:\xff", 1)
_BAD_BYTE = _NOT_UTF8.index(b"\xff")
# (case id, file bytes, the one refusal line with {f} for the file name)
LIMIT_CASES: list[tuple[str, bytes, str]] = [
    ("too-large", b"#" * (MAX_BYTES + 1),
     f"{{f}}: the file is {MAX_BYTES + 1} bytes, more than the 1024 KiB a baseline may hold"),
    ("not-utf8", _NOT_UTF8, f"{{f}}:3: not UTF-8 at byte {_BAD_BYTE}"),
    ("deep", LIMITS_BASE.replace("{synchronized: true}", "[" * 5000).encode(),
     "{f}:7: nested more than 32 levels deep"),
    ("deep-aliases", _alias_chain(5000).encode(), "{f}:8: nested more than 32 levels deep (through aliases)"),
    ("huge-version", LIMITS_BASE.replace("999", "9" * 40).encode(),
     "{f}:2: version: out of range: whole numbers in a baseline lie between -9007199254740992 and 9007199254740992"),
    ("5000-digits", LIMITS_BASE.replace("999", "9" * 5000).encode(),
     "{f}:2: version: out of range: whole numbers in a baseline lie between -9007199254740992 and 9007199254740992"),
    ("version-beyond-int32", LIMITS_BASE.replace("999", str(2**31)).encode(),
     "{f}:2: version: must be at most 2147483647"),
    ("huge-param",
     LIMITS_BASE.replace("    expect:", "    params: {samples: -100000000000000000000}\n    expect:").encode(),
     "{f}:7: rules[0].params.samples: out of range: whole numbers in a baseline lie between -9007199254740992 and "
     "9007199254740992"),
    ("zero-interval", LIMITS_BASE.replace("    expect:", "    interval: 0s\n    expect:").encode(),
     "{f}:7: rules[0].interval: '0s' is below the 10 s minimum"),
]


@pytest.mark.parametrize(("data", "expected"), [pytest.param(d, e, id=i) for i, d, e in LIMIT_CASES])
def test_input_limits(data: bytes, expected: str) -> None:
    with pytest.raises(BaselineError) as info:
        load_baseline(data, "lim.yaml", CHECK_SPECS)
    assert str(info.value) == expected.format(f="lim.yaml")


def test_a_byte_order_mark_is_not_a_problem() -> None:
    assert load_baseline(b"\xef\xbb\xbf" + RULE.encode(), "t.yaml", CHECK_SPECS).name == "a"


def test_nesting_up_to_the_limit_is_read() -> None:
    # 32 values deep, counting the document and the innermost value: the document, rules, a rule, its
    # expect, 27 lists, 1.
    def nested(lists: int) -> str:
        return RULE.replace("{synchronized: true}", "{x: " + "[" * lists + "1" + "]" * lists + "}")

    # No rule takes nested lists, but at 27 the refusal is about the value, not its depth.
    assert problems_in(nested(27)) == [
        (7, "rules[0].expect.x", "write a value to compare with, or a mapping of max, min, max_abs, equals")
    ]
    assert problems_in(nested(28)) == [(7, "", "nested more than 32 levels deep")]


@pytest.fixture
def controller_dir(tmp_path: Path) -> Path:
    from controller.core import Controller, ControllerConfig

    ctl = Controller.open(ControllerConfig(data_dir=tmp_path / "ctl"))
    ctl.writer.shutdown()
    ctl.sessions.kw["bind"].dispose()
    return tmp_path / "ctl"


def _running_version(data_dir: Path) -> int:
    from controller.core import Controller, ControllerConfig

    ctl = Controller.open(ControllerConfig(data_dir=data_dir))
    try:
        return next(d.version for d in ctl.baselines() if d.name == "tw-securities-linux")
    finally:
        ctl.writer.shutdown()
        ctl.sessions.kw["bind"].dispose()


@pytest.mark.parametrize(("data", "expected"), [pytest.param(d, e, id=i) for i, d, e in LIMIT_CASES])
def test_cli_refuses_with_one_line_and_applies_nothing(
    controller_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes, expected: str
) -> None:
    from controller.cli.controller import main

    before = _running_version(controller_dir)
    path = tmp_path / "lim.yaml"
    path.write_bytes(data)
    code = main(["baseline", "apply", "--data-dir", str(controller_dir), str(path)])
    err = capsys.readouterr().err
    assert code != 0
    assert err == f"vigil-controller: error: {expected.format(f='lim.yaml')}\n"
    assert _running_version(controller_dir) == before


def test_cli_applies_a_good_file(controller_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from controller.cli.controller import main

    path = tmp_path / "good.yaml"
    path.write_text(LIMITS_BASE)
    assert main(["baseline", "apply", "--data-dir", str(controller_dir), str(path)]) == 0
    assert capsys.readouterr().out == "applied baseline tw-securities-linux version 999 (1 rules)\n"
    assert _running_version(controller_dir) == 999


def test_cli_refuses_a_50_mb_file_by_its_size_unread(tmp_path: Path) -> None:
    from controller.cli.operator import read_baseline_file

    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(50 * 1024 * 1024)  # sparse: reading it would be the only way to use memory
    with pytest.raises(VigilError, match=r"^big\.yaml: the file is 52428800 bytes, more than the 1024 KiB"):
        read_baseline_file(big)


def test_cli_stops_reading_a_file_without_a_size(tmp_path: Path) -> None:
    from controller.cli.operator import read_baseline_file

    zero = Path("/dev/zero")
    if not zero.exists():
        pytest.skip("needs /dev/zero, an endless file that reports size 0")
    with pytest.raises(VigilError, match=r"^zero: the file is larger than the 1024 KiB a baseline may hold$"):
        read_baseline_file(zero)


def test_operator_cli_checks_size_and_encoding_before_calling_the_controller(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from controller.cli.operator import main

    for case, data, expected in LIMIT_CASES[:2]:
        path = tmp_path / "lim.yaml"
        path.write_bytes(data)
        # No controller listens on port 9: refusing before any request is the only way to get this line.
        code = main(["--url", "http://127.0.0.1:9", "--api-key", "k", "baseline", "apply", str(path)])
        assert code != 0, case
        assert capsys.readouterr().err == f"vigil: error: {expected.format(f='lim.yaml')}\n", case


def test_operator_cli_finds_the_name_without_parsing() -> None:
    from controller.cli.operator import _baseline_name

    assert _baseline_name("# x\nbaseline: web-1  # the web tier\n") == "web-1"
    assert _baseline_name("baseline: 'quoted'\n") == "quoted"
    assert _baseline_name("rules:\n  baseline: nested\n") is None
    assert _baseline_name("\ufeffbaseline: bom\n") == "bom"
