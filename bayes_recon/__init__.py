"""bayes_recon."""
__version__ = "0.2.0"
