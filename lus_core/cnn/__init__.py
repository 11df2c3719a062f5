"""The CNN: backbones with a new output layer, their training and inference, the embedding cache
of frozen encoders, the predictions file and Grad-CAM maps.

Modules: ``settings`` (what the config says about a backbone, without torch), ``backbones``,
``losses``, ``augment``, ``frame_dataset``, ``embedding_cache``, ``device``, ``checkpoints``,
``loop`` (one epoch, evaluation, early stopping), ``train`` (the ``train`` step), ``model_file``
(the model file contract), ``infer`` (the ``infer`` step), ``predictions`` (the predictions file
contract), ``gradcam``.
"""
