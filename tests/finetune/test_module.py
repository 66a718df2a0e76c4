"""Loss masking, class weights and tuning AUROC of the finetuning module."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ehrfm.finetune.module import masked_task_loss, positive_weights, task_aurocs


def test_unlabelled_entries_do_not_touch_the_loss() -> None:
    labels = torch.tensor([[1.0, float("nan")], [0.0, 1.0], [float("nan"), 0.0]])
    logits = torch.tensor([[0.5, 3.0], [-1.0, 0.2], [7.0, -0.4]], requires_grad=True)
    loss = masked_task_loss(logits, labels, torch.ones(2))
    loss.backward()
    assert logits.grad is not None
    assert logits.grad[0, 1] == 0 and logits.grad[2, 0] == 0 and logits.grad[1, 1] != 0
    changed = logits.detach().clone()
    changed[0, 1], changed[2, 0] = -50.0, 50.0
    assert masked_task_loss(changed, labels, torch.ones(2)) == pytest.approx(float(loss.detach()))


def test_loss_is_the_mean_of_per_task_means() -> None:
    labels = torch.tensor([[1.0, float("nan")], [0.0, float("nan")], [1.0, 0.0]])
    logits = torch.zeros(3, 2)
    # every entry costs log(2); task 0 has 3 rows, task 1 one: the mean of means is still log(2)
    assert float(masked_task_loss(logits, labels, torch.ones(2))) == pytest.approx(math.log(2))
    weighted = masked_task_loss(logits, labels, torch.tensor([3.0, 1.0]))
    # task 0: (3*log2 + log2 + 3*log2)/3, task 1: log2
    assert float(weighted) == pytest.approx(((7 / 3) * math.log(2) + math.log(2)) / 2)
    assert float(masked_task_loss(logits, torch.full((3, 2), float("nan")), torch.ones(2))) == 0.0


def test_positive_weights_follow_train_prevalence() -> None:
    labels = np.array([[1, 1], [0, 1], [0, np.nan], [0, 0], [0, np.nan]], dtype=float)
    assert positive_weights(labels, "balanced") == [4.0, 0.5]
    assert positive_weights(labels, "none") == [1.0, 1.0]
    assert positive_weights(np.array([[1.0]] + [[0.0]] * 1000), "balanced", max_weight=50) == [50.0]
    with pytest.raises(ValueError, match="pos_weight"):
        positive_weights(labels, "heavy")


def test_task_aurocs_use_labelled_rows_and_flag_single_class_tasks() -> None:
    probs = np.array([[0.9, 0.1], [0.1, 0.2], [0.8, 0.3], [0.2, 0.9]])
    labels = np.array([[1, 0], [0, np.nan], [1, 0], [0, 0]], dtype=float)
    out = task_aurocs(probs, labels, ["a", "b"])
    assert out["a"] == 1.0 and math.isnan(out["b"])
