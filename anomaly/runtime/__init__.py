"""The torch-free runtime: exported models scored with onnxruntime, numpy and OpenCV.

``deployed`` loads and checks one export folder and scores through it; ``store`` keeps
exports as the model store keeps bundles, for ``anomaly serve --runtime onnx``. Installed
alone with ``pip install 'anomaly-inspect[runtime]'`` (``requirements/runtime.lock``).
"""
