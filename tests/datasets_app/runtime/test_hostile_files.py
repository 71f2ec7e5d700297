"""Hostile or odd files: refused with a sentence that says what and where, or accepted with a
warning the user will see; never a crash, never a hung worker."""

from __future__ import annotations

import codecs
import gzip
import json
import math
import time
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets_app.cleaning import readers
from datasets_app.cleaning.readers import convert_to_parquet, sniff_upload
from llmhub.reporting import JobInputError


def convert(path: Path, tmp_path: Path, **kwargs):
    return convert_to_parquet(path, output=tmp_path / "out" / "table.parquet", **kwargs)


def refused(path: Path, tmp_path: Path, message: str, **kwargs) -> JobInputError:
    with pytest.raises(JobInputError, match=message) as caught:
        convert(path, tmp_path, **kwargs)
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == [], list(out.iterdir())
    return caught.value


def rows_of(result) -> list[dict]:
    return pq.read_table(result.path).to_pylist()


def warned(result, *fragments: str) -> str:
    """The one warning holding every fragment."""
    matching = [w for w in result.warnings if all(f in w for f in fragments)]
    assert len(matching) == 1, result.warnings
    return matching[0]


# --- compressed bombs -----------------------------------------------------------------------


def _bomb(path: Path, megabytes: int) -> Path:
    line = b'{"text": "' + b"a" * 1000 + b'"}\n'
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(path, "wb") as handle:
        for _ in range(megabytes):
            handle.write(compressor.compress(line * 1000))
        handle.write(compressor.flush())
    return path


def test_a_gzip_bomb_under_the_size_limit_is_refused_by_its_expansion_ratio(tmp_path) -> None:
    bomb = _bomb(tmp_path / "bomb.jsonl.gz", 200)  # 200 MB from ~200 KB: a ratio of ~1000
    assert bomb.stat().st_size < 1_000_000
    seen = []
    original = readers.CountingReader.readinto

    def spy(self, buffer):
        try:
            return original(self, buffer)
        finally:
            seen.append(self.count)

    started = time.monotonic()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(readers.CountingReader, "readinto", spy)
        error = refused(bomb, tmp_path, "expands more than 100 times, the limit")
    assert "compressed bomb" in str(error)
    assert max(seen) < 40 * 2**20  # stopped soon after the 16 MiB floor, not at 200 MB
    assert time.monotonic() - started < 20


def test_the_ratio_limit_is_a_parameter_and_small_files_are_never_judged(tmp_path) -> None:
    bomb = _bomb(tmp_path / "bomb.jsonl.gz", 20)
    refused(bomb, tmp_path, "expands more than 5 times", max_expansion_ratio=5)
    assert convert(bomb, tmp_path, max_expansion_ratio=None).row_count == 20_000
    small = _bomb(tmp_path / "small.jsonl.gz", 2)  # 2 MB at a ratio of ~1000: fine
    assert convert(small, tmp_path / "again").row_count == 2000


# --- NUL characters -------------------------------------------------------------------------


def test_nul_in_a_jsonl_cell_is_removed_with_a_warning(tmp_path) -> None:
    path = tmp_path / "nul.jsonl"
    path.write_text(
        json.dumps({"text": "fine"})
        + "\n"
        + json.dumps({"text": "a\u0000b\u0000", "tags": ["x\u0000"], "k\u0000": 1})
        + "\n"
    )
    result = convert(path, tmp_path)
    assert rows_of(result)[1] == {"text": "ab", "tags": ["x"], "k": 1}
    assert [c["name"] for c in result.columns] == ["text", "tags", "k"]
    message = warned(result, "NUL")
    assert "4 NUL characters" in message and "line 2" in message and "PostgreSQL" in message


def test_nul_bytes_deep_in_a_csv_or_text_file_are_removed_with_a_warning(tmp_path) -> None:
    body = "".join(f"row {i},{i}\n" for i in range(2000))  # the sniffed head is clean
    path = tmp_path / "nul.csv"
    path.write_bytes(("text,n\n" + body + "bad\x00row,7\n").encode())
    result = convert(path, tmp_path)
    assert rows_of(result)[-1] == {"text": "badrow", "n": 7}
    assert "line 2002" in warned(result, "NUL")
    text = tmp_path / "nul.txt"
    text.write_bytes(("x\n" * 9000 + "y\x00\x00y\n").encode())
    result = convert(text, tmp_path / "t")
    assert rows_of(result)[-1] == {"text": "yy"}
    assert "2 NUL characters" in warned(result, "NUL")


