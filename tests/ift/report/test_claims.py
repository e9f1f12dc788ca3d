"""The paper comparison: published rows and their Avg check, the delta table, the claims table, the base-only grid."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from test_tables import TASKS, _write_eval

from ift.grid import methods_at
from ift.report import claims
from ift.report.build import build_report
from ift.report.claims import ClaimDataError, Statement, Term
from ift.report.deltas import delta_rows
from ift.report.published import DEFAULT_FILE, PublishedDataError, load_published
from ift.report.tables import Cell, row_title


def test_the_packaged_file_holds_every_row_that_maps_to_our_grid():
    _, tables = load_published(DEFAULT_FILE)
    cells = {("base", m) for m in (None, "sft", "dpo", "tdpo", "orpo", "simpo", "ift")}
    cells |= {("sft_beta", m) for m in (None, "sft", "sft_dpo", "tdpo", "orpo", "simpo", "ift")}
    assert set(tables["table2"]) == cells and set(tables["table3"]) == cells
    assert tables["table2"][("base", "ift")] == {"arc": 56.74, "arc_gen": 74.15, "mmlu": 60.49,
                                                 "truthfulqa_mc2": 57.65, "winogrande": 78.45, "gsm8k": 44.73,
                                                 "avg": 59.61}
    assert tables["table3"][("sft_beta", "sft_dpo")] == {"ae1_win_rate": 91.62, "ae1_lc_win_rate": 81.54,
                                                         "win_rate": 10.08, "lc_win_rate": 13.72}
    assert all(len(row) == 7 for row in tables["table2"].values())
    assert all(len(row) == 4 for row in tables["table3"].values())


def test_a_row_whose_avg_disagrees_with_its_columns_is_refused_naming_it(tmp_path):
    data = yaml.safe_load(DEFAULT_FILE.read_text())
    orpo = next(i for i, row in enumerate(data["table2"]) if (row["start"], row["method"]) == ("base", "orpo"))
    data["table2"][orpo]["mmlu"] = 66.57  # a typo: 60.57 -> 66.57 moves the mean by 1.2
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PublishedDataError, match=rf"table2\[{orpo}\]: row \('base', 'orpo'\) has avg 57.7 but") as err:
        load_published(path)
    assert str(path) in str(err.value)
    data["table2"][orpo]["mmlu"] = 60.58  # a 0.01 change in one column moves the mean by 0.002: rounding, accepted
    path.write_text(yaml.safe_dump(data))
    load_published(path)


# ---- claims ----------------------------------------------------------------------------------------------------------
def test_the_papers_own_numbers_support_every_claim_it_makes():
    _, published = load_published(DEFAULT_FILE)
    lookup = claims.published_lookup(published)
    rows = claims.claims_rows(lookup, lookup)
    numeric = [row for row in rows if not row["claim"].startswith(("6", "FL"))]
    assert [row["claim"] for row in numeric] == ["1", "2", "3a", "3b", "3c", "3d", "4a", "4b", "5"]
    assert all(row["paper"]["verdict"] == "supported" for row in numeric), [
        (row["claim"], row["paper"]) for row in numeric if row["paper"]["verdict"] != "supported"]
    by_claim = {row["claim"]: row["paper"] for row in rows}
    assert by_claim["1"]["estimate"] == pytest.approx(59.61 - 58.65)          # IFT vs the best rival (SFT)
    assert by_claim["5"]["estimate"] == pytest.approx(13.27 - 12.34)          # LC: IFT vs ORPO
    assert by_claim["4b"]["estimate"] == pytest.approx(57.70 - 57.52)         # min(IFT, ORPO) vs SFT+DPO
    assert by_claim["3a"]["estimate"] == pytest.approx(((57.65 + 44.73 + 74.15) - (47.98 + 43.89 + 73.54)) / 3)
    for claim in ("6a", "6b", "FL1", "FL2", "FL3", "FL4"):  # no published numbers for these
        assert by_claim[claim]["verdict"] == "not available"


def test_the_claims_about_simpo_and_tdpo_join_only_a_grid_that_trains_them():
    default = ["sft", "sft_dpo", "orpo", "ift", "dpo"]
    assert [s.claim for s in claims.statements_for(default)] == [s.claim for s in claims.paper_statements()]
    assert [s.claim for s in claims.statements_for([*default, "simpo"])] == [s.claim for s in claims.paper_statements()]
    full = claims.statements_for([*default, "simpo", "tdpo"])
    assert [s.claim for s in full[-3:]] == ["7a", "7b", "7c"] and len(full) == len(claims.paper_statements()) + 3


def test_the_papers_own_numbers_support_its_statements_about_simpo_and_tdpo():
    _, published = load_published(DEFAULT_FILE)
    lookup = claims.published_lookup(published)
    rows = {row["claim"]: row["paper"] for row in claims.claims_rows(lookup, lookup, claims.baseline_statements())}
    assert all(row["verdict"] == "supported" for row in rows.values()), rows
    assert rows["7a"]["estimate"] == pytest.approx(58.65 - 58.28)  # SFT over the best of DPO 58.28, SimPO, TDPO
    assert rows["7b"]["estimate"] == pytest.approx(59.61 - 55.79)  # IFT over TDPO (SimPO's printed 55.15 is lower)
    assert rows["7c"]["estimate"] == pytest.approx(58.22 - 57.12)  # SFT+IFT over SFT+TDPO


def _cells(values: dict[tuple[str, str | None], dict[str, dict[int | None, float]]]) -> dict:
    cells = {}
    for (start, method), columns in values.items():
        cell = Cell(start=start, method=method)
        for column, per_seed in columns.items():
            for seed, value in per_seed.items():
                cell.add(column, value, seed)
        cells[(start, method)] = cell
    return cells


def test_t_interval_against_hand_computation():
    mean, low, high = claims.t_interval([1.0, 2.0, 3.0])
    half = 2.919986 * 1.0 / math.sqrt(3)  # t_{0.95, 2} * sd / sqrt(n)
    assert mean == 2.0 and low == pytest.approx(2.0 - half, abs=1e-5) and high == pytest.approx(2.0 + half, abs=1e-5)
    assert claims.t_interval([4.0]) == (4.0, None, None)


@pytest.mark.parametrize(("ift", "rival", "verdict"), [
    ({0: 50.0, 1: 51.0, 2: 52.0}, {0: 45.0, 1: 46.0, 2: 45.5}, "supported"),
    ({0: 40.0, 1: 41.0, 2: 40.5}, {0: 45.0, 1: 46.0, 2: 45.5}, "contradicted"),
    ({0: 50.0, 1: 40.0, 2: 46.0}, {0: 45.0, 1: 46.0, 2: 45.5}, "inconclusive"),
])
def test_claim_verdicts_on_constructed_seeds(ift, rival, verdict):
    statement = Statement("x", "test", (Term("base", "ift", ("avg",)),), (Term("base", "sft", ("avg",)),
                                                                         Term("base", "orpo", ("avg",))))
    cells = _cells({("base", "ift"): {"avg": ift}, ("base", "sft"): {"avg": rival},
                    ("base", "orpo"): {"avg": {s: v - 10 for s, v in rival.items()}}})
    result = claims.evaluate(statement, claims.grid_lookup(cells))
    per_seed = [ift[s] - rival[s] for s in (0, 1, 2)]  # paired by seed; orpo is never the max
    assert result["per_seed"] == {str(s): pytest.approx(d) for s, d in zip((0, 1, 2), per_seed)}
    assert result["estimate"] == pytest.approx(sum(per_seed) / 3)
    assert result["verdict"] == verdict


def test_one_seed_gives_no_verdict():
    statement = Statement("x", "t", (Term("base", "ift", ("avg",)),), (Term("base", "sft", ("avg",)),))
    cells = _cells({("base", "ift"): {"avg": {0: 50.0}}, ("base", "sft"): {"avg": {0: 40.0}}})
    result = claims.evaluate(statement, claims.grid_lookup(cells))
    assert result["estimate"] == 10.0 and result["verdict"] == "inconclusive (1 seed)"


def test_a_start_point_enters_every_seed_and_a_missing_seed_is_named():
    statement = Statement("x", "t", (Term("base", "ift", ("avg",)),), (Term("base", None, ("avg",)),))
    cells = _cells({("base", "ift"): {"avg": {0: 3.0, 1: 5.0}}, ("base", None): {"avg": {None: 1.0}}})
    assert claims.per_seed(statement, claims.grid_lookup(cells)) == {0: 2.0, 1: 4.0}
    other = Statement("y", "t", (Term("base", "ift", ("avg",)),), (Term("base", "sft", ("avg",)),))
    cells = _cells({("base", "ift"): {"avg": {0: 3.0, 1: 5.0}}, ("base", "sft"): {"avg": {0: 1.0}}})
    with pytest.raises(ClaimDataError, match=r"missing avg\(sft@base\) seed 1"):
        claims.per_seed(other, claims.grid_lookup(cells))
    assert claims.evaluate(other, claims.grid_lookup(cells))["verdict"] == "not available"


@pytest.mark.parametrize(("term", "message"), [
    (Term("base", "kto", ("avg",)), r"unknown method 'kto'"),
    (Term("zephyr", "ift", ("avg",)), r"unknown start/source 'zephyr'"),
    (Term("base", "ift", ("hellaswag",)), r"unknown column\(s\) \['hellaswag'\]"),
    (Term("frozen_lake", "ift", ("policy_mse",)), r"unknown start/source 'frozen_lake'"),  # FL rows: ShareStatement
    (Term("bench", "ift", ("avg",)), r"unknown column\(s\) \['avg'\] .* known for bench"),
])
def test_a_statement_naming_an_unknown_cell_or_column_fails_loudly(term, message):
    statement = Statement("bad", "t", (term,), (Term("base", "sft", ("avg",)),))
    with pytest.raises(ClaimDataError, match=message):
        claims.claims_rows(lambda t: None, lambda t: None, [statement])


def test_bench_terms_read_their_source(tmp_path):
    bench_file = tmp_path / "bench.json"
    bench_file.write_text(json.dumps({"schema": 1, "shapes": {"small": {"ratios_to_sft": {
        "ift": {"step_time": 0.8, "peak_memory": 0.35}, "dpo": {"step_time": 2.9, "peak_memory": 1.9},
        "orpo": {"step_time": 1.5, "peak_memory": 0.95}}}}}))
    lookup = claims.grid_lookup({}, claims.bench_ratios(bench_file))
    rows = {row["claim"]: row["ours"] for row in claims.claims_rows(lookup, lookup)}
    assert rows["6a"]["estimate"] == pytest.approx(1.5 - 0.8) and rows["6a"]["verdict"] == "supported"
    assert rows["6b"]["estimate"] == pytest.approx(0.95 - 0.35)
    assert claims.bench_ratios(tmp_path / "absent.json") == {}
    (tmp_path / "wrong.json").write_text(json.dumps({"shapes": {"tiny": {}}}))
    with pytest.raises(ClaimDataError, match=r"wrong.json: no `shapes.small.ratios_to_sft`"):
        claims.bench_ratios(tmp_path / "wrong.json")


def _study(shares: dict[str, tuple[int, int, int]], subset: str = "all settings") -> dict:
    """A Frozen Lake study result with, per claim, (holds, opposite, inconclusive) setting counts."""
    rows = []
    for claim, (holds, opposite, inconclusive) in shares.items():
        n = holds + opposite + inconclusive
        rows.append({"claim": claim, "settings": n, "holds": holds, "holds_share": holds / n, "opposite": opposite,
                     "opposite_share": opposite / n, "inconclusive": inconclusive,
                     "inconclusive_share": inconclusive / n})
    return {"claims": {subset: rows, "map ring": rows[:1]}}


def test_the_frozen_lake_rows_come_from_the_study_by_majority_of_settings():
    study = _study({"DPO < IFT": (10, 80, 10), "IFT < ORPO": (51, 0, 49), "ORPO < SFT": (50, 10, 40),
                    "IFT < SFT": (30, 50, 20)})
    rows = {row["claim"]: row for row in claims.claims_rows(lambda t: None, lambda t: None,
                                                            frozen_lake_study=study)}
    fl = {claim: rows[claim]["ours"] for claim in ("FL1", "FL2", "FL3", "FL4")}
    assert [fl[c]["verdict"] for c in fl] == ["contradicted", "supported", "inconclusive", "inconclusive"]
    assert fl["FL1"]["estimate"] == pytest.approx(0.10 - 0.80) and fl["FL1"]["n"] == 100
    assert fl["FL2"]["shares"] == pytest.approx({"holds": 0.51, "opposite": 0.0, "inconclusive": 0.49})
    assert fl["FL3"]["estimate"] == pytest.approx(0.40)  # holds in exactly half: not a majority
    assert all(rows[c]["paper"]["verdict"] == "not available" for c in fl)
    text = claims.claims_markdown(list(rows.values()), "note")
    assert "| FL1 |" in text and "-0.70: holds 10%, opposite 80%, inconclusive 10% of 100 settings" in text
    assert "| FL4 | Frozen Lake: IFT ends much closer to π* than SFT" in text
    csv_row = next(line for line in claims.claims_csv(list(rows.values())).splitlines() if line.startswith("FL2,"))
    assert csv_row.endswith(",0.5100,,,100,supported,,")


def test_the_frozen_lake_rows_without_a_study_or_with_a_mistyped_claim():
    rows = {row["claim"]: row["ours"] for row in claims.claims_rows(lambda t: None, lambda t: None)}
    assert rows["FL1"]["verdict"] == "not available" and "frozen_lake_study.json" in rows["FL1"]["why"]
    typo = claims.ShareStatement("FLx", "t", "DPO < IFX")
    with pytest.raises(ClaimDataError, match=r"claim FLx: the Frozen Lake study has no claim 'DPO < IFX'"):
        claims.claims_rows(lambda t: None, lambda t: None, [typo], frozen_lake_study=_study({"DPO < IFT": (1, 0, 0)}))
    subset = claims.ShareStatement("FLy", "t", "DPO < IFT", subset="map lake")
    with pytest.raises(ClaimDataError, match=r"claim FLy: the Frozen Lake study has no subset 'map lake'"):
        claims.claims_rows(lambda t: None, lambda t: None, [subset], frozen_lake_study=_study({"DPO < IFT": (1, 0, 0)}))


# ---- deltas and the base-only grid ---------------------------------------------------------------------------------
def test_base_only_methods_sit_at_base_in_the_papers_row_order():
    assert methods_at("base", ["sft", "sft_dpo", "orpo", "ift"], ["dpo"]) == ["sft", "dpo", "sft_dpo", "orpo", "ift"]
    assert methods_at("sft_beta", ["sft", "sft_dpo", "orpo", "ift"], ["dpo"]) == ["sft", "sft_dpo", "orpo", "ift"]
    assert row_title("base", "sft_dpo") == "+ SFT + DPO (not in the paper)"
    assert row_title("sft_beta", "sft_dpo") == "+ SFT + DPO" and row_title("base", "dpo") == "+ DPO"


def test_deltas_against_hand_computed_values():
    cells = _cells({("base", None): {"arc": {None: 50.0}, "avg": {None: 40.0}},
                    ("base", "ift"): {"arc": {0: 60.0, 1: 64.0}, "avg": {0: 41.0, 1: 39.0}}})
    published = {("base", None): {"arc": 53.07, "avg": 54.79}, ("base", "ift"): {"arc": 56.74, "avg": 59.61}}
    pairs = (("arc", "arc", "ARC"), ("avg", "avg", "Avg"))
    [row] = delta_rows(cells, published, ["ift"], ["base"], pairs)
    arc, avg = row["columns"]["arc"], row["columns"]["avg"]
    assert arc["mean"] == pytest.approx(12.0) and arc["std"] == pytest.approx(math.sqrt(8.0)) and arc["n"] == 2
    assert arc["paper"] == pytest.approx(56.74 - 53.07)
    assert avg["mean"] == pytest.approx(0.0) and avg["paper"] == pytest.approx(59.61 - 54.79)
    assert (row["agree"], row["compared"]) == (1, 2)  # ARC: both up; Avg: ours no change vs the paper's rise


def test_the_report_writes_deltas_and_claims_with_the_base_only_rows(tmp_path):
    evals = tmp_path / "evals"
    for start in ("base", "sft_beta"):
        _write_eval(evals, start, {t: 0.25 for t in TASKS}, 10.0, lc=10.0)
    cells = [(m, "base") for m in ("sft", "dpo", "orpo", "ift")] + [(m, "sft_beta") for m in ("sft", "orpo", "ift")]
    for index, (method, start) in enumerate(cells):
        for seed in (0, 1):
            _write_eval(evals, f"{method}-{start}-s{seed}", {t: 0.3 + 0.01 * index + 0.02 * seed for t in TASKS},
                        20.0 + index, lc=21.0 + index)
    out = tmp_path / "report"
    result = build_report(evals_dir=evals, runs_dir=tmp_path / "runs", out_dir=out, methods=["sft", "orpo", "ift"],
                          starts=["base", "sft_beta"], seeds=[0, 1], profile="tiny", require_complete=True,
                          base_only=["dpo"], compare_file=DEFAULT_FILE)
    assert [(r["start"], r["method"]) for r in result["rows2"]][:5] == [
        ("base", "-"), ("base", "sft"), ("base", "dpo"), ("base", "orpo"), ("base", "ift")]
    deltas_md = (out / "paper_deltas.md").read_text()
    # + DPO from base, ARC: seeds 31% and 33% against the start's 25%: +7.0 ± 1.4; the paper 61.86 - 53.07 = +8.79
    assert "| + DPO (from base) | +7.0 ± 1.4 / +8.79 |" in deltas_md
    claims_json = json.loads((out / "claims.json").read_text())
    by_claim = {row["claim"]: row for row in claims_json["claims"]}
    # claim 1 per seed: ift's Avg minus the best of sft/dpo/orpo (orpo, 0.01 below ift on every task)
    assert by_claim["1"]["ours"]["estimate"] == pytest.approx(1.0)
    assert by_claim["1"]["ours"]["verdict"] == "supported"  # both seeds exactly +1.0: a zero-width interval above 0
    assert by_claim["2"]["ours"]["verdict"] == "not available"  # no sft_dpo cells in this grid: named, not guessed
    assert "sft_dpo@sft_beta" in by_claim["2"]["ours"]["why"]
    assert not any(claim.startswith("7") for claim in by_claim)  # no SimPO/TDPO cells: their claims are not rows
    assert "fine-tuning seeds only; start points shared" in (out / "claims.md").read_text()
    index = (out / "index.md").read_text()
    assert "[claims.md](claims.md)" in index and "[paper_deltas.md](paper_deltas.md)" in index


def test_check_complete_fails_on_a_claim_the_grid_could_not_evaluate(tmp_path, capsys):
    from ift.report.check_complete import main as check_complete

    path = tmp_path / "claims.csv"
    path.write_text("claim,statement,estimate,low,high,n,verdict,paper_estimate,paper_verdict\n"
                    "1,a,1.0,0.5,1.5,3,supported,0.96,supported\n2,b,,,,0,not available,0.70,supported\n")
    assert check_complete([str(path)]) == 1
    assert "claim 2: not available" in capsys.readouterr().err
    path.write_text(path.read_text().replace("2,b,,,,0,not available", "2,b,-1.0,,,1,contradicted"))
    assert check_complete([str(path)]) == 0
