"""Claims checked against study folders (``bayes_recon.app.studies.claims`` / ``.verdicts``, ``study claims``).

A synthetic study folder is written with the study's own row writer
(:func:`execute_task` with a ``task_fn`` returning known metrics), so the claims are
evaluated on rows of the real format with values the test knows; the expected means
and intervals are computed here directly with numpy. The last tests read the
committed ``studies/quick`` folder and ``studies/claims.toml`` (nothing is written
into the repository).
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from bayes_recon.app.cli import main
from bayes_recon.app.studies import (MethodSpec, Setting, StudyConfig, bootstrap_interval,
                                     preset, study_tasks)
from bayes_recon.app.studies.claims import CLAIM_METRICS, MIN_IMAGES, Claim, load_claims
from bayes_recon.app.studies.verdicts import ClaimResult, claims_table, evaluate_claim, evaluate_claims
from bayes_recon.app.studies.execute import execute_task, prepare_folder

ROOT = Path(__file__).resolve().parents[1]
CLAIMS_FILE = ROOT / "studies" / "claims.toml"
QUICK = ROOT / "studies" / "quick"
RESULTS_PAGE = ROOT / "docs" / "results.md"

SETTINGS = (Setting("ct", 28, angles=10), Setting("ct", 28, angles=20))
IMAGES = 6
CONFIG = StudyConfig("synthetic", SETTINGS,
                     (MethodSpec("FBP", "fbp"), MethodSpec("TV", "tv"),
                      MethodSpec("Mixed", "tv", tv_weight=0.1),
                      MethodSpec("DIP", "fixed-sigma-dip", dip_iterations=5)),
                     images=IMAGES)
ERROR_TASK = ("ct28-a20-n5", "TV", 5)     # status "error": its pairs are left out
NAN_TASK = ("ct28-a10-n5", "FBP", 2)      # a NaN PSNR: its pairs are left out


def known_metrics(setting: str, method: str, image: int) -> dict:
    """The made-up metrics of one task (the test's ground truth)."""
    offset = 1.0 if setting == "ct28-a20-n5" else 0.0
    fbp = 20.0 + 0.5 * image + offset
    psnr = {"FBP": fbp,
            "TV": fbp + 3.0 + 0.4 * ((7 * image) % 5 - 2),     # clearly above FBP
            "Mixed": fbp + (1.0 if image % 2 == 0 else -1.0),  # as often above as below
            "DIP": fbp - 2.0 - 0.1 * image}[method]            # clearly below
    coverage = 0.9 + 0.01 * (image % 3 - 1) if method == "DIP" else math.nan
    if (setting, method, image) == NAN_TASK:
        psnr = math.nan
    return {"psnr": psnr, "coverage_90": coverage}


def synthetic_task(task, folder):
    key = (task.setting.name, task.method.label, task.image)
    if key == ERROR_TASK:
        raise RuntimeError("deliberate failure")
    return known_metrics(*key)


def write_folder(folder: Path, images=None) -> Path:
    prepare_folder(CONFIG, folder)
    for t in study_tasks(CONFIG):
        if images is None or t.image in images:
            execute_task(t, folder, task_fn=synthetic_task, torch_threads=None)
    return folder


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("claims") / "synthetic")


def compare(a, b, direction="greater", metric="psnr", settings="all", **kw) -> Claim:
    return Claim(id=f"{a}-{b}", statement=f"{a} vs {b}", folder="synthetic", metric=metric,
                 a=a, b=b, direction=direction, settings=settings, **kw)


def within(low, high, a="DIP", metric="coverage_90") -> Claim:
    return Claim(id="band", statement="in band", folder="synthetic", metric=metric, a=a,
                 kind="within", low=low, high=high)


def expected_pairs(a, b, metric="psnr", settings=("ct28-a10-n5", "ct28-a20-n5")):
    """{setting: [(image, a − b)]} from the known metrics and the exclusion rules."""
    out = {}
    for s in settings:
        out[s] = []
        for i in range(IMAGES):
            if ERROR_TASK in ((s, a, i), (s, b, i)):
                continue
            va = known_metrics(s, a, i)[metric]
            vb = 0.0 if b is None else known_metrics(s, b, i)[metric]
            if np.isfinite(va) and np.isfinite(vb):
                out[s].append((i, va - vb))
    return out


