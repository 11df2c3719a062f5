"""Similarity search over training frames: features per space, annoy indexes, kNN fallback, galleries.

Modules: ``features`` (vectors of the raw / softmax / embedding / tsne spaces), ``index``
(:class:`SimilarityIndex`: annoy + id table, other-patient queries, exact search), ``fallback``
(scores from neighbours), ``neighbors`` (the neighbours file, plain and diverse lists), ``gallery`` (PNG of a query and its neighbours), ``step`` (the
``build_index`` and ``query_neighbors`` workflow steps).
"""
