"""bayes_recon."""
__version__ = "0.1.0"
