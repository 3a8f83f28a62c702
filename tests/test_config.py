"""Settings and properties: parsing, errors, and the one source of truth — the shipped yaml and UI json, the README and
``docs/configuration.md`` are what ``scripts/gen_config.py`` writes from the tables in ``settings.py`` and
``properties.py``."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path
from types import ModuleType

import pytest
import yaml

import httppush_plugin.layout as config_module
from httppush_plugin import jwtauth
from httppush_plugin.auth import AUTH_TYPES, parse_auth
from httppush_plugin.errors import ConfigError
from httppush_plugin.layout import host_config_path
from httppush_plugin.meta import META_FIELDS
from httppush_plugin.properties import PROPERTIES, EndpointConfig
from httppush_plugin.properties_text import TEXTS
from httppush_plugin.settings import CLIENT_AUTH, DEFAULT_PORTS, SETTINGS, TLS_KEYS, ServerConfig, load_server_config

DEFAULT_MAX_BODY_SIZE = ServerConfig().max_body_size

ROOT = Path(__file__).resolve().parents[1]


def write_server_yaml(plugin_dir: Path, text: str) -> None:
    (plugin_dir / "etc").mkdir(parents=True, exist_ok=True)
    (plugin_dir / "etc" / "kuiper.yaml").write_text(text)


def test_server_defaults_per_symbol(tmp_path: Path) -> None:
    assert load_server_config(tmp_path, "pyhttppush", {}) == ServerConfig(port=10082)
    assert load_server_config(tmp_path, "httppush", {}) == ServerConfig(port=10081)


def test_server_yaml_then_environment(tmp_path: Path) -> None:
    write_server_yaml(tmp_path, "source:\n  httpServerIp: 127.0.0.1\n  httpServerPort: 9000\n"
                                "  httpServerTls:\n    certfile: /c.pem\n    keyfile: /k.pem\n")
    cfg = load_server_config(tmp_path, "pyhttppush", {})
    assert (cfg.ip, cfg.port, cfg.tls.certfile, cfg.address) == ("127.0.0.1", 9000, "/c.pem", "https://127.0.0.1:9000")
    env = {"PYHTTPPUSH_SERVER_PORT": "9100", "PYHTTPPUSH_SERVER_IP": "::1", "HTTPPUSH_SERVER_PORT": "1",
           "KUIPER__SOURCE__HTTPSERVERPORT": "2", "PYHTTPPUSH_SERVER_MAX_BODY_SIZE": "5"}
    cfg = load_server_config(tmp_path, "pyhttppush", env)
    assert (cfg.port, cfg.ip, cfg.max_body_size, cfg.address) == (9100, "::1", 5, "https://[::1]:9100")


@pytest.mark.parametrize("text, needle", [
    ("source:\n  httpServerPort: abc\n", "'httpServerPort' is 'abc'; must be a whole number"),
    ("source:\n  httpServerPort: 70000\n", "must be from 0 to 65535"),
    ("source:\n  httpServerMaxBodySize: 0\n", "must be at least 1"),
    ("source:\n  httpServerTls: {certfile: /c}\n", "needs both 'certfile' and 'keyfile'"),
    ("source: [1\n", "cannot parse"),
    ("source:\n  httpServerMaxBuffered: 1000\n", "'httpServerMaxBuffered' is 1000, less than httpServerMaxBodySize"),
    ("source:\n  httpServerMetricsPath: /healthz\n", "'httpServerMetricsPath' is '/healthz', the same as httpServer"),
    ("source:\n  httpServerHealthPath: health\n", "must be a URL path starting with '/'"),
    ("source: 3\n", "'source:' section"),
])
def test_server_bad_settings(tmp_path: Path, text: str, needle: str) -> None:
    write_server_yaml(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_server_config(tmp_path, "pyhttppush", {})


#: The host's etc/kuiper.yaml as eKuiper ships it (its own data server's settings), plus the plugins' sections.
HOST_YAML = """basic:
  restPort: 9081
