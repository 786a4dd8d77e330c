"""The gateway's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter

AUTH = Counter("roost_gateway_auth_total", "Public-key authentications", ["result"])
SESSIONS = Counter("roost_gateway_sessions_total", "SSH commands served", ["command", "result"])
