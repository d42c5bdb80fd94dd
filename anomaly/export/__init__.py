"""Export a stored version to one deployable folder: an ONNX scoring graph and its deploy.json.

``graphs`` (the scoring as torch modules), ``onnx_export`` (export, checked for parity
before anything is written), ``parity`` (bundle against export, image by image) and
``quantize`` (INT8, kept only through its gate). Needs the full install (torch); the
folder it writes runs without torch through :mod:`anomaly.runtime`.
"""
