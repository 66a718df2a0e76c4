"""MultitaskModel: the prompt design (one history pass, one step per task), heads, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ehrfm.model import HEADS, BackboneConfig, EHRLanguageModel, MambaBackbone
from ehrfm.model.multitask import MultitaskModel
from ehrfm.tokenize.sequence_schema import TokenType

VOCAB = 40
PROMPTS = [4, 5, 6]


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[1, 9, 10, 11, 12], [1, 12, 13, 0, 0], [1, 20, 0, 0, 0]])
    times = torch.tensor([[19000.0, 19000.0, 19002.0, 19003.0, 19003.5],
                          [18000.0, 18000.0, 18001.0, 0.0, 0.0],
                          [17000.0, 17000.5, 0.0, 0.0, 0.0]], dtype=torch.float64)
    return {
        "input_ids": ids, "attention_mask": ids != 0, "time_days": times,
        "age_years": torch.full((3, 5), 60.0), "visit_index": torch.ones(3, 5, dtype=torch.long),
        "token_type": torch.full((3, 5), int(TokenType.EVENT)),
        "prompt_time_days": torch.tensor([19004.0, 18002.0, 17001.0], dtype=torch.float64),
        "prompt_age_years": torch.tensor([61.0, 50.0, 40.0]),
        "prompt_visit_index": torch.tensor([1, 1, 1]),
    }


def _full_sequence(batch: dict[str, torch.Tensor], row: int, prompt_id: int) -> dict[str, torch.Tensor]:
    """History + [TASK] as one ordinary sequence (what the prompt design must equal)."""
    n = int(batch["attention_mask"][row].sum())

    def cat(key: str, last: torch.Tensor) -> torch.Tensor:
        return torch.cat([batch[key][row, :n], last.reshape(1).to(batch[key].dtype)])[None]

    return {"input_ids": cat("input_ids", torch.tensor(prompt_id)),
            "time_days": cat("time_days", batch["prompt_time_days"][row]),
            "age_years": cat("age_years", batch["prompt_age_years"][row]),
            "visit_index": cat("visit_index", batch["prompt_visit_index"][row]),
            "token_type": cat("token_type", torch.tensor(int(TokenType.TASK)))}


@pytest.mark.parametrize("mixer", ["mamba2", "mamba1"])
def test_prompt_steps_equal_a_full_pass_over_history_plus_task_token(mixer: str) -> None:
    torch.manual_seed(0)
    model = MultitaskModel(BackboneConfig.preset("tiny", vocab_size=VOCAB, mixer=mixer), ["a", "b", "c"],
                           PROMPTS).eval()
    batch = _batch()
    with torch.no_grad():
        _, state = model.encode(batch)
        prompted = model.prompt(state, batch, model.task_index())
        for row in range(3):
            for k, prompt_id in enumerate(PROMPTS):
                full = model.backbone(_full_sequence(batch, row, prompt_id))[0, -1]
                torch.testing.assert_close(prompted[row, k], full, atol=2e-5, rtol=1e-4)
        # and the prompts differ: the task token changes the answer
        assert (prompted[:, 0] - prompted[:, 1]).abs().max() > 1e-3


def test_one_history_pass_serves_every_task(monkeypatch: pytest.MonkeyPatch) -> None:
    model = MultitaskModel(BackboneConfig.preset("tiny", vocab_size=VOCAB), ["a", "b", "c"], PROMPTS).eval()
    calls = {"forward": 0, "readout": 0}
    forward, readout = MambaBackbone.forward, MambaBackbone.readout

    def counting_forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["forward"] += 1
        return forward(self, *args, **kwargs)

    def counting_readout(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["readout"] += 1
        return readout(self, *args, **kwargs)

    monkeypatch.setattr(MambaBackbone, "forward", counting_forward)
    monkeypatch.setattr(MambaBackbone, "readout", counting_readout)
    with torch.no_grad():
        one = model(_batch(), model.task_index(["b"]))
        calls_one = dict(calls)
        every = model(_batch())
    assert calls_one == {"forward": 1, "readout": 1}
    assert calls == {"forward": 2, "readout": 2}  # three tasks: still one history pass and one readout
    assert one.shape == (3, 1) and every.shape == (3, 3)
    torch.testing.assert_close(one[:, 0], every[:, 1])


def test_task_heads_are_registered_and_per_task_columns_are_independent() -> None:
    assert {"task_shared", "task_per_task"} <= set(HEADS)
    config = BackboneConfig.preset("tiny", vocab_size=VOCAB)
    model = MultitaskModel(config, ["a", "b"], [4, 5], head="task_per_task").eval()
    batch = _batch()
    with torch.no_grad():
        before = model(batch)
        model.head.weight[1].add_(1.0)
        after = model(batch)
    torch.testing.assert_close(before[:, 0], after[:, 0])
    assert (before[:, 1] - after[:, 1]).abs().min() > 0


def test_save_and_load_round_trip_and_backbone_reuse(tmp_path: Path) -> None:
    torch.manual_seed(1)
    config = BackboneConfig.preset("tiny", vocab_size=VOCAB)
    lm = EHRLanguageModel(config)
    lm.save_pretrained(tmp_path / "pretrained")
    model = MultitaskModel.from_backbone(tmp_path / "pretrained", ["a", "b"], [4, 5],
                                         head="task_per_task").eval()
    for key, value in lm.backbone.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[key], value)
    model.save_pretrained(tmp_path / "finetuned")
    loaded = MultitaskModel.from_pretrained(tmp_path / "finetuned").eval()
    assert loaded.task_names == ["a", "b"] and loaded.head_name == "task_per_task"
    assert loaded.prompt_token_ids.tolist() == [4, 5]
    with torch.no_grad():
        torch.testing.assert_close(loaded(_batch()), model(_batch()))
    backbone = MambaBackbone.from_pretrained(tmp_path / "finetuned")  # e.g. for a probe of a finetuned model
    torch.testing.assert_close(backbone.state_dict()["norm_f.weight"],
                               model.backbone.state_dict()["norm_f.weight"])


def test_bad_task_settings_are_rejected() -> None:
    config = BackboneConfig.preset("tiny", vocab_size=VOCAB)
    with pytest.raises(ValueError, match="one prompt token per task"):
        MultitaskModel(config, ["a", "b"], [4])
    with pytest.raises(ValueError, match="unique"):
        MultitaskModel(config, ["a", "b"], [4, 4])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        MultitaskModel(config, ["a"], [VOCAB])
    with pytest.raises(KeyError, match="unknown task head"):
        MultitaskModel(config, ["a"], [4], head="nope")
    model = MultitaskModel(config, ["a"], [4])
    with pytest.raises(KeyError, match="not among"):
        model.task_index(["z"])
