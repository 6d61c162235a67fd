"""The config file: where it is, what it may hold, and the guest credentials it gives each VM.

Shape (a public contract: extend it, never change these keys):

    [vcenter]  url, username, password | password_file | password_env | password_credential, api, ca_file,
               insecure, timeout, connect_timeout, max_guest_calls_per_vm, retries, list_page_size, transfer_host,
               thumbprint
    [vms.<glob>]  username, password | password_file | password_env | password_credential, exec  (most specific
                  wins; "default" matches every VM, last)
    [cache]    attr_ttl, dir_ttl, vm_list_ttl, attr_delay, content_max_mib, content_file_max_mib, prefetch_files,
               prefetch_max_kib
    [mount]    spool_dir, recovery_dir, windows_drives, vms, read_only, allow_other, read_ahead_kb, stop_timeout,
               symlinks, write_back, write_back_max_mib, write_back_delay

Every problem is one `ConfigError` line that names the file and the key; the CLI exits 2 on it.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from guestfs_mount.vsphere.model import GuestCredentials

log = logging.getLogger(__name__)

SECRET_KEYS = ("password", "password_file", "password_env", "password_credential")


class ConfigError(Exception):
    """A config problem, already phrased as the one line the user sees."""


def default_config_paths() -> list[Path]:
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return [Path(xdg) / "guestfs-mount" / "config.toml", Path("/etc/guestfs-mount/config.toml")]


def find_config(explicit: str | None) -> Path:
    """--config FILE, else $XDG_CONFIG_HOME/guestfs-mount/config.toml, else /etc/guestfs-mount/config.toml."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    for path in default_config_paths():
        if path.is_file():
            return path
    tried = " or ".join(str(p) for p in default_config_paths())
    raise ConfigError(f"no config file: pass --config FILE or create {tried}")


