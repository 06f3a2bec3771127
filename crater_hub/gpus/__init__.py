"""GPU usage: device slots and who holds them, utilization from Prometheus, GPU-hours accounting."""
