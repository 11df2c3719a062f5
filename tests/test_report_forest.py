"""The forest plot's rows: every CNN alone, the selected configuration, the best others; best first."""

import pandas as pd

from lus_core.report.forest import forest_png, main_rows


def _matrix():
    rows = [("a · msp", "combined", 0.80), ("b · msp", "combined", 0.78), ("a · fb", "fallback_only", 0.75),
            ("a · m2", "combined", 0.74), ("a · m3", "combined", 0.70), ("a · CNN alone", "cnn", 0.72),
            ("b · CNN alone", "cnn", 0.65), ("a · oracle", "oracle_detector", 0.95)]
    df = pd.DataFrame(rows, columns=["config_id", "row_type", "accuracy"])
    df["accuracy_lo"], df["accuracy_hi"] = df["accuracy"] - 0.05, df["accuracy"] + 0.05
    return df


def test_main_rows_keep_the_cnn_rows_and_the_selected_one():
    rows = main_rows(_matrix(), {"config_id": "a · m3"}, n_top=2)
    assert rows["config_id"].tolist() == ["a · msp", "b · msp", "a · CNN alone", "a · m3", "b · CNN alone"]
    assert "a · oracle" not in rows["config_id"].tolist()  # bounds, not methods


def test_forest_png_is_a_png():
    png = forest_png(main_rows(_matrix(), None), None)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
