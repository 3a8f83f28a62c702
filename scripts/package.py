#!/usr/bin/env python3
"""Build the installable plugin zips from one tree: ``dist/pyhttppush.zip`` and ``dist/httppush.zip``.

Layout of a zip (what eKuiper's installer wants, internal/plugin/portable/manager.go): at the root, with no top
folder, ``<name>.json``, the executable ``main.py``, ``sources/<symbol>.yaml|json`` (copied by the host into its
``etc/sources``), ``install.sh``; everything else lands in ``plugins/portable/<name>/``.

Usage: ``python3 scripts/package.py [--out dist] [VARIANT ...]`` (default: both variants).
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from httppush_plugin.settings import DEFAULT_PORTS  # noqa: E402

VARIANTS = tuple(DEFAULT_PORTS)
# Files of the plugin folder: (source in the repo, name in the zip)
PLAIN_FILES = [("main.py", "main.py"), ("install.sh", "install.sh"), ("requirements.txt", "requirements.txt"),
               ("requirements-optional.txt", "requirements-optional.txt")]
# A fixed timestamp keeps the zips byte-identical from one build to the next
STAMP = (2024, 1, 1, 0, 0, 0)


def _add(zf: zipfile.ZipFile, name: str, data: bytes, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, STAMP)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o755 if executable else 0o644) << 16
    zf.writestr(info, data)


def build(variant: str, out_dir: Path) -> Path:
    port = DEFAULT_PORTS[variant]
    descriptor = json.loads((ROOT / "plugin.json").read_text())
    descriptor["sources"] = [variant]
    server_yaml = (ROOT / "etc" / "kuiper.yaml").read_text()
    default_line = f"httpServerPort: {DEFAULT_PORTS['httppush']}\n"
    if default_line not in server_yaml:
        raise SystemExit(f"etc/kuiper.yaml has no line '{default_line.strip()}' to set the port from")
    server_yaml = server_yaml.replace(default_line, f"httpServerPort: {port}\n", 1)
    meta = (ROOT / "etc" / "sources" / "httppush.json").read_text().replace("{{PORT}}", str(port))

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{variant}.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        _add(zf, f"{variant}.json", (json.dumps(descriptor, indent=2) + "\n").encode())
        for src, name in PLAIN_FILES:
            _add(zf, name, (ROOT / src).read_bytes(), executable=name.endswith(".sh"))
        for path in sorted((ROOT / "httppush_plugin").rglob("*.py")):
            _add(zf, path.relative_to(ROOT).as_posix(), path.read_bytes())
        _add(zf, "etc/kuiper.yaml", server_yaml.encode())
        for path in sorted((ROOT / "etc" / "decoders").glob("*.py")):
            _add(zf, f"decoders/{path.name}", path.read_bytes())
        _add(zf, f"sources/{variant}.yaml", (ROOT / "etc" / "sources" / "httppush.yaml").read_bytes())
        _add(zf, f"sources/{variant}.json", meta.encode())
    tmp.replace(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", metavar="VARIANT", help=f"one of {', '.join(VARIANTS)}")
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    args = parser.parse_args()
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}")
    for variant in args.variants or VARIANTS:
        print(build(variant, args.out))


if __name__ == "__main__":
    main()
