"""The DS542 robustness challenge, leaderboard style: a corrupted test set with hidden labels, a submission CSV,
its validator and its score.

>>> challenge = build_challenge_set(splits.x_test, splits.y_test, info.num_classes, ["fog", "rotate"], [1, 3])
>>> labels = predict(model, challenge.images, info)                  # (M,) int64, one per corrupted image
>>> write_submission("runs/08_robustness_challenge/submission.csv", challenge.ids, labels)
>>> score_submission("runs/08_robustness_challenge/submission.csv", challenge)["accuracy"]

The set holds every test image under every chosen (corruption, severity), shuffled with the seed. A student sees
only ``ids`` and ``images``. An id such as ``img_3fa91c07d2`` is a seeded random token: it says nothing about the
source image, the corruption or the severity, so a label cannot be looked up in the public test set through it.
What each id is (source index, corruption, severity, label) is the answer key, the organisers' side:
:meth:`ChallengeSet.answer_key` and :func:`write_answer_key`. A submission is a CSV file with the header
``id,label`` and one row per corrupted image; :func:`validate_submission` says in one sentence what is wrong with
one that is not.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labutils.util import atomic_open, check_int

HEADER = ("id", "label")
ID_PREFIX = "img_"
TOKEN_HEX_DIGITS = 10  # 16**10 ~ 1e12 possible tokens: collisions are rare and redrawn
ANSWER_KEY_HEADER = ("id", "source_index", "corruption", "severity", "label")


class SubmissionError(ValueError):
    """A submission that cannot be scored; the message says which row and what is accepted."""


@dataclass(frozen=True)
class ChallengeSet:
    """A shuffled corrupted test set of M images.

    What a student gets: ``ids`` (M,) str (opaque tokens) and ``images`` uint8 (M, C, H, W), plus ``num_classes``.
    The answer key, the organisers' side: ``labels`` (M,) int64, ``source_index`` (M,) int64 (the image's index in
    the test images the set was built from), ``corruption`` (M,) str and ``severity`` (M,) int64.
    """

    ids: np.ndarray
    images: np.ndarray
    num_classes: int
    labels: np.ndarray
    source_index: np.ndarray
    corruption: np.ndarray
    severity: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def answer_key(self) -> list[dict[str, Any]]:
        """One row per image, in the set's order: ``id``, ``source_index``, ``corruption``, ``severity``,
        ``label``."""
        return [
            {"id": str(i), "source_index": int(k), "corruption": str(c), "severity": int(s), "label": int(y)}
            for i, k, c, s, y in zip(self.ids, self.source_index, self.corruption, self.severity, self.labels)
        ]


def opaque_ids(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct ids ``img_<10 hex digits>`` drawn from ``rng``: random tokens that carry no information about
    the image they name. A token drawn twice is drawn again."""
    n = check_int("n", n, 0)
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        for value in rng.integers(0, 16**TOKEN_HEX_DIGITS, size=n - len(ids), dtype=np.int64):
            token = f"{ID_PREFIX}{int(value):0{TOKEN_HEX_DIGITS}x}"
            if token not in seen:
                seen.add(token)
                ids.append(token)
    return ids


def build_challenge_set(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    names: Sequence[str],
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    seed: int = 0,
    *,
    benchmark: str | None = None,
) -> ChallengeSet:
    """Corrupt ``images`` (uint8 (N, C, H, W), labels (N,)) with every corruption of ``names`` at every
    severity (corruption randomness from ``seed``), shuffle the N x len(names) x len(severities) images with
    ``seed`` and give each an opaque id (:func:`opaque_ids`). ``benchmark`` as in
    :func:`labutils.corruptions.corrupt`.
    """
    from labutils.corruptions.core import corrupt_arrays, usable_benchmark

    seed = check_int("seed", seed, 0)
    num_classes = check_int("num_classes", num_classes, 2)
    names = list(dict.fromkeys(names))
    if not names or not severities:
        raise ValueError("A challenge needs at least one corruption and one severity.")
    images, labels = np.asarray(images), np.asarray(labels, np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels: they must match.")
    parts, index, corruption, severity = [], [], [], []
    for name in names:
        table = None if benchmark is None else usable_benchmark(name, benchmark)
        for s in severities:
            parts.append(corrupt_arrays(images, name, s, seed, benchmark=table))
            index.append(np.arange(len(images)))
            corruption += [name] * len(images)
            severity += [int(s)] * len(images)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(corruption))
    source_index = np.concatenate(index)[order]
    return ChallengeSet(
        ids=np.asarray(opaque_ids(len(order), rng)),
        images=np.concatenate(parts)[order],
        num_classes=num_classes,
        labels=labels[source_index],
        source_index=source_index,
        corruption=np.asarray(corruption)[order],
        severity=np.asarray(severity, np.int64)[order],
    )


