"""What every stage shares: the options (declared once), typed errors, the units of work and the transcript."""
