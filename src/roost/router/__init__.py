"""The router: Roost's HTTP load balancer.

Entry point: `roost.router.daemon.run(data_dir, settings, name, port, workers)`.

Modules, request path first:
  client.py     visitor connections: parsing, limits, deadlines, pipelining
  exchange.py   one request: reading its head, routing, local answers
  relay.py      proxying it to an instance: connect or reuse, stream, retry rules
  upstream.py   instance connections: pass-through relay, keep-alive pool
  scan.py       plain request and response heads read in C, without httptools
  sockwrite.py  writes straight to the socket while the transport holds none
  reframe.py    relaying when the body must change (gzip, HTTP/1.0 clients)
  static.py     static files from the release's bundle
  acme.py       ACME HTTP-01 answers the controllers publish in an app's route
  clienterror.py a connection's failures: error pages, refusals, timeouts, cuts
  upgrade.py    upgrade requests: early bytes held, then a tunnel after a 101
  h1.py         HTTP/1.1 bytes: status lines, error pages, hop-by-hop rules
  balance.py    least-outstanding + round-robin choice, passive health
  table.py      the immutable route table and how deltas apply (pure)
  tracker.py    versions, gaps and resyncs of the controllers' feed (pure)
  feed.py       the ZeroMQ side of the feed (subscriber + snapshot requests)
  bundles.py    fetching static bundles from the image store in the background
  tls.py        certificates per domain by SNI, the self-signed default
  accesslog.py  one buffered line per request
  accesstail.py the access lines of apps with log drains, sent to a controller
  context.py    what a worker's connections share
  worker.py     one worker process: listeners and background tasks
  drain.py      when an ending router closes a connection (pure)
  daemon.py     the daemon: one worker in-process, or several; inherited sockets
  native.py     whether the request path runs compiled (Cython, .pxd files) or as .py
"""

# Before any hot module is imported: compiled, or pure Python when the
# compiled modules are missing or stale (see native.py).
from roost.router import native as _native

_native.select()
