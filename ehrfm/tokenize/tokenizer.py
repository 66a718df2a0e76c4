"""``EventTokenizer``: MEDS events in, token sequences with aligned time streams out.

It follows the scikit-learn estimator contract (the constructor only stores parameters, ``fit``
learns from train events and returns ``self``, learned state ends in ``_``) and the Hugging Face
artifact contract (``save_pretrained`` writes a directory, ``from_pretrained`` rebuilds from it).

>>> import datetime as dt, polars as pl
>>> events = pl.DataFrame({
...     "subject_id": [1, 1, 1, 1, 1],
...     "time": [None, dt.datetime(1980, 5, 1), dt.datetime(2020, 1, 1, 9), dt.datetime(2020, 1, 1, 9, 5),
...              dt.datetime(2020, 1, 1, 10)],
...     "code": ["GENDER/female", "MEDS_BIRTH", "VISIT_START/AMB", "LOINC/8302-2", "VISIT_END/AMB"],
...     "numeric_value": [None, None, None, 164.0, None],
...     "encounter_id": [None, None, "e1", "e1", "e1"],
... })
>>> tok = EventTokenizer(min_count=1, min_values_for_bins=1).fit(events)
>>> seq = tok.transform(events)
>>> tok.convert_ids_to_tokens(seq["input_ids"][0])
['[CLS]', 'GENDER/female', 'BIRTH_YEAR/1980', 'MEDS_BIRTH', 'INTERVAL/LT', 'VISIT_START/AMB',
 'LOINC/8302-2', 'VALUE/Q01', 'VISIT_END/AMB']
>>> [round(a, 2) for a in seq["age_years"][0]][-1], seq["visit_index"][0].to_list()
(39.67, [0, 0, 0, 0, 1, 1, 1, 1, 1])
"""

from __future__ import annotations

import datetime as dt
import inspect
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from ehrfm.schema import CODE, SUBJECT_ID, TIME

from .errors import EventsFormatError, NotFittedError, TokenizerFormatError
from .events import EventsLike, check_no_null_keys, prepare_events
from .sequence_schema import PREDICTION_TIME, SEQUENCE_SCHEMA
from .sequences import SEQ, SequenceRules, build_sequences, code_token_expr, learnable_token_counts
from .time_tokens import INTERVAL_TOKENS, SEX_TOKENS, birth_year_tokens
from .value_bins import BinTable, fit_value_bins, load_value_bins, save_value_bins, value_tokens
from .vocabulary import CLS_TOKEN, MASK_TOKEN, PAD_TOKEN, SPECIAL_TOKENS, UNK_TOKEN, Vocabulary, task_token

FORMAT_VERSION = 1
# Parameter added within format_version 1; configs saved without it read it as True.
LEGACY_FREE_TEXT_KEY = "free_text_tokens"
CONFIG_FILE = "tokenizer_config.json"
VOCAB_FILE = "vocab.jsonl"
BINS_FILE = "value_bins.json"

Cutoff = dt.datetime | pl.DataFrame | None


class MissingTokenizerFileError(TokenizerFormatError, FileNotFoundError):
    """A file a saved tokenizer needs is absent (also a ``FileNotFoundError``)."""