def write_answer_key(path: str | Path, challenge: ChallengeSet) -> Path:
    """Write the organisers' answer key as CSV (``id,source_index,corruption,severity,label``) atomically; a
    student never needs this file."""
    with atomic_open(path, "w") as fh:
        writer = csv.DictWriter(fh, fieldnames=ANSWER_KEY_HEADER, lineterminator="\n")
        writer.writeheader()
        writer.writerows(challenge.answer_key())
    return Path(path)


# Which corruptions of a test suite each training-time augmentation preset (labutils.data.augmentation) itself
# applies: a preset that contains a corruption is not tested on something it never saw.
PRESET_CORRUPTIONS: dict[str, tuple[str, ...]] = {
    "none": (),
    "standard": ("translate",),  # random crop after 4-pixel padding: a shift of up to 4 pixels
    "strong": ("translate", "brightness", "contrast", "saturate", "rotate"),  # + colour jitter, rotation
    "flip_jitter": ("brightness", "contrast", "saturate"),
    "digits": ("translate", "rotate"),  # small shifts and rotations
    "augmix": ("translate", "shear", "rotate"),  # + AugMix(all_ops=False): shear, translate, rotate among its ops
}


def augmentation_overlap(preset: str, names: Sequence[str]) -> list[str]:
    """The corruptions of ``names`` (in their order) that augmentation ``preset`` applies during training, e.g.
    ``augmentation_overlap("strong", ["fog", "brightness"]) == ["brightness"]``."""
    if preset not in PRESET_CORRUPTIONS:
        raise ValueError(f"Unknown augmentation preset {preset!r}: choose one of {', '.join(PRESET_CORRUPTIONS)}.")
    return [n for n in names if n in PRESET_CORRUPTIONS[preset]]


def predict(model, images: np.ndarray, info, *, batch_size: int = 256, device=None) -> np.ndarray:
    """Arg-max class (M,) int64 of a model on uint8 images (M, C, H, W), normalised with ``info.mean/std``.

    The same predictions as the robustness evaluation makes: :func:`labutils.corruptions.predict_uint8`.
    """
    from labutils.corruptions import predict_uint8

    return predict_uint8(model, images, info, batch_size=batch_size, device=device)


def write_submission(path: str | Path, ids: Sequence[str], labels: Sequence[int]) -> Path:
    """Write ``id,label`` rows (one per id, in the order given) to ``path`` atomically; returns the path."""
    ids, labels = [str(i) for i in ids], np.asarray(labels)
    if len(ids) != len(labels):
        raise ValueError(f"{len(ids)} ids but {len(labels)} labels: give one label per id.")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers (class indices), got dtype {labels.dtype}.")
    with atomic_open(path, "w") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(zip(ids, labels.tolist()))
    return Path(path)


