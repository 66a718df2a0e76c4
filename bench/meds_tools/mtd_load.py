"""Read ehrfm's labels through meds-torch-data: a MEDSPytorchDataset per split, one batch each.

Run by run_meds_torch_data.sh inside meds-torch-data's own venv:
    python mtd_load.py TENSORIZED_DIR TASK_LABELS_DIR
"""

import sys
import time

import meds_torchdata
import torch
from meds_torchdata import MEDSPytorchDataset, MEDSTorchDataConfig

FIELDS = ("code", "numeric_value", "numeric_value_mask", "time_delta_days", "static_code",
          "static_numeric_value", "static_numeric_value_mask", "boolean_value", "event_mask")


def main(tensorized: str, labels: str) -> None:
    torch.set_num_threads(2)
    print("meds_torchdata", getattr(meds_torchdata, "__version__", "?"), "torch", torch.__version__)
    for split in ("train", "tuning", "held_out"):
        started = time.time()
        config = MEDSTorchDataConfig(tensorized_cohort_dir=tensorized, max_seq_len=512,
                                     seq_sampling_strategy="to_end", task_labels_dir=labels,
                                     static_inclusion_mode="include", batch_mode="SM")
        dataset = MEDSPytorchDataset(config, split=split)
        print(f"[{split}] items={len(dataset)} (built in {time.time() - started:.2f}s)")
        loader = dataset.get_dataloader(batch_size=32, shuffle=False, num_workers=0)
        batch = next(iter(loader))
        print(f"[{split}] batch type={type(batch).__name__}")
        for name in FIELDS:
            value = getattr(batch, name, None)
            if value is not None:
                print(f"   {name}: {tuple(value.shape)} {value.dtype}")
        if split == "train":
            batches = sum(1 for _ in loader)
            print(f"[{split}] read the whole dataloader: {batches} batches in {time.time() - started:.2f}s")


if __name__ == "__main__":
    main(*sys.argv[1:3])
