"""Similarity search over training frames: features per space, annoy indexes, kNN fallback, galleries.

Modules: ``features`` (vectors of the raw / softmax / embedding / tsne spaces), ``index``
(:class:`SimilarityIndex`: annoy + id table, other-patient queries, exact search), ``fallback``
(scores from neighbours), ``neighbors`` (the neighbours file, plain and diverse lists), ``gallery`` (PNG of a query and its neighbours), ``step`` (the
``build_index`` and ``query_neighbors`` workflow steps).
"""

from lus_core.similarity.fallback import (
    FALLBACK_MODES,
    blend,
    fallback_from_lists,
    fallback_scores,
    neighbor_distribution,
)
from lus_core.similarity.features import SPACES, space_features
from lus_core.similarity.index import DIVERSITY, SimilarityIndex, exact_search, recall_at_k
from lus_core.similarity.neighbors import NeighborLists, read_neighbors, stored_diversities

__all__ = [
    "DIVERSITY",
    "FALLBACK_MODES",
    "NeighborLists",
    "SPACES",
    "SimilarityIndex",
    "blend",
    "exact_search",
    "fallback_from_lists",
    "fallback_scores",
    "neighbor_distribution",
    "read_neighbors",
    "recall_at_k",
    "space_features",
    "stored_diversities",
]