def _submission_rows(path: Path) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` of every non-blank row of a submission CSV, header included.

    Accepts what Kaggle accepts: UTF-8 with or without a byte-order mark, LF or CRLF line ends, and blank lines at
    the end. Raises :class:`SubmissionError` naming the line for a file that is not UTF-8 text, a blank line
    between rows, or a field too long for a CSV reader.
    """
    raw = path.read_bytes()
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise SubmissionError(f"Line {line} of {path.name} holds a NUL byte: a submission is a text file, not binary.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise SubmissionError(
            f"Line {line} of {path.name} is not UTF-8 text (byte 0x{raw[err.start]:02x}); save the submission as "
            "UTF-8 CSV (write_submission() does)."
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    blank_at = None
    try:
        for row in reader:
            if not any(field.strip() for field in row):
                blank_at = blank_at or reader.line_num
                continue
            if blank_at is not None:
                raise SubmissionError(f"Line {blank_at} of {path.name} is blank; only the end of the file may be.")
            rows.append((reader.line_num, row))
    except csv.Error as err:
        raise SubmissionError(f"Line {reader.line_num} of {path.name} cannot be read as CSV ({err}).") from None
    return rows


def validate_submission(path: str | Path, ids: Sequence[str], num_classes: int) -> dict[str, int]:
    """Read and check a submission against the challenge's ``ids``; returns {id: label}.

    Raises :class:`SubmissionError` with one sentence for: a missing file, a file that is not UTF-8 text or not
    CSV, a wrong header, a row that is not ``id,label``, a label that is not an integer in 0..num_classes-1, an
    unknown id, a duplicate id, or an id with no row. A byte-order mark, CRLF line ends and trailing blank lines
    are accepted.
    """
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"There is no submission at {path}: write one with write_submission().")
    expected = set(map(str, ids))
    answers: dict[str, int] = {}
    first_row: dict[str, int] = {}
    rows = _submission_rows(path)
    header = rows[0][1] if rows else None
    if header is None or tuple(h.strip() for h in header) != HEADER:
        raise SubmissionError(
            f"The header of {path.name} is {','.join(header or [])!r}; a submission starts with the line 'id,label'."
        )
    for row_number, row in rows[1:]:
        if len(row) != 2:
            raise SubmissionError(
                f"Line {row_number} of {path.name} has {len(row)} fields ({','.join(row)!r}); every row is 'id,label'."
            )
        image_id, text = row[0].strip(), row[1].strip()
        if image_id not in expected:
            raise SubmissionError(f"Line {row_number} has the id {image_id!r}, which is not in the challenge set.")
        if image_id in answers:
            raise SubmissionError(
                f"The id {image_id!r} appears twice (lines {first_row[image_id]} and {row_number}); "
                "give one row per image."
            )
        try:
            label = int(text)
        except ValueError:
            label = None
        if label is None or not 0 <= label < num_classes:
            raise SubmissionError(
                f"Line {row_number} ({image_id}) has the label {text!r}, but labels are integers from 0 to "
                f"{num_classes - 1}."
            )
        answers[image_id], first_row[image_id] = label, row_number
    missing = [i for i in map(str, ids) if i not in answers]
    if missing:
        raise SubmissionError(
            f"{len(missing)} of the {len(expected)} ids have no row in {path.name} (the first is {missing[0]!r}); "
            "give one row per corrupted image."
        )
    return answers


def score_submission(path: str | Path, challenge: ChallengeSet) -> dict:
    """Validate a submission and score it against the hidden labels.

    Returns {"accuracy": fraction correct over all M images, "n": M, "by_severity": {severity: accuracy},
    "by_corruption": {corruption: accuracy}} (the last two from the answer key).
    """
    answers = validate_submission(path, challenge.ids, challenge.num_classes)
    predicted = np.array([answers[i] for i in challenge.ids], np.int64)
    correct = predicted == challenge.labels
    severity, corruption = np.asarray(challenge.severity), np.asarray(challenge.corruption)
    return {
        "accuracy": float(correct.mean()),
        "n": int(len(correct)),
        "by_severity": {int(s): float(correct[severity == s].mean()) for s in np.unique(severity)},
        "by_corruption": {str(c): float(correct[corruption == c].mean()) for c in dict.fromkeys(corruption)},
    }


__all__ = [
    "SubmissionError",
    "ChallengeSet",
    "HEADER",
    "ANSWER_KEY_HEADER",
    "opaque_ids",
    "build_challenge_set",
    "write_answer_key",
    "PRESET_CORRUPTIONS",
    "augmentation_overlap",
    "predict",
    "write_submission",
    "validate_submission",
    "score_submission",
]
