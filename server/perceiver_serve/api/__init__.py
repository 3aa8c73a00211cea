"""Front ends: REST (FastAPI) and gRPC, thin layers over the tasks."""
