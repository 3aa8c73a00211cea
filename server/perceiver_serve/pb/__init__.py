"""Generated gRPC code for proto/perceiver/v1/perceiver.proto: regenerate with `make proto`, never edit."""