source:
  httpServerIp: 0.0.0.0
  httpServerPort: 10081
{extra}portable:
  pythonBin: python3
"""


def host_layout(root: Path, host_section: str = "", symbol: str = "pyhttppush") -> Path:
    """``root`` laid out like an eKuiper host: ``etc/kuiper.yaml`` with ``host_section`` (indented yaml lines under
    ``source:``) and the plugin installed in ``plugins/portable/<symbol>`` with the shipped ``etc/kuiper.yaml`` (for
    httppush; pyhttppush's differs only in its port). Returns the plugin dir."""
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "kuiper.yaml").write_text(HOST_YAML.format(extra=host_section))
    plugin_dir = root / "plugins" / "portable" / symbol
    write_server_yaml(plugin_dir, (ROOT / "etc" / "kuiper.yaml").read_text())
    return plugin_dir


def test_host_settings_between_the_plugins_file_and_the_environment(tmp_path: Path) -> None:
    """Defaults < the plugin's etc/kuiper.yaml < the host's etc/kuiper.yaml source.<symbol> < <SYMBOL>_… variables;
    each symbol reads its own section, and neither reads the built-in's source.httpServerPort."""
    plugin_dir = host_layout(tmp_path, "  pyhttppush:\n    httpServerPort: 10090\n    httpServerMaxBodySize: 2048\n"
                                       "  httppush:\n    httpServerIdleTimeout: 5\n")
    write_server_yaml(plugin_dir, "source:\n  httpServerPort: 10070\n  httpServerIp: 127.0.0.1\n"
                                  "  httpServerIdleTimeout: 30\n")
    cfg = load_server_config(plugin_dir, "pyhttppush", {})
    assert (cfg.port, cfg.max_body_size, cfg.ip, cfg.idle_timeout) == (10090, 2048, "127.0.0.1", 30)
    cfg = load_server_config(plugin_dir, "pyhttppush", {"PYHTTPPUSH_SERVER_PORT": "9100", "PYHTTPPUSH_SERVER_IP": ""})
    assert (cfg.port, cfg.max_body_size, cfg.ip) == (9100, 2048, "127.0.0.1")
    # the httppush zip reads source.httppush: its own section, never the built-in's source.httpServerPort (10081)
    cfg = load_server_config(plugin_dir, "httppush", {})
    assert (cfg.port, cfg.idle_timeout, cfg.max_body_size) == (10070, 5, DEFAULT_MAX_BODY_SIZE)
    # no section for the symbol, or none at all: the plugin's file as before
    (tmp_path / "etc" / "kuiper.yaml").write_text(HOST_YAML.format(extra=""))
    assert load_server_config(plugin_dir, "pyhttppush", {}).port == 10070
    (tmp_path / "etc" / "kuiper.yaml").write_text(HOST_YAML.format(extra="  pyhttppush:\n"))
    assert load_server_config(plugin_dir, "pyhttppush", {}).port == 10070


def test_host_settings_survive_a_reinstall(tmp_path: Path) -> None:
    """A reinstall replaces the plugin folder, its etc/kuiper.yaml included; the host's file is not the plugin's."""
    plugin_dir = host_layout(tmp_path, "  pyhttppush:\n    httpServerPort: 10090\n")
    write_server_yaml(plugin_dir, "source:\n  httpServerPort: 10070\n  httpServerMaxBodySize: 99\n")
    before = load_server_config(plugin_dir, "pyhttppush", {})
    shutil.rmtree(plugin_dir)  # DELETE /plugins/portables/pyhttppush, then POST it again:
    write_server_yaml(plugin_dir, (ROOT / "etc" / "kuiper.yaml").read_text())
    after = load_server_config(plugin_dir, "pyhttppush", {})
    assert (before.port, before.max_body_size) == (10090, 99)
    assert (after.port, after.max_body_size) == (10090, DEFAULT_MAX_BODY_SIZE)


