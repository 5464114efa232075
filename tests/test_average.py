"""``nmt average``: the averaged checkpoint holds the mean of the inputs' weights and translates."""

from __future__ import annotations

import json
import shutil

import numpy as np

from nmt.checkpoints import checkpoint_values, list_checkpoints
from nmt.translate import Translator
from tests.conftest import invoke


def test_average_writes_the_mean_of_the_last_checkpoints_and_translates_with_it(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    inputs = list_checkpoints(run / "checkpoints")[:3][::-1]  # the fixture keeps steps 40, 50 and 60
    assert [p.rsplit("-", 1)[1] for p in inputs] == ["40", "50", "60"]

    r = invoke("average", "--model", str(run), "--last", "3")
    assert r.exit_code == 0, r.output
    assert "averaged 3 checkpoint(s) (ckpt-40, ckpt-50, ckpt-60)" in r.stdout
    info = json.loads((run / "averaged" / "averaged.json").read_text())
    assert info["steps"] == [40, 50, 60]

    def weights(checkpoint: str) -> list[np.ndarray]:  # the model's weights as a translator loads them
        return [w.numpy() for w in Translator(run, checkpoint).model.trainable_variables]

    averaged, sources = weights("averaged"), [weights(p) for p in inputs]
    assert len(averaged) >= 15
    assert not any(k.startswith("optimizer/") for k in checkpoint_values(str(run / "averaged" / "ckpt-60")))
    differ = 0
    for i, value in enumerate(averaged):
        stacked = np.stack([s[i] for s in sources])
        np.testing.assert_allclose(value, stacked.mean(0), rtol=1e-5, atol=1e-6)
        differ += not np.allclose(stacked[0], stacked[2])
    assert differ >= len(averaged) // 2  # the inputs really differ: the mean is not any one of them

    lines = "I am hungry.\n\nHe is my friend.\n"
    by_name = invoke("translate", "--model", str(run), "--checkpoint", "averaged", input=lines)
    by_path = invoke("translate", "--model", str(run), "--checkpoint", str(run / "averaged"), input=lines)
    assert by_name.exit_code == 0 and by_path.exit_code == 0, by_name.output + by_path.output
    assert by_name.stdout == by_path.stdout and len(by_name.stdout.split("\n")) == 4

    # explicit checkpoints: the mean of two differs from the mean of three
    r = invoke("average", "--model", str(run), "--checkpoint", "last", "--checkpoint", inputs[1],
               "--out", str(tmp_path / "two"))
    assert r.exit_code == 0, r.output
    two = weights(str(tmp_path / "two"))
    for i in (0, len(two) - 1):
        np.testing.assert_allclose(two[i], (sources[1][i] + sources[2][i]) / 2, rtol=1e-5, atol=1e-6)


def test_average_refuses_bad_requests_with_one_line(trained_run, tmp_path):
    cases = [
        (["--last", "4"], "fewer than --last 4"),
        ([], "nothing to average"),
        (["--last", "2", "--checkpoint", "best"], "not both"),
        (["--checkpoint", "last", "--checkpoint", "last"], "given twice"),
        (["--checkpoint", str(tmp_path / "nope")], "no such checkpoint"),
        (["--last", "2", "--out", str(trained_run)], "already exists"),
    ]
    for args, message in cases:
        r = invoke("average", "--model", str(trained_run), *args)
        assert r.exit_code == 2, (args, r.output)
        assert message in r.stderr and "Traceback" not in r.output, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (trained_run / "averaged").exists()
    r = invoke("translate", "--model", str(trained_run), "--checkpoint", "averaged", input="Hi.\n")
    assert r.exit_code == 2 and "no averaged checkpoint" in r.stderr

    # a run directory whose manifest lost its vocabulary sizes, then the manifest itself
    broken = tmp_path / "broken"
    shutil.copytree(trained_run, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    del manifest["vocab"]["tgt_size"]
    (broken / "manifest.json").write_text(json.dumps(manifest))
    for command in (["average", "--last", "2"], ["translate"]):
        r = invoke(command[0], "--model", str(broken), *command[1:], input="Hi.\n")
        assert r.exit_code == 2 and r.stderr.strip() == f"error: {broken / 'manifest.json'}: unreadable manifest"
    (broken / "manifest.json").unlink()
    r = invoke("average", "--model", str(broken), "--last", "2")
    assert r.exit_code == 2 and "manifest.json: missing from the run directory" in r.stderr
    assert not (broken / "averaged").exists()
