"""Synthetic convex-probe lung-ultrasound videos: the project's embedded default dataset.

Public API:
    planned_videos(synth_cfg) -> [(file name, patient id), ...]     (no rendering; for the DAG)
    generate_dataset(out_dir, synth_cfg, classes, seed, progress=True) -> labels.csv path
    plan_cohort(synth_cfg, num_classes, seed) -> [VideoPlan, ...]  (what each video shows)
    render_video(plan) -> uint8 (n, size, size);  render_frame(plan, t) -> uint8 (size, size)

Modules: `geometry` (fan / polar warp), `artefacts` (anatomy and score-bearing findings),
`cohort` (patients, settings, scores, seeds), `render` (pixels), `dataset` (files on disk).
"""
