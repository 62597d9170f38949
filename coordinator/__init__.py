"""Job submission, the job store, cancellation, MultiNode messaging and the CLI."""
