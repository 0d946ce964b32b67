"""`Runner`: a `.tflite` file in the LiteRT interpreter (the `export`
extra, imported when a `Runner` is made), fed and read as Keras is.
"""

import os
import statistics
import time

import numpy as np

from keras_distill._utils import optional_import
from keras_distill._utils import quiet_native_output
from keras_distill.export._parity import ordered


class Runner:
    """Runs a `.tflite` file in the LiteRT interpreter, one example at a time.

    Inputs are fed by the model's signature, in their own dtypes (float
    inputs are quantized when the model's input is int8), and outputs are
    dequantized when int8, so `predict` takes and returns what Keras does.

    Args:
        path: The `.tflite` file.
        num_threads: Interpreter threads. Defaults to 1 (what latency
            figures assume).

    Example:

    ```python
    runner = keras_distill.export.Runner("student.tflite")
    logits = runner.predict(x_test[:10])
    ```
    """

    def __init__(self, path, num_threads=1):
        litert = optional_import(
            "ai_edge_litert.interpreter", "export", "Running a .tflite file"
        )
        Interpreter = litert.Interpreter

        self.path = os.fspath(path)
        with quiet_native_output():
            self.interpreter = Interpreter(
                model_path=self.path, num_threads=num_threads
            )
            self.interpreter.allocate_tensors()
        self.signature = self.interpreter.get_signature_runner()
        self._inputs = self.signature.get_input_details()
        self._outputs = self.signature.get_output_details()
        self.input_names = sorted(self._inputs)
        self.output_names = ordered(self._outputs)

    @staticmethod
    def _quantization(detail):
        if detail["dtype"] in (np.int8, np.uint8):
            scale, zero_point = detail["quantization"]
            if scale:
                return float(scale), int(zero_point)
        return None

    @property
    def input_quantization(self):
        """`(scale, zero_point)` of the first int8 input, or None."""
        for name in self.input_names:
            q = self._quantization(self._inputs[name])
            if q is not None:
                return q
        return None

    @property
    def output_quantization(self):
        """`(scale, zero_point)` of the first int8 output, or None."""
        for name in self.output_names:
            q = self._quantization(self._outputs[name])
            if q is not None:
                return q
        return None

    def _feed(self, name, value):
        detail = self._inputs[name]
        q = self._quantization(detail)
        if q is not None and np.issubdtype(
            np.asarray(value).dtype, np.floating
        ):
            scale, zero_point = q
            info = np.iinfo(detail["dtype"])
            return np.clip(
                np.round(value / scale + zero_point), info.min, info.max
            ).astype(detail["dtype"])
        return np.asarray(value).astype(detail["dtype"])

    def _invoke(self, example):
        if not isinstance(example, dict):
            example = {self.input_names[0]: example}
        if set(example) != set(self._inputs):
            raise ValueError(
                "Invalid inputs for the TFLite model. Expected the inputs "
                f"{self.input_names}. Received: {sorted(example)}"
            )
        outputs = self.signature(
            **{k: self._feed(k, v) for k, v in example.items()}
        )
        values = []
        for name in self.output_names:
            out = outputs[name]
            q = self._quantization(self._outputs[name])
            if q is not None:
                scale, zero_point = q
                out = (out.astype("float32") - zero_point) * scale
            values.append(np.asarray(out, "float32"))
        return values

    def predict_outputs(self, x):
        """Every output for a batch, computed one example at a time.

        Args:
            x: An array (one input) or a dict of arrays by input name.

        Returns:
            A list of float32 arrays, one per output.
        """
        named = x if isinstance(x, dict) else {self.input_names[0]: x}
        n = len(next(iter(named.values())))
        rows = [
            self._invoke({k: v[i : i + 1] for k, v in named.items()})
            for i in range(n)
        ]
        return [np.concatenate(parts) for parts in zip(*rows)]

    def predict(self, x):
        """Outputs for a batch (the first output for several).

        Args:
            x: An array (one input) or a dict of arrays by input name;
                float inputs as float32, token inputs as integers.

        Returns:
            A float32 array: the model's output.
        """
        if not isinstance(x, dict):
            x = np.asarray(x)
            if np.issubdtype(x.dtype, np.floating):
                x = x.astype("float32")
        return self.predict_outputs(x)[0]

    def latency_ms(self, example, runs=200, warmup=20):
        """Median milliseconds of one single-example inference.

        Args:
            example: One input (or a dict of inputs) with a batch axis of 1.
            runs: Timed runs.
            warmup: Untimed runs first.

        Returns:
            The median, in milliseconds.
        """
        if not isinstance(example, dict):
            example = np.asarray(example)
        for _ in range(warmup):
            self._invoke(example)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self._invoke(example)
            times.append(time.perf_counter() - start)
        return 1000.0 * statistics.median(times)
