"""The gRPC transport: agents' report and command streams, enrollment."""
