"""`ExportReport`: what an export wrote and how closely it matches Keras."""

import dataclasses
import json


@dataclasses.dataclass
class ExportReport:
    """What an export wrote and how well it matches Keras.

    Attributes:
        path: The written file (or SavedModel folder).
        format: `"saved_model"` or `"tflite"`.
        quantize: The quantization mode (`None` for float32).
        bytes: Size on disk (a folder's total for a SavedModel).
        float32_bytes: Size of the float32 TFLite file of the same model
            (None for a SavedModel).
        size_ratio: `bytes / float32_bytes` (None for a SavedModel).
        compared: How many inputs were compared with Keras.
        max_abs_diff: Largest |Keras − exported| over those outputs (after
            dequantization for int8 outputs).
        argmax_agreement: Share of inputs whose predicted class agrees.
        accuracy: Accuracy of the exported model on the labelled check data,
            or None.
        keras_accuracy: Accuracy of the Keras model on the same data.
        latency_ms: Median single-thread latency per example in the LiteRT
            interpreter, after warm-up (None for a SavedModel).
        input_quantization: `(scale, zero_point)` of an int8 input, or None.
        output_quantization: `(scale, zero_point)` of an int8 output, or None.
        vocabulary_path: For a model exported from token ids (its
            `TextVectorization` split off), the vocabulary file written
            beside it; else None.
        within_one_step: For a quantization-aware model exported in int8
            (`keras_distill.quantization`): the share of compared outputs
            equal to Keras' within one step of their int8 grid; else None.
    """

    path: str
    format: str
    quantize: object = None
    bytes: int = 0
    float32_bytes: object = None
    size_ratio: object = None
    compared: int = 0
    max_abs_diff: object = None
    argmax_agreement: object = None
    accuracy: object = None
    keras_accuracy: object = None
    latency_ms: object = None
    input_quantization: object = None
    output_quantization: object = None
    vocabulary_path: object = None
    within_one_step: object = None

    def to_dict(self):
        """The report as a JSON-serializable dict."""
        return dataclasses.asdict(self)

    def to_json(self, indent=2):
        """The report as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)
