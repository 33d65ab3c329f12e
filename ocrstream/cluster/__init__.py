"""`ocrstream cluster status`: is each service keeping up with its Kafka input?

- ``k8s``: the only module that talks to the Kubernetes API (Deployments, KEDA ScaledObjects, HPAs,
  returned as plain dicts).
- ``lag``: consumer-group lag from Kafka (end offsets minus committed offsets).
- ``status``: pure logic and rendering over those dicts, testable without a cluster.
"""