def state_dir() -> Path:
    """Where spool files and recovered uploads live: systemd's StateDirectory, else $XDG_STATE_HOME."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(xdg) / "guestfs-mount"


# ---------------------------------------------------------------------------------------------- schema

# key -> (accepted types, description used in messages)
_Schema = dict[str, tuple[tuple[type, ...], str]]
_STR = ((str,), "a string")
_BOOL = ((bool,), "true or false")
_POS_NUMBER = ((int, float), "a number")
_POS_INT = ((int,), "a whole number")
_COUNT = ((int,), "a whole number, 0 or more")
_SECONDS = ((int, float), "a number, 0 or more")
_STR_LIST = ((list,), "a list of strings")
_SECRETS: _Schema = {key: _STR for key in SECRET_KEYS}

VCENTER_KEYS: _Schema = {
    "url": _STR,
    "username": _STR,
    **_SECRETS,
    "api": _STR,
    "ca_file": _STR,
    "insecure": _BOOL,
    "timeout": _POS_NUMBER,
    "connect_timeout": _POS_NUMBER,
    "max_guest_calls_per_vm": _POS_INT,
    "retries": _POS_INT,
    "list_page_size": _POS_INT,
    "transfer_host": _STR,
    "thumbprint": _STR,
}
VM_KEYS: _Schema = {"username": _STR, **_SECRETS, "exec": _BOOL}
CACHE_KEYS: _Schema = {"attr_ttl": _POS_NUMBER, "dir_ttl": _POS_NUMBER, "vm_list_ttl": _POS_NUMBER,
                       "attr_delay": _POS_NUMBER, "content_max_mib": _COUNT,
                       "content_file_max_mib": _COUNT, "prefetch_files": _COUNT,
                       "prefetch_max_kib": _COUNT}
MOUNT_KEYS: _Schema = {
    "spool_dir": _STR,
    "recovery_dir": _STR,
    "windows_drives": _STR_LIST,
    "vms": _STR_LIST,
    "read_only": _BOOL,
    "allow_other": _BOOL,
    "read_ahead_kb": _POS_INT,
    "stop_timeout": _POS_NUMBER,
    "symlinks": _STR,
    "write_back": _BOOL,
    "write_back_max_mib": _COUNT,
    "write_back_delay": _SECONDS,
}
TABLES = {"vcenter": VCENTER_KEYS, "vms": None, "cache": CACHE_KEYS, "mount": MOUNT_KEYS}
API_CHOICES = ("auto", "vi-json", "soap", "rest")
TRANSFER_HOST_CHOICES = ("management-ip", "name", "vcenter")
SYMLINK_CHOICES = ("inside", "raw")


@dataclass(frozen=True)
class Secret:
    """Where a password comes from; `describe()` names the source, never the value."""

    table: str
    source: str  # one of SECRET_KEYS
    ref: str  # the literal, the file path, the variable name, or the credential name

    def describe(self) -> str:
        return "inline password" if self.source == "password" else f"{self.source} = {self.ref!r}"


@dataclass
class VMLogin:
    pattern: str
    username: str
    secret: Secret | None
    exec: bool = False  # may run programs in the guest (symlinks, hard links)


@dataclass
class Config:
    path: Path
    vcenter: dict[str, Any]
    vcenter_secret: Secret
    vm_logins: list[VMLogin]
    cache: dict[str, float]
    mount: dict[str, Any]
    secrets_seen: list[str] = field(default_factory=list, repr=False)  # resolved values, for log redaction

    def vcenter_password(self) -> str:
        return self.resolve(self.vcenter_secret)

    def resolve(self, secret: Secret) -> str:
        value = read_secret(secret, self.path)
        if value not in self.secrets_seen:
            self.secrets_seen.append(value)
        return value


def load(path: str | os.PathLike) -> Config:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot read it: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: not valid TOML: {e}") from None

    for table in data:
        if table not in TABLES:
            raise ConfigError(f"config file {path}: unknown table [{table}] (known: {', '.join(TABLES)})")
        if not isinstance(data[table], dict):
            raise ConfigError(f"config file {path}: {table} must be a table, [{table}]")
    vcenter = _check_table(path, "vcenter", data.get("vcenter"), VCENTER_KEYS, required=("url", "username"))
    _check_url(path, vcenter["url"])
    api = vcenter.get("api", "auto")
    if api not in API_CHOICES:
        raise ConfigError(f"config file {path}: [vcenter] api must be one of {', '.join(API_CHOICES)}, not {api!r}")
    transfer_host = vcenter.get("transfer_host", TRANSFER_HOST_CHOICES[0])
    if transfer_host not in TRANSFER_HOST_CHOICES:
        raise ConfigError(f"config file {path}: [vcenter] transfer_host must be one of "
                          f"{', '.join(TRANSFER_HOST_CHOICES)}, not {transfer_host!r}")
    if vcenter.get("ca_file") and not Path(vcenter["ca_file"]).is_file():
        raise ConfigError(f"config file {path}: [vcenter] ca_file {vcenter['ca_file']!r} does not exist")
    if "thumbprint" in vcenter:
        vcenter["thumbprint"] = _thumbprint(path, vcenter)
    vcenter_secret = _secret_of(path, "vcenter", vcenter, required=True)

    vm_logins = []
    for pattern, table in (data.get("vms") or {}).items():
        name = f'vms."{pattern}"'
        if not isinstance(table, dict):
            raise ConfigError(f"config file {path}: [{name}] must be a table")
        checked = _check_table(path, name, table, VM_KEYS, required=("username",))
        vm_logins.append(VMLogin(pattern, checked["username"], _secret_of(path, name, checked, required=False),
                                 checked.get("exec", False)))

    cache = _check_table(path, "cache", data.get("cache", {}), CACHE_KEYS)
    mount = _check_table(path, "mount", data.get("mount", {}), MOUNT_KEYS)
    for key in ("windows_drives", "vms"):
        if key in mount and not all(isinstance(v, str) for v in mount[key]):
            raise ConfigError(f"config file {path}: [mount] {key} must be a list of strings")
    if mount.get("symlinks", "inside") not in SYMLINK_CHOICES:
        raise ConfigError(f"config file {path}: [mount] symlinks must be one of {', '.join(SYMLINK_CHOICES)}, "
                          f"not {mount['symlinks']!r}")

    _check_private(path, data)
    return Config(path, vcenter, vcenter_secret, vm_logins, cache, mount)


def _check_table(path: Path, name: str, table: dict | None, schema: _Schema, required=()) -> dict:
    if table is None:
        raise ConfigError(f"config file {path}: missing table [{name}]")
    for key, value in table.items():
        if key not in schema:
            raise ConfigError(f"config file {path}: unknown key {key!r} in [{name}] (known: {', '.join(schema)})")
        types, what = schema[key]
        # bool is an int in Python; a number key must not accept true/false
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ConfigError(f"config file {path}: [{name}] {key} must be {what}, not {value!r}")
        if (types, what) in (_COUNT, _SECONDS):
            if value < 0:
                raise ConfigError(f"config file {path}: [{name}] {key} must be 0 or more, not {value!r}")
        elif types in (_POS_NUMBER[0], _POS_INT[0]) and value <= 0:
            raise ConfigError(f"config file {path}: [{name}] {key} must be greater than 0, not {value!r}")
    for key in required:
        if key not in table:
            raise ConfigError(f"config file {path}: [{name}] needs {key} = ...")
    return dict(table)


def _check_url(path: Path, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"config file {path}: [vcenter] url must look like https://vcenter.example.com, not {url!r}")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"config file {path}: [vcenter] url must name the server only (no path), not {url!r}")


def _thumbprint(path: Path, vcenter: dict) -> str:
    """`"sha256:AB:CD:..."` (colons, case and the prefix optional) -> "AB:CD:...", the form fingerprints are
    compared in. Only SHA-256: a SHA-1 thumbprint (40 digits) is refused, as SHA-1 collisions can be made."""
    text = vcenter["thumbprint"].strip()
    digits = re.sub(r"[:\s]", "", re.sub(r"(?i)^sha-?256:", "", text)).upper()
    where = f"config file {path}: [vcenter] thumbprint"
    if not re.fullmatch(r"[0-9A-F]{64}", digits):
        raise ConfigError(f'{where} must be the SHA-256 fingerprint of vCenter\'s certificate, "sha256:" and 64 hex '
                          f"digits (`guestfs-mount trust URL` prints it), not {text!r}")
    if urlsplit(vcenter["url"]).scheme != "https":
        raise ConfigError(f"{where} pins the certificate of an https:// vCenter; url is {vcenter['url']!r}")
    if vcenter.get("insecure"):
        raise ConfigError(f"{where} and insecure = true contradict each other: a pinned certificate is verified")
    return ":".join(digits[i : i + 2] for i in range(0, 64, 2))


def _secret_of(path: Path, name: str, table: dict, required: bool) -> Secret | None:
    given = [key for key in SECRET_KEYS if key in table]
    if len(given) > 1:
        raise ConfigError(f"config file {path}: [{name}] has {' and '.join(given)}; give only one of them")
    if not given:
        if required:
            raise ConfigError(f"config file {path}: [{name}] needs one of {', '.join(SECRET_KEYS)}")
        return None
    return Secret(name, given[0], table[given[0]])


def _holds_inline_password(data: dict) -> bool:
    if "password" in data.get("vcenter", {}):
        return True
    return any(isinstance(t, dict) and "password" in t for t in (data.get("vms") or {}).values())


def _check_private(path: Path, data: dict) -> None:
    """Like ssh with a private key: a file holding a password must not be readable by group or others."""
    if not _holds_inline_password(data):
        return
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"config file {path} holds a password and is readable by others (mode {stat.S_IMODE(mode):04o}); "
            f"fix with: chmod 600 {path}  (or move the password to password_file / password_env)"
        )


def read_secret(secret: Secret, config_path: Path) -> str:
    """The secret's value. Errors name the source, never the value."""
    where = f"config file {config_path}: [{secret.table}] {secret.source}"
    if secret.source == "password":
        return secret.ref
    if secret.source == "password_env":
        value = os.environ.get(secret.ref)
        if value is None:
            raise ConfigError(f"{where}: environment variable {secret.ref} is not set")
        return value
    if secret.source == "password_credential":
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        if not cred_dir:
            raise ConfigError(f"{where}: no $CREDENTIALS_DIRECTORY (set LoadCredential={secret.ref}:... in the unit)")
        file = Path(cred_dir) / secret.ref
    else:
        file = Path(secret.ref)
        try:
            mode = file.stat().st_mode
        except OSError as e:
            raise ConfigError(f"{where}: cannot read {file}: {e.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{where}: {file} is readable by others (mode {stat.S_IMODE(mode):04o}); fix with: chmod 600 {file}"
            )
    try:
        # one trailing newline is what `echo secret > file` leaves; it is not part of the password
        return file.read_text(encoding="utf-8").removesuffix("\n")
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {file}: {e.strerror}") from None


