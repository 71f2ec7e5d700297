"""Ingesting each format into Parquet, and every kind of bad file refused with a clear reason
and no output left behind."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets_app.cleaning import readers
from datasets_app.cleaning.readers import (
    convert_to_parquet,
    infer_column_roles,
    safe_filename,
    sniff_upload,
    streams,
    validate_column_roles,
)
from llmhub.reporting import JobCancelled, JobInputError, RecordingReporter

ROWS = [
    {"text": f"row {i}, with a comma", "label": "a" if i % 2 else "b", "n": i} for i in range(25)
]


def convert(path: Path, tmp_path: Path, **kwargs):
    return convert_to_parquet(path, output=tmp_path / "out" / "table.parquet", **kwargs)


def assert_nothing_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == [], list(out.iterdir())


def refused(path: Path, tmp_path: Path, message: str, **kwargs) -> JobInputError:
    with pytest.raises(JobInputError, match=message) as caught:
        convert(path, tmp_path, **kwargs)
    assert_nothing_written(tmp_path)
    return caught.value


def _csv(rows: list[dict], delimiter: str = ",") -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), delimiter=delimiter)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# --- formats --------------------------------------------------------------------------------


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize(
    ("suffix", "encode"),
    [
        (".csv", lambda rows: _csv(rows)),
        (".tsv", lambda rows: _csv(rows, "\t")),
        (".json", lambda rows: json.dumps(rows, indent=2)),
        (".json", lambda rows: json.dumps({"version": "1", "data": rows, "n": 2})),
        (".jsonl", lambda rows: "".join(json.dumps(r) + "\n" for r in rows)),
    ],
)
def test_each_text_format_round_trips(tmp_path, suffix, encode, gzipped) -> None:
    data = encode(ROWS).encode()
    path = tmp_path / f"data{suffix}{'.gz' if gzipped else ''}"
    path.write_bytes(gzip.compress(data) if gzipped else data)
    result = convert(path, tmp_path)
    assert result.row_count == 25 and result.size_bytes == result.path.stat().st_size
    assert result.columns == [
        {"name": "text", "type": "string"},
        {"name": "label", "type": "string"},
        {"name": "n", "type": "integer"},
    ]
    assert pq.read_table(result.path).to_pylist() == ROWS


def test_gzipped_text_and_parquet(fixtures, tmp_path) -> None:
    text = (fixtures / "tinyshakespeare_sample.txt").read_bytes()
    (tmp_path / "corpus.txt.gz").write_bytes(gzip.compress(text))
    lines = convert_to_parquet(tmp_path / "corpus.txt.gz", output=tmp_path / "t.parquet")
    assert lines.row_count == sum(1 for line in text.splitlines() if line.strip())
    pq.write_table(pa.table({"text": ["a", "b"], "n": [1, 2]}), tmp_path / "t2.parquet")
    packed = tmp_path / "table.parquet.gz"
    packed.write_bytes(gzip.compress((tmp_path / "t2.parquet").read_bytes()))
    result = convert(packed, tmp_path)
    assert pq.read_table(result.path).to_pylist() == [{"text": "a", "n": 1}, {"text": "b", "n": 2}]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["table.parquet"]


def test_gzip_is_detected_by_magic_bytes_whatever_the_name(tmp_path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(gzip.compress(b'{"text": "hi"}\n'))
    assert convert(path, tmp_path).row_count == 1


def test_parquet_is_copied_and_categoricals_become_plain(tmp_path) -> None:
    table = pa.table(
        {"text": ["a", "b", "a"], "label": pa.array(["x", "y", "x"]).dictionary_encode()}
    )
    pq.write_table(table, tmp_path / "in.parquet")
    result = convert(tmp_path / "in.parquet", tmp_path)
    assert [c["type"] for c in result.columns] == ["string", "string"]
    assert pq.read_table(result.path).to_pylist() == table.to_pylist()
    assert not pa.types.is_dictionary(pq.read_schema(result.path).field("label").type)


def test_jsonl_keeps_nested_squad_answers(fixtures, tmp_path) -> None:
    result = convert(fixtures / "squad_sample.jsonl", tmp_path)
    assert result.row_count == 30
    types = {c["name"]: c["type"] for c in result.columns}
    assert types == {
        "id": "string",
        "title": "string",
        "context": "string",
        "question": "string",
        "answers": "struct",
    }
    source = json.loads((fixtures / "squad_sample.jsonl").read_text().splitlines()[0])
    first = pq.read_table(result.path).slice(0, 1).to_pylist()[0]
    assert first["answers"] == source["answers"]  # {'text': [...], 'answer_start': [...]}
    assert isinstance(first["answers"]["answer_start"][0], int)


def test_csv_infers_numbers_but_keeps_leading_zeros_and_quoted_newlines(fixtures, tmp_path):
    result = convert(fixtures / "poem_sample.csv", tmp_path)
    assert result.row_count == 240
    assert {c["name"]: c["type"] for c in result.columns} == {
        "id": "integer",
        "split": "string",
        "verse_text": "string",
        "label": "string",
        "raw_label": "integer",
    }
    path = tmp_path / "odd.csv"
    path.write_text('\ufeffzip,score,note\n00123,1.5,"two\nlines"\n02134,,plain\n')
    rows = pq.read_table(convert_to_parquet(path, output=tmp_path / "odd.parquet").path)
    assert rows.to_pylist() == [
        {"zip": "00123", "score": 1.5, "note": "two\nlines"},
        {"zip": "02134", "score": None, "note": "plain"},
    ]


def test_same_input_gives_the_same_bytes(fixtures, tmp_path) -> None:
    for name in ("poem_sample.csv", "squad_sample.jsonl"):
        first = convert_to_parquet(fixtures / name, output=tmp_path / "a.parquet")
        second = convert_to_parquet(fixtures / name, output=tmp_path / "b.parquet")
        assert first.content_sha256 == second.content_sha256
        assert len(first.content_sha256) == 64


def test_text_lines_and_chunks(fixtures, tmp_path) -> None:
    source = fixtures / "tinyshakespeare_sample.txt"
    lines = convert_to_parquet(source, output=tmp_path / "lines.parquet")
    non_empty = [line for line in source.read_text().splitlines() if line.strip()]
    assert [c["name"] for c in lines.columns] == ["text"]
    assert pq.read_table(lines.path).column("text").to_pylist() == non_empty
    chunks = convert_to_parquet(
        source, output=tmp_path / "chunks.parquet", txt_mode="chunks", chunk_chars=1000
    )
    texts = pq.read_table(chunks.path).column("text").to_pylist()
    assert 80 < chunks.row_count < 120
    assert all(990 <= len(t) < 1000 + 100 for t in texts[:-1])  # whole lines, about 1000
    assert "".join(texts).replace("\n", "") == source.read_text().replace("\n", "")


def test_chunks_cut_a_corpus_without_line_breaks(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(streams, "MAX_LINE_BYTES", 4096)  # lines come in pieces
    path = tmp_path / "one_line.txt"
    words = " ".join(f"word{i}" for i in range(5000))
    path.write_text(words)
    result = convert(path, tmp_path, txt_mode="chunks", chunk_chars=500)
    texts = pq.read_table(result.path).column("text").to_pylist()
    assert all(len(t) <= 1000 for t in texts) and len(texts) > 40
    assert " ".join(texts).split() == words.split()  # cut at spaces, nothing lost


def test_progress_is_reported_and_cancel_is_honoured(fixtures, tmp_path) -> None:
    reporter = RecordingReporter()
    convert(fixtures / "poem_sample.csv", tmp_path, reporter=reporter)
    fractions = [f for f, _m in reporter.progress_calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    stopping = RecordingReporter()
    stopping.request_stop()
    with pytest.raises(JobCancelled):
        convert_to_parquet(
            fixtures / "poem_sample.csv", output=tmp_path / "c.parquet", reporter=stopping
        )
    assert not (tmp_path / "c.parquet").exists()


# --- bad inputs: refused with a message saying what and where, nothing written --------------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("data.csv", b"", "The file is empty"),
        ("data.csv", b"\n\n  \n", "The file is empty"),
        ("data.parquet", b"not parquet at all", "is not a Parquet file"),
        ("data.csv", b"PAR1" + b"\x00" * 50, "is a Parquet file, not CSV"),
        ("data.csv", b"\x00\x01\x02PK\x03\x04" * 100, "looks like a binary file"),
        ("data.jsonl", b"[1, 2, 3]\n", "first line should be a JSON object"),
        ("data.json", b"hello", "is not JSON"),
        ("data.csv.gz", b"a,b\n1,2\n", "ends in .gz but is not gzip-compressed"),
    ],
)
def test_content_that_is_not_what_the_extension_says(tmp_path, name, content, message) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(JobInputError, match=message):
        sniff_upload(content, filename=name)
    with pytest.raises(JobInputError, match=message):
        sniff_upload(path, filename=name)  # from a path, reading only the first bytes
    refused(path, tmp_path, message)


def test_sniff_accepts_good_uploads_and_looks_inside_gzip(fixtures) -> None:
    head = (fixtures / "squad_sample.jsonl").read_bytes()[:4096]
    assert sniff_upload(head, filename="squad.jsonl") == "squad.jsonl"
    assert sniff_upload(gzip.compress(head), filename=" squad.jsonl.gz ") == "squad.jsonl.gz"
    assert sniff_upload(b"text\nhi\n", filename="notes", file_format="txt") == "notes"
    with pytest.raises(JobInputError, match="is not JSON Lines"):
        sniff_upload(gzip.compress(b"<html>"), filename="x.jsonl.gz")


@pytest.mark.parametrize(
    "name",
    ["../etc/passwd.csv", "a/b.csv", "..\\x.csv", "a..csv", "\x07.csv", "x\u200b.csv", ".env", ""],
)
def test_unsafe_file_names_are_refused(name) -> None:
    with pytest.raises(JobInputError):
        sniff_upload(b"text\nhello\n", filename=name)
    with pytest.raises(JobInputError):
        safe_filename(name)


def test_unknown_extension_is_refused() -> None:
    with pytest.raises(JobInputError, match="Cannot tell the format"):
        sniff_upload(b"text\n", filename="data.xlsx")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.csv", b"text,label\nfine,a\nbad \xff\xfe byte,b\n", r"line 3, byte 5 of that line"),
        (
            "bad.jsonl",
            b'{"t": "ok"}\n{"t": "caf\xe9"}\n',
            r"line 2, byte 11 of that line \(byte 23 of",
        ),
        ("bad.json", b'[\n {"t": "ok"},\n {"t": "caf\xe9"}\n]', r"line 3, byte 12 of that line"),
        ("bad.txt", b"one\ntwo\n\x80three\n", r"line 3, byte 1 of that line \(byte 9 of"),
    ],
)
def test_invalid_utf8_says_the_line_and_byte(tmp_path, name, content, message) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    error = refused(path, tmp_path, "Invalid utf-8 at " + message)
    assert "latin-1" in str(error) and "replace" in str(error)


def test_invalid_utf8_can_be_replaced_or_decoded_as_latin1(tmp_path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"text,label\nfine,a\nbad \xff\xfe byte,b\n")
    replaced = convert(path, tmp_path, encoding_errors="replace")
    assert pq.read_table(replaced.path).column("text").to_pylist()[1] == "bad \ufffd\ufffd byte"
    latin = convert_to_parquet(path, output=tmp_path / "latin.parquet", encoding="latin-1")
    assert pq.read_table(latin.path).column("text").to_pylist()[1] == "bad ÿþ byte"


def test_ragged_csv_names_the_row_and_the_field_counts(tmp_path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("a,b,c\n1,2,3\n4,5\n")
    refused(path, tmp_path, r"Row 3 \(line 3\) has 2 fields but the header has 3")
    path.write_text("a\tb\n1\t2\t3\n")
    refused(path, tmp_path, "Row 2 .* has 3 fields but the header has 2", file_format="tsv")


def test_bad_json_lines_are_reported_by_number(tmp_path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": "ok"}\n{"text": broken}\n')
    refused(path, tmp_path, "Line 4 is not valid JSON")
    path.write_text('{"text": "ok"}\n[1, 2]\n')
    refused(path, tmp_path, "Line 2 is a JSON array, not an object")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[{"a": 1}, 2]', "Item 2 of the array in the file .* is a JSON number, not an object"),
        ('{"data": [{"a": 1}, "x"]}', "Item 2 of the array in 'data' .* is a JSON string"),
        ('[{"a": 1}, {"a": 2}', "expected ',' or ']' after item 2"),
        ('[{"a": 1}, {"a": tru', "Item 2 of the array in the file is not valid JSON"),
        ('[{"a": 1}] [{"b": 2}]', "Unexpected content after the JSON value"),
        ('{"meta": {"rows": 2}}', "holds no array of rows"),
        ("[]", "The file has no rows"),
        ('[{"a": 1}, {"a": "x"}]', r"different kinds \(row 2\)"),
    ],
)
def test_bad_json_is_explained(tmp_path, content, message) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    refused(path, tmp_path, message)


def test_rows_arrow_cannot_store_are_named(tmp_path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"a": [1]}\n\n{"a": [1, "x"]}\n')
    refused(path, tmp_path, "Line 3 cannot be stored")  # named by its line, blank lines too
    path.write_text("{}\n{}\n")
    refused(path, tmp_path, "The file has no columns")


def test_header_only_and_blank_files_have_no_rows(tmp_path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("text,label\n")
    refused(path, tmp_path, "The file has no rows")
    path = tmp_path / "blank.txt"
    path.write_text("   \n\n")
    refused(path, tmp_path, "The file is empty")


def test_corrupt_gzip_is_refused(tmp_path) -> None:
    packed = gzip.compress("".join(f"{i},{i * 7919 % 10007}\n" for i in range(50_000)).encode(), 1)
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(packed[: len(packed) // 2])
    refused(path, tmp_path, "The gzip data is corrupt or truncated")


def test_a_gzip_bomb_is_stopped_while_it_expands(tmp_path, monkeypatch) -> None:
    bomb = tmp_path / "bomb.jsonl.gz"
    line = b'{"text": "' + b"a" * 1000 + b'"}\n'
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(bomb, "wb") as handle:
        for _ in range(100):  # 100 MB expanded from about 100 KB
            handle.write(compressor.compress(line * 1000))
        handle.write(compressor.flush())
    assert bomb.stat().st_size < 500_000
    seen = []
    original = readers.CountingReader.readinto

    def spy(self, buffer):
        try:
            return original(self, buffer)
        finally:
            seen.append(self.count)

    monkeypatch.setattr(readers.CountingReader, "readinto", spy)
    refused(bomb, tmp_path, r"expands to more than 1,000,000 bytes", max_uncompressed_bytes=10**6)
    assert max(seen) < 3 * 2**20  # stopped within a read or two of the limit, not at 100 MB
    plain = tmp_path / "big.txt"
    plain.write_bytes(b"x\n" * 600_000)
    refused(plain, tmp_path, r"is larger than 1,000,000 bytes", max_uncompressed_bytes=10**6)


def test_parquet_over_the_limit_uncompressed_is_refused(tmp_path) -> None:
    pq.write_table(pa.table({"text": ["a" * 1000] * 2000}), tmp_path / "big.parquet")
    assert (tmp_path / "big.parquet").stat().st_size < 100_000  # compressed, it is small
    refused(tmp_path / "big.parquet", tmp_path, "uncompressed", max_uncompressed_bytes=10**6)


def test_a_line_without_end_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(streams, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "long.jsonl"
    path.write_text('{"text": "' + "a" * 5000 + '"}\n')
    refused(path, tmp_path, "Line 1 is longer than")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"encoding": "klingon"}, "Unknown encoding"),
        ({"encoding": "utf-32"}, "convert the file to UTF-8"),
        ({"encoding_errors": "ignore"}, "encoding_errors must be"),
        ({"txt_mode": "pages"}, "txt_mode must be"),
        ({"file_format": "xlsx"}, "file_format must be one of"),
    ],
)
def test_bad_options_are_refused(fixtures, tmp_path, kwargs, message) -> None:
    refused(fixtures / "poem_sample.csv", tmp_path, message, **kwargs)


# --- column roles ---------------------------------------------------------------------------


def test_role_inference(fixtures, tmp_path) -> None:
    assert infer_column_roles(["document", "summary", "paper_id"]) == {
        "text": "document",
        "target": "summary",
    }
    assert infer_column_roles(["body"]) == {"text": "body"}
    assert infer_column_roles(["verse_text", "label", "id"]) == {
        "text": "verse_text",
        "label": "label",
    }
    scitldr = convert(fixtures / "scitldr_sample.jsonl", tmp_path)
    # "target" there is a list of summaries: the text role goes to the string "summary".
    assert infer_column_roles(scitldr.columns) == {"text": "document", "target": "summary"}
    squad = convert_to_parquet(fixtures / "squad_sample.jsonl", output=tmp_path / "q.parquet")
    assert infer_column_roles(squad.columns) == {
        "context": "context",
        "question": "question",
        "answers": "answers",
    }


def test_role_validation() -> None:
    validate_column_roles({"text": "text", "label": "label"}, ["text", "label"])
    with pytest.raises(JobInputError, match="'missing' are not in the table"):
        validate_column_roles({"text": "missing"}, ["text"])
    with pytest.raises(JobInputError, match="Unknown role"):
        validate_column_roles({"colour": "text"}, ["text"])
    with pytest.raises(JobInputError, match="'text' role needs a column of string"):
        validate_column_roles({"text": "n"}, [{"name": "n", "type": "integer"}])


def test_broken_or_empty_parquet_is_refused(tmp_path) -> None:
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    refused(tmp_path / "empty.parquet", tmp_path, "The file has no rows")
    pq.write_table(pa.table({"text": ["a"] * 100}), tmp_path / "whole.parquet")
    cut = tmp_path / "cut.parquet"
    cut.write_bytes((tmp_path / "whole.parquet").read_bytes()[:-40])
    refused(cut, tmp_path, "not a valid Parquet file")