def test_nul_in_json_and_parquet_strings_is_removed_with_a_warning(tmp_path) -> None:
    path = tmp_path / "nul.json"
    path.write_text(json.dumps({"data": [{"text": "ok"}, {"text": "n\u0000o"}]}))
    result = convert(path, tmp_path)
    assert rows_of(result) == [{"text": "ok"}, {"text": "no"}]
    warned(result, "NUL", "line 1")
    pq.write_table(pa.table({"text": ["a", "b\x00", "\x00c\x00"]}), tmp_path / "in.parquet")
    result = convert(tmp_path / "in.parquet", tmp_path / "p")
    assert rows_of(result) == [{"text": "a"}, {"text": "b"}, {"text": "c"}]
    assert "3 NUL characters" in warned(result, "NUL", "row 2")


# --- numbers --------------------------------------------------------------------------------


def test_nan_and_infinity_are_kept_with_a_warning(tmp_path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("text,x\na,1.5\nb,NaN\nc,inf\nd,-Infinity\ne,1e400\n")
    result = convert(path, tmp_path)
    values = [r["x"] for r in rows_of(result)]
    assert (
        values[0] == 1.5
        and math.isnan(values[1])
        and values[2:] == [math.inf, -math.inf] * 1 + [math.inf]
    )
    assert "4 NaN or infinite numbers" in warned(result, "Column 'x'", "row 2")
    lines = tmp_path / "n.jsonl"
    lines.write_text(
        '{"text": "a", "x": 1.0}\n{"text": "b", "x": NaN}\n{"text": "c", "x": -Infinity}\n'
    )
    result = convert(lines, tmp_path / "j")
    assert "2 NaN or infinite numbers" in warned(result, "line 2")
    pq.write_table(pa.table({"text": ["a", "b"], "y": [float("nan"), 2.0]}), tmp_path / "n.pq")
    result = convert(tmp_path / "n.pq", tmp_path / "p")
    warned(result, "Column 'y'", "1 NaN or infinite number ")


def test_integers_too_large_for_64_bits_in_csv_are_kept_exactly_as_text(tmp_path) -> None:
    huge = "9" * 5000
    path = tmp_path / "ids.csv"
    path.write_text(f"text,id,n\na,12,9223372036854775807\nb,{huge},1\n")
    result = convert(path, tmp_path)
    types = {c["name"]: c["type"] for c in result.columns}
    assert types == {"text": "string", "id": "string", "n": "integer"}
    assert rows_of(result)[1]["id"] == huge  # not rounded, not infinity
    assert "5,000 digits" in warned(result, "Column 'id'", "64 bits", "row 2")


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_huge_integers_in_json_fail_with_the_line(tmp_path, suffix) -> None:
    rows = ['{"text": "a", "n": 1}', '{"text": "b", "n": ' + "7" * 5000 + "}"]
    path = tmp_path / f"big{suffix}"
    path.write_text(
        "\n".join(rows) + "\n" if suffix == ".jsonl" else "[\n" + ",\n".join(rows) + "]"
    )
    error = refused(path, tmp_path, "[Ll]ine [23]")  # .json: its "[" is line 1
    assert "integer of 5,000 digits, too large for a 64-bit column" in str(error)
    rows = ['{"text": "a", "n": 1}', "", '{"text": "b", "n": 99999999999999999999}']
    path.write_text(
        "\n".join(rows) + "\n" if suffix == ".jsonl" else "[" + ",\n".join(rows[::2]) + "]"
    )
    line = "Line 3" if suffix == ".jsonl" else "Line 2"  # the blank line counts; rows do not
    refused(path, tmp_path, f"{line} holds an integer too large for a 64-bit column")


@pytest.mark.parametrize("depth", [150, 100_000])
@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_deep_nesting_fails_with_the_line_not_a_recursion_error(tmp_path, suffix, depth) -> None:
    deep = "[" * depth + "]" * depth
    rows = ['{"text": "a"}', '{"text": "b", "x": ' + deep + "}"]
    path = tmp_path / f"deep{suffix}"
    path.write_text(
        "\n".join(rows) + "\n" if suffix == ".jsonl" else "[\n" + ",\n".join(rows) + "]"
    )
    error = refused(path, tmp_path, "nests arrays or objects")
    assert "line 2" in str(error).lower() or "(line 3)" in str(error)  # .json: "[" on line 1


def test_reasonable_nesting_is_fine(tmp_path) -> None:
    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps({"text": "a", "x": [[[[{"y": [1]}]]]]}) + "\n")
    assert convert(path, tmp_path).row_count == 1


