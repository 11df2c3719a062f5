"""Exact search selects the k smallest per row without a full sort; ties still go to the lower item id."""

import numpy as np

from lus_core.similarity.index import _k_smallest_stable, exact_search


def test_k_smallest_matches_a_stable_full_sort_with_ties_and_excluded_items():
    rng = np.random.default_rng(0)
    for _ in range(300):
        m = int(rng.integers(1, 50))
        k = int(rng.integers(1, m + 1))
        d = rng.integers(0, 4, (6, m)).astype(float)  # many ties
        d[rng.random(d.shape) < 0.25] = np.inf  # own-patient items
        assert np.array_equal(_k_smallest_stable(d, k), np.argsort(d, axis=1, kind="stable")[:, :k])


def test_exact_search_breaks_ties_by_item_id():
    items = np.array([[1.0, 0], [0, 1.0], [-1.0, 0], [0, -1.0], [3.0, 0]])
    ids, dist = exact_search(items, np.zeros((1, 2)), 3)
    assert ids.tolist() == [[0, 1, 2]] and np.allclose(dist, 1.0)
