"""Config file: lookup, validation (one clear line naming the key, exit 2), secrets, permissions, credentials."""

import logging
import subprocess
import sys
import textwrap

import pytest

from guestfs_mount.cli import mount as cli
from guestfs_mount.config import ConfigError, CredentialsTable, find_config, load, match_login

GOOD = """
[vcenter]
url = "https://vcenter.example.com"
username = "administrator@vsphere.local"
password = "vc-secret-1"
api = "auto"

[vms.default]
username = "root"
password = "guest-default-2"

[vms."web-*"]
username = "deploy"
password_env = "WEB_PASS"

[vms."web-01"]
username = "exact"
password = "guest-exact-3"

[cache]
attr_ttl = 2.5
dir_ttl = 4
"""


def write(tmp_path, text, mode=0o600, name="config.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    path.chmod(mode)
    return path


def test_good_config_loads(tmp_path):
    config = load(write(tmp_path, GOOD))
    assert config.vcenter["url"] == "https://vcenter.example.com"
    assert config.vcenter_password() == "vc-secret-1"
    assert config.cache == {"attr_ttl": 2.5, "dir_ttl": 4}
    assert [l.pattern for l in config.vm_logins] == ["default", "web-*", "web-01"]


def test_exec_is_per_login_and_symlinks_is_checked(tmp_path):
    text = GOOD.replace('password_env = "WEB_PASS"', 'password_env = "WEB_PASS"\nexec = true') + '[mount]\nsymlinks = "raw"\n'
    config = load(write(tmp_path, text))
    from guestfs_mount.config import runs_programs

    assert runs_programs(config, "web-02") and not runs_programs(config, "web-01") and not runs_programs(config, "db")
    args = cli.build_parser().parse_args([str(tmp_path)])
    settings = cli.mount_settings_from(config, args, str(tmp_path), [])
    assert settings.symlinks == "raw" and settings.mountpoint == str(tmp_path)
    assert settings.runs_programs("web-7") and not settings.runs_programs("other")
    for bad, expected in (('exec = "yes"', "exec must be true or false"),
                          ('symlinks = "outside"', "[mount] symlinks must be one of inside, raw")):
        key = bad.split(" ")[0]
        broken = text.replace("exec = true", bad) if key == "exec" else text.replace('symlinks = "raw"', bad)
        with pytest.raises(ConfigError) as e:
            load(write(tmp_path, broken))
        assert expected in str(e.value)


@pytest.mark.parametrize("api", ["auto", "vi-json", "soap", "rest"])
def test_every_dialect_is_a_valid_api(tmp_path, api):
    assert load(write(tmp_path, GOOD.replace('api = "auto"', f'api = "{api}"'))).vcenter["api"] == api


@pytest.mark.parametrize(
    "change, expected",
    [
        (('api = "auto"', 'api = "corba"'), "[vcenter] api must be one of"),
        (('url = "https://vcenter.example.com"', 'url = "ftp://x"'), "[vcenter] url must look like"),
        (('url = "https://vcenter.example.com"', 'url = "https://vc/sdk"'), "no path"),
        (("attr_ttl = 2.5", "attr_ttl = \"soon\""), "[cache] attr_ttl must be a number"),
        (("attr_ttl = 2.5", "attr_ttl = true"), "[cache] attr_ttl must be a number"),
        (("attr_ttl = 2.5", "attr_ttl = -1"), "[cache] attr_ttl must be greater than 0"),
        (("attr_ttl = 2.5", "atr_ttl = 2.5"), "unknown key 'atr_ttl' in [cache]"),
        (("[cache]", "[caches]"), "unknown table [caches]"),
        (('username = "deploy"', 'user = "deploy"'), "unknown key 'user' in [vms.\"web-*\"]"),
        (('password = "vc-secret-1"', 'password = "x"\npassword_env = "Y"'), "give only one of them"),
        (('username = "administrator@vsphere.local"', ""), "[vcenter] needs username"),
        (('url = "https://vcenter.example.com"', "url = ["), "not valid TOML"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path, change, expected):
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ConfigError) as e:
        load(path)
    assert expected in str(e.value)
    assert "\n" not in str(e.value)
    assert str(path) in str(e.value)


def test_cli_exits_2_on_bad_config_and_names_the_key(tmp_path):
    path = write(tmp_path, GOOD.replace("dir_ttl = 4", "dir_ttl = []"))
    (tmp_path / "mnt").mkdir()
    out = subprocess.run([sys.executable, "-m", "guestfs_mount", str(tmp_path / "mnt"), "--config", str(path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "[cache] dir_ttl must be a number" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "vc-secret-1" not in out.stderr


def test_world_readable_config_with_password_is_refused(tmp_path):
    path = write(tmp_path, GOOD, mode=0o644)
    with pytest.raises(ConfigError) as e:
        load(path)
    assert "chmod 600" in str(e.value) and "0644" in str(e.value)
    assert "vc-secret-1" not in str(e.value)


def test_readable_config_without_inline_password_is_fine(tmp_path, monkeypatch):
    secret = write(tmp_path, "from-file\n", name="vc.pass")
    text = GOOD.replace('password = "vc-secret-1"', f'password_file = "{secret}"')
    text = text.replace('password = "guest-default-2"', 'password_env = "DEF"').replace(
        'password = "guest-exact-3"', 'password_credential = "exact"')
    config = load(write(tmp_path, text, mode=0o644))
    assert config.vcenter_password() == "from-file"  # one trailing newline dropped


def test_password_file_readable_by_others_is_refused(tmp_path):
    secret = write(tmp_path, "pw", mode=0o644, name="vc.pass")
    config = load(write(tmp_path, GOOD.replace('password = "vc-secret-1"', f'password_file = "{secret}"')))
    with pytest.raises(ConfigError, match="chmod 600"):
        config.vcenter_password()


def test_systemd_credential_and_env(tmp_path, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "vcpass").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("WEB_PASS", "from-env")
    config = load(write(tmp_path, GOOD.replace('password = "vc-secret-1"', 'password_credential = "vcpass"')))
    assert config.vcenter_password() == "from-systemd"
    assert CredentialsTable(config)("web-7").password == "from-env"


def test_missing_env_names_the_variable_not_a_value(tmp_path, monkeypatch):
    monkeypatch.delenv("WEB_PASS", raising=False)
    config = load(write(tmp_path, GOOD))
    login = match_login(config.vm_logins, "web-9")
    with pytest.raises(ConfigError, match="environment variable WEB_PASS is not set"):
        config.resolve(login.secret)


def test_most_specific_table_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("WEB_PASS", "w")
    config = load(write(tmp_path, GOOD + '\n[vms."web-0*"]\nusername = "longer-glob"\npassword = "p"\n'))
    table = CredentialsTable(config)
    assert table("web-01").username == "exact"  # exact name beats every glob
    assert table("web-02").username == "longer-glob"  # more literal characters beat a shorter glob
    assert table("web-7").username == "deploy"
    assert table("db01").username == "root"  # default last


def test_no_matching_table_gives_none_and_says_which_table_to_add(tmp_path, caplog):
    config = load(write(tmp_path, GOOD.replace("[vms.default]", '[vms."x-*"]')))
    with caplog.at_level(logging.ERROR):
        assert CredentialsTable(config)("db01") is None
    assert '[vms."db01"]' in caplog.text and str(config.path) in caplog.text


def test_lookup_order(tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"
    (xdg / "guestfs-mount").mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    with pytest.raises(ConfigError, match="no config file"):
        find_config(None)
    path = write(xdg / "guestfs-mount", GOOD)
    assert find_config(None) == path
    with pytest.raises(ConfigError, match="does not exist"):
        find_config(str(tmp_path / "nope.toml"))


def test_mount_options_fold_into_arguments():
    args = cli.build_parser().parse_args(["/mnt/vms", "-o", "config=/etc/g.toml,ro,vm=web01,allow_other,noatime"])
    fuse = cli.apply_mount_options(args)
    assert args.config == "/etc/g.toml" and args.read_only and args.allow_other and args.vms == ["web01"]
    assert fuse == ["noatime"]


def test_mount_helper_translates_fstab_options():
    from guestfs_mount.mounthelper import translate

    args, fake = translate(["vcenter", "/mnt/vms", "-o",
                            "rw,config=/etc/guestfs-mount/config.toml,_netdev,x-systemd.automount,nofail,allow_other"])
    assert args == ["/mnt/vms", "-o", "config=/etc/guestfs-mount/config.toml,allow_other"] and not fake
    args, fake = translate(["-n", "vcenter", "/mnt/vms", "-oconfig=/c.toml", "-f", "-t", "fuse.guestfs"])
    assert args == ["/mnt/vms", "-o", "config=/c.toml"] and fake
    with pytest.raises(SystemExit):
        translate(["/mnt/vms"])


def test_default_spool_and_control_socket_are_per_mount_point(tmp_path, monkeypatch):
    from guestfs_mount.cli.control import control_socket, mount_id

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    config = load(write(tmp_path, GOOD))
    args = cli.build_parser().parse_args(["/mnt/vms"])
    settings = cli.mount_settings_from(config, args, "/mnt/vms", [])
    other = cli.mount_settings_from(config, args, "/mnt/other", [])
    state = tmp_path / "state" / "guestfs-mount"
    assert settings.spool_dir == state / "spool" / mount_id("/mnt/vms") != other.spool_dir
    assert settings.control_socket == control_socket("/mnt/vms") == state / "run" / f"{mount_id('/mnt/vms')}.sock"
    assert settings.recovery_dir == state / "recovered"