# ------------------------------------------------------------------------------------- credentials


def _specificity(pattern: str) -> tuple[int, int]:
    """Higher is more specific: an exact name beats any glob; among globs, more literal characters win."""
    wildcard = any(c in pattern for c in "*?[")
    literal = sum(1 for c in pattern if c not in "*?[]")
    return (0 if wildcard else 1, literal)


def match_login(logins: list[VMLogin], vm_name: str) -> VMLogin | None:
    """The most specific [vms.<glob>] table for a VM; [vms.default] when no other matches; ties: first in file."""
    matches = [l for l in logins if l.pattern != "default" and fnmatch.fnmatchcase(vm_name, l.pattern)]
    if matches:
        return max(matches, key=lambda l: _specificity(l.pattern))  # max keeps the first of equals
    return next((l for l in logins if l.pattern == "default"), None)


def runs_programs(config: Config, vm_name: str) -> bool:
    """Whether the guest login of a VM has `exec = true` (it may run ln and touch in the guest)."""
    login = match_login(config.vm_logins, vm_name)
    return login is not None and login.exec


class CredentialsTable:
    """The CredentialsLookup the mount uses: VM name -> GuestCredentials, resolved once per VM."""

    def __init__(self, config: Config):
        self._config = config
        self._resolved: dict[str, GuestCredentials | None] = {}

    def __call__(self, vm_name: str) -> GuestCredentials | None:
        if vm_name not in self._resolved:
            self._resolved[vm_name] = self._lookup(vm_name)
        return self._resolved[vm_name]

    def _lookup(self, vm_name: str) -> GuestCredentials | None:
        try:
            return guest_credentials(self._config, vm_name)
        except ConfigError as e:
            log.error("%s; its directory gives EACCES until then", e)
            return None


def guest_credentials(config: Config, vm_name: str) -> GuestCredentials:
    """The guest login of a VM, its password read; ConfigError naming what is missing (no table, no password
    source, a source that cannot be read)."""
    login = match_login(config.vm_logins, vm_name)
    if login is None:
        raise ConfigError(f'no guest credentials for VM {vm_name!r}: add a [vms."{vm_name}"] (or [vms.default]) '
                          f"table with username and password to {config.path}")
    if login.secret is None:
        raise ConfigError(f'[vms."{login.pattern}"] in {config.path} has no password source for VM {vm_name!r}')
    return GuestCredentials(username=login.username, password=config.resolve(login.secret))
