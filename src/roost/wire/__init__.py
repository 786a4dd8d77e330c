"""ZeroMQ messaging between daemons: CURVE keys, ZAP auth, typed messages, rpc, pub/sub."""
