"""The import rules of STYLE.md, checked: Ray stays at the edge, heavy libraries load lazily."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import invoicelab

EDGE = ("invoicelab.orchestrator", "invoicelab.actors.ray_actors", "invoicelab.cli")


def modules() -> list[str]:
    root = Path(invoicelab.__file__).parent
    return sorted(m.name for m in pkgutil.walk_packages([str(root)], prefix="invoicelab."))


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_everything_but_the_ray_edge_imports_with_ray_blocked():
    inner = [m for m in modules() if not m.startswith(EDGE)]
    assert "invoicelab.actors.extractor" in inner and "invoicelab.config" in inner
    code = "import sys; sys.modules['ray'] = None\n" + "\n".join(f"import {m}" for m in inner)
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr


def test_cli_help_imports_no_heavy_library():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom invoicelab.cli import main\n"
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output\n"
            "heavy = [m for m in ('ray', 'torch', 'transformers', 'rapidocr', 'pandas') if m in sys.modules]\n"
            "assert not heavy, heavy")
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr


def test_backend_registry_matches_config_names():
    from invoicelab.backends import REGISTRY, backend_class
    from invoicelab.config import BACKENDS

    assert set(REGISTRY) == set(BACKENDS)
    for name in REGISTRY:
        assert hasattr(backend_class(name), "extract")
