"""ocr_decoder: the MoE decoder's non-expert layers with continuous batching (decoupled).

Thin wrapper; the logic lives in ocrstream.serving.triton_decoder (docs/triton.md).
"""

import triton_python_backend_utils as pb_utils

from ocrstream.serving.triton_decoder import DecoderModel


class TritonPythonModel:
    def initialize(self, args):
        self.model = DecoderModel(args, pb_utils)

    def execute(self, requests):
        return self.model.execute(requests)

    def is_ready(self):
        return self.model.is_ready()

    def finalize(self):
        self.model.finalize()
