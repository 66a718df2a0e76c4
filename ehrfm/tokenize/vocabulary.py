"""Token <-> id table: fixed blocks first, then tokens learned from train counts.

Layout (ids in this order, so the fixed tokens keep their ids whatever the data):

1. special: ``[PAD]`` (0), ``[CLS]``, ``[UNK]``, ``[MASK]``
2. task: ``[TASK_000]`` .. reserved prompt tokens for multitask finetuning
3. structural: sex, birth-year buckets, interval tokens, value-bin tokens
4. unknown-per-vocabulary: ``[UNK:LOINC]``, ``[UNK:SNOMED]``, ``[UNK:TEXT]``, ... one per
   vocabulary prefix seen in train, so an unseen LOINC code still says "some lab"
5. learned: codes, categorical text values (``TEXT/<value>``) and, in fused mode,
   ``<code>|Qnn`` tokens, each seen at least ``min_count`` times in train; sorted by token so
   the same train data always gives the same ids and the same bytes on disk.

>>> vocab = Vocabulary.build(num_task_tokens=2, structural=["INTERVAL/LT"],
...                          learned_counts={"LOINC/1-8": 7, "SNOMED/2": 1}, min_count=2)
>>> vocab.tokens
['[PAD]', '[CLS]', '[UNK]', '[MASK]', '[TASK_000]', '[TASK_001]', 'INTERVAL/LT', '[UNK:LOINC]',
 '[UNK:SNOMED]', 'LOINC/1-8']
>>> vocab.id_of("SNOMED/2") == vocab.id_of("[UNK:SNOMED]")
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from .errors import TokenizerFormatError

PAD_TOKEN = "[PAD]"
CLS_TOKEN = "[CLS]"
UNK_TOKEN = "[UNK]"
MASK_TOKEN = "[MASK]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, CLS_TOKEN, UNK_TOKEN, MASK_TOKEN)
PAD_ID = 0
MAX_TASK_TOKENS = 1000  # the [TASK_nnn] names have three digits

TOKEN = "token"

KIND_SPECIAL = "special"
KIND_TASK = "task"
KIND_STRUCTURAL = "structural"
KIND_UNK = "unknown"
KIND_LEARNED = "learned"
KINDS = (KIND_SPECIAL, KIND_TASK, KIND_STRUCTURAL, KIND_UNK, KIND_LEARNED)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def task_token(i: int) -> str:
    """Name of reserved task token ``i`` (filled with meaning by the tasks package)."""
    return f"[TASK_{i:03d}]"


def unk_token(prefix: str) -> str:
    """The unknown token of one vocabulary, e.g. ``[UNK:LOINC]``."""
    return f"[UNK:{prefix}]"


def vocab_prefix(token: str) -> str | None:
    """Vocabulary name of a token (text before the first ``/``), None when there is none."""
    head, sep, _ = token.partition("/")
    return head if sep and head else None


@dataclass(frozen=True)
class Vocabulary:
    """An ordered token list with per-token kind and train count; id = position."""

    tokens: list[str]
    kinds: list[str]
    counts: list[int]

    def __post_init__(self) -> None:
        index: dict[str, int] = {}
        for i, tok in enumerate(self.tokens):
            if tok in index:
                raise TokenizerFormatError(
                    f"token {tok!r} appears twice in the vocabulary (ids {index[tok]} and {i})"
                )
            index[tok] = i
        object.__setattr__(self, "_index", index)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._index  # type: ignore[attr-defined]

    @classmethod
    def build(
        cls,
        *,
        num_task_tokens: int,
        structural: Iterable[str],
        learned_counts: Mapping[str, int],
        min_count: int,
    ) -> Vocabulary:
        """Assemble the five blocks from fixed token lists and train counts of learnable tokens."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count!r}")
        if num_task_tokens < 0:
            raise ValueError(f"num_task_tokens must be >= 0, got {num_task_tokens!r}")
        if num_task_tokens > MAX_TASK_TOKENS:
            raise ValueError(f"num_task_tokens must be at most {MAX_TASK_TOKENS}, got {num_task_tokens!r}")
        tokens: list[str] = list(SPECIAL_TOKENS)
        kinds = [KIND_SPECIAL] * len(tokens)
        tasks = [task_token(i) for i in range(num_task_tokens)]
        structural = [t for t in dict.fromkeys(structural) if t not in tokens]
        tokens += tasks + structural
        kinds += [KIND_TASK] * len(tasks) + [KIND_STRUCTURAL] * len(structural)
        fixed = set(tokens)
        prefixes = sorted({p for t in learned_counts if t not in fixed and (p := vocab_prefix(t))})
        unks = [unk_token(p) for p in prefixes if unk_token(p) not in fixed]
        tokens += unks
        kinds += [KIND_UNK] * len(unks)
        fixed |= set(unks)
        learned = sorted(t for t, n in learned_counts.items() if n >= min_count and t not in fixed)
        tokens += learned
        kinds += [KIND_LEARNED] * len(learned)
        counts = [int(learned_counts.get(t, 0)) for t in tokens]
        return cls(tokens=tokens, kinds=kinds, counts=counts)

    def id_of(self, token: str) -> int:
        """Id of ``token``, falling back to its vocabulary's UNK, then to ``[UNK]``."""
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        if token in index:
            return index[token]
        prefix = vocab_prefix(token)
        if prefix is not None and unk_token(prefix) in index:
            return index[unk_token(prefix)]
        return index[UNK_TOKEN]

    def unk_ids(self) -> list[int]:
        """Ids of ``[UNK]`` and every per-vocabulary UNK token."""
        return [i for i, (t, k) in enumerate(zip(self.tokens, self.kinds)) if k == KIND_UNK or t == UNK_TOKEN]

    def content_hash(self) -> str:
        """SHA-256 of the token list in id order: two vocabularies with the same hash map every
        token to the same id (a swapped or edited vocabulary has another hash)."""
        return hashlib.sha256(orjson.dumps(self.tokens)).hexdigest()

    def save(self, path: Path) -> None:
        """One JSON object per line (id, token, kind, count): greppable, safe for any token text."""
        lines = [
            orjson.dumps({"id": i, "token": t, "kind": k, "count": c}, option=orjson.OPT_SORT_KEYS)
            for i, (t, k, c) in enumerate(zip(self.tokens, self.kinds, self.counts))
        ]
        path.write_bytes(b"\n".join(lines) + b"\n")

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        """Read a file written by :meth:`save`; errors name the file and line."""
        tokens: list[str] = []
        kinds: list[str] = []
        counts: list[int] = []
        for lineno, line in enumerate(path.read_bytes().splitlines(), start=1):
            if not line.strip():
                continue
            # Errors describe a bad line without quoting it: the file may not be what it claims.
            try:
                rec = orjson.loads(line)
                tok, kind, count, rid = rec["token"], rec["kind"], rec["count"], rec["id"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise TokenizerFormatError(
                    f"{path}:{lineno}: not a JSON object with id, token, kind and count"
                ) from None
            if not isinstance(tok, str) or kind not in KINDS or not _is_count(count) or not _is_count(rid):
                raise TokenizerFormatError(
                    f"{path}:{lineno}: token must be a string, kind one of {list(KINDS)}, "
                    "id and count integers >= 0"
                )
            if rid != len(tokens):
                raise TokenizerFormatError(
                    f"{path}:{lineno}: id {rid!r} out of order (expected {len(tokens)})"
                )
            tokens.append(tok)
            kinds.append(kind)
            counts.append(int(count))
        if tokens[: len(SPECIAL_TOKENS)] != list(SPECIAL_TOKENS):
            raise TokenizerFormatError(
                f"{path}: must start with {list(SPECIAL_TOKENS)}, starts with {tokens[:4]}"
            )
        return cls(tokens=tokens, kinds=kinds, counts=counts)
