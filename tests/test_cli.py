"""The ``ehrfm`` command: usage, stages, Hydra overrides, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

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
        if dataclasses.is_dataclass(expected):  # a group of keys (job.index, job.count) is a mapping in YAML
            expected = dataclasses.asdict(expected)
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


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_help_shows_every_key_of_that_stage_with_its_default(name: str,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from ehrfm.cli import compose_stage

    assert main([name, "--help"]) == 0
    page = capsys.readouterr().out
    assert page.startswith(f"usage: ehrfm {name} ")
    composed = OmegaConf.to_container(compose_stage(name), resolve=False)  # keeps ??? (required) keys
    for key, value in composed.items():
        if isinstance(value, (dict, list)):
            assert key in page, key  # a group (model=tiny) or a block of keys
            continue
        shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        assert any(line.strip().startswith(f"{key}:") and shown in line for line in page.splitlines()), (key, shown)
    # groups of other stages are not listed (Hydra's generic page lists them all)
    others = {f"{other}_experiment" for other in STAGES if other != name}
    assert not any(group in page for group in others)


def test_hydra_help_stays_reachable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["label", "--hydra-help"]) == 0
    assert "Powered by Hydra" in capsys.readouterr().out


def test_dir_lists_the_public_api_and_results_convert_to_pandas(tmp_path: Path) -> None:
    import ehrfm
    from ehrfm.meds_dataset import read_splits
    from ehrfm.resources import example_fhir_dir

    assert {"ingest_fhir", "EventTokenizer", "load_task", "RiskModel", "IngestConfig"} <= set(dir(ehrfm))
    ehrfm.ingest_fhir(example_fhir_dir(), tmp_path / "meds", workers=1)
    frame = read_splits(tmp_path / "meds").to_pandas()
    assert list(frame.columns[:2]) == ["subject_id", "split"] and len(frame) > 0
