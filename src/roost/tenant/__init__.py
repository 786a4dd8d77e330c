"""Starting tenant code: one identity, one sandbox, one set of limits.

Every process that runs code a tenant supplied (app instances, `run`
sessions, cron jobs, release commands, build steps) is started through this
package, by the runner and the builder alike. It is a library, not a role:
roles import it; it imports no role.
"""
