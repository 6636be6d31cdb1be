"""MuJoCo simulation of a 7-DoF arm (optionally on a mobile base) with cameras."""
