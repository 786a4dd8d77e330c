"""The state database's high availability: etcd and Patroni on named hosts.

A cluster's controllers keep their state in PostgreSQL. `roost cluster
init --state-hosts A,B` makes that PostgreSQL a Patroni cluster of a
primary and a synchronous standby on two hosts, with a 3-member etcd as
Patroni's consensus store (`--etcd-hosts`, the controller hosts by
default). `roost statedb` on each of those hosts supervises this host's
etcd member and Patroni (which starts and manages PostgreSQL) through the
process toolkit. No election is made here: etcd's Raft and Patroni's
leader key decide; this package only renders their configuration (plan,
pure) and keeps their processes running (daemon).
"""
