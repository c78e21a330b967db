"""simcore's study suite: grids of trainings, result store and reports (being built)."""
