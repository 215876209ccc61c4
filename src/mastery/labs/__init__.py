"""One thin driver per lesson: configure, run, report."""
