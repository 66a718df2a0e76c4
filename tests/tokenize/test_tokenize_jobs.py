"""Tokenize as independent jobs: fit once, n jobs over the MEDS shards, a merge; equal to one run byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ehrfm
from ehrfm.jobs import JobMismatchError, MissingJobError, OverlappingJobsError, job_dir
from ehrfm.meds_dataset import data_shards
from ehrfm.tokenize import run_tokenize

TOKENIZER = {"min_count": 2}


def output_files(root: Path) -> dict[str, bytes]:
    """Every file under a tokenize output, by relative path (the partials must be gone)."""
    found = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    assert not any(name.startswith(".ehrfm-jobs") for name in found), "the merge removes the partials"
    return found


def assert_same_output(one: Path, many: Path) -> int:
    """Byte-identical file by file; ``summary.json`` equal but for ``seconds`` (wall time) and the output
    folder it names. Returns the number of files."""
    a, b = output_files(one), output_files(many)
    assert sorted(a) == sorted(b)
    assert sum(name.startswith("data/") for name in a) >= 3 and "tokenizer/vocab.jsonl" in a
    for name in a:
        if name == "summary.json":  # it names its own folder, which differs here by construction
            first, second = (json.loads(text[name].decode().replace(str(root), "<output>"))
                             for text, root in ((a, one), (b, many)))
            assert first.pop("seconds") >= 0 and second.pop("seconds") >= 0
            assert first == second
        else:
            assert a[name] == b[name], f"{name} differs between 1 job and {many.name}"
    return len(a)


@pytest.fixture(scope="module")
def meds(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 real Synthea bundles as a MEDS dataset of several shards per split."""
    folder = tmp_path_factory.mktemp("synthea20")
    for path in sorted((shared_data / "synthea-r4").glob("*.json.gz"))[:20]:
        (folder / path.name).symlink_to(path)
    out = tmp_path_factory.mktemp("meds20") / "meds"
    ehrfm.ingest_fhir(folder, out, workers=1, num_shards=4)
    assert len(data_shards(out)) >= 6
    return out


