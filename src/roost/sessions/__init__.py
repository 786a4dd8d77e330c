"""Exec sessions: processes whose bytes a gateway relays (`run`, cron, rsync/scp/sftp).

Role-neutral, so both roles that serve sessions use it (the runner: `run`
and cron; the servicehost: data sessions) while `roost.wire`, the transport,
knows no role and runs no process.

server   the session server: start, input with offsets, resize, signal,
         long-poll output with acknowledgement, close, idle expiry
"""
