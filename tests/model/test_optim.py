"""Weight decay skips what the mixers mark ``_no_weight_decay``, in pretraining and finetuning."""

from __future__ import annotations

import pytest
import torch

from ehrfm.finetune.module import FinetuneModule
from ehrfm.model import BackboneConfig, MambaBackbone, MultitaskModel, param_groups
from ehrfm.pretrain.module import PretrainModule


def _marked(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if getattr(p, "_no_weight_decay", False)]


def _decayed(optimizer: torch.optim.Optimizer) -> set[int]:
    return {id(p) for group in optimizer.param_groups if group["weight_decay"] > 0 for p in group["params"]}


@pytest.mark.parametrize("mixer", ["mamba1", "mamba2"])
def test_marked_parameters_are_never_decayed(mixer: str) -> None:
    backbone = MambaBackbone(BackboneConfig.preset("tiny", vocab_size=40, mixer=mixer))
    marked = _marked(backbone)
    assert marked, "the mixers mark A_log, D and the step-size bias"
    if mixer == "mamba1":  # A_log is a matrix there: a dimension rule alone would decay it
        assert any(p.dim() == 2 for p in marked)
    decay, no_decay = param_groups(backbone, weight_decay=0.1)
    assert not {id(p) for p in marked} & {id(p) for p in decay["params"]}
    assert {id(p) for p in marked} <= {id(p) for p in no_decay["params"]}
    assert decay["params"] and all(p.dim() >= 2 for p in decay["params"])
    total = {id(p) for p in backbone.parameters()}
    assert {id(p) for p in decay["params"]} | {id(p) for p in no_decay["params"]} == total


@pytest.mark.parametrize("mixer", ["mamba1", "mamba2"])
def test_both_stages_build_their_optimizer_from_the_same_groups(mixer: str) -> None:
    config = BackboneConfig.preset("tiny", vocab_size=40, mixer=mixer)
    pretrain_module = PretrainModule(config.to_dict(), weight_decay=0.1)
    pretrain = pretrain_module.configure_optimizers()["optimizer"]
    model = MultitaskModel(config, ["a"], [4])
    finetune = FinetuneModule(model, [1.0], weight_decay=0.1).configure_optimizers()["optimizer"]
    for module, optimizer in ((pretrain_module.model, pretrain), (model, finetune)):
        marked = {id(p) for p in _marked(module)}
        assert marked and not marked & _decayed(optimizer)
        assert _decayed(optimizer), "matrices are still decayed"
    head = {id(p) for p in model.head.parameters()}
    assert any(group["initial_lr"] == 1e-3 and {id(p) for p in group["params"]} == head
               for group in finetune.param_groups)
