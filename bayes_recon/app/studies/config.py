"""Typed study configurations: problem settings × methods × test images, TOML.

A study is the grid ``settings × methods × images``: every method runs on every
test image under every problem setting. Methods are entries of the one method
registry (:mod:`bayes_recon.app.methods`) with a display label and a few typed
overrides; anything not overridden keeps the registry's default.

A TOML file describes the same thing::

    name = "my-study"
    images = 5            # the first 5 digits of the test split
    seed = 0

    [[settings]]
    problem = "ct"        # ct | mri | denoise
    angles = 20
    relative_noise = 0.05

    [[methods]]
    label = "TV"
    method = "tv"
    tv_iterations = 300
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..._validation import check_int, check_positive

__all__ = ["Setting", "MethodSpec", "StudyConfig", "load_config", "STUDY_PROBLEMS",
           "MAX_IMAGES"]

#: Problems a study setting can pose (digits are the test images of every preset).
STUDY_PROBLEMS = ("ct", "mri", "denoise")
#: Number of digits in the test split (``digits("test")``).
MAX_IMAGES = 359


def _check_str(name: str, value) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty str, got {value!r}")
    return value


@dataclass(frozen=True)
class Setting:
    """One problem setting: forward model, geometry, size and noise level.

    Attributes
    ----------
    problem : {"ct", "mri", "denoise"}
    size : int
        Image side length; test digits are resized to it.
    angles : int
        CT projection angles.
    spokes : int
        MRI radial spokes.
    relative_noise : float
        ``noise_std = relative_noise · mean|A x|`` (see :func:`bayes_recon.data.simulate`).
    """

    problem: str = "ct"
    size: int = 28
    angles: int = 20
    spokes: int = 30
    relative_noise: float = 0.05

    def __post_init__(self):
        if self.problem not in STUDY_PROBLEMS:
            raise ValueError(f"setting problem must be one of {list(STUDY_PROBLEMS)}, "
                             f"got {self.problem!r}")
        check_int("setting size", self.size, minimum=4)
        check_int("setting angles", self.angles, minimum=1)
        check_int("setting spokes", self.spokes, minimum=1)
        check_positive("setting relative_noise", self.relative_noise)

    @property
    def name(self) -> str:
        """Short unique label, e.g. ``ct28-a20-n5`` (noise in percent)."""
        geometry = {"ct": f"-a{self.angles}", "mri": f"-s{self.spokes}", "denoise": ""}
        return (f"{self.problem}{self.size}{geometry[self.problem]}"
                f"-n{100 * self.relative_noise:g}")


# MethodSpec fields that override MethodSettings (None keeps the registry default).
_OVERRIDES = ("prior", "num_samples", "num_chains", "tv_weight", "tv_iterations",
              "map_iterations", "map_restarts", "map_z_steps", "warmup", "map_steps",
              "dip_iterations", "dip_lr", "dip_tv_scale", "dip_channels", "predcp_scale",
              "evidence_iterations", "dropout", "diffusion_steps", "guidance", "hvae_temperature",
              "pnp_iterations", "svi_steps")


@dataclass(frozen=True)
class MethodSpec:
    """A labelled registry method with optional overrides.

    Attributes
    ----------
    label : str
        Display name, unique within a study (``"DIP + MC dropout"``).
    method : str
        A name of :data:`bayes_recon.app.methods.ALL_METHODS`.
    prior : str, optional
        Shipped prior name or ``.safetensors`` path (SUPN methods; a diffusion prior
        for ``dps``/``diffpir``; a hierarchical VAE for ``pnp-hvae``/``hvae-svi``).
    num_samples, num_chains, dropout : int or float, optional
        Overrides of the :class:`~bayes_recon.app.methods.MethodSettings` fields of
        the same names; None (for every override) keeps the registry default.
    tv_weight, tv_iterations : optional
        Classical settings (``tv``).
    map_iterations, map_restarts, map_z_steps : optional
        ``MAPConfig.max_iterations``, ``restarts``, ``z_steps`` (SUPN MAP).
    warmup, map_steps : optional
        ``SamplingConfig`` fields (``nuts``/``laplace``).
    dip_iterations, dip_lr, dip_tv_scale, dip_channels, predcp_scale, evidence_iterations : \
