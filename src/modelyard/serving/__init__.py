"""The model server: KServe v1/v2 and MLflow HTTP, batching, routing, prediction log."""
