"""Layer `probe`: hidden-state geometry of a run's stage models (`rote probe`).

geometry (cosines, separation, alignment, PCA: numpy only) · hidden (hidden states at named
positions, per stage and layer: torch). Its figures and report section are rote.report.probe.
"""