optional
        ``LinearisedDIPConfig`` fields (``iterations``, ``lr``, ``tv_scale``, U-Net
        ``channels``, ``predcp_scale``, ``evidence_iterations``) for DIP methods.
    diffusion_steps, guidance : optional
        ``DPSConfig``/``DiffPIRConfig.steps`` and ``DPSConfig.guidance`` (``dps``, ``diffpir``).
    hvae_temperature, pnp_iterations, svi_steps : optional
        ``HVAEMAPConfig.temperature`` (one τ for every group), ``.max_iterations``
        and ``HVAEPosteriorConfig.steps`` (``pnp-hvae``, ``hvae-svi``).
    """

    label: str
    method: str
    prior: str | None = None
    num_samples: int | None = None
    num_chains: int | None = None
    tv_weight: float | None = None
    tv_iterations: int | None = None
    map_iterations: int | None = None
    map_restarts: int | None = None
    map_z_steps: int | None = None
    warmup: int | None = None
    map_steps: int | None = None
    dip_iterations: int | None = None
    dip_lr: float | None = None
    dip_tv_scale: float | None = None
    dip_channels: int | None = None
    predcp_scale: float | None = None
    evidence_iterations: int | None = None
    dropout: float | None = None
    diffusion_steps: int | None = None
    guidance: float | None = None
    hvae_temperature: float | None = None
    pnp_iterations: int | None = None
    svi_steps: int | None = None

    def __post_init__(self):
        from ..methods import ALL_METHODS

        _check_str("method label", self.label)
        if self.method not in ALL_METHODS:
            raise ValueError(f"method of {self.label!r} must be one of {list(ALL_METHODS)}, "
                             f"got {self.method!r}")
        self.settings(seed=0)  # the registry validates the combination now, not on a worker

    def settings(self, seed: int, progress: bool = False):
        """The registry's :class:`~bayes_recon.app.methods.MethodSettings` for one task."""
        from ...inference import (DiffPIRConfig, DPSConfig, HVAEMAPConfig, HVAEPosteriorConfig,
                                  LinearisedDIPConfig, MAPConfig, SamplingConfig)
        from ...models import UNetConfig
        from ..methods import ClassicalSettings, MethodSettings

        def pick(obj, **kw):
            return dataclasses.replace(obj, **{k: v for k, v in kw.items() if v is not None})

        classical = pick(ClassicalSettings(), tv_weight=self.tv_weight,
                         tv_iterations=self.tv_iterations)
        map_cfg = pick(MAPConfig(seed=seed), max_iterations=self.map_iterations,
                       restarts=self.map_restarts, z_steps=self.map_z_steps)
        sampling = pick(SamplingConfig(), warmup=self.warmup, map_steps=self.map_steps)
        dip = pick(LinearisedDIPConfig(), tv_scale=self.dip_tv_scale,
                   iterations=self.dip_iterations, lr=self.dip_lr, predcp_scale=self.predcp_scale,
                   evidence_iterations=self.evidence_iterations)
        if self.dip_channels is not None:
            dip = dataclasses.replace(dip, network=UNetConfig(channels=self.dip_channels))
        if self.num_samples is not None:
            dip = dataclasses.replace(dip, num_samples=self.num_samples)
        extra = {k: v for k, v in (("num_chains", self.num_chains), ("dropout", self.dropout))
                 if v is not None}
        dps = pick(DPSConfig(), steps=self.diffusion_steps, guidance=self.guidance)
        diffpir = pick(DiffPIRConfig(), steps=self.diffusion_steps)
        hvae = pick(HVAEMAPConfig(), temperature=self.hvae_temperature,
                    max_iterations=self.pnp_iterations)
        hvae_posterior = pick(HVAEPosteriorConfig(), steps=self.svi_steps)
        return MethodSettings(self.method, seed=seed, progress=progress, classical=classical,
                              prior=self.prior, map=map_cfg, sampling=sampling,
                              num_samples=self.num_samples, dip=dip, dps=dps, diffpir=diffpir,
                              hvae=hvae, hvae_posterior=hvae_posterior, **extra)

    def to_dict(self) -> dict:
        """Label, method and the overrides that are set (TOML/JSON-ready)."""
        out = {"label": self.label, "method": self.method}
        out.update({k: getattr(self, k) for k in _OVERRIDES if getattr(self, k) is not None})
        return out


@functools.lru_cache(maxsize=16)
def _prior_size(spec: str) -> int:
    from ..methods import load_prior

    return load_prior(spec).config.image_size


