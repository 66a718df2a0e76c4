"""Every stage: one typed config, a plain Python entry, experiments that belong to one stage.

A typo'd key fails before any work with the key named; every experiment composes with its own
stage into a valid typed config, and another stage does not find it.
"""

from __future__ import annotations

import pytest
from hydra.errors import HydraException

from ehrfm.cli import STAGES, STAGES_WITH_EXPERIMENTS, compose_stage
from ehrfm.demo import DemoConfig
from ehrfm.evaluate.config import EvaluateConfig
from ehrfm.finetune import FinetuneConfig
from ehrfm.ingest import IngestConfig
from ehrfm.pretrain import PretrainConfig
from ehrfm.resources import conf_dir
from ehrfm.score import ScoreConfig
from ehrfm.synth import SynthConfig
from ehrfm.tasks import LabelConfig
from ehrfm.tokenize import TokenizeConfig
from ehrfm.typed_config import ConfigError, from_mapping, stage_mapping

CONFIGS = {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "evaluate": EvaluateConfig,
           "tokenize": TokenizeConfig, "label": LabelConfig, "demo": DemoConfig, "score": ScoreConfig,
           "synth": SynthConfig}
REQUIRED = {"tokenize": ["input=/meds", "output=/tokens"], "label": ["input=/meds", "output=/labels"],
            "score": ["bundle=/bundle", "input=/meds", "output=/scores"], "synth": ["output=/population"]}
EXPERIMENTS = [(stage, path.stem) for stage in STAGES_WITH_EXPERIMENTS
               for path in sorted((conf_dir() / f"{stage}_experiment").glob("*.yaml"))]


def _typed(stage: str, overrides: list[str]):
    return from_mapping(CONFIGS[stage], stage_mapping(compose_stage(stage, overrides), where=stage),
                        where=stage)


def test_every_stage_has_a_typed_config() -> None:
    assert set(STAGES) == {*CONFIGS, "ingest"}


@pytest.mark.parametrize("stage", sorted(CONFIGS))
def test_the_composed_defaults_are_the_python_defaults(stage: str) -> None:
    typed = _typed(stage, REQUIRED.get(stage, []))
    if stage in REQUIRED:
        given = dict(o.split("=") for o in REQUIRED[stage])
        assert all(getattr(typed, key) == value for key, value in given.items())
        return
    assert typed == CONFIGS[stage]()


@pytest.mark.parametrize("stage", sorted(CONFIGS))
def test_a_typo_fails_with_the_key_named(stage: str) -> None:
    with pytest.raises(ConfigError, match=rf"{stage}: unknown key 'outptu' \(did you mean 'output'\?\)"):
        _typed(stage, [*REQUIRED.get(stage, []), "+outptu=x"])


def test_nested_typos_and_bad_values_are_named() -> None:
    with pytest.raises(ConfigError,
                       match=r"unknown key 'trainer.max_epoch' \(did you mean 'trainer.max_epochs'\?\)"):
        _typed("pretrain", ["+trainer.max_epoch=3"])
    with pytest.raises(ConfigError, match=r"unknown key 'optim.lr_bakbone'"):
        _typed("finetune", ["+optim.lr_bakbone=1e-3"])
    with pytest.raises(ConfigError, match=r"'n_bootstrap' must be an integer, got 'many'"):
        _typed("evaluate", ["n_bootstrap=many"])
    with pytest.raises(ConfigError, match=r"unknown key 'tokenizer.min_cnt'"):
        _typed("tokenize", [*REQUIRED["tokenize"], "+tokenizer.min_cnt=3"])
    with pytest.raises(ConfigError, match="IngestConfig|ingest"):
        IngestConfig.from_mapping({"inputs": ["x"], "output": "y", "num_shard": 3})


@pytest.mark.parametrize(("stage", "experiment"), EXPERIMENTS)
def test_an_experiment_composes_only_with_its_stage(stage: str, experiment: str) -> None:
    typed = _typed(stage, [f"experiment={experiment}"])
    assert isinstance(typed, CONFIGS[stage])
    for other in STAGES_WITH_EXPERIMENTS:
        if other != stage and not (conf_dir() / f"{other}_experiment" / f"{experiment}.yaml").is_file():
            with pytest.raises(HydraException, match=experiment):
                compose_stage(other, [f"experiment={experiment}"])


def test_a_pretraining_experiment_is_refused_by_finetune() -> None:
    with pytest.raises(HydraException, match="synthea_small"):
        compose_stage("finetune", ["experiment=synthea_small"])
    with pytest.raises(HydraException):
        compose_stage("label", ["input=/m", "output=/l", "experiment=synthea_mtf"])
