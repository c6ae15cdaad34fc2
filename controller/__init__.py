"""The Vigil controller: ingest, baselines, findings, tickets, REST API. Never imports agent/ or checks/."""
