"""Everything that reads a finished run: its layout (``layout``), its files (``reader``), the
manifest of checksums (``manifest``), ``lus predict`` (``predict``, ``safe_output``),
``lus score`` (``score``: a prediction against another site's labels),
``lus summarize`` (``markdown``, ``recipes``), the run-time record (``run_time``) and the
benchmark records (``bench_records``)."""
