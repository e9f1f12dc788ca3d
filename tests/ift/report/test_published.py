"""The paper's published numbers as data: loaded with checks, printed under our rows, never mixed into our metrics."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from test_tables import TASKS, _write_eval

from ift.report.build import build_report
from ift.report.check_complete import main as check_complete
from ift.report.published import DEFAULT_FILE, PublishedDataError, load_published

SOURCE = {"citation": "A test fixture, not the paper.", "url": "https://example.invalid/fixture",
          "transcribed_from": "tests/ift/report/test_published.py"}
# Made-up numbers (chosen to be easy to find in the outputs); the real ones go in src/ift/report/paper_published.yaml.
FIXTURE = {
    "source": SOURCE,
    "table2": [
        {"start": "base", "method": "ift", "arc": 61.25, "mmlu": 62.5, "truthfulqa_mc2": 63.75, "winogrande": 64.0,
         "gsm8k": 65.5, "avg": 63.4},  # no arc_gen: a column the paper leaves out stays empty
        {"start": "sft_beta", "method": None, "arc": 11.0, "arc_gen": 12.0},
    ],
    "table3": [{"start": "base", "method": "ift", "win_rate": 71.5, "lc_win_rate": 72.25}],
}


def _evals(tmp_path):
    evals = tmp_path / "evals"
    for start in ("base", "sft_beta"):
        _write_eval(evals, start, {t: 0.25 for t in TASKS}, 10.0, lc=11.0)
        for seed in (0, 1):
            _write_eval(evals, f"ift-{start}-s{seed}", {t: 0.3 + 0.1 * seed for t in TASKS}, 40.0, lc=41.0)
    return evals


def _report(tmp_path, data, profile="paper", name="published.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "report"
    result = build_report(evals_dir=_evals(tmp_path), runs_dir=tmp_path / "runs", out_dir=out, methods=["ift"],
                          starts=["base", "sft_beta"], seeds=[0, 1], profile=profile, require_complete=False,
                          published_file=path)
    return result, out


def test_paper_rows_sit_under_ours_with_the_published_values(tmp_path):
    result, out = _report(tmp_path, FIXTURE)
    rows2 = result["rows2"]
    assert [(r["start"], r["method"], r["source"]) for r in rows2] == [
        ("base", "-", "ours"), ("base", "ift", "ours"), ("base", "ift", "paper"),
        ("sft_beta", "-", "ours"), ("sft_beta", "-", "paper"), ("sft_beta", "ift", "ours")]
    paper = rows2[2]
    assert paper["arc"] == (61.25, None, 0) and paper["gsm8k"] == (65.5, None, 0) and paper["avg"] == (63.4, None, 0)
    assert paper["arc_gen"] is None
    assert rows2[1]["arc"][0] == pytest.approx(35.0)  # ours untouched: seeds 30% and 40%

    table2 = (out / "table2.md").read_text()
    assert "| *+ IFT (paper)* | 61.2 | – | 62.5 | 63.8 | 64.0 | 65.5 | 63.4 |" in table2
    assert "A test fixture, not the paper." in table2  # the caption cites the source
    assert r"\textit{$+$ IFT (paper)}" in (out / "table2.tex").read_text()
    assert "base,ift,paper,61.2500,,0," in (out / "table2.csv").read_text()

    # Table 3 in the paper profile has the official LC column the paper reports
    assert [key for key, _ in result["alpaca_columns"]] == ["win_rate", "lc_win_rate", "lc_win_rate_minimal"]
    assert "| *+ IFT (paper)* | 71.5 | 72.2 | – |" in (out / "table3.md").read_text()

    summary = json.loads((out / "summary.json").read_text())
    assert summary["base/ift/arc"] == pytest.approx(35.0)
    assert 61.25 not in summary.values() and 71.5 not in summary.values()  # published numbers are not our metrics
    # empty paper cells are not "missing results"; our own empty cells (no official LC here) still are
    assert check_complete([str(out / "table2.csv")]) == 0
    assert check_complete([str(out / "table3.csv")]) == 1


def test_an_untranscribed_file_shows_no_paper_rows_and_says_so(tmp_path, capsys):
    result, out = _report(tmp_path, {"source": {k: v for k, v in SOURCE.items() if k != "transcribed_from"},
                                     "table2": [], "table3": []})
    assert all(row["source"] == "ours" for row in result["rows2"] + result["rows3"])
    assert "not transcribed yet" in (out / "table2.md").read_text()
    assert "WARNING" in capsys.readouterr().out


def test_tiny_profile_layout_keeps_its_columns(tmp_path):
    result, out = _report(tmp_path, FIXTURE, profile="tiny")
    assert [key for key, _ in result["alpaca_columns"]] == ["win_rate", "lc_win_rate_minimal"]
    assert "| *+ IFT (paper)* | 71.5 | – |" in (out / "table3.md").read_text()


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["table2"][0].update(method="kto"), r"table2\[0\]: method 'kto' is not one of"),
    (lambda d: d["table2"][0].update(avg=63.5), r"avg 63.5 but its five columns .* avg_as_printed: true"),
    (lambda d: d["table2"][0].update(avg_as_printed=True), r"says avg_as_printed but its avg 63.4 agrees"),
    (lambda d: d["table2"][0].update(avg_as_printed="yes"), r"avg_as_printed must be true or false"),
    (lambda d: d["table2"][1].update(avg_as_printed=True), r"table2\[1\]: avg_as_printed needs the row's avg"),
    (lambda d: d["table2"][1].update(start="zephyr"), r"table2\[1\]: start 'zephyr'"),
    (lambda d: d["table2"][0].update(gsm8k=120.0), r"table2\[0\]: gsm8k = 120.0 is not a percentage"),
    (lambda d: d["table2"][0].update(gsm8k="44.7"), r"gsm8k = '44.7' is not a percentage"),
    (lambda d: d["table2"][0].update(hellaswag=80.0), r"unknown column\(s\) \['hellaswag'\]"),
    (lambda d: d["table3"][0].update(arc=1.0), r"table3\[0\]: unknown column\(s\) \['arc'\]"),
    (lambda d: d["table2"].append(dict(d["table2"][0])), r"table2\[2\]: row \('base', 'ift'\) appears twice"),
    (lambda d: d["table2"].append({"start": "base", "method": "sft"}), r"table2\[2\]: no values"),
    (lambda d: d["source"].pop("url"), "source.*citation and url"),
    (lambda d: d["source"].update(transcribed_from=None), "transcribed_from"),
    (lambda d: d.update(table2={"start": "base"}), "`table2` must be a list"),
])
def test_malformed_files_are_refused_with_file_table_and_row(tmp_path, edit, message):
    data = json.loads(json.dumps(FIXTURE))
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PublishedDataError, match=message) as err:
        load_published(path)
    assert str(path) in str(err.value)
    with pytest.raises(PublishedDataError):  # and the report stops before writing anything
        _report(tmp_path, data)
    assert not (tmp_path / "report" / "table2.md").exists()


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(PublishedDataError, match="not found"):
        load_published(tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("source: [unclosed\n")
    with pytest.raises(PublishedDataError, match="not valid YAML"):
        load_published(tmp_path / "broken.yaml")


def test_the_packaged_file_cites_the_paper_and_passes_its_checks():
    source, tables = load_published(DEFAULT_FILE)
    assert "2405.11870" in source["citation"] and "Intuitive Fine-Tuning" in source["citation"]
    assert source["url"].startswith("https://aclanthology.org/2025.acl-long.6")
    assert set(tables) == {"table2", "table3"}


def test_a_printed_avg_its_columns_do_not_give_is_kept_when_flagged(tmp_path):
    """The paper prints SimPO's Avg from base as 55.15; its five columns give 55.12. The packaged file keeps 55.15."""
    _, tables = load_published(DEFAULT_FILE)
    simpo = tables["table2"][("base", "simpo")]
    assert simpo["avg"] == 55.15
    assert sum(simpo[t] for t in ("arc", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k")) / 5 == pytest.approx(55.118)
    data = json.loads(json.dumps(FIXTURE))
    data["table2"][0].update(avg=63.5, avg_as_printed=True)
    path = tmp_path / "printed.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_published(path)[1]["table2"][("base", "ift")]["avg"] == 63.5


def test_the_report_command_adds_paper_rows_in_the_paper_profile_only(tmp_path):
    evals = _evals(tmp_path)
    (tmp_path / "published.yaml").write_text(yaml.safe_dump(FIXTURE))
    for profile, expect in (("paper", True), ("tiny", False)):
        params = tmp_path / f"params_{profile}.yaml"
        params.write_text(yaml.safe_dump({"profile": profile, "methods": ["ift"], "starts": ["base", "sft_beta"],
                                          "seeds": [0, 1]}))
        out = tmp_path / f"report_{profile}"
        subprocess.run([sys.executable, "-m", "ift.report", f"params_file={params}", "logger=none",
                        f"paths.root={tmp_path}", f"paths.evals={evals}", f"paths.report={out}",
                        f"published_file={tmp_path / 'published.yaml'}"], check=True, capture_output=True)
        assert ("(paper)" in (out / "table2.md").read_text()) is expect, profile


def test_the_wandb_summary_tables_mark_the_paper_rows(tmp_path, restore_wandb_env):
    import glob

    import wandb
    from omegaconf import OmegaConf

    from ift.report.build import log_to_wandb

    result, _ = _report(tmp_path, FIXTURE)
    logger = OmegaConf.create({"report_to": "wandb", "mode": "offline", "project": "ift-test", "group": "g",
                               "dir": str(tmp_path / "wb")})
    log_to_wandb(result, logger, "paper")
    wandb.teardown()
    files = glob.glob(str(tmp_path / "wb" / "wandb" / "offline-run-*" / "files" / "media" / "table" / "table2_*.json"))
    assert len(files) == 1
    table = json.loads(open(files[0]).read())
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert [(r["start"], r["method"], r["source"]) for r in rows][1:3] == [("base", "ift", "ours"),
                                                                          ("base", "ift", "paper")]
    assert rows[2]["arc_mean"] == 61.25
