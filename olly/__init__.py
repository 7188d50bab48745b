"""olly: incremental, content-addressed builds for the ollyScale monorepo."""

__version__ = "0.1.0"
