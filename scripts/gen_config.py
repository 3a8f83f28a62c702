#!/usr/bin/env python3
"""Write the shipped configuration files and the documentation tables from the one source of truth: the server
settings table (``httppush_plugin/settings.py``) and the endpoint properties table (``httppush_plugin/properties.py``
with its words in ``properties_text.py``).

What it writes, each between ``BEGIN GENERATED`` / ``END GENERATED`` marker lines of the file (the prose around them
is the file's own):
- ``etc/kuiper.yaml``: the ``source:`` section, one commented line block per setting;
- ``etc/sources/httppush.yaml``: the ``default`` group, one commented block per property;
- ``etc/sources/httppush.json``: ``properties.default``, eKuiper's UI metadata (English and Chinese);
- ``docs/configuration.md``: the settings table and the properties table.

Usage: ``python3 scripts/gen_config.py`` rewrites them; ``--check`` only says which are not current (exit 1), which
``tests/test_config.py`` runs, so a change to a table without the files, or to a file by hand, fails the suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from httppush_plugin.properties import PROPERTIES  # noqa: E402
from httppush_plugin.properties_text import TEXTS  # noqa: E402
from httppush_plugin.settings import SETTINGS, TLS_KEYS, TLS_SETTING, TLS_TEXT  # noqa: E402

SERVER_YAML = ROOT / "etc" / "kuiper.yaml"
SOURCES_YAML = ROOT / "etc" / "sources" / "httppush.yaml"
SOURCES_JSON = ROOT / "etc" / "sources" / "httppush.json"
CONFIGURATION_MD = ROOT / "docs" / "configuration.md"
WIDTH = 118
SYMBOLS = ("PYHTTPPUSH", "HTTPPUSH")  # the two zips' environment prefixes, as the docs show them


def _value(value: Any) -> str:
    """A value as the yaml files show it: ``10`` for 10.0, ``[]``, ``{}``, ``""``, ``POST``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if value == "":
        return '""'
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def _comment(text: str, indent: int) -> list[str]:
    prefix = " " * indent + "# "
    return textwrap.wrap(text, WIDTH, initial_indent=prefix, subsequent_indent=prefix, break_on_hyphens=False,
                         break_long_words=False)


def server_yaml_block() -> str:
    lines = ["source:"]
    for setting in SETTINGS:
        shown = setting.shown or _value(setting.default)
        lines += _comment(f"{setting.text} Default {shown}. Environment: <SYMBOL>_{setting.env}.", 2)
        lines.append(f"  {setting.name}: {_value(setting.default)}")
    lines += _comment(TLS_TEXT, 2)
    for key, env, _, text in TLS_KEYS:
        lines += _comment(f"{key}: {text} Environment: <SYMBOL>_{env}.", 2)
    lines.append(f"  # {TLS_SETTING}:")
    lines += [f"  #   {key}: {example}" for key, _, example, _ in TLS_KEYS]
    return "\n".join(lines) + "\n"


def _example(doc: str) -> tuple[str, str]:
    """A property's words and the example they end with (``Example: …``), apart."""
    text, _, example = doc.partition(" Example: ")
    return text, example


def sources_yaml_block() -> str:
    lines = ["default:"]
    for prop in PROPERTIES:
        text, example = _example(TEXTS[prop.name].doc)
        lines += _comment(text, 2)
        if example:
            lines += _comment(f"Example: {example}", 2)
        lines.append(f"  {prop.name}: {_value(prop.default)}")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    """Plain text in a markdown table cell: angle brackets, pipes and stars shown as written."""
    return text.replace("<", "&lt;").replace("|", "\\|").replace("*", "\\*")


