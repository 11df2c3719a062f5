"""Video-level scores: the fixed aggregations of a video's frame scores and the learned attention
model (``model``), and the video table file (``table``)."""
