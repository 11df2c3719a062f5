"""Confidence models: is the CNN's prediction for a frame right? (fit on out-of-fold training rows only).

Modules: ``methods`` (the methods by config name), ``study`` (the study's MLP and SVCs),
``baselines`` and ``conformal`` (the standard baselines), ``base`` (the method interface and the
trust threshold), ``failure_metrics`` (AUGRC, AURC, failure AUROC, ECE), ``plots``, and ``step``
(the ``fit_confidence`` and ``confidence_report`` steps).
"""
