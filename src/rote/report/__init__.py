"""Layer `report` (no torch): everything a person reads, built from files only.

html (shared page, table, image and number helpers) · figures (the run's figures, and the figure
helpers every report uses) · run (the run report and its terminal table) · study (a study's
figures, findings and report) · probe (the probe's figures and report section) · card (the
injection card). Reads run, study and probe folders; never imports torch or the layers that do.
"""
