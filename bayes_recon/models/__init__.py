"""Generative networks and the Pyro programs ``z → x → y``."""

from .checkpoint import load_model, save_model
from .pretrained import available_priors, load_pretrained
from .program import reconstruction_model
from .supn_vae import COVARIANCES, SUPNConfig, SUPNVAE
from .training import TrainConfig, TrainResult, evaluate_nll, train_prior

__all__ = [
    "SUPNVAE",
    "SUPNConfig",
    "COVARIANCES",
    "TrainConfig",
    "TrainResult",
    "train_prior",
    "evaluate_nll",
    "load_pretrained",
    "available_priors",
    "reconstruction_model",
    "save_model",
    "load_model",
]
