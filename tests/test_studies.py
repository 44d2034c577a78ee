"""Calibration studies on Dask (``bayes_recon.app.studies``, ``bayes-recon study``).

The ``quick`` preset runs once end to end on a 2-worker LocalCluster (with one
deliberately failing task), then is resumed; the other tests read that folder
or use tiny grids. Task functions used as ``task_fn`` live at module level so
that worker processes can import them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayes_recon import __version__
from bayes_recon.app.cli import main
from bayes_recon.app.studies import (
    MethodSpec,
    Setting,
    StudyConfig,
    load_config,
    preset,
    run_study,
    run_task,
    study_tasks,
)

QUICK = preset("quick")
# A posterior task, so the resumed run must also write its .nc.
FAIL_KEY = "ct28-a10-n5__dip-fixed-sigma__0001"
PROBABILISTIC = {"DIP + fixed σ", "DIP + MC dropout"}
METRICS = ["psnr", "ssim", "coverage_50", "coverage_90", "coverage_95", "calibration_error",
           "test_log_likelihood", "ause", "seconds"]


def failing_task(task, folder):
    if task.key == FAIL_KEY:
        raise RuntimeError("deliberate failure for the test")
    return run_task(task, folder, save_posterior=True)


def kill_worker_once(task, folder):
    """Kill this worker process the first time image 1 runs (a marker file remembers)."""
    marker = Path(folder) / "killed.marker"
    if task.image == 1 and not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return run_task(task, folder)


def tiny_config(**kw) -> StudyConfig:
    base = dict(name="tiny", settings=(Setting("ct", 28, angles=10),),
                methods=(MethodSpec("FBP", "fbp"),), images=3)
    base.update(kw)
    return StudyConfig(**base)


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    """``quick`` with one failing task (default LocalCluster, 2 workers), then resumed;
    posteriors saved (``.nc``) so that their metrics can be checked against the samples."""
    out = tmp_path_factory.mktemp("studies") / "quick"
    first = run_study(QUICK, out, workers=2, progress=False, task_fn=failing_task)
    failed_row = json.loads((out / "tasks" / f"{FAIL_KEY}.json").read_text())
    first_csv = pd.read_csv(out / "results.csv")
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "tasks").glob("*.json")}
    second = run_study(QUICK, out, workers=2, progress=False, save_posteriors=True)
    return dict(out=out, first=first, second=second, failed_row=failed_row,
                first_csv=first_csv, mtimes=mtimes)


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as c:
        yield c


def test_failing_task_is_recorded_and_study_goes_on(quick_study):
    first, row = quick_study["first"], quick_study["failed_row"]
    assert first.total == 20 and first.executed == 20 and first.errors == 1
    assert row["status"] == "error"
    assert "RuntimeError: deliberate failure for the test" in row["error"]
    assert "Traceback" in row["error"]
    csv = quick_study["first_csv"]
    assert (csv.status == "ok").sum() == 19
    assert csv.loc[csv.key == FAIL_KEY, "status"].item() == "error"


def test_resume_runs_only_unfinished_tasks(quick_study):
    second, out = quick_study["second"], quick_study["out"]
    assert (second.skipped, second.executed, second.errors) == (19, 1, 0)
    assert [r["key"] for r in second.rows] == [FAIL_KEY]
    now = {p.name: p.stat().st_mtime_ns for p in (out / "tasks").glob("*.json")}
    changed = {k for k in now if now[k] != quick_study["mtimes"].get(k)}
    assert changed == {f"{FAIL_KEY}.json"}
    assert (out / "posteriors" / f"{FAIL_KEY}.nc").is_file()


def test_quick_every_cell_present_no_nan(quick_study):
    out = quick_study["out"]
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 20 and (df.status == "ok").all()
    expected = {(s.name, m.label, i) for s in QUICK.settings for m in QUICK.methods
                for i in range(QUICK.images)}
    assert set(zip(df.setting, df.method, df.image)) == expected
    assert np.isfinite(df[["psnr", "ssim", "mse", "seconds"]].to_numpy()).all()
    calib = ["coverage_50", "coverage_90", "coverage_95", "calibration_error",
             "test_log_likelihood", "ause"]
    prob = df.method.isin(PROBABILISTIC)
    assert np.isfinite(df.loc[prob, calib].to_numpy()).all()
    assert df.loc[~prob, calib].isna().all().all()  # point estimates have no calibration
    # Coverage is a fraction and grows with the level.
    cov = df.loc[prob, ["coverage_50", "coverage_90", "coverage_95"]].to_numpy()
    assert ((cov >= 0) & (cov <= 1)).all() and (np.diff(cov, axis=1) >= 0).all()
    # PSNR in the CSV agrees with an independent computation from the saved posterior.
    import arviz as az
    from skimage.metrics import peak_signal_noise_ratio

    r = df[prob].iloc[0]
    idata = az.from_netcdf(str(out / "posteriors" / f"{r.key}.nc"))
    mean = idata.posterior["x"].values.mean(axis=(0, 1))
    truth = idata.constant_data["x_true"].values
    assert peak_signal_noise_ratio(truth, mean, data_range=1.0) == pytest.approx(r.psnr, abs=1e-3)
    assert (out / "figures" / "calibration_by_method.png").stat().st_size > 0
    for s in QUICK.settings:
        assert (out / "figures" / f"calibration_{s.name}.png").is_file()


def test_rows_record_seed_versions_and_one_thread(quick_study):
    out = quick_study["out"]
    rows = [json.loads(p.read_text()) for p in sorted((out / "tasks").glob("*.json"))]
    assert len(rows) == 20
    assert {r["versions"]["bayes_recon"] for r in rows} == {__version__}
    assert all(r["torch_threads"] == 1 for r in rows)
    # Provenance: the machine and the commit of the code that ran (this checkout, if it is one).
    from bayes_recon.app.studies.provenance import machine, source_commit

    assert all(r["machine"] == machine() for r in rows)
    assert {r["commit"] for r in rows} == {source_commit()["commit"]}
    assert all(r["cpu_seconds"] >= 0 for r in rows)
    assert len({r["pid"] for r in rows}) >= 2  # both workers took tasks
    # Methods are compared on the same measurement: one seed per (setting, image).
    seeds = {}
    for r in rows:
        seeds.setdefault((r["setting"], r["image"]), set()).add(r["seed"])
    assert all(len(s) == 1 for s in seeds.values())
    assert len({next(iter(s)) for s in seeds.values()}) == len(seeds)
    meta = json.loads((out / "study.json").read_text())
    assert meta["config"] == json.loads(json.dumps(QUICK.to_dict()))


def test_summary_matches_direct_computation(quick_study):
    out = quick_study["out"]
    df = pd.read_csv(out / "results.csv")
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == len(QUICK.settings) * len(QUICK.methods)
    rng_seed, resamples = QUICK.seed, QUICK.bootstrap_resamples
    for _, cell in summary.iterrows():
        group = df[(df.setting == cell.setting) & (df.method == cell.method)
                   & (df.status == "ok")].sort_values("image")
        for metric in METRICS:
            vals = group[metric].dropna().to_numpy(dtype=float)
            assert cell[f"{metric}_n"] == len(vals)
            if len(vals) == 0:
                assert np.isnan(cell[f"{metric}_mean"])
                continue
            assert cell[f"{metric}_mean"] == pytest.approx(vals.mean(), rel=1e-12, abs=1e-12)
            # The documented percentile bootstrap, written out independently.
            rng = np.random.default_rng(rng_seed)
            idx = rng.integers(0, len(vals), size=(resamples, len(vals)))
            lo, hi = np.percentile(vals[idx].mean(axis=1), [2.5, 97.5])
            assert cell[f"{metric}_lo"] == pytest.approx(lo, rel=1e-12, abs=1e-12)
            assert cell[f"{metric}_hi"] == pytest.approx(hi, rel=1e-12, abs=1e-12)
            assert vals.min() - 1e-12 <= lo <= vals.mean() <= hi <= vals.max() + 1e-12
    md = (out / "summary.md").read_text()
    first = summary.iloc[0]
    assert f"{first.psnr_mean:.2f} [{first.psnr_lo:.2f}, {first.psnr_hi:.2f}]" in md


def test_report_regenerates_from_folder_alone(quick_study, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(quick_study["out"], copy)
    original = (copy / "results.csv").read_text()
    for name in ("results.csv", "summary.csv", "summary.md"):
        (copy / name).unlink()
    shutil.rmtree(copy / "figures")
    assert main(["study", "report", str(copy)]) == 0
    assert (copy / "results.csv").read_text() == original
    assert (copy / "summary.md").is_file() and (copy / "figures" / "psnr.png").is_file()
    # A finished study rerun from the command line runs nothing and starts no cluster.
    start = time.perf_counter()
    assert main(["study", "run", "--preset", "quick", "--out", str(copy), "--no-progress"]) == 0
    assert "20 already done, 0 run" in capsys.readouterr().out
    assert time.perf_counter() - start < 30


def test_killed_worker_mid_task_loses_nothing(cluster, tmp_path):
    out = tmp_path / "killed"
    run = run_study(tiny_config(), out, scheduler=cluster.scheduler_address, progress=False,
                    task_fn=kill_worker_once)
    assert (out / "killed.marker").is_file()  # a worker really died mid-task
    assert (run.executed, run.errors) == (3, 0)
    df = pd.read_csv(out / "results.csv")
    assert list(df.status) == ["ok"] * 3 and np.isfinite(df.psnr).all()
    killed_pid = int((out / "killed.marker").read_text())
    row = json.loads((out / "tasks" / "ct28-a10-n5__fbp__0001.json").read_text())
    assert row["pid"] != killed_pid  # finished by another (or a restarted) worker


def test_tasks_of_a_config_and_toml_roundtrip(tmp_path):
    tasks = study_tasks(QUICK)
    assert len(tasks) == len({t.key for t in tasks}) == 20
    # Image-major: the first half of the tasks is image 0 in every (setting, method) cell.
    assert {t.image for t in tasks[:10]} == {0} and len({(t.setting, t.method) for t in tasks[:10]}) == 10
    text = """