def settings_table() -> str:
    rows = ["| setting | default | environment | meaning |", "|---|---|---|---|"]
    for setting in SETTINGS:
        shown = setting.shown or f"`{_value(setting.default)}`"
        env = " / ".join(f"`{symbol}_{setting.env}`" for symbol in SYMBOLS)
        rows.append(f"| `{setting.name}` | {shown} | {env} | {_md(setting.text)} |")
    env = ", ".join(f"`{SYMBOLS[0]}_{env}`" for _, env, _, _ in TLS_KEYS)
    keys = " ".join(f"`{key}`: {_md(text)}" for key, _, _, text in TLS_KEYS)
    rows.append(f"| `{TLS_SETTING}` | unset (HTTP) | {env} (`{SYMBOLS[1]}_…` likewise) | {_md(TLS_TEXT)} {keys} |")
    return "\n".join(rows) + "\n"


def properties_table() -> str:
    rows = ["| property | default | meaning |", "|---|---|---|"]
    for prop in PROPERTIES:
        words = TEXTS[prop.name]
        text, example = _example(words.doc)
        example = f" Example: `{example}`" if example else ""
        more = f" ([more]({words.see}))" if words.see else ""
        rows.append(f"| `{prop.name}` | `{_value(prop.default)}` | {_md(text)}{example}{more} |")
    return "\n".join(rows) + "\n"


def ui_json(current: str) -> str:
    """The UI metadata: ``properties.default`` from the table; ``about``, ``dataSource`` and ``node`` as they are."""
    meta = json.loads(current)
    entries = []
    for prop in PROPERTIES:
        words = TEXTS[prop.name]
        entry: dict[str, Any] = {"name": prop.name, "default": prop.default, "optional": True,
                                 "control": prop.control, "type": prop.type}
        if prop.values:
            entry["values"] = list(prop.values)
        entry["hint"] = {"en_US": words.hint_en, "zh_CN": words.hint_zh}
        entry["label"] = {"en_US": words.label_en, "zh_CN": words.label_zh}
        entries.append(entry)
    meta["properties"] = {"default": entries}
    return json.dumps(meta, indent=2, ensure_ascii=False) + "\n"


def _between(begin: str, end: str, block: Callable[[], str]) -> Callable[[str], str]:
    """A rewrite of the text between the line starting with ``begin`` and the line starting with ``end``."""

    def rewrite(current: str) -> str:
        lines = current.splitlines(keepends=True)
        starts = [i for i, line in enumerate(lines) if line.startswith(begin)]
        ends = [i for i, line in enumerate(lines) if line.startswith(end)]
        if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
            raise SystemExit(f"expected one line starting {begin!r} and, after it, one starting {end!r}")
        return "".join(lines[: starts[0] + 1]) + block() + "".join(lines[ends[0]:])

    return rewrite


#: file → how its current text becomes the generated one
TARGETS: dict[Path, Callable[[str], str]] = {
    SERVER_YAML: _between("# BEGIN GENERATED: server settings", "# END GENERATED: server settings",
                          server_yaml_block),
    SOURCES_YAML: _between("# BEGIN GENERATED: endpoint properties", "# END GENERATED: endpoint properties",
                           sources_yaml_block),
    SOURCES_JSON: ui_json,
    CONFIGURATION_MD: lambda text: _between("<!-- BEGIN GENERATED: endpoint properties",
                                            "<!-- END GENERATED: endpoint properties", properties_table)(
        _between("<!-- BEGIN GENERATED: server settings", "<!-- END GENERATED: server settings",
                 settings_table)(text)),
}


def stale() -> list[Path]:
    """The files whose committed text is not what this script writes."""
    return [path for path, rewrite in TARGETS.items() if rewrite(path.read_text(encoding="utf-8")) !=
            path.read_text(encoding="utf-8")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is not current; write nothing")
    args = parser.parse_args()
    if args.check:
        old = stale()
        for path in old:
            print(f"{path.relative_to(ROOT)} is not current: run python3 scripts/gen_config.py")
        raise SystemExit(1 if old else 0)
    for path, rewrite in TARGETS.items():
        text = path.read_text(encoding="utf-8")
        new = rewrite(text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
