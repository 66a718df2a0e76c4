"""Head registry and BackboneConfig validation / presets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ehrfm.model import HEADS, PRESETS, BackboneConfig, build_head, register_head


def test_registry_builds_by_name_and_rejects_unknown_or_duplicate() -> None:
    cfg = BackboneConfig.preset("tiny", vocab_size=30)
    head = build_head("next_token", cfg, token_embedding=nn.Embedding(30, 64))
    assert head(torch.zeros(1, 64)).shape == (1, 30)
    with pytest.raises(KeyError, match="next_token"):
        build_head("risk", cfg)
    with pytest.raises(ValueError, match="already registered"):

        @register_head("next_token")
        class Other(nn.Module):
            pass


def test_new_heads_register_themselves() -> None:
    @register_head("_test_linear")
    class LinearHead(nn.Module):
        def __init__(self, config: BackboneConfig, n_out: int) -> None:
            super().__init__()
            self.proj = nn.Linear(config.d_model, n_out)

        def forward(self, hidden: torch.Tensor) -> torch.Tensor:
            return self.proj(hidden)

    try:
        head = build_head("_test_linear", BackboneConfig.preset("tiny"), n_out=3)
        assert head(torch.zeros(2, 64)).shape == (2, 3)
    finally:
        HEADS.pop("_test_linear")


def test_tied_head_checks_the_embedding_shape() -> None:
    with pytest.raises(ValueError, match="token_embedding"):
        build_head("next_token", BackboneConfig.preset("tiny", vocab_size=30),
                   token_embedding=nn.Embedding(31, 64))


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("mixer", ["mamba1", "mamba2"])
def test_presets_are_valid_for_both_mixers(name: str, mixer: str) -> None:
    cfg = BackboneConfig.preset(name, mixer=mixer)
    assert BackboneConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.state_size == (cfg.d_state or (64 if mixer == "mamba2" else 16))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("d_model", 0, "d_model must be a positive integer of at most 16,384, got 0"),
        ("headdim", 48, "multiple of headdim=48"),
        ("pad_token_id", 99, "pad_token_id must be in"),
        ("dropout", 1.0, "dropout must be in"),
        ("ngroups", 3, "multiple of ngroups=3"),
        ("dt_min", 0.0, "dt_min"),
    ],
)
def test_config_errors_quote_the_bad_value(field: str, value: object, message: str) -> None:
    overrides = {field: value}
    if field == "pad_token_id":
        overrides["vocab_size"] = 50
    with pytest.raises(ValueError, match=message):
        BackboneConfig.preset("tiny", **overrides)


def test_unknown_preset_and_fields() -> None:
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        BackboneConfig.preset("huge")
    with pytest.raises(ValueError, match=r"unknown BackboneConfig field\(s\) \['layers'\]"):
        BackboneConfig.from_dict({"layers": 3})


def test_model_config_files_match_the_python_presets() -> None:
    """conf/model/<name>.yaml (what Hydra users pick) and PRESETS (Python users) are one size."""
    from omegaconf import OmegaConf

    from ehrfm.model import PRESETS, BackboneConfig
    from ehrfm.resources import conf_dir

    for name, preset in PRESETS.items():
        from_file = BackboneConfig(
            **OmegaConf.to_container(OmegaConf.load(conf_dir() / "model" / f"{name}.yaml"))
        )
        from_python = BackboneConfig.preset(name)
        for field in ("mixer", "d_model", "n_layers", "headdim", "expand", "state_size", "n_heads"):
            assert getattr(from_file, field) == getattr(from_python, field), (name, field)
        assert set(preset) <= set(OmegaConf.load(conf_dir() / "model" / f"{name}.yaml"))
