"""Frames: videos decoded, matched with their labels, cropped and stored (one HDF5 store per video),
verified, and indexed.

Modules: ``decode`` (containers, GIF, frame folders; the sector), ``labels`` (the video table:
videos matched with label rows and patients), ``extract`` (the ``extract_frames`` and
``frame_index`` steps), ``store`` (the frame store and frame index file contract), ``verify``
(a store against its extraction record), ``skipped`` (videos skipped with ``on_bad_video: skip``).
"""
