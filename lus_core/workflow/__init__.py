"""Helpers of the Snakefile and the workflow scripts: code versions of the steps
(``code_version``), the config keys each step reads (``step_config``), a script's config slice and log
(``script``), and what the DAG is built from (``dag``)."""
