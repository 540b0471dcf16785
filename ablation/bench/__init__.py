"""`make bench`: speed and memory measures of the harness, through its public interfaces only."""