# --- long lines, no text --------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
def test_a_ten_mib_line_is_accepted_with_a_warning(tmp_path, suffix) -> None:
    long = "word " * (2 * 2**20)  # 10 MiB
    content = {
        ".txt": f"short\n{long}\n",
        ".jsonl": json.dumps({"text": "short"}) + "\n" + json.dumps({"text": long}) + "\n",
        ".csv": f"text\nshort\n{long}\n",
    }[suffix]
    path = tmp_path / f"long{suffix}"
    path.write_text(content)
    result = convert(path, tmp_path)
    assert result.row_count == 2
    message = warned(result, "longer than 1 MiB")
    assert "line 2" in message or "line 3" in message
    assert "10.0 MiB" in message


def test_a_table_with_no_text_column_is_accepted_with_a_warning(tmp_path) -> None:
    path = tmp_path / "numbers.csv"
    path.write_text("a,b\n1,2.5\n3,4.5\n")
    result = convert(path, tmp_path)
    warned(result, "no text column")
    ok = tmp_path / "ok.csv"
    ok.write_text("text,b\nhi,2\n")
    assert convert(ok, tmp_path / "ok").warnings == []


# --- UTF-16 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "bom"),
    [("utf-16", b""), ("utf-16-le", codecs.BOM_UTF16_LE), ("utf-16-be", b""), ("utf-16-le", b"")],
)
@pytest.mark.parametrize("suffix", [".csv", ".txt", ".jsonl"])
def test_utf16_is_decoded_with_or_without_a_byte_order_mark(
    tmp_path, encoding, bom, suffix
) -> None:
    content = {
        ".csv": "text,n\nÉté à Paris,1\nnaïve,2\n",
        ".txt": "Été à Paris\nnaïve\n",
        ".jsonl": '{"text": "Été à Paris"}\n{"text": "naïve"}\n',
    }[suffix]
    data = bom + content.encode(encoding)  # "utf-16" writes its own BOM
    path = tmp_path / f"u16{suffix}"
    path.write_bytes(data)
    assert sniff_upload(path, filename=path.name) == path.name  # not "a binary file"
    result = convert(path, tmp_path)
    assert [r["text"] for r in rows_of(result)] == ["Été à Paris", "naïve"]
    gz = tmp_path / f"u16{suffix}.gz"
    gz.write_bytes(gzip.compress(data))
    assert rows_of(convert(gz, tmp_path / "gz")) == rows_of(result)
    assert sorted(p.name for p in (tmp_path / "gz" / "out").iterdir()) == [
        "table.parquet"
    ]  # no litter


def test_invalid_utf16_names_the_encoding(tmp_path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(codecs.BOM_UTF16_LE + "hello\n".encode("utf-16-le") + b"\x00\xd8a\x00\n\x00")
    error = refused(path, tmp_path, "Invalid utf-16")
    assert "UTF-8" in str(error)


def test_a_profile_of_nan_and_infinity_is_strict_json(tmp_path) -> None:
    from datasets_app.cleaning.profile import profile_table

    table = pa.table({"text": ["a b", "c", "d"], "x": [1.0, math.inf, math.nan], "n": [1, 2, 3]})
    pq.write_table(table, tmp_path / "t.parquet")
    profile = profile_table(tmp_path / "t.parquet", column_roles={"text": "text"})
    json.dumps(profile, allow_nan=False)  # PostgreSQL's jsonb refuses NaN and Infinity
    assert profile["columns"]["x"]["non_finite"] == 2
    assert profile["columns"]["x"]["summary"]["max"] == 1.0
