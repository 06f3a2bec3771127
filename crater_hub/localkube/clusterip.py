"""Service cluster IPs: allocated from the service CIDR, as kube-apiserver's IP allocator does.

An apiserver function, not a controller's: the IP is in the create response. Addresses are handed
out in order (real: at random) after the first ten of the range, which clusters conventionally
keep for the ``kubernetes`` Service (``.1``) and the cluster DNS (``.10``); a client may ask for
any free address of the range, those included. A Service's address is released when it is
removed. Errors are worded as the real allocator words them and become 422 ``Invalid``.
"""

import ipaddress

DEFAULT_SERVICE_CIDR = "10.96.0.0/12"  # kube-apiserver's --service-cluster-ip-range default
RESERVED = 10  # addresses at the start of the range never handed out unasked


class AllocationError(ValueError):
    """A requested cluster IP cannot be had; the message is the real allocator's."""


class ClusterIPAllocator:
    """Free and used addresses of one service CIDR (IPv4)."""

    def __init__(self, cidr=DEFAULT_SERVICE_CIDR):
        self.configure(cidr)

    def configure(self, cidr):
        """Use ``cidr`` (the pod network picks it at start, before any Service exists)."""
        if getattr(self, "used", None):
            raise RuntimeError("the service CIDR cannot change once addresses are allocated")
        self.network = ipaddress.ip_network(cidr)
        self.used = set()
        self._next = RESERVED + 1 if self.network.num_addresses - 2 > RESERVED else 1

    @property
    def cidr(self):
        return str(self.network)

    def _usable(self, ip):
        return ip in self.network and ip not in (self.network.network_address, self.network.broadcast_address)

    def allocate(self, requested=None):
        """A free address (``requested`` if given): a string. Raises :class:`AllocationError`."""
        if requested:
            try:
                ip = ipaddress.ip_address(requested)
            except ValueError:
                raise AllocationError("must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)") from None
            if not self._usable(ip):
                raise AllocationError(f"failed to allocate IP {requested}: provided IP is not in the valid "
                                      f"range. The range of valid IPs is {self.network}")
            if str(ip) in self.used:
                raise AllocationError(f"failed to allocate IP {requested}: provided IP is already allocated")
            self.used.add(str(ip))
            return str(ip)
        size = self.network.num_addresses - 2
        first = RESERVED + 1 if size > RESERVED else 1
        for _ in range(size - first + 1):
            candidate = str(self.network.network_address + self._next)
            self._next = self._next + 1 if self._next < size else first
            if candidate not in self.used:
                self.used.add(candidate)
                return candidate
        raise AllocationError(f"failed to allocate a serviceIP: range is full ({self.network})")

    def release(self, ip):
        self.used.discard(ip)

    def on_change(self, change):
        """Store listener: a removed Service gives its addresses back."""
        if change.skey == ("", "services") and change.type == "DELETED":
            for ip in (change.obj.get("spec") or {}).get("clusterIPs") or []:
                self.release(ip)
