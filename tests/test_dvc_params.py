"""dvc.yaml's params: each key a stage declares marks exactly the stages that read it.

Runs on a copy of the repository with its committed dvc.lock and no data: `dvc status`
compares params with the lock without needing any output.
"""

import json

import pytest
import yaml

from tests.conftest import commit_all, copy_repository, run

pytestmark = pytest.mark.slow


def first_leaf(tree, key: str) -> list[str]:
    """The dotted path of the first scalar or list at or under ``key``."""
    path, node = key.split("."), tree
    for part in path:
        node = node[part]
    while isinstance(node, dict) and node:
        first = next(iter(node))
        path, node = [*path, first], node[first]
    return path


def perturbed(value):
    """A different value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, list):
        return [*value, value[-1] if value else 1]
    return 1 if value is None else f"{value}x"


def changed_params_stages(root, params, leaf, env) -> set[str]:
    """Stages whose params `dvc status` reports as changed after ``leaf`` changes."""
    edited = json.loads(json.dumps(params))
    node = edited
    for part in leaf[:-1]:
        node = node[part]
    node[leaf[-1]] = perturbed(node[leaf[-1]])
    (root / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    try:
        status = json.loads(run(["dvc", "status", "--json"], root, env).stdout)
    finally:
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return {
        name.split("@")[0]
        for name, changes in status.items()
        for change in changes
        if isinstance(change, dict) and "params.yaml" in change.get("changed deps", {})
    }


def test_each_stage_param_marks_only_the_stages_that_read_it(tmp_path):
    """What `dvc exp run -S key=value` reruns first: the stages declaring that key."""
    root = copy_repository(tmp_path / "cxrlab")
    env = commit_all(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    declared = {
        name: [k for k in stage.get("params", []) if isinstance(k, str)]
        for name, stage in stages.items()
    }
    whole_file = {n for n, s in stages.items() if {"params.yaml": None} in s.get("params", [])}
    for keys in declared.values():
        if not keys:
            continue
        leaf = first_leaf(params, keys[0])
        dotted = ".".join(leaf)
        expected = {
            other
            for other, their in declared.items()
            if any(dotted == k or dotted.startswith(f"{k}.") for k in their)
        } | whole_file
        assert changed_params_stages(root, params, leaf, env) == expected, dotted
