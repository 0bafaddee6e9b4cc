"""The inference layer: export-and-verify, Paddle Inference predictors and the one
encoder (model -> codes of a data set)."""
