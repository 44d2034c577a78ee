"""bayes_recon.pretrained (exports are added as modules land)."""