def numpy_interval(diffs, seed=0, resamples=2000):
    diffs = np.asarray(diffs, dtype=float)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, diffs.size, (resamples, diffs.size))].mean(axis=1)
    return tuple(np.percentile(means, [2.5, 97.5]))


def numpy_image_interval(pairs: dict, seed=0, resamples=2000):
    """Resample images jointly across settings, written as a plain loop."""
    by_image = {}
    for s_pairs in pairs.values():
        for image, d in s_pairs:
            by_image.setdefault(image, []).append(d)
    ids = sorted(by_image)
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, len(ids), (resamples, len(ids)))
    means = [np.mean([d for k in row for d in by_image[ids[k]]]) for row in draw]
    return tuple(np.percentile(means, [2.5, 97.5]))


# ------------------------------------------------------------------ evaluation

def test_mean_difference_and_intervals_match_numpy(synthetic):
    result = evaluate_claim(compare("TV", "FBP"), synthetic, resamples=2000, seed=0)
    pairs = expected_pairs("TV", "FBP")
    assert [len(p) for p in pairs.values()] == [5, 5]  # the error and the NaN task left out
    for est, (s, s_pairs) in zip(result.per_setting, pairs.items()):
        diffs = [d for _, d in s_pairs]
        assert (est.label, est.n, est.images) == (s, len(diffs), len(diffs))
        assert est.mean == pytest.approx(np.mean(diffs), abs=1e-12)
        assert (est.lo, est.hi) == pytest.approx(numpy_interval(diffs), abs=1e-12)
        # the report's cell convention, applied to the differences
        assert (est.lo, est.hi) == bootstrap_interval(diffs, 0, 2000)
    all_diffs = [d for p in pairs.values() for _, d in p]
    pooled = result.pooled
    assert (pooled.label, pooled.n, pooled.images) == ("pooled", 10, IMAGES)
    assert pooled.mean == pytest.approx(np.mean(all_diffs), abs=1e-12)
    assert (pooled.lo, pooled.hi) == pytest.approx(numpy_image_interval(pairs), abs=1e-12)
    # resampling pairs instead of images would give another interval (the choice matters)
    assert (pooled.lo, pooled.hi) != pytest.approx(numpy_interval(all_diffs), abs=1e-6)
    assert result.verdict == "holds" and result.note == "10 of 12 pairs finished"
    assert result.settings == ("ct28-a10-n5", "ct28-a20-n5")
    # another seed or number of resamples is another interval
    other = evaluate_claim(compare("TV", "FBP"), synthetic, resamples=500, seed=3).pooled
    assert (other.lo, other.hi) == pytest.approx(numpy_image_interval(pairs, 3, 500), abs=1e-12)


def test_settings_subset_and_one_setting_pooled_is_that_setting(synthetic):
    claim = compare("TV", "FBP", settings=["ct28-a20-n5"])
    result = evaluate_claim(claim, synthetic)
    assert result.settings == ("ct28-a20-n5",) and len(result.per_setting) == 1
    (est,) = result.per_setting
    assert (result.pooled.mean, result.pooled.lo, result.pooled.hi) == (est.mean, est.lo, est.hi)
    diffs = [d for _, d in expected_pairs("TV", "FBP", settings=("ct28-a20-n5",))["ct28-a20-n5"]]
    assert est.mean == pytest.approx(np.mean(diffs), abs=1e-12)


@pytest.mark.parametrize("claim, verdict", [
    (compare("TV", "FBP"), "holds"),                        # interval above 0
    (compare("FBP", "TV"), "does not hold"),                # interval below 0
    (compare("Mixed", "FBP"), "inconclusive at N=11"),      # interval across 0
    (compare("DIP", "FBP", direction="less"), "holds"),     # a < b claimed, interval below 0
    (compare("TV", "FBP", direction="less"), "does not hold"),
])
def test_verdicts(synthetic, claim, verdict):
    result = evaluate_claim(claim, synthetic)
    lo, hi = result.pooled.lo, result.pooled.hi
    assert result.verdict == verdict
    if verdict == "holds":
        assert (lo > 0) if claim.direction == "greater" else (hi < 0)
    elif verdict == "does not hold":
        assert (hi < 0) if claim.direction == "greater" else (lo > 0)
    else:
        assert lo < 0 < hi


