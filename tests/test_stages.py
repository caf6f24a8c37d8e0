"""Run the classifier stage scripts' main() on tiny synthetic data in a temp dir."""

import json
import runpy
import shutil

import pytest
import yaml

from tests.conftest import REPO, write_npz


def stage_main(name):
    return runpy.run_path(str(REPO / "stages" / f"{name}.py"), run_name="stage")["main"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    mirror = tmp_path / "mirror"
    write_npz(mirror / "pneumoniamnist" / "pneumoniamnist.npz")
    params["fetch"]["mirrors"] = [str(mirror)]
    params["classifier"]["model"]["width"] = 8
    params["classifier"]["train"].update(epochs=2, batch_size=16)
    params["classifier"]["eval"].update(gradcam_per_group=3, failures=4)
    params["clip"]["arch"].update(
        embed_dim=16,
        vision={"image_size": 28, "patch_size": 7, "width": 32, "layers": 1, "head_width": 16},
    )
    params["clip"]["arch"]["text"].update(width=32, layers=1)
    params["clip"]["train"].update(epochs=1, batch_size=16)
    params["clip"]["subset"]["per_class"] = 5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    return tmp_path, params


def test_classifier_stages_chain_on_tiny_data(workdir):
    root, params = workdir
    paths = params["classifier"]["paths"]
    # The real pneumoniamnist checksums reject the synthetic file: use a toy checksum set.
    with pytest.raises(SystemExit) as exit_info:
        import sys

        sys.argv = ["fetch_data.py", "pneumoniamnist"]
        from cxrlab.utils import run_stage

        run_stage(stage_main("fetch_data"))
    assert exit_info.value.code == 1
    assert not (root / "data/raw/pneumoniamnist").exists()

    target = root / paths["data"]
    target.parent.mkdir(parents=True)
    shutil.copy(root / "mirror/pneumoniamnist/pneumoniamnist.npz", target)
    for stage in ("train_classifier", "evaluate_classifier", "classifier_retrieval"):
        stage_main(stage)()

    assert (root / paths["model"] / "model.safetensors").is_file()
    train = json.loads((root / paths["train_live"] / "metrics.json").read_text())
    assert train["best_epoch"] in (1, 2) and "best_val_auc" in train
    assert (root / paths["train_live"] / "plots/metrics/val/auc.tsv").is_file()
    ev = json.loads((root / paths["eval_live"] / "metrics.json").read_text())
    for block in ("test", "test_at_val_threshold"):
        assert ev[block]["tn"] + ev[block]["fp"] + ev[block]["fn"] + ev[block]["tp"] == 24
        assert 0 <= ev[block]["accuracy"] <= 1
    for plot in ("confusion_matrix", "roc", "precision_recall"):
        assert (root / paths["eval_live"] / f"plots/sklearn/test/{plot}.json").is_file()
    ret = json.loads((root / paths["retrieval_live"] / "metrics.json").read_text())
    assert set(ret["test"]) == {"precision_at_1", "precision_at_5", "precision_at_10"}
    for fig in ("training_curves", "gradcam", "failures", "retrieval"):
        png = root / paths["figures"] / f"{fig}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", fig


def test_unknown_param_stops_the_stage_with_one_line(workdir, capsys):
    root, params = workdir
    params["classifier"]["train"]["epochz"] = 3
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    from cxrlab.utils import run_stage

    with pytest.raises(SystemExit) as exit_info:
        run_stage(stage_main("train_classifier"))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: unknown param 'classifier.train.epochz'")
    assert "Traceback" not in "\n".join(err)


def test_clip_stages_chain_on_tiny_data(workdir):
    root, params = workdir
    paths = params["clip"]["paths"]
    target = root / paths["data"]
    target.parent.mkdir(parents=True)
    shutil.copy(root / "mirror/pneumoniamnist/pneumoniamnist.npz", target)
    for stage in ("train_clip", "clip_label", "export_clip_subset"):
        stage_main(stage)()

    assert (root / paths["model"] / "open_clip_config.json").is_file()
    lines = (root / paths["labels"]).read_text().splitlines()
    assert lines[0] == "image_id,split,auto_label,ground_truth,confidence_score"
    assert len(lines) == 1 + 64 + 24 + 24
    metrics = json.loads((root / paths["label_live"] / "metrics.json").read_text())
    for split in ("train", "val", "test", "overall"):
        m = metrics[split]
        assert {"accuracy", "balanced_accuracy", "f1", "auc", "ece", "tn", "fp", "fn", "tp"} <= set(
            m
        )
        assert (
            root / paths["label_live"] / f"plots/sklearn/{split}/confusion_matrix.json"
        ).is_file()
    assert (
        metrics["overall"]["tn"]
        + metrics["overall"]["fp"]
        + metrics["overall"]["fn"]
        + metrics["overall"]["tp"]
        == 112
    )
    subset = root / paths["subset"]
    rows = [json.loads(line) for line in (subset / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all((subset / r["file_name"]).is_file() for r in rows)
    assert sorted({r["text"] for r in rows}) == sorted(params["clip"]["subset"]["text"].values())
    assert (root / paths["figures"] / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_label_source_is_rejected_by_the_schema(workdir, capsys):
    root, params = workdir
    params["clip"]["subset"]["label_source"] = "llm"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    from cxrlab.utils import run_stage

    with pytest.raises(SystemExit):
        run_stage(stage_main("export_clip_subset"))
    assert (
        "param 'clip.subset.label_source' = 'llm' must be one of 'ground_truth', 'auto'"
        in capsys.readouterr().err
    )
