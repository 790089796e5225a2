"""The inference contract between the edge and the engine adapters.

`v1` is generated from `protos/switchyard/inference/v1/inference.proto` (`make proto`);
`errors` is how both sides speak its errors (gRPC status codes with an ErrorInfo detail).
"""
