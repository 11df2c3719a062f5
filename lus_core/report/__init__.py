"""The report a person opens (``html``: the ``report`` step, built from ``sections`` of ``markup``),
its first-screen forest plot (``forest``) and the Grad-CAM maps of its galleries
(``gradcam_step``: the ``gradcam`` step)."""
