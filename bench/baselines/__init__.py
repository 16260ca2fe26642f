"""Baselines: what users would run instead of DifyBatchOperator."""
