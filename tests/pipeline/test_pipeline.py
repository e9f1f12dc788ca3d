"""The DVC pipeline's wiring, checked through DVC's own stage graph (no stage is run here).

Running the pipeline end to end is `make smoke` (CI); these tests pin what a researcher relies on when editing
configs: which stages an edit reruns, that every tracked param key exists, that every command's module exists.
"""

from __future__ import annotations

import importlib.util
import shlex

import networkx as nx
import pytest
import yaml
from dvc.repo import Repo

from conftest import REPO_ROOT
from dvc_stages import default_pipeline_files, dvcfile, in_default_pipeline, stage_name


@pytest.fixture(scope="module")
def repo():
    return Repo(str(REPO_ROOT))


@pytest.fixture(scope="module")
def grid():
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    return params["methods"], params["starts"], params["seeds"]


def rerun_by_edit(repo, path: str) -> set[str]:
    """Stages DVC reruns when ``path`` changes: those tracking it as a dep or params file, and everything after."""
    graph = repo.index.graph  # edges point from a stage to the stages it depends on
    direct = [stage for stage in graph if any(dep.def_path == path for dep in stage.deps)]
    hit = set(direct)
    for stage in direct:
        hit |= nx.ancestors(graph, stage)
    return {stage_name(stage) for stage in hit}


def test_dvc_repro_runs_exactly_the_root_and_grid_files(repo):
    """`dvc repro` at the root plans the root dvc.yaml's stages and everything upstream of them (DVC's own planner).
    That must be every stage of dvc.yaml and grid/*/dvc.yaml, the files the grid is split into only to keep each
    dvc.lock small, and no stage of the opt-in pipelines (paper_full, selection, studies, real)."""
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    planned = plan_repro(get_active_graph(repo.index.graph), collect_stages(repo, [str(REPO_ROOT / "dvc.yaml")]))
    assert default_pipeline_files() == {"dvc.yaml", *(f"grid/{part}/dvc.yaml"
                                                      for part in ("cells", "evals", "chain_cells", "chain_evals"))}
    assert {dvcfile(stage) for stage in planned} == default_pipeline_files()
    assert set(planned) == {stage for stage in repo.index.stages if in_default_pipeline(stage)}
    assert len({stage_name(stage) for stage in planned}) == len(planned)  # names stay unique across the files
    assert planned.index(next(s for s in planned if s.name == "world")) < planned.index(
        next(s for s in planned if s.name == "train@ift-base-0"))


def test_editing_the_ift_config_reruns_exactly_the_ift_cells_their_evals_and_the_report(repo, grid):
    _, starts, seeds = grid
    chains = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["chains"]
    cells = [f"ift-{start}-{seed}" for start in starts for seed in seeds]
    chain_cells = [f"ift-{start}-{chain}" for start in starts for chain in chains]
    expected = ({f"train@{cell}" for cell in cells} | {f"eval@{cell}" for cell in cells} | {"report"}
                | {f"train_chain@{cell}" for cell in chain_cells} | {f"eval_chain@{cell}" for cell in chain_cells}
                | {"selection/dvc.yaml:selection"}  # the optional checkpoint selection reads every run
                | {"paper_full/dvc.yaml:report"}  # the optional paper_full report reads the default grid's evaluations
                | {"real/dvc.yaml:real_train@ift", "real/dvc.yaml:real_train_lora", "real/dvc.yaml:real_eval"}  # profile=real
                | {f"studies/dvc.yaml:study@{study}" for study in ("ablation", "lambda", "recipe")})  # issue 25, opt-in
    assert rerun_by_edit(repo, "conf/method/ift.yaml") == expected


def test_editing_the_finetune_recipe_reruns_the_grid_but_not_the_start_points(repo):
    hit = rerun_by_edit(repo, "conf/trainer/tiny.yaml")
    assert {"base", "sft_beta"} <= hit  # their own recipes live in the same file ...
    hit_finetune_only = {
        stage_name(stage)
        for stage in repo.index.graph
        for dep in stage.deps
        if dep.def_path == "conf/trainer/tiny.yaml" and "finetune" in (getattr(dep, "params", None) or [])
    }
    assert hit_finetune_only and all(name.removeprefix("paper_full/dvc.yaml:").startswith((
        "train@", "train_base_only@", "train_chain@", "train_base_only_chain@")) for name in hit_finetune_only)
    assert "world" not in hit and "frozen_lake" not in hit


