"""notifications.yaml: validated as a whole, every problem with its line; secrets never in the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.notify import NotifyConfigError, parse_config
from controller.notify.config import JiraTarget, SmtpTarget, WebhookTarget, load_config

GOOD = """\
retry:
  initial: 2s
  max: 5m
targets:
  - name: soc-hook
    type: webhook
    url: https://hooks.example.com/vigil
    secret: ${VIGIL_HOOK_SECRET}
    min_severity: high
  - name: mail
    type: smtp
    host: smtp.example.com
    from: vigil@example.com
    to: [soc@example.com]
    username: vigil
    password_file: smtp.pass
    events: [opened, reopened]
  - name: jira
    type: jira
    url: https://example.atlassian.net
    project: SEC
    user: bot@example.com
    token: ${JIRA_TOKEN}
    statuses:
      in_progress: In Review
"""


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("VIGIL_HOOK_SECRET", "s3cret-hook")
    monkeypatch.setenv("JIRA_TOKEN", "jira-t0ken")
    (tmp_path / "smtp.pass").write_text("smtp-pw\n")
    return tmp_path


def test_good_file_loads_with_secrets_from_env_and_file(env: Path) -> None:
    cfg = parse_config(GOOD, "notifications.yaml", env)
    hook, mail, jira = cfg.targets
    assert isinstance(hook, WebhookTarget) and hook.secret.get_secret_value() == "s3cret-hook"
    assert isinstance(mail, SmtpTarget) and mail.password is not None
    assert mail.password.get_secret_value() == "smtp-pw" and mail.effective_port == 587
    assert isinstance(jira, JiraTarget) and jira.statuses["in_progress"] == "In Review"
    assert jira.statuses["resolved"] == "Done"  # defaults kept for the statuses not given
    assert cfg.retry.initial == 2 and cfg.retry.max == 300
    # Secrets never show in a repr (and so not in a log line or traceback).
    assert "s3cret" not in repr(cfg) and "smtp-pw" not in repr(cfg) and "jira-t0ken" not in repr(cfg)


def test_filters(env: Path) -> None:
    cfg = parse_config(GOOD, "notifications.yaml", env)
    assert cfg.wanting("opened", "critical") == ["soc-hook", "mail", "jira"]
    assert cfg.wanting("opened", "medium") == ["mail", "jira"]
    assert cfg.wanting("comment", "high") == ["soc-hook", "jira"]


def test_every_problem_is_reported_with_its_line(env: Path) -> None:
    text = """\
targets:
  - name: hook
    type: webhook
    url: ftp://example.com
    secret: plain-text-secret
  - name: hook
    type: pager
  - name: mail
    type: smtp
    host: smtp.example.com
    from: vigil@example.com
    to: [soc@example.com]
    colour: blue
    min_severity: urgent
"""
    with pytest.raises(NotifyConfigError) as info:
        parse_config(text, "notifications.yaml", env)
    msg = str(info.value)
    assert "notifications.yaml:5: targets[0].secret: do not write a secret in this file" in msg
    assert "notifications.yaml:7: targets[1]" in msg and "type must be one of" in msg
    assert "notifications.yaml:13: targets[2].colour: unknown field" in msg
    assert "notifications.yaml:14: targets[2].min_severity:" in msg
    assert "plain-text-secret" not in msg


def test_url_duplicate_names_and_missing_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    text = """\
targets:
  - {name: a, type: webhook, url: "ftp://x", secret: "${NOPE_NOT_SET}"}
  - {name: a, type: webhook, url: "https://x.example", secret_file: missing.txt}
"""
    with pytest.raises(NotifyConfigError) as info:
        parse_config(text, "n.yaml", tmp_path)
    msg = str(info.value)
    assert "n.yaml:2: targets[0].secret: environment variable NOPE_NOT_SET is not set" in msg
    assert "n.yaml:2: targets[0].url: must be an http:// or https:// URL" in msg
    assert "n.yaml:3: targets[1].secret_file: cannot read" in msg


def test_invalid_yaml_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(NotifyConfigError, match=r"n.yaml:\d+: invalid YAML"):
        parse_config("targets:\n  - [\n", "n.yaml")
    assert load_config(tmp_path / "absent.yaml", required=False).targets == ()
    with pytest.raises(NotifyConfigError, match="no such file"):
        load_config(tmp_path / "absent.yaml")
    assert parse_config("", "empty.yaml").targets == ()
