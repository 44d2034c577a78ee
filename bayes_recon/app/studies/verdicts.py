"""Claims evaluated on study folders: paired differences, bootstrap intervals, verdicts, the table.

The claims themselves are :class:`~.claims.Claim` (loaded by :func:`~.claims.load_claims`);
see :mod:`.claims` for the pairing, interval and verdict rules this module implements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .claims import MIN_IMAGES, Claim, load_claims
from .execute import STUDY_FILE
from .report import _number, bootstrap_interval, load_results

__all__ = ["Estimate", "ClaimResult", "evaluate_claim", "evaluate_claims", "claims_table"]


@dataclass(frozen=True)
class Estimate:
    """Mean over ``n`` pairs (values, for ``within``) of ``images`` images in setting
    ``label`` (or ``"pooled"``); ``lo``, ``hi``: bootstrap 95 % interval (NaN if ``n == 0``)."""

    label: str
    n: int
    images: int
    mean: float
    lo: float
    hi: float


@dataclass(frozen=True)
class ClaimResult:
    """The evaluation of one claim.

    Attributes
    ----------
    claim : Claim
    verdict : str
        ``"holds"``, ``"does not hold"``, ``"inconclusive at N=<pairs>"`` or ``"not run"``.
    note : str
        Why not run (``"folder not found"``, ``"no finished tasks"``), or how far a
        partial study got (``"12 of 16 pairs finished"``); else empty.
    settings : tuple of str
        The settings evaluated (``"all"`` resolved), in the study's order.
    per_setting : tuple of Estimate
    pooled : Estimate or None
        Over all the claim's settings: the verdict's interval.
    """

    claim: Claim
    verdict: str
    note: str = ""
    settings: tuple = ()
    per_setting: tuple = field(default_factory=tuple)
    pooled: Estimate | None = None


def _estimate(label: str, images: list, values: list, seed: int, resamples: int) -> Estimate:
    """Mean over all values; interval from resampling images, each with all its values."""
    if not values:
        return Estimate(label, 0, 0, math.nan, math.nan, math.nan)
    lo, hi = bootstrap_interval(values, seed, resamples, groups=images)
    return Estimate(label, len(values), len(set(images)), float(np.mean(values)), lo, hi)


def _verdict(claim: Claim, est: Estimate) -> str:
    lo, hi = est.lo, est.hi
    if claim.kind == "within":
        inside, outside = claim.low <= lo and hi <= claim.high, hi < claim.low or lo > claim.high
    else:  # the interval of (a − b) · sign lies above 0 (claimed side) or below it
        sign = 1.0 if claim.direction == "greater" else -1.0
        inside, outside = min(sign * lo, sign * hi) > 0, max(sign * lo, sign * hi) < 0
    if est.images >= MIN_IMAGES and (inside or outside):
        return "holds" if inside else "does not hold"
    return f"inconclusive at N={est.n}"


def _finite_metric(row: dict, metric: str) -> float | None:
    value = _number(row.get(metric)) if row.get("status") == "ok" else math.nan
    return value if math.isfinite(value) else None


def evaluate_claim(claim: Claim, folder, resamples: int = 2000, seed: int = 0) -> ClaimResult:
    """Evaluate ``claim`` on the study folder ``folder`` (see the module docstring).

    Parameters
    ----------
    claim : Claim
    folder : str or Path
        The study folder (``claim.folder`` is not read here).
    resamples : int
        Bootstrap resamples.
    seed : int
        Seed of the bootstrap's generator, fresh for each setting and the pooled interval.

    Returns
    -------
    ClaimResult
        Verdict ``"not run"`` when ``folder`` does not exist, has no ``study.json``
        or no finished pair.

    Raises
    ------
    ValueError
        The study has no method ``claim.a``/``claim.b`` or no setting of ``claim.settings``.

    Examples
    --------
    A study folder of two methods on two images, rows written by
    :func:`~.execute.execute_task` with made-up metrics:

    >>> import tempfile
    >>> from bayes_recon.app.studies import MethodSpec, Setting, StudyConfig, study_tasks
    >>> from bayes_recon.app.studies.execute import execute_task, prepare_folder
    >>> from bayes_recon.app.studies.claims import Claim
    >>> from bayes_recon.app.studies.verdicts import evaluate_claim
    >>> config = StudyConfig("toy", (Setting("ct", 28, angles=10),),
    ...                      (MethodSpec("FBP", "fbp"), MethodSpec("TV", "tv")), images=2)
    >>> psnr = {("FBP", 0): 20.0, ("FBP", 1): 21.0, ("TV", 0): 25.0, ("TV", 1): 27.0}
    >>> claim = Claim("tv-fbp", "TV beats FBP", "toy", "psnr", "TV", "FBP", "greater")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = prepare_folder(config, tmp)
    ...     for t in study_tasks(config):
    ...         _ = execute_task(t, folder, lambda t, f: {"psnr": psnr[t.method.label, t.image]},
    ...                          torch_threads=None)
    ...     result = evaluate_claim(claim, folder)
    >>> result.pooled.mean, result.pooled.lo, result.pooled.hi, result.verdict
    (5.5, 5.0, 6.0, 'holds')
    >>> evaluate_claim(claim, "no/such/folder").note
    'folder not found'
    """
    from ..._validation import check_int

    if not isinstance(claim, Claim):
        raise TypeError(f"claim must be a Claim, got {type(claim).__name__}")
    check_int("resamples", resamples, minimum=1)
    check_int("seed", seed, minimum=0)
    folder = Path(folder)
    if not folder.is_dir():
        return ClaimResult(claim, "not run", "folder not found")
    if not (folder / STUDY_FILE).is_file():
        return ClaimResult(claim, "not run", f"no {STUDY_FILE} (not a study folder)")
    config, rows = load_results(folder)
    where = f"claim {claim.id!r} on study {config.name!r} ({folder})"
    labels = [m.label for m in config.methods]
    for name in ("a", "b"):
        label = getattr(claim, name)
        if label is not None and label not in labels:
            raise ValueError(f"{where}: field {name!r} = {label!r} is not a method of the "
                             f"study; its methods: {labels}")
    names = [s.name for s in config.settings]
    wanted = names if claim.settings == "all" else claim.settings
    unknown = [s for s in wanted if s not in names]
    if unknown:
        raise ValueError(f"{where}: field 'settings' names {unknown}, not settings of the "
                         f"study; its settings: {names}")
    settings = tuple(s for s in names if s in wanted)  # in the study's order
    methods = {claim.a} | ({claim.b} if claim.b is not None else set())
    mine = [r for r in rows if r["setting"] in settings and r["method"] in methods]
    if not any(r["status"] == "ok" for r in mine):
        return ClaimResult(claim, "not run", "no finished tasks", settings)
    value = {(r["setting"], r["method"], r["image"]): _finite_metric(r, claim.metric)
             for r in mine}
    b = claim.b if claim.kind == "compare" else None
    per_setting, images, values = [], [], []
    for s in settings:  # pairs of (s, image) with a finite metric on both sides
        ok = [i for i in range(config.images) if value[s, claim.a, i] is not None
              and (b is None or value[s, b, i] is not None)]
        diffs = [value[s, claim.a, i] - (value[s, b, i] if b else 0.0) for i in ok]
        # one value per image: the same draws and interval as report.bootstrap_interval
        per_setting.append(_estimate(s, ok, diffs, seed, resamples))
        images, values = images + ok, values + diffs
    if not values:
        return ClaimResult(claim, "not run", f"no finished pair with a finite {claim.metric}",
                           settings, tuple(per_setting))
    pooled = _estimate("pooled", images, values, seed, resamples)
    expected = len(settings) * config.images
    note = "" if pooled.n == expected else f"{pooled.n} of {expected} pairs finished"
    return ClaimResult(claim, _verdict(claim, pooled), note, settings, tuple(per_setting),
                       pooled)


def evaluate_claims(path, resamples: int = 2000, seed: int = 0) -> list[ClaimResult]:
    """:func:`load_claims` of ``path``, each evaluated on its folder relative to the file.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from bayes_recon.app.studies.verdicts import evaluate_claims
    >>> text = '''
    ... [[claims]]
    ... id = "calibrated"
    ... statement = "90 % intervals cover 85-95 % of the pixels"
    ... folder = "not-run-yet"
    ... metric = "coverage_90"
    ... a = "SUPN posterior"
    ... kind = "within"
    ... low = 0.85
    ... high = 0.95
    ... '''
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "claims.toml").write_text(text)
    ...     [result] = evaluate_claims(Path(tmp) / "claims.toml")
    >>> result.verdict, result.note
    ('not run', 'folder not found')
    """
    path = Path(path)
    return [evaluate_claim(c, path.parent / c.folder, resamples, seed) for c in load_claims(path)]


def _text(metric: str, value: float, signed: bool) -> str:
    spec = ("+" if signed else "") + (".2f" if metric in ("psnr", "seconds", "cpu_seconds")
                                      else ".3f")
    return f"{value:{spec}}"


def _estimate_text(claim: Claim, est: Estimate | None) -> str:
    if est is None or est.n == 0:
        return "–"
    signed = claim.kind == "compare"
    mean, lo, hi = (_text(claim.metric, v, signed) for v in (est.mean, est.lo, est.hi))
    return f"{mean} [{lo}, {hi}]"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def claims_table(results, per_setting: bool = False) -> str:
    """A Markdown table of evaluated claims, one row each (deterministic text).

    Columns: claim (id and statement), study folder and cells, metric and what is
    claimed (``a > b``, ``a < b``, ``a ∈ [low, high]``), a, b, the estimate — mean
    ``a − b`` (for ``within``: mean of ``a``) [bootstrap 95 % interval] pooled over the
    claim's settings —, n pairs (images) and the verdict (with the reason if not run).
    ``per_setting=True`` adds a second table with the estimate in each setting.

    Examples
    --------
    >>> from bayes_recon.app.studies.claims import Claim
    >>> from bayes_recon.app.studies.verdicts import ClaimResult, claims_table
    >>> claim = Claim("x", "TV beats FBP", "quick", "psnr", "TV", "FBP", "greater")
    >>> print(claims_table([ClaimResult(claim, "not run", "folder not found")]), end="")
    | claim | study: cells | metric | a | b | a − b (within: a) [95 % interval] | n (images) | verdict |
    |---|---|---|---|---|---|---|---|
    | **x**: TV beats FBP | `quick`: all settings | psnr, a > b | TV | FBP | – | 0 | not run (folder not found) |
    """
    results = list(results)
    if not all(isinstance(r, ClaimResult) for r in results):
        raise TypeError("results must be ClaimResult objects (see evaluate_claim)")
    lines = ["| claim | study: cells | metric | a | b | a − b (within: a) [95 % interval] "
             "| n (images) "
             "| verdict |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        c = r.claim
        if c.settings == "all":
            cells = f"all settings ({len(r.settings)})" if r.settings else "all settings"
        else:
            cells = ", ".join(c.settings)
        b = c.b if c.kind == "compare" else "–"
        n = f"{r.pooled.n} ({r.pooled.images})" if r.pooled is not None else "0"
        verdict = f"{r.verdict} ({r.note})" if r.note else r.verdict
        lines.append("| " + " | ".join(_cell(t) for t in (
            f"**{c.id}**: {c.statement}", f"`{c.folder}`: {cells}", f"{c.metric}, {c.claimed}",
            c.a, b, _estimate_text(c, r.pooled), n, verdict)) + " |")
    if per_setting:
        lines += ["", "| claim | setting | a − b (within: a) [95 % interval] | n |",
                  "|---|---|---|---|"]
        for r in results:
            for est in r.per_setting:
                lines.append(f"| {_cell(r.claim.id)} | {est.label} | "
                             f"{_estimate_text(r.claim, est)} | {est.n} |")
    return "\n".join(lines) + "\n"
