"""Free text stays out of saved tokenizers unless ``free_text_tokens`` is set (privacy, issue 11).

A vocabulary ships with every model bundle: a name written in a concept's text (``TEXT/Dr John
Smith``) or in a ``valueString`` (``Jane Doe``) must not become a token, or a value-bin key.
"""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import polars as pl
import pytest
from meds_builders import event, events_frame, patient, visit, write_meds

from ehrfm.tokenize import EventTokenizer, TokenizerFormatError, run_tokenize
from ehrfm.tokenize.sequences import (
    CODED_VOCABS,
    FREE_TEXT_CODE,
    VALUE_MARKERS,
    coded_text_expr,
    is_coded_text,
)
from ehrfm.tokenize.tokenizer import BINS_FILE, CONFIG_FILE, VOCAB_FILE

NAMES = (b"John Smith", b"Jane Doe")
CODED_ANSWER = "TEXT/SNOMED/266919005"


def cohort(n: int = 8) -> pl.DataFrame:
    """``n`` patients, each with a free-text condition (with a number, so it could get value
    bins), a valueString name, a coded answer, a comparator marker and a free-text race."""
    rows = []
    for s in range(1, n + 1):
        rows += [*patient(s), event(s, None, "ETHNICITY/TEXT:Jane Doe family")]
        enc = f"e{s}"
        rows += visit(
            s, enc, "2020-01-01 09:00", "2020-01-01 10:00", "AMB",
            event(s, "2020-01-01 09:05", "TEXT/Dr John Smith", float(s), encounter=enc,
                  resource_type="Condition"),
            event(s, "2020-01-01 09:06", "LOINC/8251-1", text="Jane Doe", encounter=enc,
                  resource_type="Observation"),
            event(s, "2020-01-01 09:07", "LOINC/72166-2", text="SNOMED/266919005", encounter=enc,
                  resource_type="Observation"),
            event(s, "2020-01-01 09:08", "LOINC/2160-0", 0.01, text="<", unit="mg/dL", encounter=enc,
                  resource_type="Observation"),
        )
    return events_frame(rows)


def meds(root: Path) -> Path:
    events = cohort()
    splits = {s: "train" for s in events["subject_id"].unique().to_list()}
    return write_meds(root, events, splits,
                      descriptions={"TEXT/Dr John Smith": "Dr John Smith", "LOINC/8251-1": "Service comment"})


def every_byte(directory: Path) -> bytes:
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    assert files, directory
    return b"\n".join(p.read_bytes() for p in files)


def tokens_of(tok: EventTokenizer, events: pl.DataFrame) -> list[str]:
    return tok.convert_ids_to_tokens(tok.transform(events)["input_ids"][0])


def test_default_tokenizer_folder_holds_no_free_text(tmp_path: Path) -> None:
    summary = run_tokenize(input=str(meds(tmp_path / "meds")), output=str(tmp_path / "tokens"),
                           save_tokenizer_to=str(tmp_path / "bundle"))
    saved = Path(summary["tokenizer"]["saved_to"])
    assert sorted(p.name for p in saved.iterdir()) == sorted([CONFIG_FILE, VOCAB_FILE, BINS_FILE])
    for folder in (saved, tmp_path / "bundle", tmp_path / "tokens"):  # the whole stage output too
        content = every_byte(folder)
        for name in NAMES:
            assert name not in content, (folder, name)
    tok = EventTokenizer.from_pretrained(saved)
    assert tok.free_text_tokens is False and tok.min_count == 5  # the Hydra defaults
    vocab = tok.vocabulary_.tokens
    assert CODED_ANSWER in vocab and "TEXT/<" in vocab  # coded answers and markers are still learned
    assert FREE_TEXT_CODE in vocab and "ETHNICITY/[free text]" in vocab
    assert "TEXT/[free text]" in tok.value_bins_["code"].to_list()

    toks = tokens_of(tok, cohort().filter(pl.col("subject_id") == 1))
    at = toks.index(FREE_TEXT_CODE)
    assert toks[at + 1].startswith("VALUE/")  # the concept and its value are there, not its words
    comment = toks.index("LOINC/8251-1")  # the code of the valueString event stays ...
    assert toks[comment + 1] == "LOINC/72166-2"  # ... without a text token
    assert toks[comment + 2] == CODED_ANSWER
    assert "ETHNICITY/[free text]" in toks


def test_free_text_tokens_true_learns_the_words(tmp_path: Path) -> None:
    """The opt-in gives the old behaviour, and proves the checks above can fail."""
    summary = run_tokenize(input=str(meds(tmp_path / "meds")), output=str(tmp_path / "tokens"),
                           tokenizer={"free_text_tokens": True})
    saved = Path(summary["tokenizer"]["saved_to"])
    content = every_byte(saved)
    for name in NAMES:
        assert name in content
    tok = EventTokenizer.from_pretrained(saved)
    assert tok.free_text_tokens is True
    vocab = tok.vocabulary_.tokens
    assert {"TEXT/Dr John Smith", "TEXT/Jane Doe", "ETHNICITY/TEXT:Jane Doe family", CODED_ANSWER} <= set(vocab)
    assert FREE_TEXT_CODE not in vocab