def test_host_file_is_found_where_kuiperd_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$KuiperBaseKey/etc/kuiper.yaml first (kuiperd's base folder), else <host root>/etc/kuiper.yaml, else for the
    deb/rpm layout (plugins in /var/lib/kuiper/plugins) /etc/kuiper/kuiper.yaml; never the plugin's own file."""
    plugin_dir = host_layout(tmp_path / "host", "  pyhttppush:\n    httpServerPort: 10090\n")
    base = tmp_path / "base"
    assert host_config_path(plugin_dir, {}) == tmp_path / "host" / "etc" / "kuiper.yaml"
    assert host_config_path(plugin_dir, {"KuiperBaseKey": str(base)}) == tmp_path / "host" / "etc" / "kuiper.yaml"
    (base / "etc").mkdir(parents=True)
    (base / "etc" / "kuiper.yaml").write_text(HOST_YAML.format(extra="  pyhttppush:\n    httpServerPort: 10095\n"))
    assert load_server_config(plugin_dir, "pyhttppush", {"KuiperBaseKey": str(base)}).port == 10095
    assert load_server_config(plugin_dir, "pyhttppush", {}).port == 10090

    absolute_root = tmp_path / "var-lib-kuiper"
    absolute_conf = tmp_path / "etc-kuiper" / "kuiper.yaml"
    monkeypatch.setattr(config_module, "ABSOLUTE_HOST_ROOT", absolute_root)
    monkeypatch.setattr(config_module, "ABSOLUTE_HOST_CONFIG", absolute_conf)
    packaged = absolute_root / "plugins" / "portable" / "pyhttppush"
    write_server_yaml(packaged, (ROOT / "etc" / "kuiper.yaml").read_text())
    assert host_config_path(packaged, {}) is None
    absolute_conf.parent.mkdir()
    absolute_conf.write_text(HOST_YAML.format(extra="  pyhttppush:\n    httpServerPort: 10096\n"))
    assert load_server_config(packaged, "pyhttppush", {}).port == 10096
    # a plugin folder too shallow to have a host root: its own file is read once, as the plugin's
    write_server_yaml(tmp_path / "shallow", "source:\n  pyhttppush: {httpServerPort: 1}\n  httpServerPort: 10070\n")
    monkeypatch.setattr(config_module, "host_root", lambda plugin_dir: plugin_dir)
    assert host_config_path(tmp_path / "shallow", {}) is None
    assert load_server_config(tmp_path / "shallow", "pyhttppush", {}).port == 10070


@pytest.mark.parametrize("host_section, env, needle", [
    ("  pyhttppush:\n    httpServerPort: abc\n", {},
     "setting 'httpServerPort' is 'abc'; must be a whole number (from {host}, key 'source.pyhttppush.httpServerPort')"),
    ("  pyhttppush:\n    httpServerReadBodyTimeout: 0\n", {},
     "(from {host}, key 'source.pyhttppush.httpServerReadBodyTimeout')"),
    ("  pyhttppush:\n    httpServerPort: 10090\n", {"PYHTTPPUSH_SERVER_PORT": "70000"},
     "setting 'httpServerPort' is 70000; must be from 0 to 65535 (from environment variable PYHTTPPUSH_SERVER_PORT)"),
    ("", {"PYHTTPPUSH_SERVER_MAX_BODY_SIZE": "0"}, "(from environment variable PYHTTPPUSH_SERVER_MAX_BODY_SIZE)"),
    ("  pyhttppush:\n    httpServerTls: {certfile: /c.pem}\n", {},
     "needs both 'certfile' and 'keyfile' (from {host}, key 'source.pyhttppush.httpServerTls')"),
    ("  pyhttppush:\n    httpServerTls: {certfile: /c.pem}\n", {"PYHTTPPUSH_TLS_CAFILE": "/ca.pem"},
     "(from {host}, key 'source.pyhttppush.httpServerTls'; environment variable PYHTTPPUSH_TLS_CAFILE)"),
    ("  pyhttppush:\n    httpServerTls: {certfile: /c.pem, keyfile: /k.pem}\n",
     {"PYHTTPPUSH_TLS_CLIENT_AUTH": "sometimes"},
     "'httpServerTls.clientAuth' is 'sometimes'; must be none, optional or required "
     "(from environment variable PYHTTPPUSH_TLS_CLIENT_AUTH)"),
    ("  pyhttppush:\n    httpServerTls: {certfile: /c.pem, keyfile: /k.pem, clientAuth: sometimes}\n", {},
     "(from {host}, key 'source.pyhttppush.httpServerTls')"),
    ("  pyhttppush:\n    httpServerTls: /c.pem\n", {},
     "setting 'httpServerTls' is '/c.pem'; must be a mapping with 'certfile' and 'keyfile' (from {host}, key "
     "'source.pyhttppush.httpServerTls')"),
    ("  pyhttppush:\n    httpserverport: 10090\n", {},
     "{host}, key 'source.pyhttppush.httpserverport' is not a setting of this plugin; did you mean 'httpServerPort'?"),
    ("  pyhttppush:\n    port: 10090\n", {},
     "{host}, key 'source.pyhttppush.port' is not a setting of this plugin; the settings are httpServerIp, "
     "httpServerPort, "),
    ("  pyhttppush: 10090\n", {},
     "{host}, key 'source.pyhttppush' is 10090; must be a mapping of settings, e.g. {httpServerPort: 10090}"),
])
def test_host_settings_errors_name_file_and_key(tmp_path: Path, host_section: str, env: dict, needle: str) -> None:
    plugin_dir = host_layout(tmp_path, host_section)
    with pytest.raises(ConfigError) as caught:
        load_server_config(plugin_dir, "pyhttppush", env)
    assert needle.replace("{host}", str(tmp_path / "etc" / "kuiper.yaml")) in str(caught.value)


def test_host_examples_as_documented(tmp_path: Path) -> None:
    """docs/configuration.md's block for eKuiper's kuiper.yaml and the shipped file's header example work as pasted."""
    doc = (ROOT / "docs" / "configuration.md").read_text()
    block = doc.split("## The shared server", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    plugin_dir = host_layout(tmp_path)
    (tmp_path / "etc" / "kuiper.yaml").write_text(block)
    cfg = load_server_config(plugin_dir, "pyhttppush", {})
    assert (cfg.port, cfg.max_body_size, cfg.tls) == (10090, 1048576, None)
    assert load_server_config(plugin_dir, "httppush", {}).port == DEFAULT_PORTS["httppush"]
    shipped = (ROOT / "etc" / "kuiper.yaml").read_text().splitlines()
    header = "\n".join(line[2:] for line in shipped if line.startswith("#   "))
    assert yaml.safe_load(header) == {"source": {"pyhttppush": {"httpServerPort": 10090}}}


def test_plugin_file_errors_name_file_and_key(tmp_path: Path) -> None:
    plugin_dir = host_layout(tmp_path)
    write_server_yaml(plugin_dir, "source:\n  httpServerPort: abc\n")
    with pytest.raises(ConfigError, match=re.escape(
            f"(from {plugin_dir / 'etc' / 'kuiper.yaml'}, key 'source.httpServerPort')")):
        load_server_config(plugin_dir, "pyhttppush", {})
    (tmp_path / "etc" / "kuiper.yaml").write_text("source: [1\n")
    with pytest.raises(ConfigError, match=re.escape(f"cannot parse {tmp_path / 'etc' / 'kuiper.yaml'}")):
        load_server_config(plugin_dir, "pyhttppush", {})


def test_endpoint_from_ekuiper_config() -> None:
    cfg = EndpointConfig.from_props({"datasource": "/a", "method": "put", "format": "JSON", "delimiter": "",
                                     "schemaId": "", "retainSize": 0, "interval": 0})
    assert (cfg.path, cfg.method, cfg.format, cfg.delimiter) == ("/a", "PUT", "json", ",")
    assert EndpointConfig.from_props({}, datasource="/legacy").path == "/legacy"  # 1.x: the SDK's datasource arg
    custom = EndpointConfig.from_props({"datasource": "/c", "format": "json", "decoder": "kv:decode"})
    assert (custom.format, custom.decoder) == ("custom", "kv:decode")
    legacy = EndpointConfig.from_props({"datasource": "/c", "format": "custom", "schemaId": "mod.sub.fn"})
    assert legacy.decoder == "mod.sub:fn"


@pytest.mark.parametrize("props, needle", [
    ({"datasource": ""}, "DATASOURCE is ''; must be the URL path"),
    ({"datasource": "a/b"}, "DATASOURCE is 'a/b'"),
    ({"datasource": "/a", "method": "GET"}, "property 'method' is 'GET'; must be POST or PUT"),
    ({"datasource": "/a", "format": "avro"}, "FORMAT is 'avro'; must be one of"),
    ({"datasource": "/a", "format": "protobuf", "schemaId": "nodot"}, "needs \"<file>.<Message>\""),
    ({"datasource": "/a", "format": "custom", "schemaId": "x"}, "FORMAT=\"custom\" needs"),
    ({"datasource": "/a", "fields": 3}, "property 'fields' is 3"),
    ({"datasource": "/a", "fields": ["a", ""]}, "every column name must be a non-empty string"),
])
def test_endpoint_errors_name_key_value_and_rule(props: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        EndpointConfig.from_props(props)


def _gen_config() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config", ROOT / "scripts" / "gen_config.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_files_are_current() -> None:
    """etc/kuiper.yaml, etc/sources/httppush.yaml|json and docs/configuration.md's tables are what the generator writes
    from the settings and properties tables (run ``python3 scripts/gen_config.py`` after changing a table)."""
    gen = _gen_config()
    assert gen.stale() == [], "not current: run python3 scripts/gen_config.py"


def test_the_generator_notices_a_file_edited_by_hand() -> None:
    """The check above can fail: a default, an environment name or a property changed in a file alone is caught."""
    gen = _gen_config()
    for path, before, after in (
            (gen.SERVER_YAML, "httpServerMaxBodySize: 10485760", "httpServerMaxBodySize: 1048576"),
            (gen.SOURCES_YAML, "  method: POST\n", "  method: PUT\n"),
            (gen.SOURCES_JSON, '"name": "metaQuery"', '"name": "metaquery"'),
            (gen.CONFIGURATION_MD, "`PYHTTPPUSH_SERVER_IDLE_TIMEOUT`", "`PYHTTPPUSH_IDLE_TIMEOUT`")):
        text = path.read_text()
        assert before in text, (path, before)
        edited = text.replace(before, after, 1)
        assert gen.TARGETS[path](edited) == text, path


def test_shipped_files_agree(tmp_path: Path) -> None:
    """What the plugin reads back from the shipped files is the tables' defaults; the UI knows every yaml key (else
    the host lowercases it); the README's zip table names each zip's symbol and port."""
    for symbol, port in DEFAULT_PORTS.items():
        plugin_dir = tmp_path / symbol / "plugins" / "portable" / symbol
        write_server_yaml(plugin_dir, (ROOT / "etc" / "kuiper.yaml").read_text().replace(
            f"httpServerPort: {DEFAULT_PORTS['httppush']}", f"httpServerPort: {port}"))  # as scripts/package.py does
        assert load_server_config(plugin_dir, symbol, {}) == ServerConfig(port=port)
    server = yaml.safe_load((ROOT / "etc" / "kuiper.yaml").read_text())["source"]
    assert list(server) == [setting.name for setting in SETTINGS]

    groups = yaml.safe_load((ROOT / "etc" / "sources" / "httppush.yaml").read_text())
    ui = {prop["name"]: prop for prop in json.loads((ROOT / "etc" / "sources" / "httppush.json").read_text())[
        "properties"]["default"]}
    assert list(groups["default"]) == list(ui) == [prop.name for prop in PROPERTIES]
    assert {name: prop["default"] for name, prop in ui.items()} == groups["default"]
    assert EndpointConfig.from_props({"datasource": "/a", **groups["default"]}) == EndpointConfig(path="/a")
    assert EndpointConfig.from_props({"datasource": "/a", **groups["put"]}).method == "PUT"
    assert ui["meta"]["values"] == list(META_FIELDS)
    assert set(TEXTS) == {prop.name for prop in PROPERTIES}
    for name in META_FIELDS:
        assert name in TEXTS["meta"].doc and name in TEXTS["meta"].hint_en, name
    for kind in AUTH_TYPES[1:]:
        assert f"type: {kind}" in TEXTS["auth"].doc and kind in TEXTS["auth"].hint_en, kind
    assert parse_auth(groups["default"]["auth"]) is None

    readme = (ROOT / "README.md").read_text()
    # the "Which zip" table: | `dist/<variant>.zip` | `<variant>` | <port> | …
    zip_rows = {cells[1]: cells for cells in (
        [cell.strip(" `*") for cell in line.split("|")] for line in readme.splitlines() if line.startswith("| `dist/"))}
    assert set(zip_rows) == {f"dist/{variant}.zip" for variant in DEFAULT_PORTS}
    for variant, port in DEFAULT_PORTS.items():
        assert zip_rows[f"dist/{variant}.zip"][2:4] == [variant, str(port)], f"README's zip table on {variant}"
        assert f"{port} ({variant})" in next(s.shown for s in SETTINGS if s.name == "httpServerPort"), variant
    for value in CLIENT_AUTH:
        assert value in dict((key, text) for key, _, _, text in TLS_KEYS)["clientAuth"], value


def test_auth_examples_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """The auth groups in docs/auth.md's block and in the shipped yaml's comments are valid as pasted."""
    for name in ("BOB_PASSWORD", "GATEWAY8_TOKEN", "TOKEN_B", "GITHUB_WEBHOOK_SECRET", "SIGNING_SECRET"):
        monkeypatch.setenv(name, "from-the-environment")
    monkeypatch.setattr(jwtauth, "KeySet", lambda *args: None)  # the jwt example's file and URL are placeholders
    doc = (ROOT / "docs" / "auth.md").read_text()
    block = doc.split("# Authentication", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    shipped = (ROOT / "etc" / "sources" / "httppush.yaml").read_text()
    commented = "\n".join(line[2:] for line in shipped.splitlines() if line.startswith("# ") and (
        line.startswith("#  ") or line.rstrip().endswith(":")))
    for source, groups in (("docs/auth.md", yaml.safe_load(block)), ("httppush.yaml", yaml.safe_load(commented))):
        kinds = {parse_auth(group["auth"]).kind for group in groups.values()}  # type: ignore[union-attr]
        assert kinds == set(AUTH_TYPES[1:]), f"{source}: auth examples cover {kinds}"
        for group in groups.values():
            EndpointConfig.from_props({"datasource": "/a", **group})


def test_health_and_metrics_paths_and_idempotency_settings(tmp_path: Path) -> None:
    write_server_yaml(tmp_path, "source:\n  httpServerHealthPath: /-/ready\n  httpServerMetricsPath: off\n")
    cfg = load_server_config(tmp_path, "pyhttppush", {})
    assert (cfg.health_path, cfg.metrics_path) == ("/-/ready", "")
    env = {"PYHTTPPUSH_SERVER_METRICS_PATH": "/m", "PYHTTPPUSH_SERVER_HEALTH_PATH": "false"}
    cfg = load_server_config(tmp_path, "pyhttppush", env)
    assert (cfg.health_path, cfg.metrics_path) == ("", "/m")
    on = EndpointConfig.from_props({"datasource": "/a", "idempotency": {"window": 30, "maxkeys": 5}})
    assert on.idempotency is not None and (on.idempotency.window, on.idempotency.max_keys) == (30, 5)
    assert EndpointConfig.from_props({"datasource": "/a", "idempotency": True}).idempotency is not None
    for off in (None, False, {}, "false"):
        assert EndpointConfig.from_props({"datasource": "/a", "idempotency": off}).idempotency is None
    for bad, needle in (({"window": 0}, "property 'idempotency.window' is 0"),
                        ({"maxKeys": -1}, "property 'idempotency.maxKeys' is -1"),
                        ({"ttl": 5}, "has key 'ttl'"), ("sometimes", "must be true or a mapping")):
        with pytest.raises(ConfigError, match=re.escape(needle)):
            EndpointConfig.from_props({"datasource": "/a", "idempotency": bad})


def test_balancer_settings(tmp_path: Path) -> None:
    """The admin token and path, the drain's grace, connection max age and requests (docs/scaling.md)."""
    cfg = load_server_config(tmp_path, "pyhttppush", {})
    assert (cfg.admin_path, cfg.admin_token, cfg.drain_grace) == ("/admin", "", 10.0)
    assert (cfg.max_connection_age, cfg.max_connection_requests) == (0.0, 0)  # off
    env = {"PYHTTPPUSH_SERVER_ADMIN_TOKEN": "t" * 16, "PYHTTPPUSH_SERVER_ADMIN_PATH": "/-/admin",
           "PYHTTPPUSH_SERVER_DRAIN_GRACE": "0", "PYHTTPPUSH_SERVER_MAX_CONNECTION_AGE": "300",
           "PYHTTPPUSH_SERVER_MAX_CONNECTION_REQUESTS": "1000"}
    cfg = load_server_config(tmp_path, "pyhttppush", env)
    assert (cfg.admin_path, cfg.admin_token, cfg.drain_grace) == ("/-/admin", "t" * 16, 0.0)
    assert (cfg.max_connection_age, cfg.max_connection_requests) == (300.0, 1000)
    for name, value, needle in (
            ("ADMIN_TOKEN", "short", "httpServerAdminToken' must be at least 16 printable characters"),
            ("ADMIN_TOKEN", "has a space in it!", "without spaces"),
            ("ADMIN_PATH", "admin", "must be a URL path"),
            ("MAX_CONNECTION_REQUESTS", "-1", "httpServerMaxConnectionRequests' is -1"),
            ("MAX_CONNECTION_AGE", "forever", "httpServerMaxConnectionAge' is 'forever'")):
        with pytest.raises(ConfigError, match=re.escape(needle)):
            load_server_config(tmp_path, "pyhttppush", {f"PYHTTPPUSH_SERVER_{name}": value})
    with pytest.raises(ConfigError, match="its actions .* take the health or metrics path"):
        load_server_config(tmp_path, "pyhttppush", {"PYHTTPPUSH_SERVER_ADMIN_PATH": "/",
                                                    "PYHTTPPUSH_SERVER_HEALTH_PATH": "/drain"})


def test_restart_grace_setting(tmp_path: Path) -> None:
    assert load_server_config(tmp_path, "pyhttppush", {}).restart_grace == 2.0
    for value, expected in (("0", 0.0), ("0.0", 0.0), ("off", 0.0), ("false", 0.0), ("1.5", 1.5)):
        env = {"PYHTTPPUSH_SERVER_RESTART_GRACE": value}
        assert load_server_config(tmp_path, "pyhttppush", env).restart_grace == expected, value
    write_server_yaml(tmp_path, "source:\n  httpServerRestartGrace: 0\n")
    assert load_server_config(tmp_path, "pyhttppush", {}).restart_grace == 0.0
    for bad in ("-1", "soon", "90000"):
        with pytest.raises(ConfigError, match=re.escape(f"setting 'httpServerRestartGrace' is '{bad}'")):
            load_server_config(tmp_path, "pyhttppush", {"PYHTTPPUSH_SERVER_RESTART_GRACE": bad})
