"""Claims checked against study folders: a paired difference, its interval and a verdict.

A *claim* says that in a study folder one method's metric is greater (or less) than
another's (``psnr`` of ``"MAP structured"`` > ``"MAP diagonal"``), or that one method's
metric lies in a band (``coverage_90`` of ``"SUPN posterior"`` in [0.85, 0.95]). Claims
are data (a TOML file, :func:`load_claims`); :mod:`.verdicts` evaluates them on the task rows
of a study folder (``study.json`` and ``tasks/*.json``, nothing else).

Rows are paired by (setting, image); a pair counts when both rows are ``ok`` with a
finite metric. Per setting: the mean of ``a − b`` over images and the percentile
bootstrap 95 % interval of the report's cells (:func:`~.report.bootstrap_interval`:
``rng = numpy.random.default_rng(seed)``, ``rng.integers(0, n, (resamples, n))``).
Pooled over the claim's settings: the mean over all pairs, and an interval that
resamples *images* (the same draw over the ``m`` distinct images, each drawn image
bringing its pairs of every setting). An image is the unit of replication: the same
digit with the same seed under every setting, so its differences go together;
resampling pairs independently would treat them as independent and narrow the
interval. With one setting the pooled interval is that setting's.

Verdict, from the pooled interval ``[lo, hi]``: ``"holds"`` if it lies entirely on
the claimed side of 0 (``lo > 0`` for ``greater``, ``hi < 0`` for ``less``; for
``within``: ``low <= lo`` and ``hi <= high``), ``"does not hold"`` if it lies
entirely on the other side (entirely outside the band), else ``"inconclusive at
N=<pairs>"``; also inconclusive with fewer than :data:`MIN_IMAGES` images (one
image's interval is a point). ``"not run"`` when the folder does not exist or has
no finished pair.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from .tasks import ROW_METRICS

__all__ = ["Claim", "load_claims", "CLAIM_KINDS", "CLAIM_METRICS", "DIRECTIONS", "MIN_IMAGES"]

#: ``compare``: a's metric greater/less than b's; ``within``: a's metric in [low, high].
CLAIM_KINDS = ("compare", "within")
DIRECTIONS = ("greater", "less")
#: Task-row metrics a claim can be about.
CLAIM_METRICS = ROW_METRICS + ("seconds", "cpu_seconds")
#: Fewer images than this make a claim inconclusive whatever its interval.
MIN_IMAGES = 2
_REQUIRED = ("id", "statement", "folder", "metric", "a")


def _nonempty_str(where: str, name: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"{where}: field {name!r} must be a non-empty string, got {value!r}")
    return value


def _real(where: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{where}: field {name!r} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Claim:
    """One claim about a study folder (see the module docstring for its evaluation).

    Attributes
    ----------
    id : str
        Short unique name (``"denoise-supn-vs-dae-psnr"``).
    statement : str
        The claim in words, as the table shows it.
    folder : str
        The study folder, as written (a path relative to the claims file in
        :func:`evaluate_claims`); usually ``studies/<preset name>``.
    metric : str
        One of :data:`CLAIM_METRICS` (``psnr``, ``coverage_90``, ...).
    a : str
        A method label of the study.
    b : str, optional
        The other method label (``kind="compare"`` only).
    direction : {"greater", "less"}, optional
        ``compare`` only: the claim is ``a − b > 0`` (greater) or ``< 0`` (less).
    kind : {"compare", "within"}
    low, high : float, optional
        ``within`` only: the band ``[low, high]`` that a's mean should lie in.
    settings : "all" or tuple of str
        Setting names the claim covers (``ct28-a20-n5``); ``"all"``: every setting
        of the study.
    """

    id: str
    statement: str
    folder: str
    metric: str
    a: str
    b: str | None = None
    direction: str | None = None
    kind: str = "compare"
    low: float | None = None
    high: float | None = None
    settings: tuple | str = "all"

    def __post_init__(self):
        where = f"claim {self.id!r}"
        _nonempty_str("claim", "id", self.id)
        for name in ("statement", "folder", "a"):
            _nonempty_str(where, name, getattr(self, name))
        if self.kind not in CLAIM_KINDS:
            raise ValueError(f"{where}: field 'kind' must be one of {list(CLAIM_KINDS)}, "
                             f"got {self.kind!r}")
        if self.metric not in CLAIM_METRICS:
            raise ValueError(f"{where}: field 'metric' must be one of {list(CLAIM_METRICS)}, "
                             f"got {self.metric!r}")
        for name in ("low", "high") if self.kind == "compare" else ("b", "direction"):
            if getattr(self, name) is not None:
                raise ValueError(f"{where}: field {name!r} does not apply to kind {self.kind!r}")
        if self.kind == "compare":
            _nonempty_str(where, "b", self.b)
            if self.b == self.a:
                raise ValueError(f"{where}: fields 'a' and 'b' must differ, both are {self.a!r}")
            if self.direction not in DIRECTIONS:
                raise ValueError(f"{where}: field 'direction' must be one of {list(DIRECTIONS)} "
                                 f"for kind 'compare', got {self.direction!r}")
        else:
            low, high = _real(where, "low", self.low), _real(where, "high", self.high)
            if not low < high:
                raise ValueError(f"{where}: field 'low' must be < 'high', got {low} and {high}")
            object.__setattr__(self, "low", low)
            object.__setattr__(self, "high", high)
        if self.settings != "all":
            if isinstance(self.settings, str) or not isinstance(self.settings, (list, tuple)):
                raise TypeError(f"{where}: field 'settings' must be \"all\" or a list of "
                                f"setting names, got {self.settings!r}")
            names = tuple(_nonempty_str(where, "settings", s) for s in self.settings)
            if not names or len(set(names)) != len(names):
                raise ValueError(f"{where}: field 'settings' must list distinct setting names, "
                                 f"got {list(names)}")
            object.__setattr__(self, "settings", names)

    @property
    def claimed(self) -> str:
        """The claim in symbols: ``a > b``, ``a < b`` or ``a ∈ [low, high]``."""
        if self.kind == "within":
            return f"a ∈ [{self.low:g}, {self.high:g}]"
        return "a > b" if self.direction == "greater" else "a < b"


def load_claims(path) -> list[Claim]:
    """Read claims from a TOML file: an array of tables ``[[claims]]``, one per claim.

    Each table has the fields of :class:`Claim` (``settings`` a list of names or
    ``"all"``, the default). ``folder`` is kept as written; :func:`evaluate_claims`
    resolves it relative to the file.

    Raises
    ------
    ValueError, TypeError
        Missing or unparsable file, no ``claims``, unknown or missing fields, invalid
        values or types, duplicate ids; the message names the claim and the field.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from bayes_recon.app.studies.claims import load_claims
    >>> text = '''
    ... [[claims]]
    ... id = "tv-beats-fbp"
    ... statement = "TV has a higher PSNR than FBP"
    ... folder = "quick"
    ... metric = "psnr"
    ... a = "TV"
    ... b = "FBP"
    ... direction = "greater"
    ... '''
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "claims.toml").write_text(text)
    ...     claims = load_claims(Path(tmp) / "claims.toml")
    >>> claims[0].claimed, claims[0].settings
    ('a > b', 'all')
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"claims file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"claims file {path} is not valid TOML: {err}") from None
    if set(data) != {"claims"}:
        raise ValueError(f"claims file {path} must hold only an array of tables [[claims]], "
                         f"got keys {sorted(data)}")
    tables = data["claims"]
    if not isinstance(tables, list) or not tables:
        raise ValueError(f"claims file {path}: 'claims' must be a non-empty array of tables")
    allowed = {f.name for f in fields(Claim)}
    claims = []
    for i, table in enumerate(tables):
        where = f"claims file {path}, claims[{i}]"
        if not isinstance(table, dict):
            raise TypeError(f"{where} must be a table, got {type(table).__name__}")
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise ValueError(f"{where} has unknown fields {unknown}; allowed: {sorted(allowed)}")
        missing = [k for k in _REQUIRED if k not in table]
        if missing:
            raise ValueError(f"{where} misses required field(s) {missing}")
        try:
            claims.append(Claim(**table))
        except (TypeError, ValueError) as err:
            raise type(err)(f"{where}: {err}") from None
    ids = [c.id for c in claims]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"claims file {path}: field 'id' must be unique, got duplicates {dup}")
    return claims
