"""The runner role: one per app host; runs the instances the scheduler assigns it.

daemon      run(): supervisor + heartbeats + log shipping on one event loop
supervisor  the single loop that converges instances to the desired set
instanceprep  an instance's start: its launch written, its sandbox and cgroup
instancetasks the tasks beside an instance: its output and exit, its health
plan        pure decisions: start, restart with backoff, timeouts, stop, kill
fencing     pure: which assignments to accept (fence, version)
model       records, actions, events, timing policy
shim        the per-instance shim process: holds an instance, its output and
            exit status, so it outlives the runner (stdlib only)
shimclient  the runner's side: start an instance under a shim, adopt one left
            running, pump its output, collect its exit
probe       readiness of web instances: their health check over HTTP
health      whether a health check passed, and what its failure says (pure)
heartbeat   reports to every controller, takes assignments back
logbuffer   line splitting and the bounded drop-oldest buffer (pure)
shipper     batches log lines to a controller
images      the image cache (roost.images) as the supervisor's provider
layout      DATA/runner/ on disk: host id, sockets, data links, ports
"""
