"""The process toolkit: how every Roost daemon starts, waits for, stops,
backs off from and supervises its children.

spawn      start a child: own session, optional uid drop and tenant set-up,
           dies with its parent (PR_SET_PDEATHSIG); a server logging to a file
run        a one-off tool to completion: output captured, stopped with its
           group when out of time or cancelled
wait       pidfd waits, reaping a group leader after killing its group,
           adopted orphans (subreaper)
stop       a signal to the group, a grace period, SIGKILL
backoff    one capped exponential backoff with jitter (pure)
exits      named exit statuses (sysexits) and the errors that choose them
arbiter    the supervision loop: events in, pure plan, actions out
children   what to do with supervised children (pure)
supervise  the supervisor of long-running children (roles, workers, servers)
"""
