"""Turning settled clips into datasets a robot-learning lab trains on (LeRobot v3.0), built on Daft."""
