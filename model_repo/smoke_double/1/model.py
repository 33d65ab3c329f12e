"""Triton python-backend smoke model: OUTPUT0 = 2 * INPUT0 (the infrastructure check, no project code)."""

import json

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        # Output dtype from the config, not hard-coded, so the two cannot disagree.
        out_cfg = pb_utils.get_output_config_by_name(config, "OUTPUT0")
        self.out_dtype = pb_utils.triton_string_to_numpy(out_cfg["data_type"])

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            y = (x * 2).astype(self.out_dtype)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", y)]))
        return responses