def test_within_band(synthetic):
    values = [known_metrics(s.name, "DIP", i)["coverage_90"] for s in SETTINGS
              for i in range(IMAGES)]
    result = evaluate_claim(within(0.85, 0.95), synthetic)
    assert result.pooled.n == 12 and result.pooled.mean == pytest.approx(np.mean(values))
    lo, hi = result.pooled.lo, result.pooled.hi
    assert 0.89 <= lo < np.mean(values) < hi <= 0.91
    assert result.verdict == "holds" and result.note == ""
    assert evaluate_claim(within(0.5, 0.6), synthetic).verdict == "does not hold"
    assert evaluate_claim(within(0.95, 0.99), synthetic).verdict == "does not hold"
    assert evaluate_claim(within(0.9, 0.95), synthetic).verdict == "inconclusive at N=12"
    # a metric the method does not have (a point estimate's coverage): no pairs
    no_pairs = evaluate_claim(within(0.85, 0.95, a="TV"), synthetic)
    assert no_pairs.verdict == "not run" and "finite coverage_90" in no_pairs.note


def test_too_few_images_is_inconclusive_and_partial_is_noted(tmp_path):
    folder = write_folder(tmp_path / "one_image", images={0})
    result = evaluate_claim(compare("TV", "FBP"), folder)
    assert result.pooled.images == 1 < MIN_IMAGES and result.pooled.lo > 0
    assert result.verdict == "inconclusive at N=2"
    assert result.note == "2 of 12 pairs finished"


def test_only_ok_rows_count(tmp_path, synthetic):
    copy = tmp_path / "copy"
    shutil.copytree(synthetic, copy)
    row_path = copy / "tasks" / "ct28-a10-n5__tv__0000.json"
    row = json.loads(row_path.read_text())
    assert row["status"] == "ok" and math.isfinite(row["psnr"])
    row["status"] = "error"  # a finite metric in a row that is not ok does not count
    row_path.write_text(json.dumps(row))
    result = evaluate_claim(compare("TV", "FBP"), copy)
    assert result.pooled.n == evaluate_claim(compare("TV", "FBP"), synthetic).pooled.n - 1
    assert result.per_setting[0].n == 4


def test_missing_folder_and_no_finished_tasks_are_not_run(tmp_path):
    missing = evaluate_claim(compare("TV", "FBP"), tmp_path / "nowhere")
    assert (missing.verdict, missing.note, missing.pooled) == ("not run", "folder not found",
                                                               None)
    (tmp_path / "empty").mkdir()
    not_study = evaluate_claim(compare("TV", "FBP"), tmp_path / "empty")
    assert not_study.verdict == "not run" and "study.json" in not_study.note
    prepare_folder(CONFIG, tmp_path / "fresh")  # study.json, no task rows yet
    fresh = evaluate_claim(compare("TV", "FBP"), tmp_path / "fresh")
    assert (fresh.verdict, fresh.note) == ("not run", "no finished tasks")
    table = claims_table([missing, fresh])
    assert "not run (folder not found)" in table and "not run (no finished tasks)" in table


def test_labels_and_settings_must_exist_in_the_study(synthetic):
    with pytest.raises(ValueError, match="field 'b' = 'SUPN' is not a method"):
        evaluate_claim(compare("TV", "SUPN"), synthetic)
    with pytest.raises(ValueError, match="field 'settings'.*ct28-a30-n5"):
        evaluate_claim(compare("TV", "FBP", settings=["ct28-a30-n5"]), synthetic)
    with pytest.raises(TypeError, match="claim must be a Claim"):
        evaluate_claim({"a": "TV"}, synthetic)


# ------------------------------------------------------------------ TOML and validation

GOOD = """
[[claims]]
id = "tv-fbp"
statement = "TV beats FBP"
folder = "synthetic"
metric = "psnr"
a = "TV"
b = "FBP"
direction = "greater"
"""


def toml_with(tmp_path, text) -> Path:
    path = tmp_path / "claims.toml"
    path.write_text(text)
    return path