@pytest.mark.parametrize("value_tokens", ["separate", "fused"])
def test_no_names_in_either_value_mode(tmp_path: Path, value_tokens: str) -> None:
    tok = EventTokenizer(min_count=1, min_values_for_bins=2, value_tokens=value_tokens).fit(cohort())
    content = every_byte(tok.save_pretrained(tmp_path / value_tokens))
    assert not any(name in content for name in NAMES)
    if value_tokens == "fused":
        assert any(t.startswith(f"{FREE_TEXT_CODE}|Q") for t in tok.vocabulary_.tokens)


@pytest.mark.parametrize(("text", "coded"), [
    ("SNOMED/266919005", True),
    ("LOINC/1-8", True),
    ("RxNorm/860975", True),
    ("HL7v2-0074/LAB", True),
    ("NOSYSTEM/K1", True),
    ("example.org_fhir_CodeSystem_local-labs~70a59b/K1", True),  # a hashed local vocabulary
    ("oid_1.2.3.4~5fd4db/7", True),
    ("UCUM/mg/dL", True),  # a code may hold a slash
    *((marker, True) for marker in VALUE_MARKERS),
    ("Dr/Smith", False),  # a slash alone is not a code system
    ("Jane Doe", False),
    ("No", False),
    ("SNOMED/Jane Doe", False),  # codes hold no whitespace
    ("SNOMED/", False),
    ("snomed/123", False),  # vocabulary names are exact
    ("TEXT/Feels dizzy", False),  # a concept with only text is not a coded answer
    ("TEXT/SNOMED/1", False),
    ("Smith~abcdef", False),
    ("Dr Smith~abcdef/1", False),  # the hashed form has no spaces
    ("Smith~ABCDEF/1", False),  # the digest is lower-case hex
    ("Range", False),  # markers are exact, as ingest writes them
    ("< 5", False),
    ("SNOMED/1\nJane Doe", False),
    ("SNOMED/1\n", False),
    ("SNOMED/1\u00a0Jane", False),
])
def test_which_text_values_count_as_coded(text: str, coded: bool) -> None:
    assert is_coded_text(text) is coded
    frame = pl.DataFrame({"t": [text]})  # the Polars expression gives the same answer
    assert frame.select(coded_text_expr(pl.col("t"))).item() is coded


def test_coded_vocabularies_are_the_ones_ingest_writes() -> None:
    from ehrfm.ingest import vocabulary as ingest

    assert set(CODED_VOCABS) == ingest.shipped().names()
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", name) for name in CODED_VOCABS)  # joined unescaped
    assert ingest.TEXT_VOCAB not in CODED_VOCABS
    for system in ("http://example.org/fhir/CodeSystem/local-labs", "urn:oid:1.2.3.4",
                   "https://x.test/a b/c?d=1", None, "http://loinc.org"):
        code = ingest.code_from_coding({"system": system, "code": "K-1.2"})
        assert code is not None and is_coded_text(code), code
    found = ingest.code_from_concept({"text": "Dr John Smith"})
    assert found is not None and not is_coded_text(found[0])


def _strip_free_text_key(directory: Path) -> dict:
    """Make ``directory`` look saved by an ehrfm from before ``free_text_tokens`` existed."""
    path = directory / CONFIG_FILE
    config = orjson.loads(path.read_bytes())
    del config["params"]["free_text_tokens"]
    path.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    return config


def test_a_config_saved_before_the_option_keeps_its_free_text_behaviour(tmp_path: Path) -> None:
    events = cohort()
    old = EventTokenizer(min_count=1, min_values_for_bins=2, free_text_tokens=True).fit(events)
    old.save_pretrained(tmp_path / "old")
    vocab_bytes = (tmp_path / "old" / VOCAB_FILE).read_bytes()
    config = _strip_free_text_key(tmp_path / "old")
    assert config["fit"]["vocabulary_sha256"] == old.vocabulary_.content_hash()

    loaded = EventTokenizer.from_pretrained(tmp_path / "old")  # the sha256 check still passes
    assert loaded.free_text_tokens is True
    assert loaded.transform(events).equals(old.transform(events))
    assert "TEXT/Dr John Smith" in tokens_of(loaded, events)  # its own id, not [UNK:TEXT]

    loaded.save_pretrained(tmp_path / "again")  # a re-save states the key; the rest is unchanged
    again = orjson.loads((tmp_path / "again" / CONFIG_FILE).read_bytes())
    assert again["params"]["free_text_tokens"] is True
    assert again["fit"] == config["fit"] and again["format_version"] == config["format_version"]
    assert (tmp_path / "again" / VOCAB_FILE).read_bytes() == vocab_bytes


def test_saved_configs_state_the_option_and_it_is_checked(tmp_path: Path) -> None:
    tok = EventTokenizer(min_count=1, min_values_for_bins=2).fit(cohort())
    tok.save_pretrained(tmp_path)
    config = orjson.loads((tmp_path / CONFIG_FILE).read_bytes())
    assert config["params"]["free_text_tokens"] is False
    assert EventTokenizer.from_pretrained(tmp_path).free_text_tokens is False
    config["params"]["free_text_tokens"] = "yes"
    (tmp_path / CONFIG_FILE).write_bytes(orjson.dumps(config))
    with pytest.raises(TokenizerFormatError, match="free_text_tokens must be true or false"):
        EventTokenizer.from_pretrained(tmp_path)
