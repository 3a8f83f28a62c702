"""The package's shape: every module imports only modules below it in the stage order (so there is no import cycle),
the protocol knows nothing of the application but the types they exchange, and every module stays small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "httppush_plugin"

#: Lowest first: a module may import only modules listed before it. The decoders package is one stage (its own
#: modules import its ``base``).
STAGES = (
    "errors", "answers", "request", "values", "layout", "budget", "drain", "metrics",
    "credentials", "signatures", "jwks", "jwtauth", "auth", "backoff", "ratelimit", "headers", "cors", "idempotency",
    "meta",
    "fieldtypes", "properties_text", "properties", "settingsfile", "tlsconfig", "settings",
    "decoders", "schema", "framing", "encoding", "delivery", "channel", "templates", "routing",
    "fanout", "admin", "offload", "app",
    "incoming", "wire", "connections", "protocol",
    "certificates", "server", "streamschema", "source",
)
#: What the protocol may know of the rest of the package: the request/answer vocabulary, the byte limits, the wire.
PROTOCOL_IMPORTS = {"answers", "request", "connections", "incoming", "wire"}
MAX_LINES = 350


def _modules() -> dict[str, Path]:
    found = {path.stem: path for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    found.update({f"decoders.{path.stem}": path for path in (PACKAGE / "decoders").glob("*.py")})
    return found


def _stage(module: str) -> str:
    return module.split(".", 1)[0]


def _imports(module: str, path: Path) -> set[str]:
    """The package modules ``module`` imports (``from .x import``, ``from ..x import``, ``from . import x``)."""
    inside_decoders = module.startswith("decoders.")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            if isinstance(node, ast.ImportFrom | ast.Import) and any(
                    alias.name.startswith("httppush_plugin") for alias in node.names) or (
                    isinstance(node, ast.ImportFrom) and (node.module or "").startswith("httppush_plugin")):
                found.add("<absolute import of httppush_plugin>")
            continue
        base = node.module or ""
        if not base and [alias.name for alias in node.names] == ["__version__"]:
            continue  # the package's version string: no code
        if node.level == 1 and inside_decoders:
            found.add(f"decoders.{base}" if base else "decoders")
        elif node.level == 2 or (node.level == 1 and not inside_decoders):
            found.add(base.split(".", 1)[0] if base else node.names[0].name)
    return found


def test_every_module_has_a_stage() -> None:
    assert {_stage(module) for module in _modules()} == set(STAGES)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_go_down_the_stages(module: str) -> None:
    here = STAGES.index(_stage(module))
    for imported in _imports(module, _modules()[module]):
        assert not imported.startswith("<"), f"{module}: {imported}"
        if _stage(imported) == "decoders" and _stage(module) == "decoders":
            assert imported == "decoders.base" or module == "decoders.__init__", f"{module} imports {imported}"
            continue
        assert STAGES.index(_stage(imported)) < here, f"{module} imports {imported}, which is not below it"


def test_the_protocol_knows_only_the_exchange() -> None:
    assert _imports("protocol", PACKAGE / "protocol.py") <= PROTOCOL_IMPORTS


@pytest.mark.parametrize("module", sorted(_modules()))
def test_modules_stay_small(module: str) -> None:
    lines = len(_modules()[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines; split it by noun"
