"""Supernet training and SubnetNorm calibration."""

from tailor.train.calibrate import calibrate

__all__ = ["calibrate"]
