"""Training: the start points (`base`, `sft_beta`) and the method grid (SFT, DPO, ORPO, IFT)."""
