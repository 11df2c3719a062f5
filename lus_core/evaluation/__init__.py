"""The ``evaluate`` step, as a package with one job per module:

- :mod:`.matrix`: every configuration scored on the test patients (patient bootstrap, paired
  differences against the CNN alone); sorted by test accuracy, an exploratory view.
- :mod:`.selection`: every deployable configuration scored on the training patients out of
  fold, and the one deployed (``selected``) chosen on that score alone.
- :mod:`.summary`: the pieces of ``eval/summary.json``.
- :mod:`.inputs`: confidence tables and neighbour files aligned to frame ids.
- :mod:`.figures`: the png files (imported only when drawing).
- :mod:`.step`: :func:`run_evaluate`, the step's entry point.
"""
