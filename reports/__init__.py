"""ReportLab PDFs built from read models and audit computations of the core."""
