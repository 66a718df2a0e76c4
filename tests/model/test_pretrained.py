"""save_pretrained / from_pretrained: round trips, tied weights, clear errors, no pickle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from model_builders import random_batch, tiny_config

from ehrfm.model import EHRLanguageModel, MambaBackbone, MissingPretrainedFileError, PretrainedFormatError


@pytest.fixture()
def saved_lm(tmp_path: Path) -> tuple[EHRLanguageModel, Path]:
    torch.manual_seed(0)
    model = EHRLanguageModel(tiny_config("mamba2")).eval()
    with torch.no_grad():  # make sure nothing matches a fresh init by accident
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model, model.save_pretrained(tmp_path / "lm")


@pytest.mark.parametrize("mixer", ["mamba1", "mamba2"])
def test_round_trip_gives_identical_outputs(tmp_path: Path, mixer: str) -> None:
    torch.manual_seed(0)
    model = EHRLanguageModel(tiny_config(mixer)).eval()
    out = model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    loaded = EHRLanguageModel.from_pretrained(out).eval()
    assert loaded.config == model.config
    batch = random_batch(2, 9)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch)["logits"], model(batch)["logits"], rtol=0, atol=0)


def test_tied_weight_is_stored_once_and_retied(saved_lm: tuple[EHRLanguageModel, Path]) -> None:
    from safetensors import safe_open

    _, path = saved_lm
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert "backbone.embedding.token.weight" in keys and "lm_head.weight" not in keys
    loaded = EHRLanguageModel.from_pretrained(path)
    assert loaded.lm_head.weight is loaded.backbone.embedding.token.weight


def test_backbone_loads_from_a_language_model_directory(saved_lm: tuple[EHRLanguageModel, Path]) -> None:
    model, path = saved_lm
    backbone = MambaBackbone.from_pretrained(path).eval()
    batch = random_batch(1, 5)
    with torch.no_grad():
        torch.testing.assert_close(backbone(batch), model(batch)["hidden"], rtol=0, atol=0)
    with pytest.raises(PretrainedFormatError, match="MambaBackbone"):
        EHRLanguageModel.from_pretrained(backbone.save_pretrained(path.parent / "bb"))


def test_missing_directory_and_files_are_named(tmp_path: Path,
                                               saved_lm: tuple[EHRLanguageModel, Path]) -> None:
    with pytest.raises(MissingPretrainedFileError, match="not found"):
        EHRLanguageModel.from_pretrained(tmp_path / "nope")
    _, path = saved_lm
    (path / "model.safetensors").unlink()
    with pytest.raises(MissingPretrainedFileError, match="model.safetensors"):
        EHRLanguageModel.from_pretrained(path)
    (path / "config.json").unlink()
    with pytest.raises(MissingPretrainedFileError, match="config.json"):
        EHRLanguageModel.from_pretrained(path)


def test_bad_config_errors_name_the_file(saved_lm: tuple[EHRLanguageModel, Path]) -> None:
    _, path = saved_lm
    config_path = path / "config.json"
    meta = json.loads(config_path.read_text())
    config_path.write_text("{not json")
    with pytest.raises(PretrainedFormatError, match="config.json: not valid JSON"):
        EHRLanguageModel.from_pretrained(path)
    config_path.write_text(json.dumps({**meta, "config": {**meta["config"], "d_modle": 3}}))
    with pytest.raises(PretrainedFormatError,
                       match=r"config.json: unknown BackboneConfig field\(s\) \['d_modle'\]"):
        EHRLanguageModel.from_pretrained(path)
    config_path.write_text(json.dumps({**meta, "config": {**meta["config"], "d_model": 32}}))
    with pytest.raises(PretrainedFormatError, match="model.safetensors: .* has shape"):
        EHRLanguageModel.from_pretrained(path)


def test_pickles_are_refused(saved_lm: tuple[EHRLanguageModel, Path]) -> None:
    """A torch.save (pickle) file in place of the safetensors file is rejected, never unpickled."""
    model, path = saved_lm
    torch.save(model.state_dict(), path / "model.safetensors")
    with pytest.raises(PretrainedFormatError, match="model.safetensors: unreadable safetensors"):
        EHRLanguageModel.from_pretrained(path)


def test_missing_weights_are_listed(tmp_path: Path, saved_lm: tuple[EHRLanguageModel, Path]) -> None:
    from safetensors.torch import load_file, save_file

    _, path = saved_lm
    weights = load_file(str(path / "model.safetensors"))
    weights.pop("backbone.norm_f.weight")
    save_file(weights, str(path / "model.safetensors"))
    with pytest.raises(PretrainedFormatError, match=r"missing \['backbone.norm_f.weight'\]"):
        EHRLanguageModel.from_pretrained(path)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("n_layers", 100_000, r"n_layers must be a positive integer of at most 512, got 100000"),
    ("d_model", 10**9, r"d_model must be a positive integer of at most 16,384"),
    ("vocab_size", -1, r"vocab_size must be a positive integer"),
    ("norm_eps", -1, r"norm_eps must be > 0, got -1"),
    ("norm_eps", float("nan"), r"norm_eps must be a finite number, got nan"),
    ("initializer_range", float("inf"), r"initializer_range must be a finite number, got inf"),
    ("dt_max", "0.1", r"dt_max must be a finite number, got '0.1'"),
    ("a_init_range", [1, float("inf")], r"a_init_range must be finite"),
    ("n_layers", True, r"n_layers must be a positive integer"),
])
def test_absurd_or_non_finite_config_values_are_refused_before_anything_is_built(
        saved_lm: tuple[EHRLanguageModel, Path], key: str, value: object, message: str) -> None:
    import resource

    _, path = saved_lm
    config_path = path / "config.json"
    meta = json.loads(config_path.read_text())
    meta["config"][key] = value
    config_path.write_text(json.dumps(meta))  # json writes NaN / Infinity, as a tampered file may
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(PretrainedFormatError, match=rf"config.json: BackboneConfig.{message}"):
        EHRLanguageModel.from_pretrained(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing big allocated


def test_a_config_that_disagrees_with_the_weights_header_fails_before_allocating(
        saved_lm: tuple[EHRLanguageModel, Path]) -> None:
    """Within the bounds, a config far larger than its weights is caught from the header alone."""
    import resource

    _, path = saved_lm
    config_path = path / "config.json"
    meta = json.loads(config_path.read_text())
    meta["config"].update(n_layers=512, d_model=4096, headdim=64)  # ~40 GB if it were built for real
    config_path.write_text(json.dumps(meta))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(PretrainedFormatError,
                       match=r"model.safetensors: holds [\d,]+ parameters, but .*config.json describes a model of "
                             r"about [\d,]+: the config and the weights do not belong together"):
        EHRLanguageModel.from_pretrained(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB


def test_weights_with_nan_or_infinity_are_refused(saved_lm: tuple[EHRLanguageModel, Path]) -> None:
    from safetensors.torch import load_file, save_file

    _, path = saved_lm
    weights = load_file(str(path / "model.safetensors"))
    weights["backbone.norm_f.weight"][3] = float("nan")
    save_file(weights, str(path / "model.safetensors"))
    with pytest.raises(PretrainedFormatError, match=r"backbone.norm_f.weight holds NaN or infinite values"):
        EHRLanguageModel.from_pretrained(path)
