"""The Vigil controller: ingest, baselines, findings, tickets, REST API. Never imports agent/ or checks/."""

from common import tls

# Every controller module that serves gRPC is inside this package, so the TLS policy is in place
# before grpc starts.
tls.apply_policy()
