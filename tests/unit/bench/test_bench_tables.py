"""The one Markdown table renderer every benchmark uses (bench/tables.py)."""

from bench.tables import Column, table, times


def test_a_table_is_a_header_an_alignment_row_and_one_line_per_row():
    columns = [
        Column("configuration", "name", left=True),
        Column("req/s", "rps", ".2f"),
        Column("errors", lambda row: f"{row['errors']}/{row['requests']}"),
        Column("p99 / peer", "p99", times),
    ]
    rows = [
        {"name": "int8", "rps": 30.891, "errors": 0, "requests": 466, "p99": 0.29},
        {"name": "peer", "rps": 6.4, "errors": 1, "requests": 99, "p99": None},
    ]
    assert table(rows, columns) == [
        "| configuration | req/s | errors | p99 / peer |",
        "| --- | ---: | ---: | ---: |",
        "| int8 | 30.89 | 0/466 | 0.29x |",
        "| peer | 6.40 | 1/99 | — |",
    ]


def test_a_missing_value_shows_as_a_dash_whatever_its_format():
    columns = [Column("share", "share", ".1%"), Column("computed", lambda row: row.get("nothing"), ".2f")]
    assert table([{}], columns)[2] == "| — | — |"


def test_no_rows_still_gives_the_header():
    assert table([], [Column("a", "a", left=True)]) == ["| a |", "| --- |"]
