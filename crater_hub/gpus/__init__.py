"""GPU usage: who holds which device, how busy it is, and for how long.

Utilization comes the way it does on a real cluster: NVIDIA's DCGM exporter series, scraped by
Prometheus, read by the hub over Prometheus's HTTP API (:mod:`.prometheus`), once per scrape
interval for all viewers (:mod:`.utilization`). Without Prometheus everything here still answers,
and says that utilization is not configured.
"""
