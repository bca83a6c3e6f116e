"""What the scripts in `recipes/` share: their arguments, config files, and model and data set-ups.

- :mod:`.args`: the config-file front end of every recipe and the clean end of a multi-process run.
- :mod:`.vision`: the vision recipes' arguments and set-up (data, timm teacher and student, the teacher's reuse).
- :mod:`.timm_models`: timm models for small images (CIFAR stems), saved and reloaded with how they were built.
"""
