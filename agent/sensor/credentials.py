"""Credentials by name: the baseline names one (``credential: core-routers``); what it is stays on the sensor.

``DATA_DIR/credentials.yaml`` (owner-only; the sensor refuses a file others can read)::

    core-routers:
      username: netops
      key_file: /etc/vigil/keys/netops_ed25519   # a private key file (owner-only)
      passphrase_env: NETOPS_KEY_PASSPHRASE      # optional: the key's passphrase, from this variable
      enable_secret_env: CORE_ENABLE             # optional: the enable secret, from this variable
    lab-switches:
      username: admin
      agent: true                                # the keys of the ssh-agent at $SSH_AUTH_SOCK

Nothing here is sent by the controller or written into a finding: the controller only ever sees the
name. Passwords are not accepted in this file: they, and enable secrets, live in the encrypted vault
(:mod:`agent.sensor.vault`, ``vigil-agent device credential set``). A name found only in the vault is a
password credential; ``vault: true`` on an entry here adds the vault's secrets of the same name to it.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import yaml

from agent.sensor import CredentialError
from agent.sensor.vault import VAULT_FILE, Vault

CREDENTIALS_FILE = "credentials.yaml"
_KEYS = {"username", "key_file", "passphrase_env", "agent", "enable_secret_env", "vault"}


@dataclass(frozen=True)
class Credential:
    name: str
    username: str
    key_file: Path | None = None
    passphrase_env: str | None = None
    agent: bool = False
    enable_secret_env: str | None = None
    # From the vault only; never shown (repr) and never written anywhere but the vault.
    password: str | None = field(default=None, repr=False)
    enable_secret_value: str | None = field(default=None, repr=False)

    def private_keys(self) -> list[paramiko.PKey]:
        """The private keys to offer, in order: the key file's, then the ssh-agent's."""
        found: list[paramiko.PKey] = []
        if self.key_file is not None:
            passphrase = os.environ.get(self.passphrase_env) if self.passphrase_env else None
            if self.passphrase_env and passphrase is None:
                raise CredentialError(f"credential {self.name!r}: ${self.passphrase_env} (the passphrase of "
                                      f"{self.key_file}) is not set")
            try:
                found.append(paramiko.PKey.from_path(self.key_file, passphrase))
            except FileNotFoundError as exc:
                raise CredentialError(f"credential {self.name!r}: key file {self.key_file} does not exist") from exc
            except (paramiko.SSHException, ValueError, OSError) as exc:
                raise CredentialError(f"credential {self.name!r}: cannot read key file {self.key_file}: {exc}") from exc
        if self.agent:
            if not os.environ.get("SSH_AUTH_SOCK"):
                raise CredentialError(f"credential {self.name!r} uses the ssh-agent, but SSH_AUTH_SOCK is not set")
            agent_keys = list(paramiko.Agent().get_keys())
            if not agent_keys and not found:
                raise CredentialError(f"credential {self.name!r}: the ssh-agent at $SSH_AUTH_SOCK holds no key")
            found.extend(agent_keys)
        return found

    def enable_secret(self) -> str | None:
        if self.enable_secret_value is not None:
            return self.enable_secret_value
        if self.enable_secret_env is None:
            return None
        value = os.environ.get(self.enable_secret_env)
        if value is None:
            raise CredentialError(f"credential {self.name!r}: ${self.enable_secret_env} (its enable secret) is not set")
        return value


class Credentials:
    """The credentials of ``data_dir/credentials.yaml``, checked as a whole when loaded."""

    def __init__(self, entries: dict[str, Credential], path: Path, vault_names: frozenset[str] = frozenset()) -> None:
        self._entries = entries
        self.path = path
        self._vault_names = vault_names  # entries marked vault: true
        self._vault: Vault | None = None

    @classmethod
    def load(cls, data_dir: Path) -> Credentials:
        path = data_dir / CREDENTIALS_FILE
        if not path.exists():
            return cls({}, path)
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CredentialError(f"{path}: readable by others (mode {stat.S_IMODE(mode):o}); run chmod 600 {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise CredentialError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise CredentialError(f"{path}: expected a mapping of credential names")
        entries = {str(name): _entry(path, str(name), spec) for name, spec in data.items()}
        in_vault = frozenset(str(n) for n, spec in data.items() if isinstance(spec, dict) and spec.get("vault"))
        return cls(entries, path, in_vault)

    def _open_vault(self, required: bool = False) -> Vault | None:
        """The vault, opened once (scrypt costs tens of milliseconds, on purpose); None when there is none
        and none is ``required`` (then opening it says what is missing)."""
        if self._vault is None and (required or (self.path.parent / VAULT_FILE).exists()):
            self._vault = Vault.open(self.path.parent)
        return self._vault

    def get(self, name: str) -> Credential:
        entry = self._entries.get(name)
        if entry is not None and name not in self._vault_names:
            return entry
        vault = self._open_vault(required=entry is not None)
        secret = vault.get(name) if vault is not None else None
        if entry is not None:
            if secret is None:
                raise CredentialError(f"credential {name!r} says vault: true, but the vault has no secret {name!r}")
            return dataclasses.replace(entry, password=secret.password, enable_secret_value=secret.enable_secret)
        if secret is None:
            known = ", ".join(sorted({*self._entries, *(vault.names() if vault else [])})) or "none"
            raise CredentialError(f"credential {name!r} is not in {self.path} or the vault (known: {known})")
        return Credential(name=name, username=secret.username, password=secret.password,
                          enable_secret_value=secret.enable_secret)

    def names(self) -> list[str]:
        """The names in credentials.yaml (the vault's need its passphrase: ``Vault.names``)."""
        return sorted(self._entries)


def _entry(path: Path, name: str, spec: object) -> Credential:
    where = f"{path}: credential {name!r}"
    if not isinstance(spec, dict):
        raise CredentialError(f"{where}: expected a mapping with username and key_file or agent")
    unknown = set(spec) - _KEYS
    if "password" in unknown:
        raise CredentialError(f"{where}: passwords are not accepted in this file; use a key file or the ssh-agent")
    if unknown:
        raise CredentialError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                              f"(known: {', '.join(sorted(_KEYS))})")
    username = spec.get("username")
    if not isinstance(username, str) or not username:
        raise CredentialError(f"{where}: username is required")
    key_file = spec.get("key_file")
    agent = spec.get("agent", False)
    if not isinstance(agent, bool):
        raise CredentialError(f"{where}: agent must be true or false")
    vault = spec.get("vault", False)
    if not isinstance(vault, bool):
        raise CredentialError(f"{where}: vault must be true or false")
    if key_file is None and not agent and not vault:
        raise CredentialError(f"{where}: give key_file, agent: true, or vault: true")
    for name_ in ("key_file", "passphrase_env", "enable_secret_env"):
        if spec.get(name_) is not None and not isinstance(spec[name_], str):
            raise CredentialError(f"{where}: {name_} must be a string")
    return Credential(name=name, username=username, key_file=Path(key_file) if key_file else None,
                      passphrase_env=spec.get("passphrase_env"), agent=agent,
                      enable_secret_env=spec.get("enable_secret_env"))
