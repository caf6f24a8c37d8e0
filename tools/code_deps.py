"""Code deps of each stage, from the imports: its script, `core`, the parts it reaches.

    python tools/code_deps.py           # rewrite the code deps in dvc.yaml
    python tools/code_deps.py --check   # exit 1 and list the stages whose deps differ

A stage depends on its script, ``src/cxrlab/core``, the package's ``__init__.py``, the
top-level modules (``params.py``, ``stage.py``), every part folder its imports reach
(directly or through other modules), and the part of every params section it loads
(``load_section("diffusion")``: the dataclasses and their defaults live there). The
top-level modules are not followed: ``params.py`` names every part's config, and a stage
reads only its own sections. tests/test_layout.py checks dvc.yaml against this, so a new
import can't leave a stage stale.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DVC_YAML = ROOT / "dvc.yaml"
TOP = ("params", "stage")  # every stage depends on them; their imports are not followed
TOP_LEVEL = (*TOP, "hub", "skeletons")  # above the parts: the model cache and its skeletons
SECTION_PART = {"fetch": "core", "classifier": "classification", "clip": "labeling",
                "segmentation": "segmentation", "cohort": "cohort", "diffusion": "generation",
                "lora": "generation", "captioning": "captioning", "report": "report"}  # fmt: skip


def module_name(path: Path) -> str:
    """``cxrlab.part.module`` for a file under src/ (a package's ``__init__`` names it)."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every cxrlab module the file at ``path`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("cxrlab")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cxrlab"):
            for alias in node.names:  # `from cxrlab.part import module` names a module
                sub = f"{node.module}.{alias.name}"
                is_module = (SRC / sub.replace(".", "/")).with_suffix(".py").is_file()
                found.add(sub if is_module else node.module)
    return found


def graph() -> dict[str, set[str]]:
    """The import graph of src/cxrlab: module -> the cxrlab modules it imports."""
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    return {m: {i for i in imports(p) if i in modules and i != m} for m, p in modules.items()}


def layer(module: str) -> str:
    """``core``, a part's name, or a top-level module's name (``params``, ``stage``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "cxrlab"


def reach(start: set[str], edges: dict[str, set[str]]) -> set[str]:
    """Every module reachable from ``start`` (``start`` included), not through TOP."""
    seen, todo = set(), [m for m in start if m in edges]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            if layer(module) not in TOP:
                todo += edges[module]
    return seen


def sections(path: Path) -> set[str]:
    """The params sections a script loads: string arguments of ``load_section(...)``."""
    return {
        node.args[0].value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == "load_section"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }


def stage_deps(script: Path, edges: dict[str, set[str]] | None = None) -> list[str]:
    """The code deps of one stage script, as dvc.yaml lists them."""
    edges = graph() if edges is None else edges
    reached = reach(imports(script), edges)
    folders = {layer(m) for m in reached if (SRC / "cxrlab" / layer(m)).is_dir()} | {"core"}
    folders |= {SECTION_PART[name] for name in sections(script)}
    files = {"__init__", *TOP}  # the package's __init__ runs in every stage (threads)
    return [
        script.relative_to(ROOT).as_posix(),
        *(f"src/cxrlab/{f}" for f in sorted(folders)),
        *(f"src/cxrlab/{f}.py" for f in sorted(files)),
    ]


CODE_DEP = re.compile(r"^\s+- (stages/[a-z_]+\.py|src/cxrlab/[a-z_/]+(\.py)?)$")


def rewrite(text: str) -> tuple[str, list[str]]:
    """dvc.yaml's text with each stage's code deps recomputed, and the stages that changed."""
    edges, out, changed, stage, old, new = graph(), [], [], None, [], []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if m := re.match(r"^  ([a-z_]+):$", line):
            stage = m.group(1)
        script = re.match(r"^\s+- (stages/[a-z_]+\.py)$", line)
        if script:
            indent = line[: line.index("-")]
            new = stage_deps(ROOT / script.group(1), edges)
            out += [f"{indent}- {d}" for d in new]
            old = [script.group(1)]
            continue
        if CODE_DEP.match(line):
            old.append(line.strip()[2:])
            continue
        out.append(line)
        if old and not CODE_DEP.match(lines[i]) and old != new:
            changed.append(stage)
            old = []
        elif old:
            old = []
    return "\n".join(out) + "\n", changed


def main() -> None:
    """Rewrite dvc.yaml, or with --check report the stages whose code deps are stale."""
    text, changed = rewrite(DVC_YAML.read_text())
    if "--check" in sys.argv[1:]:
        if changed:
            print("code deps differ from the imports in:", ", ".join(changed))
            sys.exit(1)
        return
    DVC_YAML.write_text(text)
    print(
        f"rewrote {len(changed)} stages' code deps" + (f": {', '.join(changed)}" if changed else "")
    )


if __name__ == "__main__":
    main()