@pytest.fixture(scope="module")
def single(meds: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tok_one") / "tokens"
    return out, run_tokenize(input=str(meds), output=str(out), tokenizer=TOKENIZER)


def run_steps(meds: Path, out: Path, count: int, **settings: object) -> tuple[list[dict], dict]:
    if "tokenizer_dir" not in settings:
        fit = run_tokenize(input=str(meds), output=str(out), tokenizer=TOKENIZER, job={"count": count, "fit": True},
                           **settings)
        assert fit["step"] == "fit" and (out / "tokenizer" / "vocab.jsonl").is_file()
    jobs = [run_tokenize(input=str(meds), output=str(out), tokenizer=TOKENIZER, job={"index": k, "count": count},
                         **settings) for k in range(count)]
    assert not (out / "data").exists() and not (out / "summary.json").exists(), "jobs write their partials only"
    merged = run_tokenize(input=str(meds), output=str(out), tokenizer=TOKENIZER, job={"count": count}, **settings)
    return jobs, merged


@pytest.mark.parametrize("count", [2, 3])
def test_fit_then_jobs_then_merge_equal_one_run(meds: Path, single, tmp_path: Path, count: int) -> None:
    jobs, merged = run_steps(meds, tmp_path / "tokens", count)
    one, summary = single
    assert assert_same_output(one, tmp_path / "tokens") >= 7
    shards = len(data_shards(meds))
    assert [job["shards"] for job in jobs] == [len(range(k, shards, count)) for k in range(count)]
    assert sum(job["sequences"] for job in jobs) == merged["total"]["sequences"] == summary["total"]["sequences"] == 20
    assert merged["tokenizer"]["fitted_on"] == "train" and merged["shards"] == shards


def test_jobs_with_a_saved_tokenizer_need_no_fit_step(meds: Path, single, tmp_path: Path) -> None:
    saved = single[0] / "tokenizer"
    one = run_tokenize(input=str(meds), output=str(tmp_path / "one"), tokenizer_dir=str(saved))
    _, merged = run_steps(meds, tmp_path / "two", 2, tokenizer_dir=str(saved))
    assert assert_same_output(tmp_path / "one", tmp_path / "two") >= 7
    assert merged["tokenizer"]["source"] == one["tokenizer"]["source"] == str(saved)


def test_missing_fit_missing_job_and_mismatched_partials_are_refused(meds: Path, tmp_path: Path) -> None:
    out = tmp_path / "tokens"
    with pytest.raises(MissingJobError, match=r"fit.json is missing: .* job.count=2 job.fit=true"):
        run_tokenize(input=str(meds), output=str(out), tokenizer=TOKENIZER, job={"index": 0, "count": 2})
    run_tokenize(input=str(meds), output=str(out), tokenizer=TOKENIZER, job={"count": 2, "fit": True})
    run_tokenize(input=str(meds), output=str(out), tokenizer=TOKENIZER, job={"index": 0, "count": 2})
    with pytest.raises(MissingJobError, match=r"job 1 of 2 \(job.index=1\) has not run"):
        run_tokenize(input=str(meds), output=str(out), tokenizer=TOKENIZER, job={"count": 2})
    assert not (out / "data").exists() and not (out / "summary.json").exists()
    with pytest.raises(JobMismatchError, match=r"the fit step\) ran with history_tokens=None but this run has "
                                               r"history_tokens=64"):
        run_tokenize(input=str(meds), output=str(out), tokenizer=TOKENIZER, job={"index": 1, "count": 2},
                     history_tokens=64)
    run_tokenize(input=str(meds), output=str(out), tokenizer=TOKENIZER, job={"index": 1, "count": 2})
    manifest = job_dir(out, "tokenize", 1, 2) / "job.json"
    original = manifest.read_text()
    changed = json.loads(original)
    changed["shards"].append(json.loads((job_dir(out, "tokenize", 0, 2) / "job.json").read_text())["shards"][0])
    manifest.write_text(json.dumps(changed))
    with pytest.raises(OverlappingJobsError, match=r"jobs 0 and 1 both tokenized shard "):
        run_tokenize(input=str(meds), output=str(out), tokenizer=TOKENIZER, job={"count": 2})
    manifest.write_text(original)
    merged = run_tokenize(input=str(meds), output=str(out), tokenizer=TOKENIZER, job={"count": 2})
    assert merged["total"]["sequences"] == 20 and not (out / ".ehrfm-jobs").exists()


def test_job_settings_are_checked(meds: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"job.fit=true is the step before the jobs"):
        run_tokenize(input=str(meds), output=str(tmp_path), job={"index": 0, "count": 2, "fit": True})
    with pytest.raises(ValueError, match=r"unknown key 'job.indx'"):
        run_tokenize(input=str(meds), output=str(tmp_path), job={"indx": 0, "count": 2})
    with pytest.raises(ValueError, match=r"job.index must be an integer in 0..1 \(job.count=2\), got 5"):
        run_tokenize(input=str(meds), output=str(tmp_path), job={"index": 5, "count": 2})


@pytest.mark.slow
def test_hydra_multirun_with_joblib(meds: Path, single, tmp_path: Path) -> None:
    out = tmp_path / "tokens"
    common = [f"input={meds}", f"output={out}", "tokenizer.min_count=2", "job.count=2"]

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "ehrfm.cli", "tokenize", *args], capture_output=True, text=True,
                              timeout=600, cwd=tmp_path, env={**os.environ, "EHRFM_PROGRESS": "0"})
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return done.stdout

    assert "tokenize fit for 2 jobs" in cli(*common, "job.fit=true")
    sweep = cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path / 'multirun'}",
                *common, "job.index=0,1")
    assert "tokenize job 0 of 2" in sweep and "tokenize job 1 of 2" in sweep
    cli(*common)
    (out / "tokenize_config.yaml").unlink()  # the CLI's copy of its settings (job.count: 2 here)
    assert_same_output(single[0], out)


def test_a_progress_bar_counts_shards_when_forced(meds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run_tokenize(input=str(meds), output=str(tmp_path / "quiet"), tokenizer=TOKENIZER)
    assert "tokenize:" not in capsys.readouterr().err
    monkeypatch.setenv("EHRFM_PROGRESS", "1")
    run_tokenize(input=str(meds), output=str(tmp_path / "shown"), tokenizer=TOKENIZER)
    err = capsys.readouterr().err
    assert "tokenize:" in err and f"/{len(data_shards(meds))} " in err and "shard" in err
