"""Similarity search over training frames: features per space, annoy indexes, kNN fallback, galleries.

Modules: ``features`` (vectors of the raw / softmax / embedding / tsne spaces), ``index``
(:class:`SimilarityIndex`: annoy + id table, other-patient queries, exact search), ``fallback``
(scores from neighbours), ``gallery`` (PNG of a query and its neighbours), ``step`` (the
``build_index`` and ``query_neighbors`` workflow steps).
"""

from lus_core.similarity.fallback import FALLBACK_MODES, blend, fallback_scores, neighbor_distribution
from lus_core.similarity.features import SPACES, space_features
from lus_core.similarity.index import SimilarityIndex, exact_search, recall_at_k

__all__ = [
    "FALLBACK_MODES",
    "SPACES",
    "SimilarityIndex",
    "blend",
    "exact_search",
    "fallback_scores",
    "neighbor_distribution",
    "recall_at_k",
    "space_features",
]
