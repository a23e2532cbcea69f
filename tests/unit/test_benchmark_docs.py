"""What README.md and docs/*.md say of the benchmarks agrees with benchmarks/: every option a
quoted command passes exists in that script, and the tables quoted from a result file hold
that file's numbers, rounded as printed."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS = {p.stem for p in (ROOT / "benchmarks").glob("*.py")}
# where a quoted command ends: a closing backtick, a blank line, a comment, a closing
# parenthesis, the next command, or a line break not continued by a backslash or an option
_COMMAND_END = re.compile(r"`|\n\n|#|\)|;|benchmarks/|(?<!\\)\n(?!\s*--)")


def quoted_options() -> list[tuple[str, str, str]]:
    """(doc, script, option) for each ``--option`` written after ``[benchmarks/]NAME.py``."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for m in re.finditer(r"(?<![\w/])(?:benchmarks/)?(\w+)\.py", text):
            if m.group(1) not in SCRIPTS:
                continue
            command = _COMMAND_END.split(text[m.end():m.end() + 400])[0]
            found += [(doc.name, m.group(1), opt)
                      for opt in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", command)]
    return found


def declared_options(name: str) -> set[str]:
    """The options ``benchmarks/NAME.py`` declares, with those of ``common.parser`` it uses."""
    text = (ROOT / "benchmarks" / f"{name}.py").read_text()
    options = set(re.findall(r"add_argument\(\s*['\"](--[\w-]+)['\"]", text))
    if re.search(r"\bparser\(", text) and "common" in text:
        options |= {"--json", "--quick", "--out", "--no-plot"}
        if "timed=True" in text:
            options.add("--wait-idle")
    return options


def test_every_option_a_quoted_benchmark_command_passes_exists() -> None:
    quoted = quoted_options()
    assert len(quoted) > 40  # the scan does find the commands
    assert ("performance.md", "throughput", "--wait-idle") in quoted
    assert ("README.md", "gpu_bench", "--sweep-blocks") in quoted
    missing = [q for q in quoted if q[2] not in declared_options(q[1])]
    assert not missing, f"options the docs pass that the script lacks: {missing}"


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def _two_arms(label: str, a: dict, b: dict) -> str:
    """A docs/data.md table row of two arms: process peaks, Arrow peaks and seconds."""
    return (f"| {label} | {_mib(a['process_peak_bytes'])} / {_mib(b['process_peak_bytes'])} "
            f"MiB | {_mib(a['arrow_peak_bytes'])} / {_mib(b['arrow_peak_bytes'])} MiB | "
            f"{a['seconds']:.2f} / {b['seconds']:.2f} |")


def test_the_parquet_write_table_holds_its_result() -> None:
    rows = json.loads((ROOT / "benchmarks/results/parquet_write.json").read_text())["rows"]
    text = (ROOT / "docs/data.md").read_text()
    for layout in ("uint8 fixed-size lists", "float32 lists", "encoded bytes"):
        arms = {r["arm"]: r for r in rows if r["layout"] == layout and r["row_group_mib"] == 256}
        line = _two_arms(layout, arms["one chunk"], arms["pieces"])
        assert line in text, line


def test_the_parquet_read_table_holds_its_result() -> None:
    rows = json.loads((ROOT / "benchmarks/results/parquet_read.json").read_text())["rows"]
    text = (ROOT / "docs/data.md").read_text()
    for layout, mib in (("uint8 fixed-size lists", 16), ("uint8 fixed-size lists", 256),
                        ("float32 lists", 256), ("encoded bytes", 256)):
        arms = {r["arm"]: r for r in rows if r["layout"] == layout and r["row_group_mib"] == mib}
        line = _two_arms(f"{layout}, {mib} MiB: whole / pieces", arms["whole"], arms["pieces"])
        assert line in text, line


def test_the_readme_h100_table_holds_gpu_json() -> None:
    result = json.loads((ROOT / "benchmarks/results/gpu.json").read_text())
    text = (ROOT / "README.md").read_text()
    assert f"Measured on one {result['device'].removesuffix(' HBM3')} " in text
    for m in result["memory"]:
        e2e, block = m["e2e"], m["block"]
        line = (f"| {m['batch']} | {_mib(e2e['peak_allocated_bytes'])} MiB | "
                f"{_mib(block['peak_allocated_bytes'])} MiB | {m['peak_ratio']:.2f}x | "
                f"{e2e['step_time_s'] * 1e3:.1f} ms | {block['step_time_s'] * 1e3:.1f} ms |")
        assert line in text, line
    ratios = ", ".join(f"{r['peak_ratio']:.2f}x (B={r['blocks']})" for r in json.loads(
        (ROOT / "benchmarks/results/gpu_blocks.json").read_text())["rows"])
    assert f"allocator peak ratio {ratios}" in " ".join(text.split())


def test_a_result_records_the_commit_it_was_measured_with(tmp_path, monkeypatch) -> None:
    """finish() writes the commit checked out (and whether the tree differed); where the code
    runs without its git history (a device machine's copy), DBPARALLEL_COMMIT names it."""
    import argparse
    import subprocess

    from benchmarks import provenance as module
    from benchmarks.common import finish

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()
    args = argparse.Namespace(out=str(tmp_path), json=False, no_plot=True)
    finish("probe", {"rows": []}, args, lambda r: "", lambda r, p: None)
    written = json.loads((tmp_path / "probe.json").read_text())["provenance"]
    assert written["commit"] == head and written["dirty"] in (True, False)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", written["measured_at"])

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(module.subprocess, "run", no_git)
    monkeypatch.setenv("DBPARALLEL_COMMIT", "0123abc")
    assert module.provenance()["commit"] == "0123abc"
    monkeypatch.delenv("DBPARALLEL_COMMIT")
    assert module.provenance()["commit"] is None
