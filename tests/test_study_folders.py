"""Study folders that live in git: no ``.nc`` needed, provenance, scaling up, the committed one.

The folders here are tiny (one in-process worker, a few sub-second tasks). The last
tests read ``studies/quick``, the committed run of the ``quick`` preset, and check that
its report regenerated from the committed files alone is the table in docs/results.md.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bayes_recon.app.cli import build_parser
from bayes_recon.app.studies import (MethodSpec, Setting, StudyConfig, preset, run_study,
                                     study_tasks, task_is_done, write_report)
from bayes_recon.app.studies.provenance import (machine, provenance, provenance_lines,
                                                source_commit)

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "studies" / "quick"
RESULTS_PAGE = ROOT / "docs" / "results.md"
DERIVED = ("results.csv", "summary.csv", "summary.md")
# The quick preset's DIP: a posterior in about a second.
SMALL_DIP = dict(dip_tv_scale=3.0, dip_lr=1e-3, dip_iterations=20, dip_channels=8, num_samples=20)


def small_config(**kw) -> StudyConfig:
    base = dict(name="small", settings=(Setting("ct", 28, angles=10),),
                methods=(MethodSpec("FBP", "fbp"),
                         MethodSpec("DIP + fixed σ", "fixed-sigma-dip", **SMALL_DIP)),
                images=1)
    base.update(kw)
    return StudyConfig(**base)


def derived_bytes(folder: Path) -> dict:
    return {name: (folder / name).read_bytes() for name in DERIVED}


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("folders") / "small"
    run = run_study(small_config(), out, workers=1, progress=False)
    return out, run


def test_posteriors_are_not_written_by_default(small_study):
    out, run = small_study
    assert (run.executed, run.errors) == (2, 0)
    assert not (out / "posteriors").exists()
    dip = json.loads((out / "tasks" / "ct28-a10-n5__dip-fixed-sigma__0000.json").read_text())
    assert dip["posterior_file"] is None
    assert 0 <= dip["coverage_90"] <= 1 and len(dip["coverage"]) == len(dip["coverage_levels"])
    assert all(task_is_done(out, t) for t in study_tasks(small_config()))


def test_saved_posterior_is_an_extra_a_task_is_done_without_it(tmp_path):
    out = tmp_path / "with_nc"
    first = run_study(small_config(), out, workers=1, progress=False, save_posteriors=True)
    nc = out / "posteriors" / "ct28-a10-n5__dip-fixed-sigma__0000.nc"
    assert nc.is_file() and first.executed == 2
    report = derived_bytes(out)
    nc.unlink()  # as in a folder checked out from git
    second = run_study(small_config(), out, workers=1, progress=False)
    assert (second.skipped, second.executed) == (2, 0)
    assert derived_bytes(out) == report  # the report never needed the .nc
    with pytest.raises(TypeError, match="save_posteriors must be a bool"):
        run_study(small_config(), out, workers=1, progress=False, save_posteriors="yes")


def test_cli_posterior_option_defaults_to_off():
    parser = build_parser()
    base = ["study", "run", "--preset", "quick", "--out", "x"]
    assert parser.parse_args(base).save_posteriors is False
    assert parser.parse_args(base + ["--save-posteriors"]).save_posteriors is True
    assert parser.parse_args(base + ["--no-save-posteriors"]).save_posteriors is False


def test_report_is_deterministic_and_records_provenance(small_study, tmp_path):
    out, _ = small_study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = derived_bytes(copy)
    for name in DERIVED:
        (copy / name).unlink()
    write_report(copy)
    after = derived_bytes(copy)
    write_report(copy)
    assert derived_bytes(copy) == after == before
    md = after["summary.md"].decode()
    rows = [json.loads(p.read_text()) for p in sorted((copy / "tasks").glob("*.json"))]
    m = machine()
    assert f"- Machine: {m['cpu']}, {m['cpus']} CPUs, {m['ram_gib']} GiB RAM" in md
    finished = sorted(r["finished"] for r in rows)  # ISO 8601, UTC: 2026-12-07T03:50:09.1+00:00
    first, last = (f"{t[:10]} {t[11:19]} UTC" for t in (finished[0], finished[-1]))
    assert f"- Dates: tasks finished from {first} to {last}; folder created" in md
    commit = source_commit()["commit"]
    assert f"- Commit: {commit[:10] if commit else 'not a git checkout'}" in md
    assert "- bayes_recon: 0." in md and "(2 tasks)" in md
    # A changed row changes the report: it is computed from the rows, not cached.
    dip = copy / "tasks" / "ct28-a10-n5__dip-fixed-sigma__0000.json"
    row = json.loads(dip.read_text())
    row["psnr"] += 1.0
    dip.write_text(json.dumps(row))
    write_report(copy)
    assert (copy / "summary.md").read_bytes() != after["summary.md"]


def test_provenance_summarises_what_rows_record():
    meta = {"created": "2026-01-01T00:00:00+00:00"}
    box = {"platform": "Linux-x", "cpu": "CPU A", "cpus": 2, "ram_gib": 8.0}
    rows = [
        {"status": "ok", "seconds": 2.0, "cpu_seconds": 1.5, "commit": "a" * 40,
         "commit_dirty": False, "machine": box, "versions": {"bayes_recon": "0.2.0"},
         "finished": "2026-01-02T10:00:00+00:00"},
        {"status": "ok", "seconds": 3.0, "commit": "b" * 40, "commit_dirty": True,
         "machine": box, "versions": {"bayes_recon": "0.2.0"},
         "finished": "2026-01-01T09:00:00+00:00"},
        {"status": "error", "seconds": float("nan"), "commit": None,
         "finished": "2026-01-03T00:00:00+00:00"},
        {"status": "pending"},
    ]
    prov = provenance(meta, rows)
    assert prov["first"] == "2026-01-01T09:00:00+00:00"
    assert prov["last"] == "2026-01-03T00:00:00+00:00"
    assert prov["commits"] == {"aaaaaaaaaa": 1, "bbbbbbbbbb + uncommitted changes": 1,
                               "not a git checkout": 1}
    assert prov["machines"] == {"CPU A, 2 CPUs, 8.0 GiB RAM, Linux-x": 2, "not recorded": 1}
    assert prov["versions"] == {"0.2.0": 2, "not recorded": 1}
    assert prov["method_seconds"] == 5.0 and (prov["cpu_seconds"], prov["cpu_rows"]) == (1.5, 1)
    lines = provenance_lines(prov)
    assert lines[0] == "- bayes_recon: 0.2.0 (2 tasks); not recorded (1 tasks)"
    assert lines[3] == ("- Dates: tasks finished from 2026-01-01 09:00:00 UTC to 2026-01-03 "
                        "00:00:00 UTC; folder created 2026-01-01 00:00:00 UTC")
    assert "CPU 2 s over the 1 tasks that record it" in lines[-1]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_source_commit_of_a_checkout_and_of_other_folders(tmp_path, monkeypatch):
    repo, pkg = tmp_path / "repo", tmp_path / "repo" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "one"], check=True)
    head = subprocess.run(git[:3] + ["rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    assert source_commit(pkg) == {"commit": head, "dirty": False}
    (pkg / "__init__.py").write_text("x = 2\n")
    assert source_commit(pkg) == {"commit": head, "dirty": True}
    untracked = repo / "venv" / "site-packages" / "pkg"  # an install inside a checkout
    untracked.mkdir(parents=True)
    (untracked / "__init__.py").write_text("")
    assert source_commit(untracked) == {"commit": None, "dirty": None}
    assert source_commit(tmp_path / "nowhere") == {"commit": None, "dirty": None}
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # git missing: unknown, no error
    assert source_commit(pkg) == {"commit": None, "dirty": None}


def test_resume_with_more_images_scales_the_folder_up(tmp_path):
    tiny = small_config(methods=(MethodSpec("FBP", "fbp"),), images=2)
    out = tmp_path / "grow"
    run_study(tiny, out, workers=1, progress=False)
    more = run_study(tiny.with_images(3), out, workers=1, progress=False)
    assert (more.skipped, more.executed) == (2, 1)
    assert json.loads((out / "study.json").read_text())["config"]["images"] == 3
    fewer = run_study(tiny.with_images(1), out, workers=1, progress=False)
    assert (fewer.total, fewer.skipped, fewer.executed) == (1, 1, 0)
    assert json.loads((out / "study.json").read_text())["config"]["images"] == 3
    assert "3 test digits = 3 tasks: 3 ok" in (out / "summary.md").read_text()
    with pytest.raises(ValueError, match="another config"):
        run_study(small_config(images=3), out, workers=1, progress=False)


# ------------------------------------------------------------ the committed quick folder

def committed_table_block(text: str) -> list[str]:
    """The provenance bullets and the table of a summary (the part docs/results.md quotes)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("- bayes_recon:"))
    table_end = max(i for i, line in enumerate(lines) if line.startswith("|"))
    return [line for line in lines[start:table_end + 1] if line.startswith(("- ", "|"))]


