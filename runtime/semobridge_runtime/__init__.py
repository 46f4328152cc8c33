"""Run exported semobridge classifiers with ONNX Runtime or TensorRT; no PyTorch needed.

    from semobridge_runtime import Classifier
    clf = Classifier.load("model.onnx")
    result = clf.predict(image)          # uint8 HxWx3 RGB, a batch, a list, paths or PIL images
    print(result.class_names[0], result.top_k.scores[0])
    clf.predict(Frame(buffer, 1280, 720, "nv12", stride=1536))   # camera frames: strides, BGR, RGBA, NV12

    clf.add_class("blue mug", ["mug1.jpg", "mug2.jpg"])   # enrol a class from a few images
    clf.remove_class("coat"); clf.rename_class("bag", "handbag")
    clf.save_classes("shop.classes")     # later: Classifier.load("model.onnx", classes="shop.classes")

    for r in clf.stream("clip.mp4", fps=2):  # or rtsp://..., /dev/video0; the video extra (PyAV)
        print(r.frame, r.time_s, r.class_name, r.score)
"""

from .classifier import Classifier, Prediction, TopK
from .errors import ERROR_TABLE, BackendError, InputError, ModelError, SemobridgeError
from .frames import Frame
from .images import to_8bit
from .limits import ImageLimits
from .metadata import ModelInfo
from .video import FrameResult, FrameStream

__all__ = ["ERROR_TABLE", "BackendError", "Classifier", "Frame", "FrameResult", "FrameStream", "ImageLimits",
           "InputError", "ModelError", "ModelInfo", "Prediction", "SemobridgeError", "TopK", "to_8bit"]
__version__ = "0.1.0"
