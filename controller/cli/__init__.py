"""Command-line transports: vigil-controller, the operator CLI (vigil), vigil up."""