def page_section(heading_prefix: str) -> str:
    text = RESULTS_PAGE.read_text()
    match = re.search(rf"^## {re.escape(heading_prefix)}.*?(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/results.md has no section starting '## {heading_prefix}'"
    return match.group(0)


def quoted_block(heading_prefix: str) -> list[str]:
    """The provenance bullets and table lines of a docs/results.md section."""
    return [line for line in page_section(heading_prefix).splitlines()
            if line.startswith(("- bayes_recon:", "- Commit:", "- Machine:", "- Dates:", "- Compute:", "|"))]


def regenerated_copy(folder: Path, tmp_path: Path) -> Path:
    """A copy of a committed folder's study/task files only, its report regenerated there."""
    copy = tmp_path / folder.name
    (copy / "tasks").mkdir(parents=True)
    shutil.copy2(folder / "study.json", copy / "study.json")
    for row in (folder / "tasks").glob("*.json"):
        shutil.copy2(row, copy / "tasks" / row.name)
    write_report(copy)
    return copy


@pytest.fixture
def regenerated_quick(tmp_path):
    return regenerated_copy(COMMITTED, tmp_path)


def test_committed_quick_folder_is_complete_without_samples():
    config = preset("quick")
    assert not (COMMITTED / "posteriors").exists()
    assert all(task_is_done(COMMITTED, t) for t in study_tasks(config))
    assert len(list((COMMITTED / "tasks").glob("*.json"))) == len(study_tasks(config))


def test_task_problem_rebuilds_the_committed_rows_data():
    """``task_problem`` (the recipe in docs/studies.md, "Held-out validation") gives the data
    the committed quick rows were computed on: their noise level, and FBP's PSNR."""
    from bayes_recon.app.studies import task_problem
    from bayes_recon.metrics import psnr

    for task in study_tasks(preset("quick")):
        row = json.loads((COMMITTED / "tasks" / f"{task.key}.json").read_text())
        op, truth, meas = task_problem(task)
        assert truth.shape == (1, 1, 28, 28)
        assert meas.noise_std == pytest.approx(row["noise_std"], rel=1e-6), task.key
        if task.method.method == "fbp":
            got = float(psnr(truth, op.fbp(meas.y).to(truth.dtype), data_range=1.0)[0])
            assert got == pytest.approx(row["psnr"], abs=1e-4), task.key


def test_committed_quick_report_regenerates_the_page_table(regenerated_quick):
    summary = (regenerated_quick / "summary.md").read_text()
    assert summary == (COMMITTED / "summary.md").read_text()
    for name in ("results.csv", "summary.csv"):
        assert (regenerated_quick / name).read_text() == (COMMITTED / name).read_text()
    block = committed_table_block(summary)
    assert len([line for line in block if line.startswith("| ct28")]) == 10
    page_block = quoted_block("`quick`")
    assert page_block == block
    # The comparison can fail: one changed row changes the regenerated table.
    row_path = next((regenerated_quick / "tasks").glob("ct28-a20-n5__tv__0001.json"))
    row = json.loads(row_path.read_text())
    row["psnr"] += 0.5
    row_path.write_text(json.dumps(row))
    write_report(regenerated_quick)
    assert committed_table_block((regenerated_quick / "summary.md").read_text()) != page_block


def test_presets_table_in_docs_states_their_sizes():
    """docs/studies.md's presets table gives each preset's images and tasks as defined."""
    text = (ROOT / "docs" / "studies.md").read_text()
    for name in ("lindip-protocol", "mri-spokes", "denoise", "quick"):
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        config = preset(name)
        assert int(cells[3]) == config.images, name
        assert int(cells[4]) == len(study_tasks(config)), name


# ------------------------------------------------------------ the committed preset folders

# (preset, table rows starting with, heading of its docs/results.md section)
FULL_PRESETS = [("denoise", "| denoise28-", "`denoise`: the full preset"),
                ("mri-spokes", "| mri28-", "`mri-spokes`: the full preset"),
                ("lindip-protocol", "| ct28-", "`lindip-protocol`: the full preset")]


@pytest.mark.parametrize("name, row_prefix, heading", FULL_PRESETS)
def test_committed_preset_report_regenerates_the_page_table(tmp_path, name, row_prefix, heading):
    """A full preset's committed folder: every task done, no samples, and its report rebuilt
    from the committed ``study.json`` and task rows alone is the table docs/results.md quotes."""
    folder = ROOT / "studies" / name
    config = preset(name)
    assert not (folder / "posteriors").exists()
    tasks = study_tasks(config)
    assert all(task_is_done(folder, t) for t in tasks), f"{name}: not every task is done"
    copy = regenerated_copy(folder, tmp_path)
    summary = (copy / "summary.md").read_text()
    assert summary == (folder / "summary.md").read_text()
    block = committed_table_block(summary)
    rows = len(config.settings) * len(config.methods)
    assert len([line for line in block if line.startswith(row_prefix)]) == rows
    assert quoted_block(heading) == block
