"""Layer `study` (no torch): the paper's experiments as grids of run configs x seeds.

spec (reading a study file) · plan (cells x seeds -> runs, shared phase-1 runs, the dry run's
counts) · collect (metrics from the run folders, mean and spread over seeds, summary files).
rote.study_runs.run_study runs a plan; rote.report.study draws and writes its report.
"""
