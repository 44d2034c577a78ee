"""Generative networks and the Pyro programs ``z → x → y``."""

from .checkpoint import load_model, save_model
from .collapsed import CollapsedMarginal, collapsed_model
from .dae import DAETrainConfig, DenoisingAutoencoder, train_dae
from .diffusion import DiffusionPrior, GaussianDiffusionPrior
from .diffusion_unet import DiffusionConfig, DiffusionUNet
from .diffusion_training import DiffusionTrainConfig, train_diffusion
from .hvae import HierarchicalVAE, HVAEConfig
from .hvae_program import hierarchical_collapsed_model, hierarchical_model
from .hvae_training import HVAETrainConfig, evaluate_hvae_nll, train_hvae
from .pretrained import (available_denoisers, available_diffusion_priors, available_dip_networks,
                         available_hvae_priors, available_priors, load_pretrained, load_pretrained_dae,
                         load_pretrained_diffusion, load_pretrained_dip, load_pretrained_hvae)
from .program import reconstruction_model
from .supn_vae import COVARIANCES, SUPNConfig, SUPNVAE
from .unet import UNet, UNetConfig
from .training import TrainConfig, TrainResult, copy_mean_network, evaluate_nll, train_prior

__all__ = [
    "SUPNVAE",
    "SUPNConfig",
    "COVARIANCES",
    "TrainConfig",
    "TrainResult",
    "train_prior",
    "copy_mean_network",
    "evaluate_nll",
    "load_pretrained",
    "available_priors",
    "load_pretrained_dae",
    "available_denoisers",
    "reconstruction_model",
    "collapsed_model",
    "CollapsedMarginal",
    "save_model",
    "load_model",
    "UNet",
    "UNetConfig",
    "DenoisingAutoencoder",
    "DAETrainConfig",
    "train_dae",
    "DiffusionPrior",
    "DiffusionUNet",
    "DiffusionConfig",
    "GaussianDiffusionPrior",
    "DiffusionTrainConfig",
    "train_diffusion",
    "available_diffusion_priors",
    "load_pretrained_diffusion",
    "HierarchicalVAE",
    "HVAEConfig",
    "HVAETrainConfig",
    "train_hvae",
    "evaluate_hvae_nll",
    "hierarchical_model",
    "hierarchical_collapsed_model",
    "available_hvae_priors",
    "load_pretrained_hvae",
    "available_dip_networks",
    "load_pretrained_dip",
]
