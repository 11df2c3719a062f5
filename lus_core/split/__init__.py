"""Balanced test-patient split (exact k-patient search) and patient-grouped CV folds."""
