"""The benchmarks' records (bench/results/*.json) and the README table written from them."""

import json
from pathlib import Path

import pytest

from lus_core.runs import bench_records as B
from lus_core.runs.readme_blocks import block_text

REPO = Path(__file__).resolve().parents[1]


def test_record_prints_the_json_line_and_keeps_it_with_where_and_how(tmp_path, capsys):
    result = {"bench": "rerun", "noop_rerun_s": 2.51, "snakemake_startup_s": 2.2, "goal_noop_rerun_s": 3, "met": True}
    path = B.record(result, tmp_path, argv=["--quick"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result  # the bench's last line
    kept = json.loads(path.read_text())
    assert path.name == "rerun.json" and {k: kept[k] for k in result} == result
    assert kept["argv"] == ["--quick"] and kept["machine"]["cpus"] >= 1 and kept["measured_utc"][:2] == "20"
    row = next(line for line in B.bench_table(B.read_results(tmp_path)).splitlines() if "rerun.py" in line)
    assert "`rerun.py --quick`" in row and "no-op rerun 2.5 s" in row and "<= 3 s" in row and "| yes |" in row


def test_a_bench_without_a_record_is_listed_as_such_and_an_unknown_record_is_refused(tmp_path):
    table = B.bench_table({})
    assert table.count("no record in bench/results") == len(B.ROWS)
    (tmp_path / "mystery.json").write_text(json.dumps({"bench": "mystery", "met": True}))
    with pytest.raises(ValueError, match="mystery"):
        B.bench_table(B.read_results(tmp_path))
    (tmp_path / "mystery.json").write_text("{not json")
    with pytest.raises(ValueError, match="mystery.json: not a benchmark record"):
        B.read_results(tmp_path)


def test_every_kept_record_renders_and_the_readme_table_is_the_one_they_give():
    results = B.read_results()
    assert results, "bench/results holds no record"
    for name in results:
        assert name in B.ROWS
    text = (REPO / "README.md").read_text()
    assert block_text(text, B.BLOCK) == B.bench_table(results), (
        "README's benchmark table differs from bench/results: run `lus bench-table --readme README.md`")


def test_the_readme_block_is_rewritten_in_place(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- BEGIN benchmarks -->\nold\n<!-- END benchmarks -->\nafter\n")
    B.write_bench_block(readme, tmp_path / "none")
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("after\n") and "old" not in text
    assert block_text(text, B.BLOCK) == B.bench_table({})
