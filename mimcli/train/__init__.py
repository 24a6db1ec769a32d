"""Training: the loop (`loop`), its optimisers and schedules, progress, metric sinks and the information-plane
diagnostics it measures. Import the modules themselves; this package re-exports nothing, so loading one
(the progress bar, say) does not load the loop."""
