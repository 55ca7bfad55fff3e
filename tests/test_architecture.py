"""The package's architecture, read from its sources with ``ast`` (nothing is imported).

* Imports point one way: commands -> local -> training / serving -> evaluation -> data -> the shared
  contract (environment, errors, failure, model_dir, precision, predictor, pipeline_spec). The serving image never
  needs the training code.
* Only ``detector.environment`` reads the process environment or spells ``/opt/ml`` paths.

Each rule is a function of (module name, source text) returning violation messages, so the rules are
tested on small bad sources below as well as run over ``src/detector``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "detector"

CONTRACT_MODULES = ("environment", "errors", "failure", "model_dir", "precision", "predictor", "pipeline_spec", "matmul_conv", "prepacked", "proposals", "roi_align")
LAYER_PACKAGES = ("data", "evaluation", "training", "serving", "local", "commands")
ENTRY_MODULES = ("cli", "__main__")  # cli loads the commands with importlib by name, runs them in failure.run_command

# Layer of the importing module -> layers it may import. "package" is detector/__init__.py (the version).
# Every layer may import itself; nothing may import "entry".
ALLOWED_IMPORTS: dict[str, tuple[str, ...]] = {
    "package": ("package",),
    "contract": ("package", "contract"),
    "data": ("package", "contract", "data"),
    "evaluation": ("package", "contract", "data", "evaluation"),
    "training": ("package", "contract", "data", "evaluation", "training"),
    "serving": ("package", "contract", "data", "evaluation", "serving"),
    "local": ("package", "contract", "data", "evaluation", "training", "serving", "local"),
    "commands": ("package", "contract", "data", "evaluation", "training", "serving", "local", "commands"),
    "entry": ("package", "contract", "entry", "commands"),
}

ENVIRONMENT_MODULE = "detector.environment"
OS_ENVIRONMENT_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}
OPT_ML = "/opt/ml"


def source_modules(src: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package) for every .py file of the package."""
    modules = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        modules[".".join(parts)] = (path, is_package)
    return modules


MODULES = source_modules()


