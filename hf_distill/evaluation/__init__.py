"""Evaluation: the teacher / scratch student / distilled student comparison, its benchmark, report and plots.

- :mod:`.comparison`: trains the teacher (or takes one), then per setting and seed a student from scratch and a
  distilled one; :mod:`.arguments` holds what it is run with, :mod:`.training` its single runs and step budget,
  :mod:`.outputs` what it writes at the end.
- :mod:`.settings`: the same-data and transfer-set settings; :mod:`.statistics`: the paired difference over seeds
  and its 95% t-interval.
- :mod:`.methods`: distillation methods by name (`"dkd+at"`) for the distilled students; :mod:`.generations`:
  born-again generations, each generation's student teaching the next.
- :mod:`.ablation`: further settings compared the same way.
- :mod:`.benchmark`: parameters, size, latency and throughput of each model.
- :mod:`.report`: `report.json` / `report.md`; :mod:`.rendering` and :mod:`.tables`: its Markdown and the summary
  printed at the end.
- :mod:`.plots`: learning curves, confusion matrices, per-class errors, soft-label entropy.
- :mod:`.teacher_settings`: what a teacher was trained with, recorded beside it and checked before reuse.

This package depends on the trainer; nothing in the trainer depends on it.
"""
