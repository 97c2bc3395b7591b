"""The product imports nothing that only measures or imitates it (issue 17).

Benchmarks, and the fakes the benchmarks share with the tests, live in
``multa_broker/bench/``; fakes only tests use live in ``tests/support/``.
The rest of ``multa_broker`` -- the product -- imports neither. The one
doorway is ``multa_broker/commands/bench.py`` (``multa bench``), which may
reach the bench package only lazily, inside a function, never at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "multa_broker"
BENCH = "multa_broker.bench"
DOORWAY = PKG / "commands" / "bench.py"
# Top-level names of the test tree: its folders and modules (tests/support, test_*.py, conftest).
TEST_NAMES = {"tests", "conftest"} | {p.stem for p in (ROOT / "tests").iterdir()
                                      if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, package: str | None = None) -> list[tuple[str, int, bool]]:
    """(absolute module name, line, at module level) of every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    if package is None:
        package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    top_level = {id(n) for n in tree.body}
    # An import inside `if TYPE_CHECKING:` / try at module level still runs (or is read) at import time.
    for n in tree.body:
        if isinstance(n, (ast.If, ast.Try)):
            top_level |= {id(c) for c in ast.walk(n)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in top_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
            found += [(m, node.lineno, id(node) in top_level) for m in names]
    return found


def _is_bench(mod: str) -> bool:
    return mod == BENCH or mod.startswith(BENCH + ".")


def _is_tests(mod: str) -> bool:
    return mod.split(".")[0] in TEST_NAMES


def _product_files() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if (PKG / "bench") not in p.parents)


def test_the_product_imports_neither_the_bench_package_nor_tests():
    offenders = []
    for path in _product_files():
        for mod, line, top in _imports(path):
            where = f"{path.relative_to(ROOT)}:{line}: {mod}"
            if _is_tests(mod):
                offenders.append(where)
            elif _is_bench(mod) and (path != DOORWAY or top):
                offenders.append(where)
    assert offenders == []


def test_the_doorway_names_only_bench_modules_that_exist():
    from multa_broker.commands.bench import BENCHES

    for name, (module, _) in BENCHES.items():
        assert _is_bench(module), name
        assert (ROOT / (module.replace(".", "/") + ".py")).exists(), module


def test_the_check_sees_imports_of_every_form(tmp_path):
    # The parser above must catch absolute, relative and lazy imports alike.
    probe = tmp_path / "probe.py"
    probe.write_text("from ..bench import zeek\nimport multa_broker.bench.flows\n"
                     "def f():\n    from multa_broker.bench.fakezeek import FakeZeek\n    import support.bridge\n")
    found = _imports(probe, package="multa_broker.commands")
    assert [top for _, _, top in found] == [True, True, True, False, False, False]
    mods = {m for m, _, _ in found}
    assert {"multa_broker.bench", "multa_broker.bench.zeek", "multa_broker.bench.flows",
            "multa_broker.bench.fakezeek", "support.bridge"} <= mods
    assert all(_is_bench(m) or _is_tests(m) for m in mods)
