"""expert_shard_<k>: one shard of routed experts, called by the decoder over BLS.

Thin wrapper; the logic lives in ocrstream.serving.expert_shard (docs/triton.md).
"""

import triton_python_backend_utils as pb_utils

from ocrstream.serving.expert_shard import ShardModel


class TritonPythonModel:
    def initialize(self, args):
        self.model = ShardModel(args, pb_utils)

    def execute(self, requests):
        return self.model.execute(requests)

    def is_ready(self):
        return self.model.is_ready()
