"""What several test files share: fixtures written on disk (the CLUE folders, checkpoints in each
release layout), the tiny dropout-free BERT, dense reference computations, synthetic records, the
single-node Slurm cluster. Not tests themselves: pytest collects only tests/test_*.py."""