def test_load_claims_and_evaluate_relative_to_the_file(tmp_path, synthetic):
    band = ('\n[[claims]]\nid = "band"\nstatement = "s"\nfolder = "synthetic"\n'
            'metric = "coverage_90"\na = "DIP"\nkind = "within"\nlow = 0.85\nhigh = 0.95\n'
            'settings = ["ct28-a10-n5"]\n')
    path = toml_with(synthetic.parent, GOOD + band)
    claims = load_claims(path)
    assert [c.id for c in claims] == ["tv-fbp", "band"]
    assert claims[1].settings == ("ct28-a10-n5",) and claims[1].low == 0.85
    results = evaluate_claims(path)
    assert [r.verdict for r in results] == ["holds", "holds"]
    assert results[0].pooled == evaluate_claim(claims[0], synthetic).pooled


def without(text: str, key: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith(f"{key} ="))


@pytest.mark.parametrize("text, error, field", [
    (GOOD.replace('"psnr"', '"psnrr"'), ValueError, "'metric'"),
    (GOOD.replace('"greater"', '"up"'), ValueError, "'direction'"),
    (without(GOOD, "direction"), ValueError, "'direction'"),
    (GOOD + 'kind = "between"\n', ValueError, "'kind'"),
    (without(GOOD, "a"), ValueError, "'a'"),
    (GOOD.replace('b = "FBP"', 'b = "TV"'), ValueError, "'a' and 'b'"),
    (GOOD + "low = 0.1\n", ValueError, "'low'"),
    (GOOD + 'settings = "some"\n', TypeError, "'settings'"),
    (GOOD + 'settings = ["x", "x"]\n', ValueError, "'settings'"),
    (GOOD + 'colour = "red"\n', ValueError, "colour"),
    (GOOD.replace('id = "tv-fbp"', "id = 3"), TypeError, "'id'"),
    (GOOD.replace('"TV beats FBP"', '""'), TypeError, "'statement'"),
    (GOOD + GOOD, ValueError, "'id' must be unique"),
    (without(without(GOOD, "b"), "direction") + 'kind = "within"\nlow = 0.9\nhigh = 0.8\n',
     ValueError, "'low' must be < 'high'"),
    (without(without(GOOD, "b"), "direction") + 'kind = "within"\nlow = 0.9\nhigh = "x"\n',
     TypeError, "'high'"),
    (without(GOOD, "direction") + 'kind = "within"\nlow = 0.8\nhigh = 0.9\n', ValueError,
     "'b' does not apply"),
    ('title = "x"\n' + GOOD, ValueError, "only an array of tables"),
    ("claims = []\n", ValueError, "non-empty"),
    ("[[claims]\n", ValueError, "not valid TOML"),
])
def test_bad_claims_files_name_the_field(tmp_path, text, error, field):
    with pytest.raises(error, match=re.escape(field)) as info:
        load_claims(toml_with(tmp_path, text))
    assert "claims.toml" in str(info.value)


def test_claim_fields_are_checked_in_python_too():
    with pytest.raises(ValueError, match="'metric' must be one of"):
        Claim("x", "s", "f", "accuracy", "TV", "FBP", "greater")
    assert "test_log_likelihood" in CLAIM_METRICS and "coverage_90" in CLAIM_METRICS
    with pytest.raises(ValueError, match="does not exist"):
        load_claims("no/such/claims.toml")


def test_bootstrap_interval_groups():
    values = [1.0, 4.0, 2.0, 8.0]
    # one value per group: the plain interval, draw for draw
    assert bootstrap_interval(values, 0, 500, groups=[0, 1, 2, 3]) == \
        bootstrap_interval(values, 0, 500)
    # two images of two values each: resampled image means are 2.5, 3.75 or 5.0
    rng = np.random.default_rng(0)
    draw = rng.integers(0, 2, (500, 2))
    sums, counts = np.array([5.0, 10.0]), np.array([2.0, 2.0])
    expected = np.percentile(sums[draw].sum(1) / counts[draw].sum(1), [2.5, 97.5])
    assert bootstrap_interval(values, 0, 500, groups=["b", "b", "c", "c"]) == tuple(expected)
    assert tuple(expected) == (2.5, 5.0)
    with pytest.raises(ValueError, match="one label per value"):
        bootstrap_interval(values, 0, 500, groups=[0, 1])


# ------------------------------------------------------------------ table and command

