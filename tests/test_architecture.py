"""The shape of the code: layers, import circles, imports inside functions, function sizes.

The layers are declared once, in pyproject.toml ([tool.importlinter]), and checked by
import-linter; the rest reads the AST of every module of src/texseg. See
docs/explanation/architecture.md for the why.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "texseg"

MAX_LINES = 50  # def to last line
MAX_PARAMS = 7  # self/cls not counted

# Third-party (or platform-only) modules a library function may import where it needs them:
# optional extras and what only some storages or platforms have. Everything else goes at the top.
OPTIONAL_IMPORTS = {
    "torch.utils.tensorboard",  # the tensorboard extra
    "tensorboard",
    "onnx",  # the onnx extra
    "onnxruntime",
    "psycopg",  # the postgres extra: an optuna storage driver
    "psycopg2",
    "sqlalchemy",  # optuna's RDB storage only
    "optuna.storages.journal",  # moved between optuna versions: the import is the version test
    "optuna.storages",
    "resource",  # POSIX only
}
# A function whose import is deferred on purpose, and why.
DEFERRED_IMPORTS = {
    # configure_threads must run before torch is imported (see texseg.threads).
    ("texseg.threads", "torch"),
}
# Functions exempt from the parameter limit: the notebook's signature, kept for compatibility.
WIDE_ALLOWED = {("texseg.data.scene", "generate_data")}


# ------------------------------------------------------------------------------ the module graph
def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, whether it is a package's __init__)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, (path, _) in MODULES.items()}


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _owner(name: str) -> str | None:
    """The texseg module that defines ``name`` (the longest prefix that is a module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imported_modules(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules an import node imports: ``from pkg import sub`` counts the submodule, not ``pkg``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    source = _absolute(module, MODULES[module][1] if module in MODULES else False, node)
    out = []
    for alias in node.names:
        full = f"{source}.{alias.name}"
        out.append(full if full in MODULES else source)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the texseg modules it imports anywhere (module level, functions, TYPE_CHECKING)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in imported_modules(name, node):
                    owner = _owner(target) if target.split(".")[0] == "texseg" else None
                    if owner and owner != name:
                        graph[name].add(owner)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_circle_finder_finds_a_circle():
    """The checker itself: a two-module circle and a three-module one are found, a chain is not."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}, "g": set()}
    assert sorted(circles(graph)) == [["a", "b"], ["c", "d", "e"]]
    assert circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_circles():
    """No two modules of texseg import each other, even indirectly, counting imports inside functions."""
    found = circles(import_graph())
    assert found == [], "import circles (counting imports inside functions):\n" + "\n".join(
        " <-> ".join(c) for c in found)


# ----------------------------------------------------------------------------- imports in functions
def _function_imports(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import node inside a function, with the function's name."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    yield inner, node.name


def _optional(target: str) -> bool:
    return any(target == m or target.startswith(m + ".") for m in OPTIONAL_IMPORTS)


def function_level_imports() -> list[str]:
    """``module:line import`` for each import inside a library function that is not an optional dependency."""
    bad = set()
    for name, tree in TREES.items():
        if name.startswith("texseg.cli"):
            continue  # the CLI imports a command's code when the command runs (startup time, Ctrl-C)
        for node, _ in _function_imports(tree):
            targets = imported_modules(name, node)
            if all(_optional(t) or (name, t) in DEFERRED_IMPORTS for t in targets):
                continue
            bad.add(f"{name}:{node.lineno} {ast.unparse(node)}")
    return sorted(bad)


def test_imports_inside_functions_only_for_optional_dependencies():
    """Outside cli/, an import inside a function is for an optional dependency, never to dodge a circle."""
    found = function_level_imports()
    assert found == [], f"{len(found)} imports inside library functions:\n" + "\n".join(found)


# --------------------------------------------------------------------------------------- layers
def test_layers_contract():
    """import-linter's layers contract (pyproject.toml) holds: higher layers import lower ones, never the reverse."""
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(lint).exists():
        pytest.fail("lint-imports not found: install the test extra (pip install -e .[test])")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([lint, "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_every_top_level_module_is_in_a_layer():
    """A new package or module of texseg has to be given its place in the layers."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    layered = {name.strip() for layer in contract["layers"] for name in layer.replace(":", "|").split("|")}
    top = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir()
           if (path.suffix == ".py" and path.stem not in ("__init__", "__main__"))
           or (path.is_dir() and (path / "__init__.py").is_file())}
    assert top - layered == set(), "not in any layer of [tool.importlinter]"
    assert layered - top == set(), "layers name modules that do not exist"


# ---------------------------------------------------------------------------------------- sizes
@dataclass
class Function:
    module: str
    name: str
    line: int
    lines: int
    params: int
    click_command: bool


def _is_click_command(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Decorated as a click command or option-taking callback (``@x.command``, ``@click.option``, ...)."""
    for decorator in node.decorator_list:
        text = ast.unparse(decorator)
        if any(word in text for word in ("command(", ".command", "group(", ".group", "click.", "options")):
            return True
    return False


def functions() -> list[Function]:
    """Every function and method of texseg, with its length (def to last line) and parameter count."""
    out = []
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            args = node.args
            params = [*args.posonlyargs, *args.args, *args.kwonlyargs]
            if params and params[0].arg in ("self", "cls"):
                params = params[1:]
            count = len(params) + (args.vararg is not None) + (args.kwarg is not None)
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            out.append(Function(name, node.name, start, node.end_lineno - node.lineno + 1, count,
                                _is_click_command(node)))
    return out


def long_functions() -> list[str]:
    return [f"{f.module}.{f.name} (line {f.line}): {f.lines} lines" for f in functions() if f.lines > MAX_LINES]


def wide_functions() -> list[str]:
    return [f"{f.module}.{f.name} (line {f.line}): {f.params} parameters" for f in functions()
            if f.params > MAX_PARAMS and not f.module.startswith("texseg.cli") and not f.click_command
            and (f.module, f.name) not in WIDE_ALLOWED]


def test_size_checker_counts_lines_and_parameters():
    """The checker itself: lines from def to the last line, self not counted, *args and **kwargs counted."""
    tree = ast.parse("class A:\n    def f(self, a, b=1, *c, d, **e):\n        x = 1\n        return x\n")
    method = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))
    assert method.end_lineno - method.lineno + 1 == 3
    TREES["texseg._probe"] = tree
    try:
        (probe,) = [f for f in functions() if f.module == "texseg._probe"]
        assert (probe.lines, probe.params) == (3, 5)
    finally:
        del TREES["texseg._probe"]


def test_no_function_over_50_lines():
    """Every function of texseg fits on a screen: at most 50 lines from def to its last line."""
    found = long_functions()
    assert found == [], f"{len(found)} functions over {MAX_LINES} lines:\n" + "\n".join(found)


def test_library_functions_take_at_most_7_parameters():
    """Library functions take at most 7 parameters (more: a settings dataclass); click commands excepted."""
    found = wide_functions()
    assert found == [], f"{len(found)} functions over {MAX_PARAMS} parameters:\n" + "\n".join(found)



# ------------------------------------------------------------------------------------ one of each
def _calls(name: str) -> list[str]:
    """``module:line`` of every call of a function or method called ``name``."""
    return [f"{module}:{node.lineno}" for module, tree in TREES.items() for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == name]


def _strings(module: str) -> Iterator[str]:
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


def test_one_confusion_matrix_builder():
    """Confusion matrices are counted in one function, evaluation.metrics.confusion_matrices."""
    builders = [c for c in _calls("bincount") if c.startswith("texseg.evaluation")]
    assert [c.split(":")[0] for c in builders] == ["texseg.evaluation.metrics"] * 2, builders


def test_one_cpuinfo_reader():
    """/proc/cpuinfo is read in one place, texseg.device."""
    readers = sorted({m for m in TREES if any("/proc/cpuinfo" in s and " " not in s for s in _strings(m))})
    assert readers == ["texseg.device"]


def test_metric_names_defined_once():
    """Metric columns and the trivial baselines' names are literals in evaluation/names.py only."""
    metrics = {"iou", "dice", "accuracy", "precision", "recall", "loss", "miou", "bf", "vi", "vi_split", "vi_merge",
               "are", "gce"}
    found = []
    for module, tree in TREES.items():
        if module == "texseg.evaluation.names":
            continue
        for node in ast.walk(tree):
            items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else []
            if isinstance(node, ast.Dict) and all(isinstance(v, ast.Constant) for v in node.values):
                items = node.keys  # a table of names (labels, directions), not metrics being computed
            names = [e.value for e in items if isinstance(e, ast.Constant) and e.value in metrics]
            if len(names) >= 3:
                found.append(f"{module}:{node.lineno} {names}")
        found += [f"{module}: {s!r}" for s in _strings(module)
                  if s in ("one region everywhere", "one label everywhere")]
    assert found == [], "metric lists or baseline names outside texseg.evaluation.names:\n" + "\n".join(found)


def test_registries_import_no_implementation():
    """The segmenter and model registries import none of what registers in them (their packages do)."""
    for registry, package in (("texseg.segmenters.base", "texseg.segmenters"), ("texseg.models.registry",
                                                                                  "texseg.models")):
        inside = sorted(m for m in import_graph()[registry] if m.startswith(package + "."))
        assert inside == [], f"{registry} imports {inside}"


if __name__ == "__main__":  # python tests/test_architecture.py: the current lists, for a report
    print("circles:", circles(import_graph()))
    print("imports inside library functions:", len(function_level_imports()))
    print(*function_level_imports(), sep="\n")
    print("long functions:", *long_functions(), sep="\n")
    print("wide functions:", *wide_functions(), sep="\n")
