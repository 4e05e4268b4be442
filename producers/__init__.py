"""The producer: scan folders, prepare images, submit batches, report and export results."""
