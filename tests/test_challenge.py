"""labutils.challenge: the corrupted leaderboard set, the submission CSV, the validator's one-sentence errors and
the score against the hidden labels."""

from __future__ import annotations

import csv
import dataclasses
import re

import numpy as np
import pytest
import torch

from labutils import challenge as CH
from labutils import corruptions as C
from labutils import synthetic
from labutils.data import DatasetInfo

torch.set_num_threads(1)
IMAGES, LABELS = synthetic.make_images(12, 10, 28, 1, seed=0)
NAMES, SEVERITIES = ["rotate", "stripe", "brightness"], [1, 3]


@pytest.fixture(scope="module")
def chal():
    return CH.build_challenge_set(IMAGES, LABELS, 10, NAMES, SEVERITIES, seed=3, benchmark="mnist")


def one_sentence(message: str) -> bool:
    return message.count(". ") == 0 and message.endswith(".") and "\n" not in message


def test_challenge_set_holds_every_image_under_every_corruption_shuffled(chal):
    n = len(IMAGES)
    assert len(chal) == n * len(NAMES) * len(SEVERITIES) == len(set(chal.ids))
    assert chal.images.shape == (len(chal), 1, 28, 28) and chal.images.dtype == np.uint8
    assert re.fullmatch(r"img_[0-9a-f]{10}", chal.ids[0])
    # the answer key names every (source image, corruption, severity) exactly once
    assert {(int(k), str(c), int(s)) for k, c, s in zip(chal.source_index, chal.corruption, chal.severity)} == {
        (i, name, s) for i in range(n) for name in NAMES for s in SEVERITIES
    }
    # every image is the corruption the key names, of the source image it names, with that image's label
    for name in NAMES:
        for s in SEVERITIES:
            expected = C.corrupt_arrays(IMAGES, name, s, 3, benchmark="mnist")
            for i in (0, 7, n - 1):
                (k,) = np.flatnonzero((chal.corruption == name) & (chal.severity == s) & (chal.source_index == i))
                np.testing.assert_array_equal(chal.images[k], expected[i])
                assert chal.labels[k] == LABELS[i]
    # shuffled: the first images are not the first corruption's images in order
    assert chal.source_index[:n].tolist() != list(range(n))
    key = chal.answer_key()
    assert [row["id"] for row in key] == list(chal.ids) and set(key[0]) == set(CH.ANSWER_KEY_HEADER)


def test_ids_are_opaque_unique_and_reproducible(chal):
    """An id carries no index, corruption or severity: none contains the source index (zero-padded to 4 or 6
    digits), the corruption's name or the severity's text; ids of one source image share no token; the lexical
    order of ids is unrelated to the source index (rank correlation within chance for 72 ids)."""
    ids = [str(i) for i in chal.ids]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"img_[0-9a-f]{10}", i) for i in ids)
    for i, k, c in zip(ids, chal.source_index, chal.corruption):
        assert f"{k:04d}" not in i and f"{k:06d}" not in i and c not in i and "sev" not in i
    for k in range(len(IMAGES)):
        tokens = [i for i, src in zip(ids, chal.source_index) if src == k]
        assert len({t[4:8] for t in tokens}) == len(tokens)  # no shared leading digits per source image
    ranks = np.argsort(np.argsort(ids))
    rho = np.corrcoef(ranks, chal.source_index)[0, 1]
    assert abs(rho) < 0.35, rho  # chance level: std 1/sqrt(71) = 0.12
    again = CH.build_challenge_set(IMAGES, LABELS, 10, NAMES, SEVERITIES, seed=3, benchmark="mnist")
    np.testing.assert_array_equal(again.ids, chal.ids)
    np.testing.assert_array_equal(again.source_index, chal.source_index)
    other = CH.build_challenge_set(IMAGES, LABELS, 10, NAMES, SEVERITIES, seed=4, benchmark="mnist")
    assert not set(other.ids) & set(chal.ids)


def test_opaque_ids_redraw_a_repeated_token():
    class Repeating:  # stands in for np.random.Generator: hands out a token already drawn, twice
        def __init__(self):
            self.draws = [[5, 5, 5], [5, 9], [7]]

        def integers(self, low, high, size, dtype):
            return np.array(self.draws.pop(0), dtype)[:size]

    assert CH.opaque_ids(3, Repeating()) == ["img_0000000005", "img_0000000009", "img_0000000007"]


def test_answer_key_file_has_one_row_per_image(chal, tmp_path):
    path = CH.write_answer_key(tmp_path / "key.csv", chal)
    rows = list(csv.DictReader(path.open()))
    assert tuple(rows[0]) == CH.ANSWER_KEY_HEADER and len(rows) == len(chal)
    assert [r["id"] for r in rows] == list(chal.ids)
    assert [int(r["label"]) for r in rows] == chal.labels.tolist()
    assert [int(r["source_index"]) for r in rows] == chal.source_index.tolist()


def test_challenge_set_is_reproducible_for_a_seed_and_changes_with_it(chal):
    again = CH.build_challenge_set(IMAGES, LABELS, 10, NAMES, SEVERITIES, seed=3, benchmark="mnist")
    np.testing.assert_array_equal(again.images, chal.images)
    other = CH.build_challenge_set(IMAGES, LABELS, 10, NAMES, SEVERITIES, seed=4, benchmark="mnist")
    assert not np.array_equal(other.source_index, chal.source_index)


def test_written_submission_has_the_header_and_one_row_per_image(chal, tmp_path):
    labels = np.arange(len(chal)) % 10
    path = CH.write_submission(tmp_path / "sub" / "submission.csv", chal.ids, labels)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["id", "label"] and len(rows) == len(chal) + 1
    assert [r[0] for r in rows[1:]] == list(chal.ids) and [int(r[1]) for r in rows[1:]] == labels.tolist()
    assert CH.validate_submission(path, chal.ids, 10) == dict(zip(chal.ids, labels.tolist()))


