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