def test_the_grid_has_one_train_and_one_eval_stage_per_cell_and_one_eval_per_start(repo, grid):
    methods, starts, seeds = grid
    names = {stage_name(stage) for stage in repo.index.stages}
    for method in methods:
        for start in starts:
            for seed in seeds:
                assert {f"train@{method}-{start}-{seed}", f"eval@{method}-{start}-{seed}"} <= names
    assert {f"eval_start@{start}" for start in starts} <= names
    assert {"world", "base", "sft_beta", "frozen_lake", "report"} <= names


def test_every_tracked_param_key_exists_in_its_file(repo):
    for stage in repo.index.stages:
        for dep in stage.deps:
            keys = getattr(dep, "params", None)
            if not keys:
                continue
            document = yaml.safe_load((REPO_ROOT / dep.def_path).read_text())
            for key in keys:
                node = document
                for part in key.split("."):
                    assert isinstance(node, dict) and part in node, f"{stage.addressing}: {dep.def_path} has no {key}"
                    node = node[part]


def test_every_stage_command_runs_an_existing_module(repo):
    for stage in repo.index.stages:
        argv = shlex.split(stage.cmd)
        while argv and "=" in argv[0] and argv[0].split("=", 1)[0].isidentifier():
            argv = argv[1:]  # leading environment assignments (OMP_NUM_THREADS=... on training stages)
        assert argv[:2] == ["python", "-m"], stage.cmd
        assert importlib.util.find_spec(argv[2]) is not None, f"{stage.addressing}: no module {argv[2]}"


def test_report_outputs_are_committed_files_not_cache(repo):
    """report/ is in git (cache: false), so a fresh clone shows the tables and README's check has a reference."""
    report = next(stage for stage in repo.index.stages if stage_name(stage) == "report")
    assert report.outs and all(not out.use_cache for out in report.outs)
    assert all(out.def_path.startswith("report/") for out in report.outs)


def test_python_bytecode_is_not_a_stage_dependency(repo):
    """Stages depend on source folders (src/ift/world, ...). Bytecode caches inside them must not count: their bytes
    carry source mtimes and a fresh clone has none, so counting them made every stage look changed after a clone."""
    source_dirs = {dep.def_path for stage in repo.index.stages for dep in stage.deps
                   if dep.def_path.startswith("src/") and (REPO_ROOT / dep.def_path).is_dir()}
    assert "src/ift/world" in source_dirs
    for directory in sorted(source_dirs):
        cache = REPO_ROOT / directory / "__pycache__"
        assert repo.dvcignore.is_ignored(repo.fs, str(cache / "module.cpython-311.pyc")), directory
        assert not repo.dvcignore.is_ignored(repo.fs, str(REPO_ROOT / directory / "__init__.py")), directory


def test_every_torch_stage_exports_the_pinned_cpu_numerics(repo):
    """CPU numbers depend on the kernels and the thread count, so every stage that computes with torch exports
    params.yaml's cpu_numerics (ift.numerics.ENV_VARS) in its command and reruns when they change."""
    from ift.numerics import env_for

    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    pinned = env_for(params["cpu_numerics"])
    assert set(pinned) == {"OMP_NUM_THREADS", "ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA"}
    torch_stages = [stage for stage in repo.index.stages if stage_name(stage).split("@")[0] in (
        "base", "sft_beta", "train", "train_base_only", "eval_start", "eval", "eval_base_only", "frozen_lake",
        "base_chain", "sft_beta_chain", "train_chain", "train_base_only_chain", "eval_start_chain", "eval_chain",
        "eval_base_only_chain", "frozen_lake_study", "studies/dvc.yaml:study")]
    assert len(torch_stages) > 8
    for stage in torch_stages:
        argv = shlex.split(stage.cmd)
        exported = dict(arg.split("=", 1) for arg in argv[: argv.index("python")])
        assert exported == pinned, stage.addressing
        tracked = {key for dep in stage.deps for key in (getattr(dep, "params", None) or [])}
        assert "cpu_numerics" in tracked, stage.addressing


