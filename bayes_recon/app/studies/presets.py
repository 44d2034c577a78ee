"""The preset studies: the papers' tables sized for this project's machine, and a smoke test.

Each published preset (``lindip-protocol``, ``mri-spokes``, ``denoise``) finishes in at
most 2 h on the 2-core machine the project runs on (Intel Xeon @ 2.80GHz VM, 23 GiB) with
two workers; ``preset(name, images=N)`` (``--images N``) scales one up for a cluster.
Per-task costs were measured with bayes_recon 0.2.0 on test digit 0, one in-process
worker, while two other jobs shared the cores (docs/studies.md, "Presets"); the estimate
is Σ task seconds per image / 1.38 (the speed-up of two workers over one measured on
``lindip-protocol``, docs/studies.md "Speed") × images.
"""

from __future__ import annotations

from .config import MethodSpec, Setting, StudyConfig

__all__ = ["PRESETS", "preset"]

# DIP settings as in the demo (app/demo.py): TV weight 3σ, Adam lr 1e-3, 300 iterations,
# 32-channel U-Net; TV-PredCP rate 20 (the library default) for the TV-MAP variant, MC dropout rate 0.05.
_DIP = dict(dip_tv_scale=3.0, dip_lr=1e-3, dip_iterations=300, dip_channels=32,
            num_samples=1000)


def _lindip_protocol() -> StudyConfig:
    """The linearised-DIP papers' CT table: 8 settings × 7 methods × 8 images = 448 tasks.

    Per task at ct28-a20-n5 (s): FBP 0.00, TV 0.60, DIP + fixed σ 5.4, DIP + MC dropout
    6.0, linearised DIP (TV-MAP, held-out calibration) 61.7, SUPN posterior 10.5. Averaged
    over the 8 settings the MLL variant costs 0.94× that TV-MAP figure and SUPN 1.29× its
    own (ratios of the 0.2.0 five-digit run, docs/results.md): 145 s per setting and image,
    1,162 s per image on one worker, ≈ 842 s with two; 8 images ≈ 1.9 h. Eight images per
    cell is the fewest worth publishing; if a run here overshoots 2 h, drop the 30-angle
    settings (6 settings × 10 images ≈ 1.75 h) rather than images.
    """
    settings = [Setting("ct", 28, angles=a, relative_noise=n)
                for n in (0.05, 0.10) for a in (5, 10, 20, 30)]
    methods = [
        MethodSpec("FBP", "fbp"),
        MethodSpec("TV", "tv", tv_weight=0.2),
        MethodSpec("DIP + fixed σ", "fixed-sigma-dip", **_DIP),
        MethodSpec("DIP + MC dropout", "mc-dropout-dip", dropout=0.05, **_DIP),
        MethodSpec("Linearised DIP (MLL)", "linearised-dip", predcp_scale=0.0, **_DIP),
        MethodSpec("Linearised DIP (TV-MAP)", "linearised-dip", predcp_scale=20.0, **_DIP),
        # Laplace in z rather than NUTS: NUTS costs minutes per image at 784 pixels.
        MethodSpec("SUPN posterior", "laplace", prior="digits-supn", num_samples=100),
    ]
    return StudyConfig("lindip-protocol", settings, methods, images=8)


def _mri_spokes() -> StudyConfig:
    """Radial MRI: 12 settings × 5 methods × 50 images = 3,000 tasks.

    Per task, mean of the hardest and easiest setting (mri28-s10-n10, mri28-s60-n5), in s:
    zero-filled 0.00, MAP structured 5.7, MAP diagonal 2.2, MAP identity 1.1, CSGM 1.2:
    10.3 s per setting and image, 123 s per image on one worker, ≈ 89 s with two; 50
    images ≈ 1.2 h.
    """
    settings = [Setting("mri", 28, spokes=s, relative_noise=n)
                for n in (0.05, 0.10) for s in (10, 20, 30, 40, 50, 60)]
    methods = [
        MethodSpec("Zero-filled", "adjoint"),
        MethodSpec("MAP structured", "jpmap", prior="digits-supn"),
        MethodSpec("MAP diagonal", "jpmap", prior="digits-diagonal"),
        MethodSpec("MAP identity", "jpmap", prior="digits-identity"),
        MethodSpec("CSGM", "csgm", prior="digits-supn"),
    ]
    return StudyConfig("mri-spokes", settings, methods, images=50)


def _denoise() -> StudyConfig:
    """The SUPN paper's denoising table: 2 settings × 5 methods × 60 images = 600 tasks.

    SUPN vs DAE (the shipped ``digits-dae``, trained at σ = 0.1) vs diagonal VAE. Per task
    at 25 % / 50 % noise (s): SUPN MAP 23.9 / 30.0, DAE 0.03 / 0.01, SUPN posterior
    12.3 / 11.4, diagonal VAE MAP 5.4 / 15.7, diagonal VAE posterior 9.6 / 10.2: 119 s per
    image on one worker, ≈ 86 s with two; 60 images ≈ 1.4 h (MAP costs vary between
    images, hence the margin).
    """
    settings = [Setting("denoise", 28, relative_noise=n) for n in (0.25, 0.5)]
    methods = [
        MethodSpec("SUPN MAP", "jpmap", prior="digits-supn"),
        MethodSpec("DAE", "dae"),
        MethodSpec("SUPN posterior", "laplace", prior="digits-supn", num_samples=100),
        MethodSpec("Diagonal VAE MAP", "jpmap", prior="digits-diagonal"),
        MethodSpec("Diagonal VAE posterior", "laplace", prior="digits-diagonal",
                   num_samples=100),
    ]
    return StudyConfig("denoise", settings, methods, images=60)


def _quick() -> StudyConfig:
    """A smoke test, not a paper table: 2 settings × 5 methods × 2 images, ≈ 10 s in all.

    Under a second per task on one core: small U-Net, few iterations, one short MAP.
    """
    dip = dict(dip_tv_scale=3.0, dip_lr=1e-3, dip_iterations=40, dip_channels=8,
               num_samples=50)
    settings = [Setting("ct", 28, angles=a, relative_noise=0.05) for a in (10, 20)]
    methods = [
        MethodSpec("FBP", "fbp"),
        MethodSpec("TV", "tv", tv_weight=0.2, tv_iterations=200),
        MethodSpec("DIP + fixed σ", "fixed-sigma-dip", **dip),
        MethodSpec("DIP + MC dropout", "mc-dropout-dip", dropout=0.05, **dip),
        MethodSpec("SUPN MAP", "jpmap", prior="digits-supn", map_iterations=1, map_restarts=1,
                   map_z_steps=5),
    ]
    return StudyConfig("quick", settings, methods, images=2)


PRESETS = {"lindip-protocol": _lindip_protocol, "mri-spokes": _mri_spokes,
           "denoise": _denoise, "quick": _quick}


def preset(name: str, images: int | None = None) -> StudyConfig:
    """A preset study, optionally on fewer (or more) test images.

    Parameters
    ----------
    name : {"lindip-protocol", "mri-spokes", "denoise", "quick"}
    images : int, optional
        Overrides the preset's number of test digits (each preset's default is sized
        to finish in at most 2 h on two cores; more images for a cluster).

    Examples
    --------
    >>> from bayes_recon.app.studies import preset
    >>> cfg = preset("quick")
    >>> len(cfg.settings) * len(cfg.methods) * cfg.images
    20
    """
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]().with_images(images)
