"""The package layout: one package per pipeline part over a shared core, imports pointing down."""

import re

from tests.conftest import REPO
from tools.code_deps import DVC_YAML, SECTION_PART, TOP_LEVEL, graph, layer, rewrite

PARTS = {"classification", "segmentation", "cohort", "labeling", "generation", "captioning",
         "report"}  # fmt: skip
# Where the pipeline really flows from one part into another (the README's table).
CROSS_PART = {
    ("labeling", "classification"),  # choose_threshold: the same val-chosen threshold rule
    ("captioning", "classification"),  # nearest_neighbours: the retrieval baseline
    ("generation", "classification"),  # the trained classifier scores the generated images
    ("captioning", "segmentation"),  # X-ray readers and the patient split
    ("cohort", "segmentation"),  # age_band: the segmentation subgroups' bands
}


def test_no_import_cycle():
    edges, state, cycles = graph(), {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


def test_imports_point_down_and_across_only_where_the_pipeline_flows():
    bad = []
    for module, targets in graph().items():
        src = layer(module)
        for target in targets:
            dst = layer(target)
            if src == dst or dst == "core" or src in TOP_LEVEL or module == "cxrlab":
                continue
            if src == "core" or dst in TOP_LEVEL or (src, dst) not in CROSS_PART:
                bad.append(f"{module} -> {target}")
    assert bad == [], "\n".join(sorted(bad))


def test_every_module_belongs_to_core_a_part_or_the_top():
    layers = {layer(m) for m in graph()}
    assert layers <= PARTS | set(TOP_LEVEL) | {"core", "cxrlab"}, layers - PARTS - set(TOP_LEVEL)


def test_dvc_yaml_code_deps_follow_the_imports():
    """Each stage depends on its script, core, params/stage and the parts it reaches."""
    from cxrlab.params import SECTIONS

    assert set(SECTION_PART) == set(SECTIONS)
    _, changed = rewrite(DVC_YAML.read_text())
    assert changed == [], f"run `python tools/code_deps.py`: stale code deps in {changed}"


def test_functions_stay_short():
    """No function in src/ over 60 lines, no stage main() over 40 (issue targets)."""
    import ast

    from tests.conftest import REPO

    long = []
    for path in sorted((REPO / "src").rglob("*.py")) + sorted((REPO / "stages").glob("*.py")):
        limit_main = path.parent.name == "stages"
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            limit = 40 if limit_main and node.name == "main" else 60
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {lines} lines")
    assert long == [], "\n".join(long)


def test_test_modules_import_only_conftest_tiny_and_fixture_helpers():
    """Shared configs live in tests/tiny.py, shared fixtures in conftest: no test_* imports."""
    import ast
    from pathlib import Path

    wrong = []
    for path in sorted(Path(__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            wrong += [(path.name, n) for n in names if n.startswith("tests.test_")]
    assert not wrong


def test_output_file_names_are_spelled_once_in_params():
    """dvc.yaml and the stages take every figure and metrics path from params.yaml. After a
    ``${...}/`` dvc.yaml spells only dvclive's own layout (``metrics.json``, ``plots/``)
    and folder names that are params values themselves (fetched datasets, variants)."""
    spelled = re.findall(r"\$\{[^}]+\}/([\w./-]+)", (REPO / "dvc.yaml").read_text())
    files = [s for s in spelled if "." in s and not re.fullmatch(r"metrics\.json|plots/.+", s)]
    assert spelled and files == []
    for script in sorted((REPO / "stages").glob("*.py")):
        code = re.sub(r'"""[\s\S]*?"""', "", script.read_text())  # docstrings may say names
        # a figure or table named in a stage (dvclive names its own plots' JSON files)
        assert not re.findall(r"[\"'][\w/{}-]+\.(?:png|csv)[\"']", code), script.name
