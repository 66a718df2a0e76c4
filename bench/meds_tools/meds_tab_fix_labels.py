"""Write MEDS-Tab's task label cache with each label's event_id computed on sorted inputs.

meds-tab 0.2.0 (with polars 1.44) builds the cache in ``cache_task.extract_labels`` with an
inner join that does not keep row order, then an as-of join on the unsorted result: on ehrfm's
Synthea labels about 37% of the labels got the event_id of a *later* event (features from after
the prediction time). This writes the same files from sorted inputs; ``meds-tab-cache-task``
then finds them ("Labels already exist") and uses them. Run inside MEDS-Tab's venv:
    python meds_tab_fix_labels.py MEDS_DATA_DIR CODES_PARQUET LABEL_DIR OUT_LABEL_CACHE_DIR MIN_CODE_COUNT
"""

import sys
from pathlib import Path

import polars as pl
from MEDS_tabular_automl.describe_codes import filter_parquet, get_feature_columns
from MEDS_tabular_automl.utils import get_events_df, get_unique_time_events_df


def main(data_dir: str, codes_file: str, label_dir: str, out_dir: str, min_count: str) -> None:
    feature_columns = get_feature_columns(codes_file)
    codes = pl.read_parquet(codes_file).filter(pl.col("count") >= int(min_count))["code"].to_list()
    labels = (pl.scan_parquet(Path(label_dir) / "**/*.parquet")
              .rename({"prediction_time": "time", "boolean_value": "label"})
              .group_by(pl.col("subject_id", "time"), maintain_order=True).first()
              .collect())
    for shard in sorted(Path(data_dir).glob("*/*.parquet")):
        events = (get_unique_time_events_df(get_events_df(filter_parquet(shard, codes), feature_columns))
                  .with_row_index("event_id").select("subject_id", "time", "event_id").collect()
                  .with_columns(pl.col("event_id").cast(pl.Int64)))
        rows = (labels.join(events.select("subject_id").unique(), on="subject_id", how="inner", maintain_order="left")
                .sort("subject_id", "time"))
        cached = (rows.join_asof(events.sort("subject_id", "time"), by="subject_id", on="time", check_sortedness=False)
                  .with_columns(pl.col("event_id").fill_null(-1)))
        target = Path(out_dir) / shard.parent.name / f"{shard.stem}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        cached.write_parquet(target, use_pyarrow=True)
        print(f"{target}: {cached.height} labels, {int(cached['label'].sum())} positive, "
              f"{(cached['event_id'] == -1).sum()} without history, {events.height} event times")


if __name__ == "__main__":
    main(*sys.argv[1:6])
