"""The KServe Open Inference Protocol (v2): its meaning (:mod:`.infer`), tensors and HTTP routes.

The gRPC form, ``inference.GRPCInferenceService``, is in :mod:`..grpc.inference`.
"""
