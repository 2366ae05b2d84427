"""edge-avatar: a conversational avatar that runs entirely on an NVIDIA Jetson.

The package is importable with the core dependencies alone (numpy, onnx,
onnxruntime, pyyaml); everything device-specific (TensorRT, CUDA, RealSense,
PortAudio, MQTT) is imported lazily inside the module that needs it.
"""

__version__ = "0.1.0"
