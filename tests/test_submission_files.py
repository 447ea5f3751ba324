"""Submission files as students really save them: what Kaggle accepts is accepted, the rest is one sentence."""

from __future__ import annotations

import pytest

from labutils.challenge import SubmissionError, validate_submission

IDS = ["distortion00_sev_1_a3f9", "distortion01_sev_2_77c2", "distortion00_sev_3_0b1e"]
ROWS = "id,label\n" + "".join(f"{i},{k}\n" for k, i in enumerate(IDS))
EXPECTED = {i: k for k, i in enumerate(IDS)}


def write(tmp_path, data: bytes):
    path = tmp_path / "submission.csv"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "variant",
    [
        ROWS.encode(),
        b"\xef\xbb\xbf" + ROWS.encode(),  # Excel's "CSV UTF-8" writes a byte-order mark
        ROWS.replace("\n", "\r\n").encode(),  # Windows line ends
        (ROWS + "\n\n").encode(),  # trailing blank lines
        (ROWS.replace("\n", "\r\n") + "\r\n").encode(),
    ],
    ids=["plain", "bom", "crlf", "trailing-blank", "crlf-trailing-blank"],
)
def test_what_kaggle_accepts_is_accepted(tmp_path, variant):
    assert validate_submission(write(tmp_path, variant), IDS, 10) == EXPECTED


def one_sentence(message: str) -> bool:
    return "\n" not in message and message.count(". ") == 0 and message.endswith((".", ")"))


def test_latin1_file_names_the_line(tmp_path):
    data = ROWS.encode().replace(b"1\n", "1 caf\u00e9\n".encode("latin-1"), 1)
    with pytest.raises(SubmissionError, match=r"^Line 3 of submission.csv is not UTF-8 text \(byte 0xe9\)") as err:
        validate_submission(write(tmp_path, data), IDS, 10)
    assert one_sentence(str(err.value))


def test_binary_file_names_the_line(tmp_path):
    data = b"id,label\n" + bytes(range(256))
    with pytest.raises(SubmissionError, match=r"^Line 2 of submission.csv holds a NUL byte") as err:
        validate_submission(write(tmp_path, data), IDS, 10)
    assert one_sentence(str(err.value))


def test_over_long_field_names_the_line(tmp_path):
    data = (ROWS + "x" * 200_000 + ",1\n").encode()
    with pytest.raises(SubmissionError, match=r"^Line 5 of submission.csv cannot be read as CSV") as err:
        validate_submission(write(tmp_path, data), IDS, 10)
    assert one_sentence(str(err.value))


def test_blank_line_between_rows_is_refused(tmp_path):
    data = ROWS.replace(f"{IDS[1]},1\n", f"\n{IDS[1]},1\n").encode()
    with pytest.raises(SubmissionError, match=r"^Line 3 of submission.csv is blank; only the end of the file may be"):
        validate_submission(write(tmp_path, data), IDS, 10)


def test_empty_file_asks_for_the_header(tmp_path):
    with pytest.raises(SubmissionError, match=r"starts with the line 'id,label'"):
        validate_submission(write(tmp_path, b""), IDS, 10)