def test_score_counts_correct_labels_overall_by_severity_and_by_corruption(chal, tmp_path):
    labels = chal.labels.copy()
    sev3 = chal.severity == 3
    labels[sev3] = (labels[sev3] + 1) % 10  # every severity-3 answer wrong, every severity-1 answer right
    path = CH.write_submission(tmp_path / "s.csv", chal.ids, labels)
    score = CH.score_submission(path, chal)
    assert score["n"] == len(chal)
    assert score["accuracy"] == pytest.approx(0.5, abs=1e-12)
    assert score["by_severity"] == {1: 1.0, 3: 0.0}
    assert set(score["by_corruption"]) == set(NAMES)
    assert all(v == pytest.approx(0.5, abs=1e-12) for v in score["by_corruption"].values())
    perfect = CH.write_submission(tmp_path / "p.csv", chal.ids[::-1], chal.labels[::-1])  # row order is free
    assert CH.score_submission(perfect, chal)["accuracy"] == 1.0


def write_text(tmp_path, text: str):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


def good_lines(chal):
    return [f"{i},{int(y)}" for i, y in zip(chal.ids, chal.labels)]


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda lines: ["image,label", *lines[1:]], "starts with the line 'id,label'"),
        (lambda lines: ["id,label", *lines[1:-1]], "have no row"),
        (lambda lines: ["id,label", *lines[1:], lines[3]], "appears twice (lines 4 and"),
        (lambda lines: ["id,label", *lines[1:3], lines[3].split(",")[0] + ",10", *lines[4:]], "integers from 0 to 9"),
        (lambda lines: ["id,label", *lines[1:3], lines[3].split(",")[0] + ",-1", *lines[4:]], "integers from 0 to 9"),
        (lambda lines: ["id,label", *lines[1:3], lines[3].split(",")[0] + ",cat", *lines[4:]], "label 'cat'"),
        (lambda lines: ["id,label", "img_zzzzzzzzzz,1", *lines[1:]], "not in the challenge set"),
        (lambda lines: ["id,label", lines[1] + ",3", *lines[2:]], "has 3 fields"),
        (lambda lines: [], "starts with the line 'id,label'"),
    ],
    ids=["header", "missing", "duplicate", "label-10", "label-neg", "label-text", "unknown", "fields", "empty"],
)
def test_validator_reports_each_problem_in_one_sentence(chal, tmp_path, mutate, needle):
    lines = mutate(["id,label", *good_lines(chal)])
    path = write_text(tmp_path, "\n".join(lines) + ("\n" if lines else ""))
    with pytest.raises(CH.SubmissionError) as info:
        CH.validate_submission(path, chal.ids, 10)
    message = str(info.value)
    assert needle in message and one_sentence(message), message
    with pytest.raises(CH.SubmissionError):
        CH.score_submission(path, chal)


def test_missing_file_and_mismatched_writer_arguments_are_refused(chal, tmp_path):
    with pytest.raises(CH.SubmissionError, match="There is no submission at"):
        CH.validate_submission(tmp_path / "none.csv", chal.ids, 10)
    with pytest.raises(ValueError, match="3 ids but 2 labels"):
        CH.write_submission(tmp_path / "x.csv", ["a", "b", "c"], [1, 2])
    with pytest.raises(ValueError, match="labels must be integers"):
        CH.write_submission(tmp_path / "x.csv", ["a"], [0.5])


def test_predict_matches_the_models_argmax_on_normalised_images():
    info = DatasetInfo("toy", "toy", "toy", "test", False, 10, tuple("0123456789"), (1, 28, 28), (0.2,), (0.3,))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    got = CH.predict(model, IMAGES, info, batch_size=5, device="cpu")
    x = (torch.from_numpy(IMAGES).float() / 255 - 0.2) / 0.3
    np.testing.assert_array_equal(got, model(x).argmax(1).numpy())
    assert got.dtype == np.int64 and got.shape == (len(IMAGES),)


def test_predict_is_the_robustness_evaluations_prediction():
    info = DatasetInfo("toy", "toy", "toy", "test", False, 10, tuple("0123456789"), (1, 28, 28), (0.2,), (0.3,))
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    got = CH.predict(model, IMAGES, info, batch_size=4, device="cpu")
    np.testing.assert_array_equal(got, C.predict_uint8(model, IMAGES, info, batch_size=7, device="cpu"))
    with pytest.raises(ValueError, match=r"outputs \(10,\) scores per image but toy has 3 classes"):
        CH.predict(model, IMAGES, dataclasses.replace(info, num_classes=3), device="cpu")


def test_augmentation_overlap_names_the_corruptions_a_preset_applies():
    from labutils import data

    assert set(CH.PRESET_CORRUPTIONS) == set(data.AUGMENTATIONS)
    assert all(set(names) <= set(C.ALL_CORRUPTIONS) for names in CH.PRESET_CORRUPTIONS.values())
    cifar = C.corruption_names("cifar10")
    assert CH.augmentation_overlap("strong", cifar) == ["brightness", "contrast"]
    assert CH.augmentation_overlap("augmix", cifar) == [] and CH.augmentation_overlap("none", cifar) == []
    assert CH.augmentation_overlap("augmix", C.corruption_names("mnist")) == ["shear", "rotate", "translate"]
    with pytest.raises(ValueError, match="Unknown augmentation preset 'mixup'"):
        CH.augmentation_overlap("mixup", cifar)
