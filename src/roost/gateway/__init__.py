"""The SSH gateway: git push, `run` with a real terminal, rsync and scp."""
