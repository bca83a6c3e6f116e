"""Evaluation: the teacher / scratch student / distilled student comparison, its benchmark, report and plots.

- :mod:`.comparison`: trains the teacher (or takes one), then per seed a student from scratch and a distilled one.
- :mod:`.ablation`: further settings compared the same way.
- :mod:`.benchmark`: parameters, size, latency and throughput of each model.
- :mod:`.report`: `report.json` / `report.md` and the summary printed at the end.
- :mod:`.plots`: learning curves, confusion matrices, per-class errors, soft-label entropy.
- :mod:`.teacher_settings`: what a teacher was trained with, recorded beside it and checked before reuse.

This package depends on the trainer; nothing in the trainer depends on it.
"""