def test_base_only_methods_get_a_cell_per_seed_from_base_only(repo, grid):
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    base_only, seeds = params["base_only_methods"], params["seeds"]
    assert base_only == ["dpo"]  # the paper's "+ DPO" from base; from sft_beta it is sft_dpo
    names = {stage_name(stage) for stage in repo.index.stages}
    for seed in seeds:
        assert {f"train_base_only@dpo-base-{seed}", f"eval_base_only@dpo-base-{seed}"} <= names
    assert not any("@dpo-sft_beta" in name for name in names)
    train = next(s for s in repo.index.stages if stage_name(s) == "train_base_only@dpo-base-0")
    assert {dep.def_path for dep in train.deps} >= {"outputs/models/base", "conf/method/dpo.yaml"}
    assert "method=dpo start=base seed=0" in train.cmd
    report = next(s for s in repo.index.stages if stage_name(s) == "report")
    assert {"outputs/evals", "report/frozen_lake_study.json", "benchmarks/bench_small.json"} <= {d.def_path for d in report.deps}


def test_the_checkpoint_selection_is_not_part_of_the_default_pipeline(repo):
    """`dvc repro` runs dvc.yaml and grid/*/dvc.yaml only; the selection stage lives in selection/dvc.yaml and reads
    the main outputs."""
    default_names = {stage_name(s) for s in repo.index.stages if in_default_pipeline(s)}
    assert not any("selection" in name for name in default_names)
    stage = next(s for s in repo.index.stages if stage_name(s) == "selection/dvc.yaml:selection")
    assert {"outputs/runs", "outputs/evals", "report/claims.json"} <= {d.def_path for d in stage.deps}
    assert "python -m ift.selection" in stage.cmd and "baseline_claims=report/claims.json" in stage.cmd
    assert {o.def_path for o in stage.outs} >= {"outputs/selection/evals", "report/selection"}
    # Its code is what its two commands import (test_pipeline_deps.py), not all of src/ift: editing a study's
    # launcher must leave a committed selection current.
    code = {d.def_path for d in stage.deps if d.def_path.startswith("src/ift")}
    assert {"src/ift/selection.py", "src/ift/report", "src/ift/train", "src/ift/evaluate"} <= code
    assert not code & {"src/ift", "src/ift/study", "src/ift/real_model.py"}


def test_the_studies_are_opt_in_stages_that_read_every_chains_start_points(repo):
    """`dvc repro` runs dvc.yaml and grid/*/dvc.yaml only; each study of conf/study/ is one stage of studies/dvc.yaml,
    depending on the start points of every chain its YAML names, its YAML and the code; its runs persist across reruns
    (a killed study skips its finished cells) and its report files are committed (cache: false)."""
    from ift.study.spec import load_study

    default_names = {stage_name(s) for s in repo.index.stages if in_default_pipeline(s)}
    assert not any(name.startswith("study") for name in default_names)
    stages = {stage_name(s): s for s in repo.index.stages if stage_name(s).startswith("studies/dvc.yaml:")}
    names = sorted(path.stem for path in (REPO_ROOT / "conf" / "study").glob("*.yaml"))
    assert names == ["ablation", "lambda", "recipe"]
    assert set(stages) == {f"studies/dvc.yaml:study@{name}" for name in names}
    for name in names:
        stage, study = stages[f"studies/dvc.yaml:study@{name}"], load_study(name)
        assert f"python -m ift.study study={name} profile=" in stage.cmd
        deps = {d.def_path for d in stage.deps}
        assert {f"outputs/models/{start}{'' if chain == 0 else f'-chain{chain}'}"
                for start in study.starts for chain in study.chains} <= deps
        assert {f"conf/study/{name}.yaml", "src/ift/study", "src/ift/train", "src/ift/evaluate"} <= deps
        outs = {o.def_path: o for o in stage.outs}
        assert set(outs) == {f"outputs/studies/{name}", *(f"report/studies/{name}.{ext}" for ext in ("md", "csv", "png"))}
        assert outs[f"outputs/studies/{name}"].persist
        assert all(not o.use_cache for path, o in outs.items() if path.startswith("report/"))


