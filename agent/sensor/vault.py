"""The encrypted credential store on the sensor host: passwords and enable secrets, never in clear on disk.

``DATA_DIR/credentials.vault`` is one JSON document::

    {"format": 1, "kdf": "scrypt", "n": 32768, "r": 8, "p": 1, "salt": "...", "nonce": "...", "data": "..."}

``data`` is AES-256-GCM over a JSON object ``{name: {"username": ..., "password": ..., "enable_secret":
...}}`` with a key derived from the vault passphrase by scrypt; the header is authenticated too, so a
changed parameter is refused like a changed byte. A wrong passphrase and a damaged file are both refused
("cannot be opened"), never half read.

The passphrase comes, in this order, from systemd's credential ``vigil-vault`` (``LoadCredential=``, read
from ``$CREDENTIALS_DIRECTORY``), from the file named by ``VIGIL_VAULT_PASSPHRASE_FILE``, or from
``VIGIL_VAULT_PASSPHRASE``; an operator's command asks for it on the terminal.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.sensor import CredentialError

VAULT_FILE = "credentials.vault"
SYSTEMD_CREDENTIAL = "vigil-vault"
_N, _R, _P = 2**15, 8, 1
_FIELDS = ("username", "password", "enable_secret")


@dataclass(frozen=True)
class Secret:
    username: str
    password: str | None = None
    enable_secret: str | None = None


def passphrase_from_environment() -> str | None:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    candidates = [Path(directory) / SYSTEMD_CREDENTIAL] if directory else []
    if os.environ.get("VIGIL_VAULT_PASSPHRASE_FILE"):
        candidates.append(Path(os.environ["VIGIL_VAULT_PASSPHRASE_FILE"]))
    for path in candidates:
        if path.is_file():
            try:
                return path.read_text().rstrip("\r\n")
            except OSError as exc:
                raise CredentialError(f"cannot read the vault passphrase from {path}: {exc.strerror}") from None
    return os.environ.get("VIGIL_VAULT_PASSPHRASE")


def _key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Vault:
    """The secrets of ``data_dir/credentials.vault``, opened with ``passphrase``."""

    def __init__(self, path: Path, passphrase: str, entries: dict[str, Secret]) -> None:
        self.path, self._passphrase, self._entries = path, passphrase, entries

    @classmethod
    def open(cls, data_dir: Path, passphrase: str | None = None, *, create: bool = False) -> Vault:
        path = data_dir / VAULT_FILE
        if passphrase is None:
            passphrase = passphrase_from_environment()
        if not passphrase:
            raise CredentialError(f"{path}: no vault passphrase (systemd credential {SYSTEMD_CREDENTIAL!r}, "
                                  "VIGIL_VAULT_PASSPHRASE_FILE or VIGIL_VAULT_PASSPHRASE)")
        if not path.exists():
            if create:
                return cls(path, passphrase, {})
            raise CredentialError(f"{path} does not exist; add a secret with `vigil-agent device credential set`")
        return cls(path, passphrase, _decrypt(path, passphrase))

    def get(self, name: str) -> Secret | None:
        return self._entries.get(name)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def set(self, name: str, secret: Secret) -> None:
        self._entries[name] = secret
        self._save()

    def delete(self, name: str) -> bool:
        if self._entries.pop(name, None) is None:
            return False
        self._save()
        return True

    def _save(self) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
        header: dict[str, Any] = {"format": 1, "kdf": "scrypt", "n": _N, "r": _R, "p": _P, "salt": _b64(salt),
                                  "nonce": _b64(nonce)}
        plain = json.dumps({k: {f: getattr(v, f) for f in _FIELDS if getattr(v, f) is not None}
                            for k, v in sorted(self._entries.items())}).encode()
        data = AESGCM(_key(self._passphrase, salt, _N, _R, _P)).encrypt(nonce, plain, _aad(header))
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps({**header, "data": _b64(data)}).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)


def _aad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True).encode()


def _decrypt(path: Path, passphrase: str) -> dict[str, Secret]:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    refused = f"{path} cannot be opened: wrong passphrase, or the file was changed or damaged"
    try:
        doc = json.loads(path.read_bytes())
        header = {k: doc[k] for k in ("format", "kdf", "n", "r", "p", "salt", "nonce")}
        if header["format"] != 1 or header["kdf"] != "scrypt":
            raise CredentialError(f"{path}: format {header['format']!r} / kdf {header['kdf']!r} is not one "
                                  "this version reads")
        n, r, p = int(header["n"]), int(header["r"]), int(header["p"])
        if not (2**14 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
            raise CredentialError(refused)
        key = _key(passphrase, base64.b64decode(header["salt"]), n, r, p)
        plain = AESGCM(key).decrypt(base64.b64decode(header["nonce"]), base64.b64decode(doc["data"]), _aad(header))
        entries = json.loads(plain)
    except CredentialError:
        raise
    except (OSError, ValueError, KeyError, TypeError, InvalidTag) as exc:
        raise CredentialError(refused) from exc
    out: dict[str, Secret] = {}
    for name, spec in entries.items():
        out[str(name)] = Secret(**{f: spec.get(f) for f in _FIELDS if f in spec})
    return out
