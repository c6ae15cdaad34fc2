"""Judgement of check results against rules: pure functions, fed the JSON form ingest produces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from controller.baselines import Rule, load_baseline
from controller.judges import Observation, evaluate
from controller.judges.agent import allowed_silence_s
from controller.judges.registry import CHECK_SPECS
from proto.vigil.v1 import agent_pb2, ports_pb2

DEFAULT = Path(__file__).parents[2] / "controller" / "default_baselines" / "tw-securities-linux.yaml"


def ports_rule(*allow: str, rule_id: str = "PORTS-ALLOWED") -> Rule:
    return Rule(rule_id, "ports", "high", 60, {}, {"listening": {"allow": list(allow)}}, (), "")


def listener(proto: str, address: str, port: int, process: str = "", pid: int = 0, **kw: Any) -> dict[str, Any]:
    """A listener exactly as ingest sees it: through the proto and MessageToDict (defaults left out)."""
    owner_known = kw.pop("owner_known", bool(pid))
    msg = ports_pb2.PortsListener(
        proto=proto, address=address, port=port, pid=pid, process=process, owner_known=owner_known, **kw
    )
    return MessageToDict(msg, preserving_proto_field_name=True)


def judge_ports(rule: Rule, *listeners: dict[str, Any], status: str = "OK") -> list[Observation]:
    return evaluate(rule, "ports", {"listeners": list(listeners)}, status)


def verdicts(observations: list[Observation]) -> dict[str, bool]:
    return {o.subject: o.passed for o in observations}


# -- ports -------------------------------------------------------------------------------------------


def test_facts_in_proto3_json_form_leave_defaults_out() -> None:
    unknown = listener("tcp", "0.0.0.0", 22)
    assert "pid" not in unknown and "owner_known" not in unknown and "process" not in unknown


def test_one_observation_per_listener_with_subjects() -> None:
    obs = judge_ports(
        ports_rule("tcp/127.0.0.1:8080", "tcp/[::1]:5432", "udp/53"),
        listener("tcp", "127.0.0.1", 8080, "python3", 10),
        listener("tcp6", "::1", 5432, "postgres", 11),
        listener("udp", "0.0.0.0", 53, "dnsmasq", 12),
        listener("tcp", "0.0.0.0", 8000, "python3", 123),
    )
    assert verdicts(obs) == {
        "tcp/127.0.0.1:8080": True,
        "tcp6/[::1]:5432": True,
        "udp/0.0.0.0:53": True,
        "tcp/0.0.0.0:8000": False,
    }
    bad = next(o for o in obs if not o.passed)
    assert bad.message == "tcp/0.0.0.0:8000 (python3, pid 123) is not in the allow list of PORTS-ALLOWED"
    assert bad.evidence["pid"] == 123 and bad.evidence["process"] == "python3" and bad.evidence["allowed_by"] is None
    good = next(o for o in obs if o.subject == "tcp/127.0.0.1:8080")
    assert good.message == "tcp/127.0.0.1:8080 (python3, pid 10) is allowed by 'tcp/127.0.0.1:8080'"
    assert good.evidence["allowed_by"] == "tcp/127.0.0.1:8080"


def test_address_specific_entry_versus_any_address() -> None:
    rule = ports_rule("tcp/127.0.0.1:8080", "tcp/443")
    obs = judge_ports(
        rule,
        listener("tcp", "127.0.0.1", 8080, "python3", 1),
        listener("tcp", "0.0.0.0", 8080, "python3", 1),
        listener("tcp", "10.1.2.3", 8080, "python3", 1),
        listener("tcp", "0.0.0.0", 443, "nginx", 2),
        listener("tcp", "10.1.2.3", 443, "nginx", 2),
    )
    assert verdicts(obs) == {
        "tcp/127.0.0.1:8080": True,
        "tcp/0.0.0.0:8080": False,
        "tcp/10.1.2.3:8080": False,
        "tcp/0.0.0.0:443": True,
        "tcp/10.1.2.3:443": True,
    }


def test_wildcard_address_in_entry_means_the_wildcard_bind_only() -> None:
    obs = judge_ports(
        ports_rule("tcp/0.0.0.0:80", "tcp/[::]:80"),
        listener("tcp", "0.0.0.0", 80, "nginx", 1),
        listener("tcp6", "::", 80, "nginx", 1),
        listener("tcp", "192.168.1.10", 80, "nginx", 1),
    )
    assert verdicts(obs) == {"tcp/0.0.0.0:80": True, "tcp6/[::]:80": True, "tcp/192.168.1.10:80": False}


def test_tcp_entry_covers_tcp6_but_not_udp() -> None:
    obs = judge_ports(
        ports_rule("tcp/22"),
        listener("tcp", "0.0.0.0", 22, "sshd", 1),
        listener("tcp6", "::", 22, "sshd", 1),
        listener("udp", "0.0.0.0", 22, "x", 2),
        listener("udp6", "::", 22, "x", 2),
    )
    assert verdicts(obs) == {
        "tcp/0.0.0.0:22": True,
        "tcp6/[::]:22": True,
        "udp/0.0.0.0:22": False,
        "udp6/[::]:22": False,
    }


def test_process_names_are_compared_exactly() -> None:
    obs = judge_ports(
        ports_rule("tcp/22 sshd", "tcp/5432 postgres"),
        listener("tcp", "0.0.0.0", 22, "sshd", 1),
        listener("tcp", "0.0.0.0", 5432, "postgres: main", 2),
        listener("tcp6", "::", 22, "dropbear", 3),
    )
    assert verdicts(obs) == {"tcp/0.0.0.0:22": True, "tcp/0.0.0.0:5432": False, "tcp6/[::]:22": False}


def test_unknown_owner_does_not_match_an_entry_naming_a_process() -> None:
    rule = ports_rule("tcp/22 sshd", "tcp/127.0.0.1:8080")
    obs = judge_ports(
        rule,
        listener("tcp", "0.0.0.0", 22),
        listener("tcp", "127.0.0.1", 8080),
        # A process name without owner_known is not evidence either.
        listener("tcp6", "::", 22, process="sshd", owner_known=False),
    )
    assert verdicts(obs) == {"tcp/0.0.0.0:22": False, "tcp/127.0.0.1:8080": True, "tcp6/[::]:22": False}
    sshd = next(o for o in obs if o.subject == "tcp/0.0.0.0:22")
    assert sshd.message.startswith("tcp/0.0.0.0:22 (owner unknown) is not in the allow list of PORTS-ALLOWED; ")
    assert "'tcp/22 sshd' would allow it" in sshd.message
    assert sshd.evidence["owner_known"] is False and sshd.evidence["pid"] == 0
    plain = next(o for o in obs if o.subject == "tcp/127.0.0.1:8080")
    assert plain.message == "tcp/127.0.0.1:8080 (owner unknown) is allowed by 'tcp/127.0.0.1:8080'"


def test_unknown_owner_without_a_near_match_gets_no_hint() -> None:
    (obs,) = judge_ports(ports_rule("tcp/22 sshd"), listener("tcp", "0.0.0.0", 8000))
    assert obs.message == "tcp/0.0.0.0:8000 (owner unknown) is not in the allow list of PORTS-ALLOWED"


def test_port_as_string_and_missing_fields() -> None:
    (obs,) = judge_ports(ports_rule("tcp/8080"), {"proto": "tcp", "address": "127.0.0.1", "port": "8080"})
    assert obs.subject == "tcp/127.0.0.1:8080" and obs.passed
    assert obs.evidence["port"] == 8080 and obs.evidence["pid"] == 0 and obs.evidence["owner_known"] is False


def test_one_socket_of_many_workers_is_one_subject() -> None:
    obs = judge_ports(
        ports_rule("tcp/80 nginx"),
        listener("tcp", "0.0.0.0", 80, "nginx", 10),
        listener("tcp", "0.0.0.0", 80, "nginx", 11),
        listener("tcp", "0.0.0.0", 80, "evil", 12),
    )
    assert len(obs) == 1
    (o,) = obs
    assert not o.passed and o.message == "tcp/0.0.0.0:80 (evil, pid 12) is not in the allow list of PORTS-ALLOWED"
    assert [x["pid"] for x in o.evidence["owners"]] == [10, 11, 12]


def test_no_listeners_no_observations() -> None:
    assert evaluate(ports_rule("tcp/22"), "ports", {}, "OK") == []
    assert judge_ports(ports_rule()) == []


def test_empty_allow_list_refuses_everything() -> None:
    assert verdicts(judge_ports(ports_rule(), listener("tcp", "127.0.0.1", 1, "x", 1))) == {"tcp/127.0.0.1:1": False}


def test_default_baseline_ports_rule() -> None:
    rule = load_baseline(DEFAULT.read_text(), DEFAULT.name, CHECK_SPECS).rules[1]
    obs = judge_ports(
        rule,
        listener("tcp", "0.0.0.0", 22, "sshd", 800),
        listener("tcp6", "::", 22),  # seen without the rights to know the owner
        listener("tcp", "127.0.0.1", 7443, "vigil-controller", 900),
        listener("tcp", "127.0.0.1", 8080, "vigil-controller", 900),
        listener("tcp", "0.0.0.0", 8080, "vigil-controller", 900),
    )
    assert verdicts(obs) == {
        "tcp/0.0.0.0:22": True,
        "tcp6/[::]:22": False,
        "tcp/127.0.0.1:7443": True,
        "tcp/127.0.0.1:8080": True,
        "tcp/0.0.0.0:8080": False,
    }


# -- status ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["ERROR", "TIMEOUT", "UNSUPPORTED", "KIND_UNSPECIFIED"])
def test_a_check_that_did_not_run_is_an_unknown_observation(status: str) -> None:
    obs = evaluate(ports_rule("tcp/22"), "ports", {}, status, status_message="ss: permission denied")
    why = f"the ports check reported {status}: ss: permission denied, so PORTS-ALLOWED could not be evaluated"
    assert obs == [
        Observation(
            "check-status",
            "unknown",
            f"cannot judge: {why}",
            {"status": status, "check": "ports", "status_message": "ss: permission denied", "unknown": why},
        )
    ]
    assert not obs[0].passed


def test_partial_results_are_judged() -> None:
    obs = judge_ports(ports_rule("tcp/22"), listener("tcp", "0.0.0.0", 23, "telnetd", 5), status="PARTIAL")
    assert verdicts(obs) == {"tcp/0.0.0.0:23": False}


def test_rule_of_another_check_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="judges check 'ports', not 'ntp'"):
        evaluate(ports_rule(), "ntp", {}, "OK")


# -- agent -------------------------------------------------------------------------------------------


def agent_rule(**expect: Any) -> Rule:
    return Rule("AGENT-CONTACT", "agent", "high", 60, {}, expect, ("TPEx-CPA 3(8)4(2)",), "")


def agent_facts(**kw: Any) -> dict[str, Any]:
    return MessageToDict(agent_pb2.AgentResult(version="0.1.0", **kw), preserving_proto_field_name=True)


def test_agent_dropped_records() -> None:
    rule = agent_rule(max_silence="3m", dropped_records={"max": 0})
    facts = agent_facts(dropped_records=3, spool_depth=7)
    assert facts["dropped_records"] == "3"  # proto3 JSON writes uint64 as a string
    (obs,) = evaluate(rule, "agent", facts, "OK")
    assert obs.subject == "spool" and not obs.passed
    assert "dropped 3 result(s)" in obs.message and "AGENT-CONTACT" in obs.message
    assert obs.evidence["dropped_records"] == 3 and obs.evidence["max"] == 0 and obs.evidence["spool_depth"] == 7

    (ok,) = evaluate(rule, "agent", agent_facts(), "OK")
    assert ok.subject == "spool" and ok.passed and ok.evidence["dropped_records"] == 0


def test_agent_dropped_within_limit() -> None:
    rule = agent_rule(dropped_records={"max": 5})
    assert evaluate(rule, "agent", agent_facts(dropped_records=5), "OK")[0].passed
    assert not evaluate(rule, "agent", agent_facts(dropped_records=6), "OK")[0].passed


def test_agent_rule_with_only_max_silence_judges_no_result() -> None:
    assert evaluate(agent_rule(max_silence="3m"), "agent", agent_facts(dropped_records=9), "OK") == []


def test_allowed_silence() -> None:
    rules = [
        agent_rule(max_silence="3m"),
        agent_rule(max_silence="90s", dropped_records={"max": 0}),
        agent_rule(dropped_records={"max": 0}),
        ports_rule("tcp/22"),
    ]
    assert allowed_silence_s(rules) == 90
    assert allowed_silence_s(iter(rules[:1])) == 180
    assert allowed_silence_s([rules[2], rules[3]]) is None
    assert allowed_silence_s([]) is None


# -- generic checks ----------------------------------------------------------------------------------


def rule_of(check: str, expect: dict[str, Any]) -> Rule:
    return Rule("R-1", check, "medium", 300, {}, expect, (), "")


def judge(check: str, expect: dict[str, Any], facts: dict[str, Any]) -> Observation:
    if check in ("av", "eol"):  # judged per item: wrap the facts as the one item
        key = "products" if check == "av" else "items"
        (obs,) = evaluate(rule_of(check, expect), check, {key: [{"name": "x", **facts}]}, "OK")
        assert obs.subject == "x"
        return Observation("", obs.verdict, obs.message.replace("R-1: x: ", "R-1: "), obs.evidence)
    (obs,) = evaluate(rule_of(check, expect), check, facts, "OK")
    assert obs.subject == ""
    return obs


def test_generic_all_hold() -> None:
    obs = judge(
        "ntp",
        {"synchronized": True, "offset_ms": {"max_abs": 250}, "stratum": {"min": 1, "max": 4}, "daemon": "chronyd"},
        {"synchronized": True, "offset_ms": -12.5, "stratum": 2, "daemon": "chronyd", "reference": "x"},
    )
    assert obs.passed
    assert obs.message == (
        "R-1: synchronized is true; offset_ms -12.5 within +/-250; stratum 2 >= 1; stratum 2 <= 4; daemon is 'chronyd'"
    )
    assert obs.evidence["facts"] == {"synchronized": True, "offset_ms": -12.5, "stratum": 2, "daemon": "chronyd"}
    assert obs.evidence["failed"] == []


@pytest.mark.parametrize(
    ("expect", "facts", "message"),
    [
        (
            {"signature_age_hours": {"max": 24}},
            {"signature_age_hours": 30},
            "signature_age_hours is 30, more than the maximum 24",
        ),
        ({"days_to_eol": {"min": 90}}, {"days_to_eol": "12"}, "days_to_eol is 12, less than the minimum 90"),
        ({"offset_ms": {"max_abs": 250}}, {"offset_ms": -300.5}, "offset_ms is -300.5, beyond +/-250"),
        ({"stratum": {"equals": 1}}, {"stratum": 2}, "stratum is 2, expected 1"),
        ({"engine_running": True}, {"engine_running": False}, "engine_running is false, expected true"),
        ({"engine_running": True}, {"engine_running": 1}, "engine_running is 1, expected true"),
        ({"unexpected_changes": 0}, {"unexpected_changes": False}, "unexpected_changes is false, expected 0"),
        ({"daemon": "chronyd"}, {"daemon": "ntpd"}, "daemon is 'ntpd', expected 'chronyd'"),
        ({"offset_ms": {"max": 5}}, {"offset_ms": "n/a"}, "offset_ms is 'n/a', not a number"),
        ({"synchronized": True}, {}, "fact synchronized not reported"),
    ],
)
def test_generic_failures(expect: dict[str, Any], facts: dict[str, Any], message: str) -> None:
    obs = judge("av", expect, facts)
    assert not obs.passed
    assert obs.message == f"R-1: {message}"
    assert obs.evidence["failed"] == [message]


def test_generic_numbers_from_64_bit_strings_and_equality() -> None:
    # (fim has its own judgement, per event: see test_fim.py.)
    assert judge("ntp", {"stratum": 2}, {"stratum": "2"}).passed
    assert judge("ntp", {"stratum": {"equals": 2}}, {"stratum": 2.0}).passed
    assert judge("eol", {"eol": False, "days_to_eol": {"min": 90}}, {"eol": False, "days_to_eol": "365"}).passed


def test_generic_reports_every_failure() -> None:
    obs = judge("eol", {"eol": False, "days_to_eol": {"min": 90}, "product": "debian"}, {"eol": True, "days_to_eol": 3})
    assert obs.message == (
        "R-1: eol is true, expected false; days_to_eol is 3, less than the minimum 90; fact product not reported"
    )
    assert len(obs.evidence["failed"]) == 3


def test_generic_rule_from_a_baseline_file() -> None:
    doc = load_baseline((Path(__file__).parent / "baselines" / "good.yaml").read_text(), "good.yaml", CHECK_SPECS)
    ntp = next(r for r in doc.rules if r.check == "ntp")
    ok = {"synchronized": True, "offset_ms": 0.41, "stratum": 3}
    assert evaluate(ntp, "ntp", ok, "OK")[0].passed
    assert not evaluate(ntp, "ntp", {**ok, "stratum": 5}, "OK")[0].passed


def test_ipv4_mapped_bind_matches_its_ipv4_entry() -> None:
    from controller.judges.ports import parse_allow_entry

    entry = parse_allow_entry("tcp/127.0.0.1:7443")
    assert entry.matches("tcp6", "::ffff:127.0.0.1", 7443, "vigil")
    assert not entry.matches("tcp6", "::ffff:127.0.0.2", 7443, "vigil")


def test_av_judged_per_product_and_no_product_fails() -> None:
    rule = rule_of("av", {"signature_age_hours": {"max": 24}, "engine_running": True})
    (none,) = evaluate(rule, "av", {"products": []}, "OK")
    assert not none.passed and none.subject == "av" and "no antivirus" in none.message
    obs = evaluate(rule, "av", {"products": [
        {"name": "clamav", "signature_age_hours": 72.5, "engine_running": True},
        {"name": "windows-defender", "signature_age_hours": 3, "engine_running": True},
    ]}, "OK")
    assert [(o.subject, o.passed) for o in obs] == [("clamav", False), ("windows-defender", True)]
    assert "signature_age_hours is 72.5, more than the maximum 24" in obs[0].message
    assert obs[0].evidence["item"]["name"] == "clamav"


def test_eol_item_missing_from_dataset_is_unknown_never_passing() -> None:
    rule = rule_of("eol", {"supported": True})
    obs = evaluate(rule, "eol", {"items": [
        {"name": "debian 12", "known": True, "supported": True},
        {"name": "frobnicator 1", "known": False, "lifecycle_reason": "frobnicator is not in the dataset"},
        {"name": "centos 7", "known": False},
        {"name": "nodejs 16", "known": True, "supported": False},
    ]}, "OK")
    assert [(o.subject, o.verdict) for o in obs] == [
        ("debian 12", "pass"), ("frobnicator 1", "unknown"), ("centos 7", "unknown"), ("nodejs 16", "fail")]
    assert obs[1].message == "cannot judge: frobnicator 1: frobnicator is not in the dataset"
    assert obs[2].message == "cannot judge: centos 7: not in the controller's dataset"
    assert not any(o.passed for o in obs[1:3])


def test_av_product_without_databases_says_never_updated() -> None:
    rule = rule_of("av", {"signature_age_hours": {"max": 24}})
    (obs,) = evaluate(rule, "av", {"products": [{"name": "clamav", "signature_age_hours": 1e6, "databases": []}]},
                      "OK")
    assert not obs.passed
    assert obs.message.startswith("R-1: clamav: no signature database found (never updated); signature_age_hours")
    (fresh,) = evaluate(rule, "av", {"products": [
        {"name": "clamav", "signature_age_hours": 2, "databases": [{"name": "daily"}]}]}, "OK")
    assert fresh.passed and "never updated" not in fresh.message
