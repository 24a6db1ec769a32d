"""A run directory: its files and config (`runs`), claiming it (`run_dir`), its lock, provenance, label and
trained backbone. Import the modules themselves; this package re-exports nothing."""
