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
    assert sorted(chal.key) == ["distortion00", "distortion01", "distortion02"] and set(chal.key.values()) == set(NAMES)
    pattern = re.compile(r"^distortion\d\d_sev_[1-5]_\d{6}$")
    assert all(pattern.match(i) for i in chal.ids)
    # every id's image is the corruption its tag hides, of the source image its index names, with its label
    tag_of = {name: tag for tag, name in chal.key.items()}
    for name in NAMES:
        for s in SEVERITIES:
            expected = C.corrupt_arrays(IMAGES, name, s, 3, benchmark="mnist")
            for i in (0, 7, n - 1):
                k = int(np.flatnonzero(chal.ids == CH.challenge_id(tag_of[name], s, i))[0])
                np.testing.assert_array_equal(chal.images[k], expected[i])
                assert chal.labels[k] == LABELS[i]
    # shuffled: the first ids are not the first corruption's first images in order
    assert not all(i.endswith(f"_{k:06d}") for k, i in enumerate(chal.ids[:n]))


def test_challenge_set_is_reproducible_for_a_seed_and_changes_with_it(chal):
    again = CH.build_challenge_set(IMAGES, LABELS, 10, NAMES, SEVERITIES, seed=3, benchmark="mnist")
    np.testing.assert_array_equal(again.ids, chal.ids)
    np.testing.assert_array_equal(again.images, chal.images)
    other = CH.build_challenge_set(IMAGES, LABELS, 10, NAMES, SEVERITIES, seed=4, benchmark="mnist")
    assert not np.array_equal(other.ids, chal.ids)


def test_written_submission_has_the_header_and_one_row_per_image(chal, tmp_path):
    labels = np.arange(len(chal)) % 10
    path = CH.write_submission(tmp_path / "sub" / "submission.csv", chal.ids, labels)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["id", "label"] and len(rows) == len(chal) + 1
    assert [r[0] for r in rows[1:]] == list(chal.ids) and [int(r[1]) for r in rows[1:]] == labels.tolist()
    assert CH.validate_submission(path, chal.ids, 10) == dict(zip(chal.ids, labels.tolist()))


def test_score_counts_correct_labels_overall_by_severity_and_by_distortion(chal, tmp_path):
    labels = chal.labels.copy()
    sev3 = np.array(["_sev_3_" in i for i in chal.ids])
    labels[sev3] = (labels[sev3] + 1) % 10  # every severity-3 answer wrong, every severity-1 answer right
    path = CH.write_submission(tmp_path / "s.csv", chal.ids, labels)
    score = CH.score_submission(path, chal)
    assert score["n"] == len(chal)
    assert score["accuracy"] == pytest.approx(0.5, abs=1e-12)
    assert score["by_severity"] == {1: 1.0, 3: 0.0}
    assert all(v == pytest.approx(0.5, abs=1e-12) for v in score["by_distortion"].values())
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
        (lambda lines: ["id,label", "distortion09_sev_1_000000,1", *lines[1:]], "not in the challenge set"),
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
