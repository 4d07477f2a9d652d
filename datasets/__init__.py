"""Datasets: suites of OpenML dataset IDs (`suites`), where their data comes from (`sources`),
loading through openml (`load`), and seeded, train-fitted preparation into float32 arrays (`prepare`).

Importing this package loads neither openml, torch nor tensorflow; openml is imported on first use.
"""
