"""OTLP gRPC receiver (MODE=receiver)."""