def test_table_is_deterministic_and_formats_rows(synthetic):
    results = [evaluate_claim(compare("TV", "FBP"), synthetic),
               evaluate_claim(within(0.85, 0.95), synthetic)]
    table = claims_table(results, per_setting=True)
    assert table == claims_table(results, per_setting=True)
    rows = [line for line in table.splitlines() if line.startswith("| **")]
    pooled = results[0].pooled
    assert rows[0] == ("| **TV-FBP**: TV vs FBP | `synthetic`: all settings (2) | psnr, a > b "
                       f"| TV | FBP | {pooled.mean:+.2f} [{pooled.lo:+.2f}, {pooled.hi:+.2f}] "
                       "| 10 (6) | holds (10 of 12 pairs finished) |")
    band = results[1].pooled
    assert rows[1].endswith(f"| DIP | – | {band.mean:.3f} [{band.lo:.3f}, {band.hi:.3f}] "
                            "| 12 (6) | holds |")
    assert "| TV-FBP | ct28-a20-n5 |" in table  # the per-setting table
    with pytest.raises(TypeError, match="ClaimResult"):
        claims_table(["holds"])


def test_cli_prints_or_writes_the_table(tmp_path, synthetic, capsys):
    path = toml_with(synthetic.parent, GOOD)
    assert main(["study", "claims", str(path)]) == 0
    printed = capsys.readouterr().out
    assert printed == claims_table(evaluate_claims(path))
    out = tmp_path / "claims.md"
    assert main(["study", "claims", str(path), "--out", str(out), "--seed", "1"]) == 0
    assert out.read_text() == claims_table(evaluate_claims(path, seed=1))
    assert "1 claims (holds: 1) ->" in capsys.readouterr().out


# ------------------------------------------------------------------ the repository's claims

def quick_rows() -> dict:
    rows = [json.loads(p.read_text()) for p in (QUICK / "tasks").glob("*.json")]
    return {(r["setting"], r["method"], r["image"]): r for r in rows}


def test_quick_sanity_claim_on_the_committed_folder():
    before = sorted((p.relative_to(QUICK), p.stat().st_mtime_ns) for p in QUICK.rglob("*"))
    results = {r.claim.id: r for r in evaluate_claims(CLAIMS_FILE)}
    quick = results["quick-tv-vs-fbp-psnr"]
    rows = quick_rows()
    pairs = {s: [(i, rows[s, "TV", i]["psnr"] - rows[s, "FBP", i]["psnr"]) for i in range(2)]
             for s in ("ct28-a10-n5", "ct28-a20-n5")}
    diffs = [d for p in pairs.values() for _, d in p]
    assert quick.pooled.mean == pytest.approx(np.mean(diffs), abs=1e-12)
    assert (quick.pooled.lo, quick.pooled.hi) == pytest.approx(numpy_image_interval(pairs),
                                                              abs=1e-12)
    assert (quick.pooled.n, quick.pooled.images, quick.verdict) == (4, 2, "holds")
    # A claim reads "not run" exactly when its folder is not in the repository (denoise is).
    for k, r in results.items():
        committed = (CLAIMS_FILE.parent / r.claim.folder / "study.json").is_file()
        assert (r.verdict == "not run") == (not committed), k
    after = sorted((p.relative_to(QUICK), p.stat().st_mtime_ns) for p in QUICK.rglob("*"))
    assert after == before  # read only


def test_claims_file_uses_the_presets_labels_and_settings():
    claims = load_claims(CLAIMS_FILE)
    assert len(claims) >= 9
    for c in claims:
        config = preset(Path(c.folder).name)  # each folder is a preset's name
        labels = {m.label for m in config.methods}
        assert c.a in labels and (c.b is None or c.b in labels), c.id
        if c.settings != "all":
            assert set(c.settings) <= {s.name for s in config.settings}, c.id


def test_results_page_quotes_the_claims_table():
    text = RESULTS_PAGE.read_text()
    match = re.search(r"^## Claims\n.*?(?=^## )", text, re.M | re.S)
    assert match, "docs/results.md has no '## Claims' section"
    page_rows = [line for line in match.group(0).splitlines() if line.startswith("|")]
    table = claims_table(evaluate_claims(CLAIMS_FILE))
    assert page_rows == table.splitlines()
    assert isinstance(evaluate_claims(CLAIMS_FILE)[0], ClaimResult)
