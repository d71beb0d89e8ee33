"""data.pipeline=device: the loader workers read each training image's bytes and draw its
augmentation (draws.py, encoded.py); the training device decodes and augments the whole batch
(augment.py)."""
