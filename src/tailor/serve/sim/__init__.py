"""The discrete-event simulator and the offline upper bound (see README.md); `tailor replay --sim`."""
