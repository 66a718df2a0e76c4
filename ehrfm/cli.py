"""The ``ehrfm`` command: ``ehrfm <stage> [hydra overrides]``.

Each stage is a Hydra app whose primary config is ``conf/<stage>.yaml``, so every Hydra feature
works (``key=value`` overrides, ``--cfg job``, ``-m`` sweeps, launchers). This module only
wires stages to their functions; the work lives in the stage's sub-package, whose runner turns
the composed config into the stage's typed config (unknown keys are refused by name).

Experiments belong to one stage: ``experiment=NAME`` on the command line of stage ``S`` selects
``conf/S_experiment/NAME.yaml``, so an experiment written for another stage is not found.

>>> alias_experiment("pretrain", ["experiment=synthea_small", "trainer.max_epochs=2"])
['pretrain_experiment=synthea_small', 'trainer.max_epochs=2']
>>> alias_experiment("ingest", ["experiment=x"])    # ingest has no experiments: Hydra refuses it
['experiment=x']
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

USAGE_HEAD = """usage: ehrfm <stage> [key=value ...] [hydra flags]

Foundation models on electronic health records. Stages:
"""
USAGE_TAIL = """
Each stage reads conf/<stage>.yaml; override any key on the command line, e.g.
  ehrfm ingest input=../fhir output=meds num_shards=8
  ehrfm ingest --cfg job          (print the composed config and exit)
  ehrfm <stage> --help            (that stage's keys, their defaults and what they mean)
  ehrfm <stage> --hydra-help      (Hydra's own flags)
"""


_STAGE_ENV = "EHRFM_STAGE"
STAGES_WITH_EXPERIMENTS = ("pretrain", "finetune", "evaluate")
_EXPERIMENT = re.compile(r"^([+~]*)experiment(?==|$)")


def alias_experiment(stage: str, overrides: list[str]) -> list[str]:
    """``experiment=X`` -> ``<stage>_experiment=X`` for the stages that have experiments."""
    if stage not in STAGES_WITH_EXPERIMENTS:
        return list(overrides)
    return [_EXPERIMENT.sub(rf"\g<1>{stage}_experiment", o) for o in overrides]


def compose_stage(stage: str, overrides: list[str] | None = None) -> Any:
    """The config ``ehrfm <stage> <overrides>`` would run with (Hydra compose, no run)."""
    from hydra import compose, initialize_config_dir

    from ehrfm.resources import conf_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir()), job_name=f"ehrfm_{stage}"):
        return compose(config_name=stage, overrides=alias_experiment(stage, list(overrides or [])))


class StageInterrupted(BaseException):
    """A stage stopped by a signal or Ctrl-C: the command exits non-zero (130 or 143) and says so.

    A ``BaseException``, so that Hydra's error handling (which catches ``Exception``) lets it through.
    """

    def __init__(self, cause: str, exit_code: int) -> None:
        super().__init__(cause)
        self.cause = cause
        self.exit_code = exit_code


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    runner: str  # "module:function" taking the composed DictConfig

    def load(self) -> Any:
        module, function = self.runner.split(":")
        return getattr(importlib.import_module(module), function)


STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage("demo", "run the whole flow on ehrfm's built-in synthetic patients",
              "ehrfm.demo.stage:run_demo_stage"),
        Stage("synth", "simulate a FHIR population with planted, known risk (and its ground truth)",
              "ehrfm.synth.stage:run_synth_stage"),
        Stage("ingest", "FHIR R4 Bundles / Bulk ndjson -> MEDS v0.4 dataset",
              "ehrfm.ingest.stage:run_ingest_stage"),
        Stage("tokenize", "MEDS dataset -> timed token sequences (fit or load a tokenizer)",
              "ehrfm.tokenize.stage:run_tokenize_stage"),
        Stage("pretrain", "next-event pretraining of the Mamba backbone (Lightning)",
              "ehrfm.pretrain.stage:run_pretrain_stage"),
        Stage("label", "MEDS dataset -> leak-free, censored task labels (tasks defined in YAML)",
              "ehrfm.tasks.stage:run_label_stage"),
        Stage("finetune", "multitask prompted finetuning of a pretrained model on task labels",
              "ehrfm.finetune.stage:run_finetune_stage"),
        Stage("evaluate", "finetuned model vs linear probe vs count-feature baselines, with CIs",
              "ehrfm.evaluate.stage:run_evaluate_stage"),
        Stage("score", "a finetuned model bundle scores a population: MEDS predictions + FHIR RiskAssessment",
              "ehrfm.score.stage:run_score_stage"),
    )
}


def usage() -> str:
    width = max(len(name) for name in STAGES)
    lines = [f"  {stage.name:<{width}}  {stage.summary}" for stage in STAGES.values()]
    return USAGE_HEAD + "\n".join(lines) + "\n" + USAGE_TAIL


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] in ("-V", "--version"):
        from ehrfm import __version__

        print(f"ehrfm {__version__}")
        return 0
    name, overrides = args[0], args[1:]
    inherited = os.environ.get(_STAGE_ENV)
    if name not in STAGES and inherited in STAGES and ("=" in name or name.startswith("-")):
        # A child process that Lightning's DDP launcher started by re-running this command line
        # (which holds only the Hydra overrides): the stage comes from the parent's environment.
        name, overrides = inherited, args
    stage = STAGES.get(name)
    if stage is None:
        print(f"ehrfm: unknown stage {name!r}\n", file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    if any(flag in ("-h", "--help") for flag in overrides):
        from ehrfm.stage_help import stage_help

        print(stage_help(stage.name, stage.summary), end="")
        return 0
    if "--hydra-help" in overrides:  # Hydra's generic page, for its own flags
        overrides = ["--help" if flag == "--hydra-help" else flag for flag in overrides]
    return _run_hydra_stage(stage, overrides)


def _run_hydra_stage(stage: Stage, overrides: list[str]) -> int:
    import hydra
    from omegaconf import DictConfig

    from ehrfm.resources import conf_dir

    runner = stage.load()

    @hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=stage.name)
    def _app(cfg: DictConfig) -> None:
        try:
            runner(cfg)
        except KeyboardInterrupt:
            raise StageInterrupted("an interrupt (Ctrl-C)", 130) from None
        except SystemExit as exc:
            # Lightning turns SIGTERM into a SystemExit without a code, which would exit 0 as if the
            # stage had finished; a scheduler or a pipeline must see that it did not.
            if type(exc).__name__ == "SIGTERMException":
                raise StageInterrupted("SIGTERM", 143) from None
            if isinstance(exc.__context__, KeyboardInterrupt):  # Lightning's sys.exit(1) after Ctrl-C
                raise StageInterrupted("an interrupt (Ctrl-C)", 130) from None
            raise

    saved = sys.argv
    # Hydra reads the overrides from sys.argv; the program name stays so that launchers that
    # re-run the command (Lightning DDP) find the same program.
    sys.argv = [saved[0], *alias_experiment(stage.name, overrides)]
    os.environ[_STAGE_ENV] = stage.name
    try:
        _app()
    except StageInterrupted as stop:
        print(f"ehrfm {stage.name}: stopped by {stop.cause} before it finished; its outputs are incomplete "
              f"and no final model or result was written. Run the same command again to redo it"
              f"{' (add ckpt_path=last to resume from the last checkpoint)' if stage.name == 'pretrain' else ''}.",
              file=sys.stderr)
        return stop.exit_code
    except SystemExit as exc:  # Hydra exits on its own flags (--help, --cfg) and on errors
        return int(exc.code or 0) if isinstance(exc.code, int) or exc.code is None else 1
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
