"""The house's rules: import contracts that can fail, no unittest in product code, a short spine."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from experiments import PROJECT_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def copy_of_the_package(tmp_path: Path) -> Path:
    shutil.copytree(
        PROJECT_ROOT / "experiments", tmp_path / "experiments", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_planted_imports_break_the_contracts(tmp_path):
    """The contracts can fail: an upward import and TensorFlow in report, planted in a copy of the
    package, break all three, each named. (That they hold on the package itself is `make lint`'s
    lint-imports, the only other run: one run of import-linter builds the whole import graph.)"""
    root = copy_of_the_package(tmp_path)
    with (root / "experiments" / "data" / "loaders.py").open("a", encoding="utf-8") as f:
        f.write("\nfrom experiments.train import loop  # data may not import train\n")
    with (root / "experiments" / "report" / "plots.py").open("a", encoding="utf-8") as f:
        f.write("\nimport tensorflow  # make table must not need it\n")
    done = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    # The layers; through loop -> data, a cycle; report importing TensorFlow.
    assert "Contracts: 0 kept, 3 broken." in done.stdout, done.stdout
    assert "experiments.data is not allowed to import experiments.train" in done.stdout
    assert "experiments.data.loaders -> experiments.train.loop" in done.stdout
    assert "experiments.report.plots -> tensorflow" in done.stdout


def modules() -> list[Path]:
    return sorted((PROJECT_ROOT / "experiments").rglob("*.py"))


def test_no_product_module_imports_unittest():
    offenders = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.relative_to(PROJECT_ROOT)}: {n}" for n in names if n.split(".")[0] == "unittest"]
    assert offenders == []


def test_run_is_a_short_spine():
    tree = ast.parse((PROJECT_ROOT / "experiments" / "commands" / "run.py").read_text(encoding="utf-8"))
    run = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run")
    assert run.end_lineno - run.lineno + 1 <= 40
    called = [n.func.id for n in ast.walk(run) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert [c for c in called if c in ("prepare", "build", "train")] == ["prepare", "build", "train"]


def test_every_package_says_what_it_owns_and_may_import():
    for package in ("data", "model", "train", "report", "machine", "commands"):
        doc = ast.get_docstring(ast.parse((PROJECT_ROOT / "experiments" / package / "__init__.py").read_text()))
        assert doc and "import" in doc and len(doc.splitlines()) >= 3, package  # what it owns, what it may import


def test_pretrain_is_a_short_spine_like_run():
    tree = ast.parse((PROJECT_ROOT / "experiments" / "commands" / "pretrain.py").read_text(encoding="utf-8"))
    spine = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "pretrain")
    assert spine.end_lineno - spine.lineno + 1 <= 40
    called = [n.func.id for n in ast.walk(spine) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    steps = ("prepare", "build", "train", "save", "write_record")
    assert [c for c in called if c in steps] == list(steps)