def test_the_real_model_pipeline_is_opt_in(repo):
    """profile=real (real/dvc.yaml, make real-smoke) is not part of `dvc repro`: no default stage is named real_* or
    reads its outputs, and its stages write under outputs/real/ and outputs/models/smollm2 only."""
    default_names = {stage_name(s) for s in repo.index.stages if in_default_pipeline(s)}
    assert not any(name.startswith("real") for name in default_names)
    real = [s for s in repo.index.stages if stage_name(s).startswith("real/dvc.yaml:")]
    assert {s.name.split("@")[0] for s in real} == {
        "real_world", "real_start", "real_train", "real_train_lora", "real_eval"}
    outs = {o.def_path for s in real for o in s.outs}
    assert all(o.startswith("outputs/real/") or o == "outputs/models/smollm2" for o in outs)
    assert not any(d.def_path in outs for s in repo.index.stages if s not in real for d in s.deps)
    assert all("profile=real" in s.cmd for s in real if "ift.train" in s.cmd or "ift.evaluate" in s.cmd)


def test_the_paper_full_grid_is_opt_in_and_trains_its_methods_as_the_default_grid_trains_its_own(repo):
    """paper_full/dvc.yaml (params.yaml paper_full_methods) is not part of `dvc repro`: its cells have the default
    grid's seeds, chains, command and recipe, but write under outputs/paper_full/, which no default stage reads, so
    running it changes nothing the default pipeline tracks; its report goes to report/paper_full/."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    full, seeds, chains, starts = params["paper_full_methods"], params["seeds"], params["chains"], params["starts"]
    assert full == ["tdpo", "simpo"] and not set(full) & {*params["methods"], *params["base_only_methods"]}
    default_names = {stage_name(s) for s in repo.index.stages if in_default_pipeline(s)}
    assert not any("paper_full_methods" in (REPO_ROOT / f).read_text() for f in default_pipeline_files())
    stages = {stage_name(s).split(":")[1]: s for s in repo.index.stages if stage_name(s).startswith("paper_full/")}
    expected = {f"{kind}@{m}-{start}-{seed}" for kind in ("train", "eval") for m in full for start in starts
                for seed in seeds}
    expected |= {f"{kind}_chain@{m}-{start}-{c}" for kind in ("train", "eval") for m in full for start in starts
                 for c in chains}
    assert set(stages) == expected | {"report"}
    default = next(s for s in repo.index.stages if stage_name(s) == "train@ift-base-0")
    cell = stages["train@tdpo-base-0"]
    assert cell.cmd == default.cmd.replace("method=ift", "method=tdpo") + " paths.runs=outputs/paper_full/runs"
    assert {d.def_path for d in cell.deps} == {d.def_path.replace("ift.yaml", "tdpo.yaml") for d in default.deps}
    assert "+chain=1" in stages["train_chain@simpo-sft_beta-1"].cmd
    outs = {o.def_path for s in stages.values() for o in s.outs}
    assert all(o.startswith("outputs/paper_full/") for o in outs - {"report/paper_full"})
    others = [s for s in repo.index.stages if not stage_name(s).startswith("paper_full/")]
    assert not any(d.def_path.startswith(("outputs/paper_full", "report/paper_full")) for s in others for d in s.deps)
    assert not any(name.startswith("paper_full") for name in default_names)
    report = stages["report"]
    assert "paper_full=true" in report.cmd and "paths.report=report/paper_full" in report.cmd
    assert {"outputs/evals", "outputs/paper_full/evals", "report/frozen_lake_study.json"} <= {d.def_path for d in report.deps}


def test_every_committed_report_file_is_a_declared_output_of_the_default_pipeline(repo):
    """A report file that no stage declares is invisible to DVC: `dvc status` would not notice it stale or missing."""
    declared = {out.def_path for stage in repo.index.stages if in_default_pipeline(stage)
                for out in stage.outs}
    report = REPO_ROOT / "report"
    committed = {str(path.relative_to(REPO_ROOT)) for path in [*report.glob("*.*"), *(report / "plots").glob("*.*")]}
    assert committed, "report/ is empty"
    assert committed - declared == set()