def layer_of(module: str) -> str | None:
    """The layer of a module of the package; None for a module no layer claims."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        raise ValueError(f"{module} is not in the {PACKAGE} package")
    if len(parts) == 1:
        return "package"
    head = parts[1]
    if head in CONTRACT_MODULES:
        return "contract"
    if head in LAYER_PACKAGES:
        return head
    if head in ENTRY_MODULES:
        return "entry"
    return None


def _ours(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def imported_modules(module: str, source: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, module) for every module of the package that ``source`` imports, anywhere in the file.

    Relative imports are resolved; ``from X import name`` counts as importing ``X.name`` when that is a
    module of the package, else ``X``. ``importlib.import_module("detector...")`` with a literal name counts.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    found.append((node.lineno, "." * node.level + (node.module or "") + " (beyond the top-level package)"))
                    continue
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                if node.module:
                    base += "." + node.module
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append((node.lineno, candidate if candidate in MODULES else base))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            function = node.func
            name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return [(line, name) for line, name in found if _ours(name) or "beyond the top-level" in name]


def layer_violations(module: str, source: str, is_package: bool = False) -> list[str]:
    layer = layer_of(module)
    if layer is None:
        return [
            f"{module}: belongs to no layer; add it to CONTRACT_MODULES, LAYER_PACKAGES or ENTRY_MODULES "
            f"in tests/test_architecture.py (or move it into a layer package)"
        ]
    allowed = ALLOWED_IMPORTS[layer]
    violations = []
    for line, target in imported_modules(module, source, is_package):
        target_layer = layer_of(target) if _ours(target) else None
        if target_layer not in allowed:
            what = f"layer {target_layer!r}" if target_layer else "no layer"
            violations.append(
                f"{module}:{line} imports {target} ({what}): the {layer!r} layer may import only {', '.join(allowed)}"
            )
    return violations


def serving_imports_of_training(module: str, source: str, is_package: bool = False) -> list[str]:
    if layer_of(module) != "serving":
        return []
    return [
        f"{module}:{line} imports {target}: the serving code must not import the training code"
        for line, target in imported_modules(module, source, is_package)
        if layer_of(target) == "training"
    ]


def environment_reads(module: str, source: str) -> list[str]:
    """``os.environ``, ``os.getenv`` and friends, ``from os import environ``, ``environ.get``."""
    if module == ENVIRONMENT_MODULE:
        return []
    tree = ast.parse(source)
    os_names = {"os"} | {
        alias.asname for node in ast.walk(tree) if isinstance(node, ast.Import)
        for alias in node.names if alias.name == "os" and alias.asname
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in os_names and node.attr in OS_ENVIRONMENT_NAMES:
                found.append((node.lineno, ast.unparse(node)))
            elif node.value.id == "environ" and node.attr == "get":
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and not node.level:
            found += [(node.lineno, f"from os import {a.name}") for a in node.names if a.name in OS_ENVIRONMENT_NAMES]
    return [
        f"{module}:{line} uses {code}: only {ENVIRONMENT_MODULE} reads the process environment"
        for line, code in sorted(set(found))
    ]


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                ids.add(id(first.value))
    return ids


def opt_ml_paths(module: str, source: str) -> list[str]:
    """String constants in code (docstrings aside) that are /opt/ml paths: starting with it or ':/opt/ml'."""
    if module == ENVIRONMENT_MODULE:
        return []
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    return [
        f"{module}:{node.lineno} spells {node.value!r}: only {ENVIRONMENT_MODULE} knows the {OPT_ML} layout"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
        and (node.value.startswith(OPT_ML) or ":" + OPT_ML in node.value)
    ]


def over_the_package(rule) -> list[str]:
    violations = []
    for module, (path, is_package) in MODULES.items():
        source = path.read_text(encoding="utf-8")
        if rule in (layer_violations, serving_imports_of_training):
            violations += rule(module, source, is_package)
        else:
            violations += rule(module, source)
    return violations


def report(violations: list[str]) -> str:
    return f"{len(violations)} violation(s):\n  " + "\n  ".join(violations)


# --- the rules over src/detector -------------------------------------------------------------------


def test_the_package_sources_are_found():
    assert {"detector", "detector.cli", "detector.environment", "detector.serving.model_server",
            "detector.training.trainer", "detector.data", "detector.commands.serve"} <= set(MODULES)
    assert set(ALLOWED_IMPORTS) == {"package", "contract", "entry", *LAYER_PACKAGES}


def test_serving_never_imports_training():
    violations = over_the_package(serving_imports_of_training)
    assert not violations, report(violations)


def test_imports_follow_the_layers():
    violations = over_the_package(layer_violations)
    assert not violations, report(violations)


def test_only_the_environment_module_reads_the_process_environment():
    violations = over_the_package(environment_reads)
    assert not violations, report(violations)


def test_only_the_environment_module_spells_opt_ml_paths():
    violations = over_the_package(opt_ml_paths)
    assert not violations, report(violations)


# --- the rules catch violations -------------------------------------------------------------------


@pytest.mark.parametrize(
    "module, is_package, source, expected",
    [
        ("detector.serving.front", False, "from ..training import config", [(1, "detector.training.config")]),
        ("detector.serving.front", False, "from ..training.config import X", [(1, "detector.training.config")]),
        ("detector.serving.front", False, "from .. import training, errors", [(1, "detector.training"), (1, "detector.errors")]),
        ("detector.serving", True, "from ..training import launch", [(1, "detector.training.launch")]),
        ("detector.serving", True, "from .front import Front", [(1, "detector.serving.front")]),
        ("detector.cli", False, "from . import __version__", [(1, "detector")]),
        ("detector.data.coco", False, "import os\nimport detector.training.trainer as t", [(2, "detector.training.trainer")]),
        ("detector.data.coco", False, "def f():\n    from ...detector import x", [(2, "...detector (beyond the top-level package)")]),
        ("detector.data.coco", False, "import importlib\nimportlib.import_module('detector.local.runner')", [(2, "detector.local.runner")]),
        ("detector.data.coco", False, "import numpy\nfrom pathlib import Path", []),
    ],
)
def test_imports_are_resolved(module, is_package, source, expected):
    assert sorted(imported_modules(module, source, is_package)) == sorted(expected)


@pytest.mark.parametrize(
    "source",
    [
        "from ..training.config import build_training_config",
        "from ..training import trainer",
        "from .. import training",
        "import detector.training.hyperparameters",
        "from detector.training import launch",
        "def handle():\n    if True:\n        from ..training.checkpoint import CheckpointStore\n",
        "class A:\n    def f(self):\n        import importlib\n        return importlib.import_module('detector.training.trainer')\n",
    ],
)
def test_serving_rule_catches_training_imports(source):
    violations = serving_imports_of_training("detector.serving.inference_handler", source)
    assert len(violations) == 1 and "detector.serving.inference_handler:" in violations[0], violations
    assert "must not import the training code" in violations[0]
    # the layer rule says so too
    assert any("the 'serving' layer may import only" in v for v in layer_violations("detector.serving.inference_handler", source))


def test_serving_rule_allows_the_lower_layers():
    source = "from ..predictor import Predictor\nfrom ..evaluation import metrics\nfrom ..data.coco import load_coco\nfrom .front import Front"
    assert serving_imports_of_training("detector.serving.endpoint", source) == []
    assert layer_violations("detector.serving.endpoint", source) == []
    assert serving_imports_of_training("detector.commands.serve", "from ..training import launch") == []


@pytest.mark.parametrize(
    "module, is_package, source, imported",
    [
        ("detector.model_dir", False, "from .data.coco import CocoDataset", "detector.data.coco"),
        ("detector.predictor", False, "def f():\n    from .serving import options", "detector.serving.options"),
        ("detector.errors", False, "from . import cli", "detector.cli"),
        ("detector.data.coco", False, "from ..evaluation.metrics import CocoMetrics", "detector.evaluation.metrics"),
        ("detector.data", True, "from ..training import config", "detector.training.config"),
        ("detector.evaluation.report", False, "from ..training.config import TEST_DATASET", "detector.training.config"),
        ("detector.evaluation.metrics", False, "from ..serving import encoding", "detector.serving.encoding"),
        ("detector.training.trainer", False, "from ..serving.model_server import free_port", "detector.serving.model_server"),
        ("detector.training.trainer", False, "from ..local.progress import TrainingProgress", "detector.local.progress"),
        ("detector.local.runner", False, "from ..commands import train", "detector.commands.train"),
        ("detector.commands.train", False, "from ..cli import main", "detector.cli"),
        ("detector.cli", False, "from .training.launch import run", "detector.training.launch"),
        ("detector.cli", False, "from .serving.endpoint import run_endpoint", "detector.serving.endpoint"),
        ("detector.cli", False, "from .data import synthetic", "detector.data.synthetic"),
        ("detector", True, "from .errors import DetectorError", "detector.errors"),
        ("detector.serving.front", False, "from ..newthing import x", "detector.newthing"),
    ],
)
def test_layer_rule_catches_imports_against_the_layers(module, is_package, source, imported):
    violations = layer_violations(module, source, is_package)
    assert len(violations) == 1, violations
    assert violations[0].startswith(f"{module}:") and f" imports {imported} (" in violations[0], violations
    assert f"the {layer_of(module)!r} layer may import only" in violations[0], violations


@pytest.mark.parametrize(
    "module, is_package, source",
    [
        ("detector.model_dir", False, "from .errors import ModelDirectoryError"),
        ("detector.predictor", False, "from .model_dir import read_model_dir\nfrom . import __version__"),
        ("detector.data.loaders", False, "from .coco import CocoDataset\nfrom ..model_dir import LabelMap"),
        ("detector.data", True, "from .coco import load_coco"),
        ("detector.evaluation.metrics", False, "from ..data.coco import CocoDataset"),
        ("detector.training.trainer", False, "from ..evaluation.metrics import coco_box_metrics\nfrom ..data import loaders"),
        ("detector.serving.endpoint", False, "from ..environment import ServingEnvironment"),
        ("detector.local.runner", False, "from ..serving.model_server import ping\nfrom ..training import stop"),
        ("detector.commands.pipeline", False, "from ..local.runner import LocalRun\nfrom ..training import launch\nfrom .. import pipeline_spec"),
        ("detector.cli", False, "import importlib\nfrom . import __version__\nimportlib.import_module(f'detector.commands.{name}')"),
        ("detector.cli", False, "from .commands import train"),
        ("detector.cli", False, "def main():\n    from .failure import run_command"),
        ("detector.__main__", False, "from .cli import main"),
    ],
)
def test_layer_rule_allows_imports_down_the_layers(module, is_package, source):
    assert layer_violations(module, source, is_package) == []


def test_layer_rule_flags_a_module_of_no_layer():
    violations = layer_violations("detector.helpers", "")
    assert len(violations) == 1 and "detector.helpers: belongs to no layer" in violations[0]


@pytest.mark.parametrize(
    "source, code",
    [
        ("import os\nx = os.environ['HOME']", "os.environ"),
        ("import os\nx = dict(os.environ)", "os.environ"),
        ("import os\nx = os.environ.get('HOME')", "os.environ"),
        ("import os\nx = os.getenv('HOME')", "os.getenv"),
        ("import os\nos.putenv('A', 'b')", "os.putenv"),
        ("import os as system\nx = system.environ", "system.environ"),
        ("from os import environ\nx = environ['HOME']", "from os import environ"),
        ("from os import getenv as g", "from os import getenv"),
        ("def f(environ):\n    return environ.get('HOME')", "environ.get"),
        ("def f():\n    import os\n    return {**os.environ, 'A': '1'}", "os.environ"),
    ],
)
def test_environment_rule_catches_reads(source, code):
    violations = environment_reads("detector.local.backends", source)
    assert violations and any(f" uses {code}: only detector.environment reads" in v for v in violations), violations
    assert environment_reads(ENVIRONMENT_MODULE, source) == []


@pytest.mark.parametrize(
    "source",
    [
        "import os\nx = os.pathsep.join(['a', 'b'])",
        "from ..environment import environ_with\nenv = environ_with({'A': '1'})",
        "def f(environ):\n    return environ['HOME']",
        '"""Reads os.environ? No: the docstring only mentions it."""',
        "x = 'os.environ'",
    ],
)
def test_environment_rule_allows(source):
    assert environment_reads("detector.serving.model_server", source) == []


@pytest.mark.parametrize(
    "source, value",
    [
        ("MODEL_DIR = '/opt/ml/model'", "/opt/ml/model"),
        ("BASE = '/opt/ml'", "/opt/ml"),
        ("def f(root):\n    return ['-v', f'{root}:/opt/ml']", ":/opt/ml"),
        ("def f():\n    x = 1\n    '/opt/ml/output/failure'", "/opt/ml/output/failure"),
        ("class A:\n    path: str = '/opt/ml/checkpoints'", "/opt/ml/checkpoints"),
        ("mount = 'data:/opt/ml/input'", "data:/opt/ml/input"),
    ],
)
def test_opt_ml_rule_catches_paths_in_code(source, value):
    violations = opt_ml_paths("detector.local.backends", source)
    assert len(violations) == 1 and f"spells {value!r}: only detector.environment knows" in violations[0], violations
    assert opt_ml_paths(ENVIRONMENT_MODULE, source) == []


@pytest.mark.parametrize(
    "source",
    [
        '"""/opt/ml/model is where SageMaker puts the model."""',
        'def f():\n    """/opt/ml: the container\'s base directory."""',
        'class A:\n    """Mounted at /opt/ml."""',
        "parser.add_argument('--model-dir', help='model directory (default: /opt/ml/model, relocated by SAGEMAKER_BASE_DIR)')",
        "parser.epilog = 'Reads everything from /opt/ml (relocated by SAGEMAKER_BASE_DIR); takes no options.'",
        "x = 'opt/ml'",
    ],
)
def test_opt_ml_rule_allows_prose(source):
    assert opt_ml_paths("detector.commands.train", source) == []


def test_docs_architecture_names_every_module_of_every_layer():
    """docs/architecture.md matches the tree: each layer's modules are named in it."""
    doc = (SRC.parent / "docs" / "architecture.md").read_text()
    missing = []
    for layer in LAYER_PACKAGES:
        for path in sorted((SRC / PACKAGE / layer).glob("*.py")):
            if path.stem != "__init__" and f"`{path.stem}`" not in doc:
                missing.append(f"{layer}/{path.name}")
    for name in CONTRACT_MODULES:
        if f"`{name}`" not in doc:
            missing.append(f"{name}.py")
    assert not missing, f"docs/architecture.md does not name: {', '.join(missing)}"
