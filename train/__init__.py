"""The compact trainer: I-JEPA and D-JEPA runs from a Config (see train.api.train_run)."""
