"""The command line (train.py): extend a finished run, one-line errors."""

from simclr_core.cli.train import main, train

from tests.conftest import tiny_args, tiny_config
from tests.training.common import one_line_error, run_main


def test_finished_run_can_be_extended(tmp_path, capsys):
    run = train(tiny_config(tmp_path))
    runs = str(tmp_path / "runs")
    code, err = run_main(["--resume", "tiny", "--runs-dir", runs], capsys)
    assert code == 2 and "already finished 2 epochs; pass --epochs N" in err
    code, err = run_main(["--resume", "tiny", "--runs-dir", runs, "--epochs", "3"], capsys)
    assert code == 0, err
    assert run.status()["epoch"] == 3 and run.config().optim.epochs == 3


def test_user_errors_are_one_line(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    assert main(tiny_args(tmp_path)) == 0
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "broken" / "cat").mkdir(parents=True)
    (tmp_path / "broken" / "cat" / "a.jpg").write_bytes(b"not a jpeg")
    folder = ["--dataset", "folder", "--data-path"]
    cases = [
        (tiny_args(tmp_path), "already exists"),
        (["--resume", "nope", "--runs-dir", runs], "no run named 'nope'"),
        (["--resume", "tiny", "--runs-dir", runs, "--backbone", "resnet18"], "cannot change --backbone"),
        (tiny_args(tmp_path, "big") + ["--batch-size", "100"], "larger than the 64 training images"),
        (tiny_args(tmp_path, "x") + ["--dataset", "imagenet"], "argument --dataset: invalid choice: 'imagenet'"),
        (tiny_args(tmp_path, "x") + folder + [str(tmp_path / "empty")], "no images found in"),
        (tiny_args(tmp_path, "x") + folder + [str(tmp_path / "broken")], "none of the 1 image files"),
        (tiny_args(tmp_path, "../up"), "invalid run name"),
        (tiny_args(tmp_path, "f") + ["--dataset", "folder", "--data-path", str(tmp_path / "none")], "does not exist"),
        (tiny_args(tmp_path, "t") + ["--temperature", "0"], "--temperature must be a positive"),
        (tiny_args(tmp_path, "e") + ["--epochs", "0"], "--epochs must be at least 1"),
        (tiny_args(tmp_path, "k") + ["--knn-k", "0"], "--knn-k must be at least 1"),  # was: fails after an epoch
        (tiny_args(tmp_path, "r") + ["--runs-dir", str(tmp_path / "a-file")], "choose another --runs-dir"),
    ]
    for argv, match in cases:
        try:
            code, err = run_main(argv, capsys)
        except SystemExit as e:  # argparse's own checks
            code, err = e.code, capsys.readouterr().err
        assert match in one_line_error(code, err), (argv, err)
    assert not (tmp_path / "up").exists()