name = "from-toml"
images = 2
seed = 3
[[settings]]
problem = "mri"
spokes = 12
relative_noise = 0.1
[[methods]]
label = "MAP structured"
method = "jpmap"
prior = "digits-supn"
map_iterations = 3
"""
    path = tmp_path / "study.toml"
    path.write_text(text)
    cfg = load_config(path)
    assert cfg.settings[0].name == "mri28-s12-n10"
    assert cfg.methods[0].settings(seed=5).map.max_iterations == 3
    assert StudyConfig.from_dict(cfg.to_dict()) == cfg
    for name in ("lindip-protocol", "mri-spokes", "denoise", "quick"):
        cfg = preset(name, images=2)
        assert StudyConfig.from_dict(cfg.to_dict()) == cfg and cfg.images == 2
        cfg.validate()


def test_lindip_protocol_runs_the_heldout_calibration():
    """Both linearised-DIP rows of lindip-protocol run the held-out calibration (the
    library default the preset relies on; docs/studies.md, "Presets")."""
    dips = [m for m in preset("lindip-protocol").methods if m.method == "linearised-dip"]
    assert [m.predcp_scale for m in dips] == [0.0, 20.0]
    for m in dips:
        assert m.settings(seed=3).dip.calibration == "heldout", m.label


def test_unknown_preset_and_method(tmp_path):
    with pytest.raises(ValueError, match="preset must be one of"):
        preset("nope")
    with pytest.raises(ValueError, match="method of 'X' must be one of"):
        MethodSpec("X", "not-a-method")
    path = tmp_path / "bad.toml"
    path.write_text('name = "b"\n[[settings]]\nproblem = "ct"\n'
                    '[[methods]]\nlabel = "A"\nmethod = "magic"\n')
    with pytest.raises(ValueError, match="magic"):
        load_config(path)
    path.write_text('name = "b"\nimagez = 3\n')
    with pytest.raises(ValueError, match="unknown keys .*imagez"):
        load_config(path)
    with pytest.raises(SystemExit) as exc:
        main(["study", "run", "--preset", "nope", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    with pytest.raises(ValueError, match="setting problem must be one of"):
        Setting("pet")


def test_prior_size_mismatch_fails_before_any_work(tmp_path):
    cfg = tiny_config(settings=(Setting("ct", 32, angles=10),),
                      methods=(MethodSpec("MAP", "jpmap", prior="digits-supn"),))
    out = tmp_path / "mismatch"
    with pytest.raises(ValueError, match="28x28 images but setting 'ct32-a10-n5' has size 32"):
        run_study(cfg, out, workers=1, progress=False)
    assert not out.exists()
    with pytest.raises(ValueError, match="needs a CT setting"):
        tiny_config(settings=(Setting("mri", 28),)).validate()


def test_unreachable_scheduler_is_a_clear_quick_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "nowhere"
    start = time.perf_counter()
    with pytest.raises(ValueError, match=f"scheduler 'tcp://127.0.0.1:{port}' is unreachable"):
        run_study(tiny_config(), out, scheduler=f"tcp://127.0.0.1:{port}", connect_timeout=1,
                  progress=False)
    assert time.perf_counter() - start < 20
    assert not out.exists()
    with pytest.raises(ValueError, match="workers must be None with scheduler"):
        run_study(tiny_config(), out, scheduler="tcp://127.0.0.1:1", workers=2)


def test_folder_of_another_version_or_config(tmp_path):
    from bayes_recon.app.studies.execute import prepare_folder

    out = tmp_path / "old"
    prepare_folder(tiny_config(), out)
    with pytest.raises(ValueError, match="another config"):
        run_study(tiny_config(seed=1), out, workers=1, progress=False)
    meta = json.loads((out / "study.json").read_text())
    meta["bayes_recon_version"] = "0.0.1"
    (out / "study.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="written by bayes_recon '0.0.1'"):
        run_study(tiny_config(), out, workers=1, progress=False)
    meta["format"] = 99
    (out / "study.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="folder format 99"):
        report_of(out)
    with pytest.raises(ValueError, match="not a study folder"):
        report_of(tmp_path)


def report_of(folder):
    from bayes_recon.app.studies import write_report

    return write_report(folder)


def test_one_worker_runs_in_this_process_and_restores_torch_threads(tmp_path):
    """``workers=1``: the tasks run in a worker thread of this process (no process to start),
    the rows are those of a plain loop, and torch's thread count is given back."""
    import torch

    from bayes_recon.app.studies import execute_task

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run = run_study(tiny_config(), tmp_path / "one", workers=1, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert run.executed == 3 and run.errors == 0
    assert {row["pid"] for row in run.rows} == {os.getpid()}
    loop = [execute_task(t, tmp_path / "loop", torch_threads=None) for t in study_tasks(tiny_config())]
    by_key = {row["key"]: row for row in run.rows}
    for row in loop:
        assert by_key[row["key"]]["psnr"] == pytest.approx(row["psnr"], rel=1e-12)