class EventTokenizer:
    """Turn MEDS events into model-ready token sequences (see the package README for the layout).

    Parameters
    ----------
    min_count:
        A code or text value becomes a token when seen at least this often in train; rarer ones
        map to their vocabulary's unknown token (``[UNK:LOINC]``), or ``[UNK]``.
    num_value_bins:
        Quantile bins per (code, unit) for numeric values.
    min_values_for_bins:
        A (code, unit) needs this many finite train values to get bins; below it, values
        become the fallback token ``VALUE/ANY``.
    value_tokens:
        ``"separate"``: the bin follows the code as a shared ``VALUE/Qnn`` token.
        ``"fused"``: code and bin form one token ``LOINC/8302-2|Q03`` (shorter sequences, larger
        vocabulary; ``bench/bench_tokenize.py`` measures both).
    max_text_length:
        Longest ``text_value`` (characters) that may become a categorical ``TEXT/`` token.
    free_text_tokens:
        ``False`` (the default): free text never becomes a learned token, since the vocabulary
        ships with every model and free text can hold names. A ``text_value`` becomes a
        ``TEXT/`` token only when it is a coded answer (``VOCAB/code`` with a vocabulary name
        ehrfm ingest writes: ``SNOMED/266919005``, ``NOSYSTEM/K1``, a hashed local name
        ``<name>~<6 hex>/K1``) or a value marker (``<``, ``<=``, ``>=``, ``>``, ``ad``, ``range``,
        ``ratio``, ``period``, ``datetime``, ``time``, ``sampled-data``); and every free-text
        code (``TEXT/<words>``, ``<VOCAB>/TEXT:<words>``) becomes one shared token
        (``TEXT/[free text]``, ``<VOCAB>/[free text]``). ``True``: any short non-note text
        value and every free-text code is a token of its own (the behaviour before this
        option). A saved tokenizer without this parameter was fit that way, and
        ``from_pretrained`` loads it with ``True``.
    note_resource_types:
        Resource types whose text is a clinical note, never tokenized.
    min_interval_days:
        Smallest gap before a visit (or an event outside encounters) that gets an interval token.
    birth_year_bucket:
        Width in years of the birth-year prefix token.
    num_task_tokens:
        Reserved ``[TASK_nnn]`` tokens for multitask prompting.
    max_length:
        Default sequence length cap; the newest events and the prefix are kept.
    """

    def __init__(
        self,
        *,
        min_count: int = 5,
        num_value_bins: int = 10,
        min_values_for_bins: int = 50,
        value_tokens: str = "separate",
        max_text_length: int = 48,
        free_text_tokens: bool = False,
        note_resource_types: Sequence[str] = ("DocumentReference",),
        min_interval_days: float = 1.0,
        birth_year_bucket: int = 5,
        num_task_tokens: int = 16,
        max_length: int = 16384,
    ) -> None:
        self.min_count = min_count
        self.num_value_bins = num_value_bins
        self.min_values_for_bins = min_values_for_bins
        self.value_tokens = value_tokens
        self.max_text_length = max_text_length
        self.free_text_tokens = free_text_tokens
        self.note_resource_types = note_resource_types
        self.min_interval_days = min_interval_days
        self.birth_year_bucket = birth_year_bucket
        self.num_task_tokens = num_task_tokens
        self.max_length = max_length

    # -- scikit-learn protocol -------------------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters, as scikit-learn's ``clone`` expects."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> EventTokenizer:
        """Set constructor parameters; unknown names raise ``ValueError`` naming them."""
        unknown = sorted(set(params) - set(self._param_names()))
        if unknown:
            raise ValueError(f"EventTokenizer has no parameter(s) {unknown}; valid: {self._param_names()}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {n: p.default for n, p in inspect.signature(type(self).__init__).parameters.items()}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if v != defaults.get(k)]
        return f"EventTokenizer({', '.join(changed)})"

    def _rules(self) -> SequenceRules:
        return SequenceRules(
            num_value_bins=int(self.num_value_bins),
            value_tokens=str(self.value_tokens),
            max_text_length=int(self.max_text_length),
            # Hydra hands lists over as ListConfig; the rules need plain strings.
            note_resource_types=tuple(str(t) for t in self.note_resource_types),
            min_interval_days=float(self.min_interval_days),
            birth_year_bucket=int(self.birth_year_bucket),
            free_text_tokens=self.free_text_tokens,
        )

    def _structural_tokens(self) -> list[str]:
        return [
            *SEX_TOKENS,
            *birth_year_tokens(int(self.birth_year_bucket)),
            *INTERVAL_TOKENS,
            *value_tokens(int(self.num_value_bins)),
        ]

    def fit(self, events: EventsLike, y: object = None) -> EventTokenizer:
        """Learn the vocabulary and value bins from **train-split** events; return ``self``.

        ``events`` is a MEDS events frame (eager or lazy). Pass only train subjects: nothing
        here can tell splits apart. ``y`` is ignored (scikit-learn pipeline compatibility).
        """
        rules = self._rules()
        lazy = prepare_events(events, source="fit events", row_index=False)
        stats = lazy.select(
            pl.len().alias("events"),
            pl.col(SUBJECT_ID).n_unique().alias("subjects"),
            (pl.col(SUBJECT_ID).is_null() | pl.col(CODE).is_null()).sum().alias("null_keys"),
        ).collect(engine="streaming").row(0, named=True)
        if stats["events"] == 0:
            raise EventsFormatError("fit events: no events to learn from (is the train split empty?)")
        if stats["null_keys"]:
            nulls = lazy.filter(pl.col(SUBJECT_ID).is_null() | pl.col(CODE).is_null()).head(1).collect()
            check_no_null_keys(nulls, source="fit events")
        # Counts and bins see codes as transform does (free-text codes folded, unless kept).
        folded = lazy.with_columns(code_token_expr(rules))
        bins = fit_value_bins(folded.filter(pl.col(TIME).is_not_null()), rules.num_value_bins,
                              int(self.min_values_for_bins))
        counts = learnable_token_counts(folded, BinTable.from_frame(bins), rules)
        self.vocabulary_ = Vocabulary.build(
            num_task_tokens=int(self.num_task_tokens),
            structural=self._structural_tokens(),
            learned_counts=counts,
            min_count=int(self.min_count),
        )
        self.value_bins_ = bins
        self.n_train_subjects_ = int(stats["subjects"])
        self.n_train_events_ = int(stats["events"])
        return self

    def _bin_table(self) -> BinTable:
        # Derived from value_bins_ and cached beside it; rebuilt if value_bins_ is replaced.
        cached = self.__dict__.get("_bin_cache")
        if cached is None or cached[0] is not self.value_bins_:
            cached = (self.value_bins_, BinTable.from_frame(self.value_bins_))
            self.__dict__["_bin_cache"] = cached
        return cached[1]

    def _check_fitted(self) -> None:
        if not hasattr(self, "vocabulary_"):
            raise NotFittedError(
                "This EventTokenizer is not fitted yet: call fit(train_events) or "
                "EventTokenizer.from_pretrained(directory) before using it."
            )

    def transform(self, events: EventsLike, *, cutoff: Cutoff = None,
                  max_length: int | None = None) -> pl.DataFrame:
        """Tokenize every subject in ``events``; one row per sequence (``SEQUENCE_SCHEMA``).

        ``cutoff`` guards against label leakage: only events strictly before it are used.
        Give a ``datetime`` (same for all subjects) or a frame with ``subject_id`` and
        ``prediction_time`` (MEDS label schema; several rows per subject give several
        sequences, and subjects without events still get a prefix-only sequence). Static facts
        (null ``time``) are always kept. ``max_length`` overrides the fitted default.

        Documented edge cases: a subject with only static facts gets a prefix-only sequence
        whose ``time_days``/``age_years`` are NaN (no time is known); ``age_years`` is NaN in a
        sequence without a ``MEDS_BIRTH`` event (before the cutoff); codes whose values are all
        null emit no value token. Events at one instant with the same role keep their input order.
        """
        self._check_fitted()
        max_length = int(self.max_length if max_length is None else max_length)
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length!r}")
        rules = self._rules()
        prepared = prepare_events(events, source="transform events").with_columns(
            code_token_expr(rules)
        ).collect()
        check_no_null_keys(prepared, source="transform events")
        prepared, sequences = _apply_cutoff(prepared, cutoff)
        return build_sequences(
            prepared,
            sequences,
            vocab=self.vocabulary_,
            bins=self._bin_table(),
            rules=rules,
            max_length=max_length,
        )

    def fit_transform(self, events: EventsLike, y: object = None, **transform_kwargs: Any) -> pl.DataFrame:
        """``fit(events)`` then ``transform(events, **transform_kwargs)``."""
        return self.fit(events).transform(events, **transform_kwargs)

    # -- vocabulary access -------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of token ids (embedding table rows)."""
        self._check_fitted()
        return len(self.vocabulary_)

    @property
    def pad_token_id(self) -> int:
        """Id of ``[PAD]``: always 0, so zero-padded batches need no lookup."""
        return SPECIAL_TOKENS.index(PAD_TOKEN)

    @property
    def cls_token_id(self) -> int:
        """Id of ``[CLS]``, the first token of every sequence."""
        return SPECIAL_TOKENS.index(CLS_TOKEN)

    @property
    def unk_token_id(self) -> int:
        """Id of the generic ``[UNK]``."""
        return SPECIAL_TOKENS.index(UNK_TOKEN)

    @property
    def mask_token_id(self) -> int:
        """Id of ``[MASK]``."""
        return SPECIAL_TOKENS.index(MASK_TOKEN)

    @property
    def task_token_ids(self) -> list[int]:
        """Ids of the reserved ``[TASK_nnn]`` tokens, in order."""
        self._check_fitted()
        return [self.vocabulary_.id_of(task_token(i)) for i in range(int(self.num_task_tokens))]

    def unk_token_ids(self) -> list[int]:
        """Ids of ``[UNK]`` and of every per-vocabulary unknown token (for UNK-rate metrics)."""
        self._check_fitted()
        return self.vocabulary_.unk_ids()

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        """Ids of tokens; unknown ones map to their vocabulary's UNK, then to ``[UNK]``."""
        self._check_fitted()
        return [self.vocabulary_.id_of(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        """Token strings of ids; an id outside the vocabulary raises ``IndexError`` naming it."""
        self._check_fitted()
        tokens = self.vocabulary_.tokens
        out = []
        for i in ids:
            if not 0 <= int(i) < len(tokens):
                raise IndexError(f"token id {i} is outside the vocabulary (size {len(tokens)})")
            out.append(tokens[int(i)])
        return out

    def decode(self, sequence: Any, codes: Any = None) -> str:
        """Readable timeline of one sequence row; see :func:`ehrfm.tokenize.decode.decode`."""
        from .decode import decode

        return decode(self, sequence, codes=codes)

    # -- artifacts -----------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``tokenizer_config.json``, ``vocab.jsonl`` and ``value_bins.json`` to ``directory``.

        The same train data and parameters always give byte-identical files.
        """
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        params = _jsonable(self.get_params())
        config = {
            "format_version": FORMAT_VERSION,
            "tokenizer_class": type(self).__name__,
            "params": params,
            "files": {"vocabulary": VOCAB_FILE, "value_bins": BINS_FILE},
            "fit": {
                "train_subjects": self.n_train_subjects_,
                "train_events": self.n_train_events_,
                "vocab_size": len(self.vocabulary_),
                "vocabulary_sha256": self.vocabulary_.content_hash(),
            },
        }
        (directory / CONFIG_FILE).write_bytes(
            orjson.dumps(config, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
        self.vocabulary_.save(directory / VOCAB_FILE)
        save_value_bins(self.value_bins_, directory / BINS_FILE)
        return directory

    @classmethod
    def from_pretrained(cls, name_or_directory: str | Path) -> EventTokenizer:
        """Rebuild a fitted tokenizer from a directory written by :meth:`save_pretrained`.

        A bare name (no such directory) is looked up among the tokenizers shipped in
        ``tokenizers/``. Errors name the file and the problem: a missing file raises
        :class:`MissingTokenizerFileError` (a ``FileNotFoundError``), a wrong format version or
        malformed content :class:`TokenizerFormatError`. A config saved before the
        ``free_text_tokens`` parameter existed loads with ``free_text_tokens=True``, the rule its
        vocabulary was fit with; its files and ``vocabulary_sha256`` are used as they are.
        """
        directory = _resolve_tokenizer_dir(name_or_directory)
        config_path = directory / CONFIG_FILE
        config = _read_json(config_path)
        version = config.get("format_version")
        if version != FORMAT_VERSION:
            raise TokenizerFormatError(
                f"{config_path}: format_version {version!r} is not supported by this ehrfm "
                f"(it reads format_version {FORMAT_VERSION}); refit the tokenizer or use a matching ehrfm"
            )
        params = config.get("params")
        if not isinstance(params, dict):
            raise TokenizerFormatError(f"{config_path}: 'params' must be an object, got {params!r}")
        unknown = sorted(set(params) - set(cls._param_names()))
        if unknown:
            raise TokenizerFormatError(f"{config_path}: unknown parameter(s) {unknown}")
        # Saved before free_text_tokens existed: its vocabulary was fit with free text as tokens,
        # so it keeps meaning that (a later save_pretrained writes the key explicitly).
        params = {LEGACY_FREE_TEXT_KEY: True, **params}
        try:
            tokenizer = cls(**params)
            tokenizer._rules()  # the parameters' own checks
            expected = Vocabulary.build(
                num_task_tokens=int(tokenizer.num_task_tokens),
                structural=tokenizer._structural_tokens(),
                learned_counts={},
                min_count=1,
            ).tokens
        except (TypeError, ValueError) as err:
            raise TokenizerFormatError(f"{config_path}: bad parameters: {err}") from None
        files = config.get("files", {})
        if not isinstance(files, dict):
            raise TokenizerFormatError(f"{config_path}: 'files' must be an object")
        vocab_path = _inside(directory, files.get("vocabulary", VOCAB_FILE), config_path, "files.vocabulary")
        bins_path = _inside(directory, files.get("value_bins", BINS_FILE), config_path, "files.value_bins")
        for path in (vocab_path, bins_path):
            if not path.is_file():
                raise MissingTokenizerFileError(
                    f"{path}: missing; a saved tokenizer needs {CONFIG_FILE}, {VOCAB_FILE}, {BINS_FILE}"
                )
        vocab = Vocabulary.load(vocab_path)
        if vocab.tokens[: len(expected)] != expected:
            first_bad = next(
                (i for i, (a, b) in enumerate(zip(vocab.tokens, expected)) if a != b),
                min(len(vocab), len(expected)),
            )
            raise TokenizerFormatError(
                f"{vocab_path}: fixed tokens do not match the parameters in {CONFIG_FILE} "
                f"(id {first_bad}: expected {expected[first_bad]!r}, "
                f"found {vocab.tokens[first_bad] if first_bad < len(vocab) else 'end of file'!r})"
            )
        fit = config.get("fit", {})
        if not isinstance(fit, dict):
            raise TokenizerFormatError(f"{config_path}: 'fit' must be an object")
        recorded = fit.get("vocabulary_sha256")
        if recorded is not None and recorded != vocab.content_hash():
            raise TokenizerFormatError(
                f"{vocab_path}: the tokens do not match the vocabulary_sha256 recorded in {CONFIG_FILE} "
                "(tokens were edited, swapped or reordered); a changed vocabulary silently changes what "
                "every id means, so refit the tokenizer instead"
            )
        tokenizer.vocabulary_ = vocab
        tokenizer.value_bins_ = load_value_bins(bins_path)
        for key in ("train_subjects", "train_events"):
            if not isinstance(fit.get(key, 0), int):
                raise TokenizerFormatError(f"{config_path}: fit.{key} must be an integer")
        tokenizer.n_train_subjects_ = int(fit.get("train_subjects", 0))
        tokenizer.n_train_events_ = int(fit.get("train_events", 0))
        return tokenizer


def _apply_cutoff(events: pl.DataFrame, cutoff: Cutoff) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Attach ``_seq`` to events and list the sequences to emit (see ``transform``)."""
    if cutoff is None or isinstance(cutoff, dt.datetime):
        if isinstance(cutoff, dt.datetime) and cutoff.tzinfo is not None:
            cutoff = cutoff.astimezone(dt.timezone.utc).replace(tzinfo=None)
        if cutoff is not None:
            events = events.filter(pl.col(TIME).is_null() | (pl.col(TIME) < cutoff))
        sequences = (
            events.select(SUBJECT_ID)
            .unique()
            .sort(SUBJECT_ID)
            .with_columns(pl.col(SUBJECT_ID).alias(SEQ),
                          pl.lit(cutoff, pl.Datetime("us")).alias(PREDICTION_TIME))
        )
        return events.with_columns(pl.col(SUBJECT_ID).alias(SEQ)), sequences
    if not isinstance(cutoff, pl.DataFrame):
        raise TypeError(
            f"cutoff must be None, a datetime, or a DataFrame of {SUBJECT_ID}/{PREDICTION_TIME}; "
            f"got {type(cutoff).__name__}"
        )
    for column in (SUBJECT_ID, PREDICTION_TIME):
        if column not in cutoff.columns:
            raise EventsFormatError(f"cutoff frame needs column {column!r}; found {cutoff.columns}")
    times = prepare_events(
        cutoff.select(SUBJECT_ID, pl.col(PREDICTION_TIME).alias(TIME), pl.lit("cutoff").alias("code")),
        source="cutoff frame",
    ).collect()
    if times[TIME].null_count():
        bad = times.filter(pl.col(TIME).is_null())[SUBJECT_ID][0]
        raise EventsFormatError(f"cutoff frame: {PREDICTION_TIME} is null for subject_id={bad}")
    sequences = (
        times.select(SUBJECT_ID, pl.col(TIME).alias(PREDICTION_TIME))
        .unique()
        .sort(SUBJECT_ID, PREDICTION_TIME)
        .with_row_index(SEQ)
        .with_columns(pl.col(SEQ).cast(pl.Int64))
    )
    events = events.join(sequences, on=SUBJECT_ID, how="inner").filter(
        pl.col(TIME).is_null() | (pl.col(TIME) < pl.col(PREDICTION_TIME))
    )
    return events.drop(PREDICTION_TIME), sequences


def _jsonable(value: Any) -> Any:
    """Plain JSON types for parameters (Hydra passes ListConfig; tuples become lists)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or (
        hasattr(value, "__iter__") and not isinstance(value, (str, bytes))
    ):
        return [_jsonable(v) for v in value]
    return value


def _inside(directory: Path, name: Any, config_path: Path, key: str) -> Path:
    """``directory / name`` for a plain file name; a tokenizer never reads outside its folder."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise TokenizerFormatError(f"{config_path}: {key} must be a file name inside {directory}, "
                                   "not a path")
    return directory / name


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MissingTokenizerFileError(
            f"{path}: missing; is {path.parent} a directory written by save_pretrained?"
        )
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as err:
        raise TokenizerFormatError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise TokenizerFormatError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def shipped_tokenizers_dir() -> Path | None:
    """``tokenizers/`` shipped with ehrfm (repository folder or wheel copy), if present."""
    from ehrfm.resources import tokenizers_dir

    try:
        return tokenizers_dir()
    except FileNotFoundError:
        return None


def _resolve_tokenizer_dir(name_or_directory: str | Path) -> Path:
    path = Path(name_or_directory)
    if path.is_dir():
        return path
    if path.exists():
        raise TokenizerFormatError(f"{path}: expected a tokenizer directory, found a file")
    shipped = shipped_tokenizers_dir()
    if shipped is not None and len(path.parts) == 1 and (shipped / path).is_dir():
        return shipped / path
    names = sorted(p.name for p in shipped.iterdir() if (p / CONFIG_FILE).is_file()) if shipped else []
    raise MissingTokenizerFileError(
        f"{path}: no such tokenizer directory; shipped tokenizers: {names or 'none'}"
    )


__all__ = ["CONFIG_FILE", "FORMAT_VERSION", "EventTokenizer", "MissingTokenizerFileError", "SEQUENCE_SCHEMA"]