@dataclass(frozen=True)
class StudyConfig:
    """A study: every method on the first ``images`` test digits under every setting.

    Attributes
    ----------
    name : str
    settings : tuple of Setting
    methods : tuple of MethodSpec
    images : int
        Number of test digits (the first ones of ``digits("test")``, at most 359).
    seed : int
        Base seed; each (setting, image) derives its measurement and method seed
        from it, shared by all methods (paired comparisons).
    bootstrap_resamples : int
        Resamples of the bootstrap intervals in the report.
    """

    name: str
    settings: tuple = field(default_factory=tuple)
    methods: tuple = field(default_factory=tuple)
    images: int = 10
    seed: int = 0
    bootstrap_resamples: int = 2000

    def __post_init__(self):
        _check_str("name", self.name)
        object.__setattr__(self, "settings", tuple(self.settings))
        object.__setattr__(self, "methods", tuple(self.methods))
        if not self.settings or not all(isinstance(s, Setting) for s in self.settings):
            raise TypeError("settings must be a non-empty sequence of Setting")
        if not self.methods or not all(isinstance(m, MethodSpec) for m in self.methods):
            raise TypeError("methods must be a non-empty sequence of MethodSpec")
        check_int("images", self.images, minimum=1)
        if self.images > MAX_IMAGES:
            raise ValueError(f"images must be <= {MAX_IMAGES} (the test split), got {self.images}")
        check_int("seed", self.seed, minimum=0)
        check_int("bootstrap_resamples", self.bootstrap_resamples, minimum=100)
        for what, names in (("settings", [s.name for s in self.settings]),
                            ("method labels", [m.label for m in self.methods])):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"{what} must be unique, got duplicates {dup}")

    def validate(self) -> "StudyConfig":
        """Check every (setting, method) pair can run; loads each prior once.

        Raises
        ------
        ValueError
            ``fbp`` on a non-CT setting, or a prior whose image size differs
            from a setting's ``size`` (e.g. a 28² prior on a 32² problem).
        """
        for m in self.methods:
            for s in self.settings:
                if m.method == "fbp" and s.problem != "ct":
                    raise ValueError(f"method {m.label!r} (fbp) needs a CT setting, "
                                     f"got setting {s.name!r}")
                if m.prior is not None and _prior_size(m.prior) != s.size:
                    raise ValueError(
                        f"prior {m.prior!r} of method {m.label!r} models "
                        f"{_prior_size(m.prior)}x{_prior_size(m.prior)} images but setting "
                        f"{s.name!r} has size {s.size}")
        return self

    def with_images(self, images: int | None) -> "StudyConfig":
        """The same study on ``images`` test digits (None: unchanged)."""
        return self if images is None else dataclasses.replace(self, images=images)

    def to_dict(self) -> dict:
        """JSON/TOML-ready dict; :meth:`from_dict` inverts it."""
        return {"name": self.name, "images": self.images, "seed": self.seed,
                "bootstrap_resamples": self.bootstrap_resamples,
                "settings": [dataclasses.asdict(s) for s in self.settings],
                "methods": [m.to_dict() for m in self.methods]}

    @classmethod
    def from_dict(cls, data: dict) -> "StudyConfig":
        """Build from :meth:`to_dict` output or a parsed TOML file (unknown keys raise)."""
        if not isinstance(data, dict):
            raise TypeError(f"study config must be a dict, got {type(data).__name__}")
        _check_keys("study config", data, {f.name for f in fields(cls)})
        if "name" not in data:
            raise ValueError("study config needs a 'name'")
        settings = [_build(Setting, f"settings[{i}]", s)
                    for i, s in enumerate(data.get("settings", []))]
        methods = [_build(MethodSpec, f"methods[{i}]", m)
                   for i, m in enumerate(data.get("methods", []))]
        rest = {k: v for k, v in data.items() if k not in ("settings", "methods")}
        return cls(settings=tuple(settings), methods=tuple(methods), **rest)


def _check_keys(where: str, data: dict, allowed: set) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; allowed: {sorted(allowed)}")


def _build(cls, where: str, data):
    if not isinstance(data, dict):
        raise TypeError(f"{where} must be a table/dict, got {type(data).__name__}")
    _check_keys(where, data, {f.name for f in fields(cls)})
    return cls(**data)


def load_config(path) -> StudyConfig:
    """Read a study TOML file (see the module docstring for the format).

    Raises
    ------
    ValueError
        Missing or unparsable file, unknown keys, invalid values.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"config file {path} is not valid TOML: {err}") from None
    return StudyConfig.from_dict(data)
