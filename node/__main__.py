"""`python -m node --config FILE.toml`: the daemon (see `node.daemon.main`)."""

from node.daemon.main import exit_now, main

if __name__ == "__main__":
    exit_now(main())
