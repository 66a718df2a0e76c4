"""The ``ehrfm`` command: usage, stages, Hydra overrides, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ehrfm.cli import STAGES, main


def test_no_arguments_and_help_list_every_stage(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["--help"]):
        assert main(argv) == 0
        printed = capsys.readouterr().out
        for name in STAGES:
            assert f"  {name}" in printed


def test_unknown_stage_fails_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingestt"]) == 2
    assert "unknown stage 'ingestt'" in capsys.readouterr().err


def test_ingest_stage_takes_hydra_overrides(tmp_path: Path) -> None:
    out = tmp_path / "meds"
    assert main(["ingest", f"output={out}", "workers=1", "num_shards=2"]) == 0
    summary = json.loads((out / "metadata" / "ingest_summary.json").read_text())
    assert summary["balanced"] and summary["subjects"] == 40 and summary["shards"] <= 2 * 3  # 2 patient shards x 3 split folders
    assert (out / "metadata" / "ingest_config.yaml").read_text().count("num_shards: 2") == 1
    # A second run into the same place refuses instead of mixing datasets.
    assert main(["ingest", f"output={out}", "workers=1"]) == 1


def test_console_script_runs_in_a_subprocess(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "ehrfm.cli", "ingest", "--cfg", "job"],
                            capture_output=True, text=True, cwd=tmp_path, check=True)
    assert "num_shards: auto" in result.stdout
    assert list(tmp_path.iterdir()) == [], "Hydra must not write into the working directory"


def test_ingest_yaml_defaults_are_the_python_defaults() -> None:
    """conf/ingest.yaml restates IngestConfig's defaults for CLI users; the two must not drift."""
    import dataclasses

    from omegaconf import OmegaConf

    from ehrfm.ingest import IngestConfig
    from ehrfm.resources import conf_dir

    yaml = OmegaConf.to_container(OmegaConf.load(conf_dir() / "ingest.yaml"))
    python = IngestConfig(inputs=["x"], output="y")
    for field in dataclasses.fields(IngestConfig):
        if field.name in ("inputs", "output"):
            continue
        expected = None if field.name == "skip_types" else getattr(python, field.name)
        if isinstance(expected, tuple):  # YAML has lists; the config keeps sequences as tuples
            expected = list(expected)
        assert yaml[field.name] == expected, field.name


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_resolves_and_its_config_composes(name: str) -> None:
    from hydra import compose, initialize_config_dir

    from ehrfm.resources import conf_dir

    assert callable(STAGES[name].load())
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name=name)
    assert cfg is not None and "hydra" not in cfg


@pytest.mark.parametrize(("raised", "code", "cause"), [
    ("sigterm", 143, "SIGTERM"), ("ctrl_c", 130, "an interrupt (Ctrl-C)"),
    ("lightning_ctrl_c", 130, "an interrupt (Ctrl-C)")])
def test_an_interrupted_stage_exits_non_zero_and_says_so(raised: str, code: int, cause: str,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from ehrfm import cli

    def stopped(cfg: object) -> None:
        if raised == "sigterm":
            raise SIGTERMException  # what Lightning raises on SIGTERM: a SystemExit without a code
        if raised == "ctrl_c":
            raise KeyboardInterrupt
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise SystemExit(1) from None  # Lightning's graceful shutdown after Ctrl-C

    monkeypatch.setattr(cli.Stage, "load", lambda self: stopped)
    assert cli.main(["pretrain", "trainer.max_epochs=1"]) == code
    err = capsys.readouterr().err
    assert f"ehrfm pretrain: stopped by {cause} before it finished" in err
    assert "add ckpt_path=last to resume" in err
